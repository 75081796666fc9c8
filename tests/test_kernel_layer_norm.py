"""LayerNorm with fused residual add against torch: y = F.layer_norm(x + residual).

Expected values come from torch's F.layer_norm and autograd in float64; the kernels'
weight and bias gradients (sums over all rows, in per-program partial sums) and the
gradient reaching both x and the residual are all checked."""

import pytest
import torch
import torch.nn.functional as F

from course_lib.kernels import backend
from course_lib.kernels import layer_norm as ln_module
from course_lib.kernels.layer_norm import layer_norm

TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=2e-5),
    torch.float16: dict(rtol=5e-3, atol=5e-3),
    torch.bfloat16: dict(rtol=4e-2, atol=4e-2),
}


def check(shape, dtype, backend_name, residual=True, eps=1e-5, seed=0, function=False):
    g = torch.Generator().manual_seed(seed)
    N = shape[-1]
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 0.5
    r = torch.randn(shape, generator=g, dtype=torch.float64) if residual else None
    w = torch.randn(N, generator=g, dtype=torch.float64)
    b = torch.randn(N, generator=g, dtype=torch.float64)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    ours = [t.to(dtype).requires_grad_() if t is not None else None for t in (x, r, w, b)]
    ref = [t.to(dtype).double().requires_grad_() if t is not None else None for t in (x, r, w, b)]
    with backend.force_backend(backend_name):
        if function:  # the autograd.Function itself: on the torch backend, the reference
            y = ln_module.LayerNormFunction.apply(ours[0], ours[1], ours[2], ours[3], eps)
        else:  # the public function (full precision without Triton: PyTorch's own op)
            y = layer_norm(ours[0], ours[2], ours[3], eps, residual=ours[1])
    h = ref[0] + ref[1] if residual else ref[0]
    y_ref = F.layer_norm(h, (N,), ref[2], ref[3], eps)
    assert y.shape == x.shape and y.dtype == dtype
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(y.double(), y_ref, **tol)
    y.backward(dy.to(dtype))
    y_ref.backward(dy)
    for name, a, e in zip(("x", "residual", "weight", "bias"), ours, ref):
        if a is not None:
            # Sums over many rows (weight, bias) are compared relative to their size.
            scale = max(1.0, e.grad.abs().max().item())
            torch.testing.assert_close(a.grad.double() / scale, e.grad / scale, **tol, msg=lambda m: f"{name}: {m}")


SHAPES = [(3, 7, 50), (1, 1), (5, 1), (4, 768), (2, 3, 1000), (300, 8)]  # 300 rows > PARTIALS


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.interpreter
def test_triton_matches_torch(shape, dtype, residual):
    check(shape, dtype, "triton", residual)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.interpreter
def test_triton_half_precision(dtype):
    check((6, 40), dtype, "triton")


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_reference_matches_torch(shape, residual):
    check(shape, torch.float32, "torch", residual, function=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_torch_backend_matches_torch(shape, dtype):
    # What models get without Triton: ATen's LayerNorm (the reference for N = 1).
    check(shape, dtype, "torch")


@pytest.mark.interpreter
def test_bert_eps_and_many_programs(monkeypatch):
    # BERT's eps = 1e-12; fewer partial-sum programs than rows makes each loop over several rows.
    monkeypatch.setattr(ln_module, "PARTIALS", 3)
    check((17, 24), torch.float32, "triton", eps=1e-12)
    check((17, 24), torch.float64, "triton", eps=1e-12)


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.interpreter
def test_mixed_precision_residual(backend_name):
    # Under autocast a half-precision sub-layer output meets a float32 residual stream.
    x = torch.randn(5, 24, dtype=torch.bfloat16, requires_grad=True)
    r = torch.randn(5, 24, requires_grad=True)
    w, b = torch.randn(24, requires_grad=True), torch.randn(24, requires_grad=True)
    with backend.force_backend(backend_name):
        y = layer_norm(x, w, b, residual=r)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and x.grad.dtype == torch.bfloat16 and r.grad.dtype == torch.float32
    expected = torch.nn.functional.layer_norm(x.detach().float() + r.detach(), (24,), w.detach(), b.detach())
    torch.testing.assert_close(y.float(), expected, **TOLERANCES[torch.bfloat16])


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.interpreter
def test_empty_input(backend_name):
    x = torch.empty(0, 6, requires_grad=True)
    w, b = torch.ones(6, requires_grad=True), torch.zeros(6, requires_grad=True)
    with backend.force_backend(backend_name):
        y = layer_norm(x, w, b, residual=torch.empty(0, 6))
    y.sum().backward()
    assert y.shape == (0, 6) and torch.equal(w.grad, torch.zeros(6)) and torch.equal(b.grad, torch.zeros(6))


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.interpreter
def test_gradcheck_float64(backend_name, residual):
    torch.manual_seed(0)
    x, r = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    w, b = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    inputs = tuple(t.requires_grad_() for t in (x, r, w, b))
    with backend.force_backend(backend_name):
        assert torch.autograd.gradcheck(
            lambda x, r, w, b: layer_norm(x, w, b, 1e-5, residual=r if residual else None), inputs
        )


def test_bad_input_is_named():
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        layer_norm(x, torch.ones(5), torch.zeros(4))
    with pytest.raises(ValueError, match="residual must have x's shape"):
        layer_norm(x, torch.ones(4), torch.zeros(4), residual=torch.randn(3, 4))
    with pytest.raises(TypeError, match="residual must have dtype"):
        layer_norm(x, torch.ones(4), torch.zeros(4), residual=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="1 to 65536 features"):
        layer_norm(torch.randn(2, 0), torch.ones(0), torch.zeros(0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.gpu
def test_cuda(dtype):
    torch.manual_seed(0)
    x = torch.randn(16, 128, 768, device="cuda", dtype=dtype).requires_grad_()
    r = torch.randn_like(x).requires_grad_()
    w = torch.randn(768, device="cuda", dtype=dtype).requires_grad_()
    b = torch.randn(768, device="cuda", dtype=dtype).requires_grad_()
    assert backend.use_triton(x, r, w, b)
    y = layer_norm(x, w, b, 1e-12, residual=r)
    ref = [t.detach().double().requires_grad_() for t in (x, r, w, b)]
    y_ref = F.layer_norm(ref[0] + ref[1], (768,), ref[2], ref[3], 1e-12)
    torch.testing.assert_close(y.double(), y_ref, **TOLERANCES[dtype])
    dy = torch.randn_like(y_ref)
    y.backward(dy.to(dtype))
    y_ref.backward(dy)
    for a, e in zip((x, r, w, b), ref):
        scale = max(1.0, e.grad.abs().max().item())
        torch.testing.assert_close(a.grad.double() / scale, e.grad / scale, **TOLERANCES[dtype])
