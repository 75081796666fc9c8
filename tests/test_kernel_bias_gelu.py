"""The fused bias + GELU kernels against torch's own F.gelu (both forms) and autograd.

Interpreter tests run the Triton code on CPU tensors (TRITON_INTERPRET=1) with small
shapes; `gpu` tests run on CUDA in fp32/fp16/bf16. The expected values are always
computed in float64 by torch's F.gelu and autograd, independently of this file's formulas."""

import pytest
import torch
import torch.nn.functional as F

from course_lib.kernels import backend
from course_lib.kernels.bias_gelu import bias_gelu

TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
}
# The bias gradient sums a column of dx stored in the input's dtype: a few roundings more.
BIAS_GRAD_TOLERANCES = {
    **TOLERANCES,
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=6e-2, atol=6e-2),
}


def check(x, bias, approximate, backend_name):
    x, bias = x.detach().requires_grad_(), bias.detach().requires_grad_()
    x64, b64 = x.detach().double().requires_grad_(), bias.detach().double().requires_grad_()
    with backend.force_backend(backend_name):
        y = bias_gelu(x, bias, approximate)
    y_ref = F.gelu(x64 + b64, approximate=approximate)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y.double(), y_ref, **TOLERANCES[x.dtype])
    dy = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y.backward(dy.to(x.dtype))
    y_ref.backward(dy)
    torch.testing.assert_close(x.grad.double(), x64.grad, **TOLERANCES[x.dtype])
    torch.testing.assert_close(bias.grad.double(), b64.grad, **BIAS_GRAD_TOLERANCES[x.dtype])


SHAPES = [(1, 1), (3, 7, 45), (2, 1025), (5,), (4, 3, 2, 6)]  # 1025: elements cross a block edge


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.interpreter
def test_triton_matches_torch(shape, dtype, approximate):
    torch.manual_seed(0)
    x = 3 * torch.randn(shape, dtype=dtype)  # wide range: both tails of the GELU
    check(x, torch.randn(shape[-1], dtype=dtype), approximate, "triton")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.interpreter
def test_triton_half_precision(dtype, approximate):
    torch.manual_seed(0)
    check(2 * torch.randn(6, 33, dtype=dtype), torch.randn(33, dtype=dtype), approximate, "triton")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape", SHAPES)
def test_reference_matches_torch(shape, approximate):
    torch.manual_seed(0)
    x = 3 * torch.randn(shape)
    check(x, torch.randn(shape[-1]), approximate, "torch")


@pytest.mark.interpreter
def test_extreme_inputs_stay_finite():
    # tanh via exp(-2|z|) never overflows: gelu(+-60) = 60 / 0 in both forms.
    x = torch.tensor([[-60.0, -10.0, 0.0, 10.0, 60.0]])
    for approximate in ("none", "tanh"):
        check(x, torch.zeros(5), approximate, "triton")


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.interpreter
def test_empty_input(backend_name):
    x = torch.empty(0, 5, requires_grad=True)
    bias = torch.randn(5, requires_grad=True)
    with backend.force_backend(backend_name):
        y = bias_gelu(x, bias)
    y.sum().backward()
    assert y.shape == (0, 5) and torch.equal(bias.grad, torch.zeros(5))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.interpreter
def test_gradcheck_float64(backend_name, approximate):
    torch.manual_seed(0)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    with backend.force_backend(backend_name):
        assert torch.autograd.gradcheck(lambda a, b: bias_gelu(a, b, approximate), (x, bias))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="bias must have x's last dimension"):
        bias_gelu(torch.randn(2, 3), torch.randn(4))
    with pytest.raises(ValueError, match="approximate must be one of"):
        bias_gelu(torch.randn(2, 3), torch.randn(3), approximate="erf")
    with pytest.raises(TypeError, match="x must have dtype"):
        bias_gelu(torch.ones(2, 3, dtype=torch.long), torch.randn(3))
    with pytest.raises(ValueError, match="bias must have 1 dimensions"):
        bias_gelu(torch.randn(2, 3), torch.randn(1, 3))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.gpu
def test_cuda(dtype, approximate):
    torch.manual_seed(0)
    x = 3 * torch.randn(8, 128, 3072, device="cuda", dtype=dtype)
    bias = torch.randn(3072, device="cuda", dtype=dtype)
    assert backend.use_triton(x, bias)
    x_ = x.detach().requires_grad_()
    b_ = bias.detach().requires_grad_()
    y = bias_gelu(x_, b_, approximate)
    x64, b64 = x.double().requires_grad_(), bias.double().requires_grad_()
    y_ref = F.gelu(x64 + b64, approximate=approximate)
    torch.testing.assert_close(y.double(), y_ref, **TOLERANCES[dtype])
    dy = torch.randn_like(y_ref)
    y.backward(dy.to(dtype))
    y_ref.backward(dy)
    torch.testing.assert_close(x_.grad.double(), x64.grad, **TOLERANCES[dtype])
    # 1024 rows summed: compare relative to the size of the column sums.
    scale = b64.grad.abs().max().item()
    torch.testing.assert_close(b_.grad.double() / scale, b64.grad / scale, **BIAS_GRAD_TOLERANCES[dtype])
