"""RMSNorm (T5's LayerNorm) against torch: y = F.rms_norm(x, (N,), weight, eps).

Expected values come from torch's F.rms_norm and autograd in float64; the kernel's
weight gradient (a sum over all rows, in per-program partial sums) is checked too, and
the module form matches Hugging Face's ``T5LayerNorm`` exactly in float32."""

import pytest
import torch
import torch.nn.functional as F

from course_lib.kernels import backend
from course_lib.kernels import rms_norm as rms_module
from course_lib.kernels.rms_norm import rms_norm

TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=2e-5),
    torch.float16: dict(rtol=5e-3, atol=5e-3),
    torch.bfloat16: dict(rtol=4e-2, atol=4e-2),
}


def check(shape, dtype, backend_name, eps=1e-6, seed=0):
    g = torch.Generator().manual_seed(seed)
    N = shape[-1]
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 0.5
    w = torch.randn(N, generator=g, dtype=torch.float64)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    ours = [t.to(dtype).requires_grad_() for t in (x, w)]
    ref = [t.to(dtype).double().requires_grad_() for t in (x, w)]
    with backend.force_backend(backend_name):
        y = rms_norm(ours[0], ours[1], eps)
    y_ref = F.rms_norm(ref[0], (N,), ref[1], eps)
    assert y.shape == x.shape and y.dtype == dtype
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(y.double(), y_ref, **tol)
    y.backward(dy.to(dtype))
    y_ref.backward(dy)
    for name, a, e in zip(("x", "weight"), ours, ref):
        scale = max(1.0, e.grad.abs().max().item())  # the weight's gradient is a sum over rows
        torch.testing.assert_close(a.grad.double() / scale, e.grad / scale, **tol, msg=lambda m: f"{name}: {m}")


SHAPES = [(3, 7, 50), (1, 1), (5, 1), (4, 512), (300, 8)]  # 300 rows > PARTIALS; N = 1 and 1 row


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.interpreter
def test_triton_matches_torch(shape, dtype):
    check(shape, dtype, "triton")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.interpreter
def test_triton_half_precision(dtype):
    check((6, 40), dtype, "triton")


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_matches_torch(shape):
    check(shape, torch.float32, "torch")


@pytest.mark.interpreter
def test_many_rows_per_program(monkeypatch):
    monkeypatch.setattr(rms_module, "PARTIALS", 3)  # each program loops over several rows
    check((17, 24), torch.float32, "triton", eps=1e-12)


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.interpreter
def test_empty_input(backend_name):
    x = torch.empty(0, 6, requires_grad=True)
    w = torch.ones(6, requires_grad=True)
    with backend.force_backend(backend_name):
        y = rms_norm(x, w)
    y.sum().backward()
    assert y.shape == (0, 6) and torch.equal(w.grad, torch.zeros(6))


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.interpreter
def test_gradcheck_float64(backend_name):
    torch.manual_seed(0)
    x, w = torch.randn(3, 5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    with backend.force_backend(backend_name):
        assert torch.autograd.gradcheck(lambda x, w: rms_norm(x, w, 1e-6), (x.requires_grad_(), w.requires_grad_()))


def test_equals_hf_t5_layer_norm_and_drops_what_layer_norm_has():
    transformers = pytest.importorskip("transformers")
    from transformers.models.t5.modeling_t5 import T5LayerNorm

    torch.manual_seed(0)
    hf = T5LayerNorm(37, eps=1e-6)
    with torch.no_grad():
        hf.weight.copy_(torch.randn(37))
    x = torch.randn(4, 9, 37) * 3 + 1
    with backend.force_backend("torch"):
        y = rms_norm(x, hf.weight, 1e-6)
    assert (y - hf(x)).abs().max().item() <= 1e-6
    # No mean is subtracted: shifting x changes the output (LayerNorm would not notice).
    with backend.force_backend("torch"):
        assert (rms_norm(x + 5, hf.weight) - y).abs().max() > 0.1


def test_bad_input_is_named():
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        rms_norm(x, torch.ones(5))
    with pytest.raises(TypeError, match="x must have dtype"):
        rms_norm(torch.ones(2, 4, dtype=torch.long), torch.ones(4))
    with pytest.raises(ValueError, match="1 to 65536 features"):
        rms_norm(torch.randn(2, 0), torch.ones(0))
    with pytest.raises(ValueError, match="eps must be"):
        rms_norm(x, torch.ones(4), -1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.gpu
def test_cuda(dtype):
    torch.manual_seed(0)
    x = torch.randn(16, 128, 512, device="cuda", dtype=dtype).requires_grad_()
    w = torch.randn(512, device="cuda", dtype=dtype).requires_grad_()
    assert backend.use_triton(x, w)
    y = rms_norm(x, w, 1e-6)
    ref = [t.detach().double().requires_grad_() for t in (x, w)]
    y_ref = F.rms_norm(ref[0], (512,), ref[1], 1e-6)
    torch.testing.assert_close(y.double(), y_ref, **TOLERANCES[dtype])
    dy = torch.randn_like(y_ref)
    y.backward(dy.to(dtype))
    y_ref.backward(dy)
    for a, e in zip((x, w), ref):
        scale = max(1.0, e.grad.abs().max().item())
        torch.testing.assert_close(a.grad.double() / scale, e.grad / scale, **TOLERANCES[dtype])
