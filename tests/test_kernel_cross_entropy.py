"""Fused linear + cross-entropy against the unfused ``F.cross_entropy(x @ W^T + b)``.

Loss and the gradients of x, W and b, on odd shapes (N and V not powers of two, N = 1, N = 0),
with ignored rows, both reductions, a bias, an upstream gradient other than 1, many token
chunks and (with the block size shrunk) many vocabulary blocks per row; float64 gradcheck;
and a check that no chunk of logits larger than (chunk, V) is ever formed."""

import pytest
import torch

from course_lib.kernels import backend
from course_lib.kernels import cross_entropy as ce
from course_lib.kernels.cross_entropy import linear_cross_entropy, linear_cross_entropy_reference

TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float16: dict(rtol=2e-2, atol=2e-3),
    torch.bfloat16: dict(rtol=5e-2, atol=2e-2),
}
BACKENDS = [pytest.param("torch", id="torch"), pytest.param("triton", id="triton", marks=pytest.mark.interpreter)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small matmuls: with 2 OpenMP threads on a busy machine each costs ~2 ms of thread wake-up."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(N, H, V, dtype, seed=0, bias=False, ignore=(), device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, H, generator=g, dtype=torch.float64)
    w = torch.randn(V, H, generator=g, dtype=torch.float64) / H**0.5 * 3  # logits of std ~3: peaked rows
    b = torch.randn(V, generator=g, dtype=torch.float64) if bias else None
    t = torch.randint(0, V, (N,), generator=g)
    for i in ignore:
        t[i] = -100
    cast = lambda a: a.to(device=device, dtype=dtype).requires_grad_() if a is not None else None  # noqa: E731
    return cast(x), cast(w), t.to(device), cast(b)


def check(N, H, V, dtype, backend_name, *, bias=False, ignore=(), reduction="mean", chunk_size=None, grad_scale=1.0,
          device="cpu"):
    x, w, t, b = make(N, H, V, dtype, bias=bias, ignore=ignore, device=device)
    inputs = [a for a in (x, w, b) if a is not None]
    with backend.force_backend(backend_name):
        loss = linear_cross_entropy(x, w, t, b, reduction=reduction, chunk_size=chunk_size)
    grads = torch.autograd.grad(loss * grad_scale, inputs)
    ref_inputs = [a.detach().double().requires_grad_() for a in inputs]
    rb = ref_inputs[2] if b is not None else None
    ref = linear_cross_entropy_reference(ref_inputs[0], ref_inputs[1], t, rb, reduction=reduction)
    ref_grads = torch.autograd.grad(ref * grad_scale, ref_inputs)
    tol = TOLERANCES[dtype]
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32) and loss.dim() == 0
    torch.testing.assert_close(loss.double(), ref, **tol)
    for name, g, r, a in zip("xwb", grads, ref_grads, inputs):
        assert g.dtype == a.dtype and g.shape == a.shape
        torch.testing.assert_close(g.double(), r, **tol, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N, H, V, kwargs", [
    (13, 9, 37, dict()),
    (1, 4, 3, dict()),  # a single row
    (29, 16, 101, dict(bias=True, ignore=(0, 5, 6), chunk_size=4)),  # 8 chunks, the last ragged
    (10, 8, 50, dict(reduction="sum", ignore=(9,), grad_scale=2.5)),
    (7, 5, 1, dict()),  # V = 1: the loss is 0, the gradient too
])  # fmt: skip
def test_matches_unfused(N, H, V, kwargs, dtype, backend_name):
    check(N, H, V, dtype, backend_name, **kwargs)


@pytest.mark.interpreter
def test_many_vocabulary_blocks(monkeypatch):
    """BLOCK_V = 16 on V = 75: each row's online log-sum-exp spans 5 blocks, the last ragged."""
    monkeypatch.setattr(ce, "MAX_BLOCK_V", 16)
    check(11, 6, 75, torch.float32, "triton", bias=True, ignore=(3,), chunk_size=3)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_every_row_ignored_and_empty_input(backend_name):
    x, w, t, _ = make(4, 3, 7, torch.float32)
    t[:] = -100
    with backend.force_backend(backend_name):
        loss = linear_cross_entropy(x, w, t)
        assert torch.isnan(loss)  # as F.cross_entropy's mean over nothing
        assert torch.isnan(linear_cross_entropy_reference(x, w, t))
        gx, gw = torch.autograd.grad(linear_cross_entropy(x, w, t, reduction="sum"), (x, w))
        assert (gx == 0).all() and (gw == 0).all()
        x0, w0, t0, _ = make(0, 3, 7, torch.float32)
        loss0 = linear_cross_entropy(x0, w0, t0, reduction="sum")
        assert loss0.item() == 0 and torch.autograd.grad(loss0, w0)[0].abs().sum() == 0


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_gradcheck_float64(backend_name):
    x, w, t, b = make(5, 3, 6, torch.float64, bias=True, ignore=(2,))
    with backend.force_backend(backend_name):
        assert torch.autograd.gradcheck(lambda x, w, b: linear_cross_entropy(x, w, t, b, chunk_size=2), (x, w, b))


def test_never_more_than_one_chunk_of_logits(monkeypatch):
    """The (N, V) matrix is never formed: the softmax step only ever sees (chunk, V) blocks."""
    seen = []
    step = ce.cross_entropy_step_reference
    monkeypatch.setattr(ce, "cross_entropy_step_reference", lambda logits, *a: seen.append(logits.shape) or step(logits, *a))
    N, H, V = 300, 8, 1000
    x, w, t, _ = make(N, H, V, torch.float32)
    with backend.force_backend("torch"):
        linear_cross_entropy(x, w, t).backward()
    chunk = ce.default_chunk_size(N, H, V)  # Liger's rule: a block of logits ~ the size of x
    assert chunk == 4 and len(seen) == N // chunk and all(s == (chunk, V) for s in seen)


def test_no_gradients_without_grad_mode():
    x, w, t, _ = make(5, 4, 11, torch.float32)
    with torch.no_grad(), backend.force_backend("torch"):
        loss = linear_cross_entropy(x, w, t)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, linear_cross_entropy_reference(x, w, t).detach())


def test_bad_input_is_named():
    x, w, t, b = make(5, 4, 11, torch.float32, bias=True)
    cases = [
        (dict(x=x[0]), ValueError, "x must have 2 dimensions"),
        (dict(w=w[:, :3]), ValueError, r"weight must be \(V, H\) with x's H = 4"),
        (dict(w=w.double()), TypeError, "weight must have dtype in"),
        (dict(t=t[:4]), ValueError, r"target must have one entry per row of x \(5\)"),
        (dict(t=t.float()), TypeError, "target must have dtype in"),
        (dict(t=torch.tensor([0, 1, 11, 2, 3])), ValueError, r"target contains 11, outside \[0, V = 11\)"),
        (dict(b=b[:5]), ValueError, r"bias must have shape \(11,\)"),
        (dict(reduction="none"), ValueError, "reduction must be 'mean' or 'sum'"),
        (dict(chunk_size=0), ValueError, "chunk_size must be a positive int"),
    ]
    for changes, error, message in cases:
        args = dict(x=x, w=w, t=t, b=b, reduction="mean", chunk_size=None) | changes
        with pytest.raises(error, match=message):
            linear_cross_entropy(args["x"], args["w"], args["t"], args["b"], reduction=args["reduction"],
                                 chunk_size=args["chunk_size"])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda(dtype):
    check(517, 64, 5003, dtype, "triton", bias=True, ignore=(0, 100), device="cuda")
    check(64, 128, 50257, dtype, "triton", reduction="sum", chunk_size=16, device="cuda")
