"""FlashAttention-style attention (key-padding mask, causal mask, additive bias) against
naive attention.

The expected values come from the textbook formula softmax(Q K^T * scale + bias) V, masked,
computed in float64 with autograd; a query that may see no key gets zeros (the convention
of course_lib.kernels.flash_attention). Tile sizes are shrunk in some tests so
that small inputs still span many query and key blocks, with ragged edges."""

import math

import pytest
import torch

from course_lib.kernels import backend
from course_lib.kernels import flash_attention as fa
from course_lib.kernels.flash_attention import flash_attention

# The kernels receive `scale` as a float32 scalar, so float64 results carry its rounding.
TOLERANCES = {
    torch.float64: dict(rtol=1e-7, atol=1e-7),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=5e-3, atol=5e-3),
    torch.bfloat16: dict(rtol=4e-2, atol=4e-2),
}


def naive_attention(q, k, v, mask, scale, causal=False, bias=None):
    s = (q @ k.transpose(-2, -1)) * scale  # (B, nh, Tq, Tk)
    if bias is not None:
        s = s + bias
    Tq, Tk = s.shape[-2:]
    keep = torch.ones(s.shape, dtype=torch.bool, device=s.device)
    if mask is not None:
        keep = keep & mask.bool()[:, None, None, :]
    if causal:  # the queries are the last Tq of the Tk positions
        i, j = torch.arange(Tq, device=s.device)[:, None] + (Tk - Tq), torch.arange(Tk, device=s.device)[None, :]
        keep = keep & (j <= i)
    empty = ~keep.any(-1, keepdim=True)  # no key to attend to
    p = torch.softmax(s.masked_fill(~keep, float("-inf")).masked_fill(empty, 0.0), -1)
    return (p * ~empty) @ v


def make(B, nh, Tq, Tk, hs, dtype, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, nh, T, hs, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
            for T in (Tq, Tk, Tk)]


def check(q, k, v, mask, backend_name, causal=False, bias=None):
    scale = 1.0 / math.sqrt(q.shape[-1])
    ours = [t.detach().requires_grad_() for t in (q, k, v)]
    ref = [t.detach().double().requires_grad_() for t in (q, k, v)]
    if bias is not None:
        ours.append(bias.detach().to(q.dtype).requires_grad_())
        ref.append(bias.detach().double().requires_grad_())
    with backend.force_backend(backend_name):
        o = flash_attention(*ours[:3], attention_mask=mask, causal=causal, bias=ours[3] if bias is not None else None)
    o_ref = naive_attention(*ref[:3], mask, scale, causal, ref[3] if bias is not None else None)
    tol = TOLERANCES[q.dtype]
    assert o.shape == q.shape and o.dtype == q.dtype
    torch.testing.assert_close(o.double(), o_ref, **tol)
    do = torch.randn(o_ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(o_ref.device)
    o.backward(do.to(q.dtype))
    o_ref.backward(do)
    for name, a, e in zip(["q", "k", "v", "bias"], ours, ref):
        torch.testing.assert_close(a.grad.double(), e.grad, **tol, msg=lambda m: f"d{name}: {m}")


def padding_mask(B, T, lengths, dtype=torch.bool):
    return (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).to(dtype)  # (B, T)


CASES = [  # B, nh, T, hs, real lengths (None: no mask)
    (2, 3, 37, 12, [37, 20]),  # odd T and head size
    (1, 1, 1, 16, None),  # a single token
    (1, 2, 1, 8, [1]),
    (2, 2, 19, 16, None),
    (3, 1, 11, 5, [11, 4, 0]),  # the last sequence is all padding: zeros, no NaN
]


@pytest.mark.parametrize("B, nh, T, hs, lengths", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.interpreter
def test_triton_matches_naive(B, nh, T, hs, lengths, dtype):
    q, k, v = make(B, nh, T, T, hs, dtype)
    check(q, k, v, padding_mask(B, T, lengths) if lengths else None, "triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.interpreter
def test_triton_many_blocks(monkeypatch, dtype):
    # 16 x 16 tiles: T = 41 spans three query and three key blocks, the last ones ragged.
    monkeypatch.setattr(fa, "BLOCK_M", 16)
    monkeypatch.setattr(fa, "BLOCK_N", 16)
    q, k, v = make(2, 2, 41, 41, 12, dtype)
    check(q, k, v, padding_mask(2, 41, [41, 23]), "triton")


@pytest.mark.interpreter
def test_triton_cross_lengths(monkeypatch):
    # Tq != Tk: the kernels allow it (the mask covers the keys).
    monkeypatch.setattr(fa, "BLOCK_M", 16)
    monkeypatch.setattr(fa, "BLOCK_N", 16)
    q, k, v = make(2, 2, 5, 29, 8, torch.float32)
    check(q, k, v, padding_mask(2, 29, [29, 17]), "triton")
    q, k, v = make(1, 1, 33, 3, 8, torch.float32)
    check(q, k, v, None, "triton")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.interpreter
def test_triton_half_precision(dtype):
    q, k, v = make(2, 2, 21, 21, 16, dtype)
    check(q, k, v, padding_mask(2, 21, [21, 9]), "triton")


@pytest.mark.interpreter
def test_strided_inputs_and_integer_mask():
    # The model's layout: (B, T, nh, hs) projections viewed as (B, nh, T, hs) without a copy.
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 13, 3, 8, generator=g).transpose(1, 2) for _ in range(3))
    assert not q.is_contiguous()
    check(q, k, v, padding_mask(2, 13, [13, 6], dtype=torch.long), "triton")


# B, nh, Tq, Tk, hs, real key lengths, bias shape (None: no bias). Tq < Tk is a KV cache (the
# queries are the last Tq positions); Tq = 1 is one decoding step.
CAUSAL_CASES = [
    (2, 3, 37, 37, 12, [37, 20], None),  # odd sizes; a left-padded-like short row
    (2, 2, 5, 29, 8, [29, 17], None),  # 5 new queries against a cache of 29
    (1, 2, 1, 33, 8, None, None),  # one decoding step sees every key
    (3, 1, 11, 11, 5, [11, 4, 0], (1, 1, 11, 11)),  # an all-padding sequence
    (2, 2, 19, 19, 16, None, (2, 2, 19, 19)),
]
BIAS_CASES = [  # bidirectional with a bias (T5's encoder; cross-attention Tq != Tk)
    (2, 3, 23, 23, 12, [23, 9], (1, 3, 23, 23)),  # one relative-position bias for the batch
    (2, 2, 7, 31, 8, [31, 12], (2, 1, 7, 31)),  # per-sequence, shared by the heads
    (1, 2, 13, 13, 8, None, (13,)),  # one row broadcast everywhere
]


@pytest.mark.parametrize("B, nh, Tq, Tk, hs, lengths, bias_shape", CAUSAL_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.interpreter
def test_triton_causal_matches_naive(monkeypatch, B, nh, Tq, Tk, hs, lengths, bias_shape, dtype):
    monkeypatch.setattr(fa, "BLOCK_M", 16)  # several query and key blocks: the causal block skipping
    monkeypatch.setattr(fa, "BLOCK_N", 16)
    q, k, v = make(B, nh, Tq, Tk, hs, dtype)
    bias = torch.randn(bias_shape, generator=torch.Generator().manual_seed(2)) if bias_shape else None
    check(q, k, v, padding_mask(B, Tk, lengths) if lengths else None, "triton", causal=True, bias=bias)


@pytest.mark.parametrize("B, nh, Tq, Tk, hs, lengths, bias_shape", BIAS_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.interpreter
def test_triton_bias_matches_naive(monkeypatch, B, nh, Tq, Tk, hs, lengths, bias_shape, dtype):
    monkeypatch.setattr(fa, "BLOCK_M", 16)
    monkeypatch.setattr(fa, "BLOCK_N", 16)
    q, k, v = make(B, nh, Tq, Tk, hs, dtype)
    bias = torch.randn(bias_shape, generator=torch.Generator().manual_seed(3))
    check(q, k, v, padding_mask(B, Tk, lengths) if lengths else None, "triton", bias=bias)


@pytest.mark.parametrize("case", CAUSAL_CASES + BIAS_CASES)
def test_reference_causal_and_bias_match_naive(case):
    B, nh, Tq, Tk, hs, lengths, bias_shape = case
    q, k, v = make(B, nh, Tq, Tk, hs, torch.float32)
    bias = torch.randn(bias_shape, generator=torch.Generator().manual_seed(4)) if bias_shape else None
    check(q, k, v, padding_mask(B, Tk, lengths) if lengths else None, "torch", causal=case in CAUSAL_CASES, bias=bias)


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.interpreter
def test_visibility_bias_is_a_mask(backend_name):
    # A prefix-LM pattern (the first 3 tokens see each other, the rest are causal) as a -inf bias.
    T = 7
    visible = fa.causal_mask(T, T)
    visible[:3, :3] = True
    q, k, v = make(1, 2, T, T, 8, torch.float64)
    with backend.force_backend(backend_name):
        got = flash_attention(q, k, v, bias=fa.visibility_bias(visible, torch.float64))
    keep = visible.expand(1, 2, T, T)
    want = torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~keep, float("-inf")), -1) @ v
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.interpreter
def test_gradcheck_float64_causal_with_bias(backend_name):
    q, k, v = (t.requires_grad_() for t in make(2, 1, 2, 3, 3, torch.float64))
    bias = torch.randn(1, 1, 2, 3, dtype=torch.float64, requires_grad=True)
    mask = padding_mask(2, 3, [3, 2])
    with backend.force_backend(backend_name):
        assert torch.autograd.gradcheck(
            lambda q, k, v, b: flash_attention(q, k, v, mask, causal=True, bias=b), (q, k, v, bias)
        )


@pytest.mark.parametrize("B, nh, T, hs, lengths", CASES)
def test_reference_matches_naive(B, nh, T, hs, lengths):
    q, k, v = make(B, nh, T, T, hs, torch.float32)
    check(q, k, v, padding_mask(B, T, lengths) if lengths else None, "torch")


@pytest.mark.parametrize("Tq, Tk, causal, lengths, bias_shape", [
    (1, 37, True, [37, 20, 1], None),  # decoding: one new query against a long KV cache
    (5, 23, True, [23, 9, 0], (1, 3, 5, 23)),  # a row with no visible key, and a bias
    (7, 7, False, [7, 3, 2], (3, 1, 1, 7)),
    (4, 11, True, None, None),
])  # fmt: skip
def test_inference_path_matches_naive(Tq, Tk, causal, lengths, bias_shape):
    """Without gradients the CPU reference is one fused PyTorch call (no row statistics kept);
    it must keep every convention of the autograd path: bottom-right causal mask, key padding,
    bias, zeros for a row with no visible key."""
    for dtype in (torch.float32, torch.float64):
        q, k, v = make(3, 3, Tq, Tk, 16, dtype, seed=Tq)
        mask = padding_mask(3, Tk, lengths) if lengths else None
        bias = torch.randn(bias_shape, dtype=dtype, generator=torch.Generator().manual_seed(2)) if bias_shape else None
        with backend.force_backend("torch"), torch.no_grad():
            fast = flash_attention(q, k, v, mask, causal=causal, bias=bias)
        with backend.force_backend("torch"):
            slow = flash_attention(q.requires_grad_(), k, v, mask, causal=causal, bias=bias).detach()
        expected = naive_attention(q.detach().double(), k.double(), v.double(), mask, 16**-0.5, causal,
                                   None if bias is None else bias.double())
        torch.testing.assert_close(fast.double(), expected, **TOLERANCES[dtype])
        torch.testing.assert_close(fast, slow, **TOLERANCES[dtype])
        if lengths and 0 in lengths:
            assert torch.equal(fast[lengths.index(0)], torch.zeros_like(fast[0]))


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.interpreter
def test_fully_padded_rows_are_zero_and_finite(backend_name):
    q, k, v = (t.requires_grad_() for t in make(2, 2, 6, 6, 8, torch.float32))
    mask = padding_mask(2, 6, [6, 0])
    with backend.force_backend(backend_name):
        o = flash_attention(q, k, v, mask)
    o.sum().backward()
    assert torch.equal(o[1], torch.zeros_like(o[1]))
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all() and torch.equal(t.grad[1], torch.zeros_like(t.grad[1]))


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.interpreter
def test_empty_sequences(backend_name):
    with backend.force_backend(backend_name):
        q, k, v = (t.requires_grad_() for t in make(2, 2, 0, 4, 8, torch.float32))
        o = flash_attention(q, k, v)
        o.sum().backward()
        assert o.shape == (2, 2, 0, 8) and torch.equal(k.grad, torch.zeros_like(k))
        q, k, v = make(2, 2, 3, 0, 8, torch.float32)  # no keys at all: every row is empty
        assert torch.equal(flash_attention(q, k, v), torch.zeros(2, 2, 3, 8))


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.interpreter
def test_gradcheck_float64(backend_name):
    q, k, v = (t.requires_grad_() for t in make(2, 1, 2, 2, 3, torch.float64))
    mask = padding_mask(2, 2, [2, 1])
    with backend.force_backend(backend_name):
        assert torch.autograd.gradcheck(lambda q, k, v: flash_attention(q, k, v, mask), (q, k, v))


def test_bad_input_is_named():
    q, k, v = make(2, 2, 5, 5, 8, torch.float32)
    with pytest.raises(ValueError, match="q must have 4 dimensions"):
        flash_attention(q[0], k, v)
    with pytest.raises(ValueError, match="same B, nh, hs"):
        flash_attention(q, k[:, :1], v)
    with pytest.raises(TypeError, match="k must have dtype"):
        flash_attention(q, k.double(), v)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B, Tk\)"):
        flash_attention(q, k, v, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool or integer"):
        flash_attention(q, k, v, torch.ones(2, 5))
    with pytest.raises(ValueError, match="causal attention needs Tq <= Tk"):
        flash_attention(q, k[:, :, :3], v[:, :, :3], causal=True)
    with pytest.raises(ValueError, match=r"bias must broadcast to \(B, nh, Tq, Tk\)"):
        flash_attention(q, k, v, bias=torch.zeros(3, 5, 5))
    with pytest.raises(TypeError, match="bias must have dtype"):
        flash_attention(q, k, v, bias=torch.zeros(5, 5, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("T", [128, 333])
@pytest.mark.gpu
def test_cuda(dtype, T):
    B, nh, hs = 4, 12, 64
    q, k, v = make(B, nh, T, T, hs, dtype, device="cuda")
    mask = padding_mask(B, T, [T, T // 2, 1, T - 7]).cuda()
    assert backend.use_triton(q, k, v, mask)
    check(q, k, v, mask, "triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("Tq, Tk", [(200, 200), (1, 333), (17, 300)])
@pytest.mark.gpu
def test_cuda_causal_and_bias(dtype, Tq, Tk):
    B, nh, hs = 2, 12, 64
    q, k, v = make(B, nh, Tq, Tk, hs, dtype, device="cuda")
    bias = torch.randn(1, nh, Tq, Tk, generator=torch.Generator().manual_seed(5)).cuda()
    check(q, k, v, padding_mask(B, Tk, [Tk, Tk - 9]).cuda(), "triton", causal=True, bias=bias)
