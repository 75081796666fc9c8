"""The row-softmax kernels against torch.softmax and autograd (float64 expected values).

Rows that are entirely -inf (an attention row whose keys are all masked) are defined to
give zeros and a zero gradient, where torch.softmax gives NaN."""

import pytest
import torch

from course_lib.kernels import backend
from course_lib.kernels.softmax import softmax

TOLERANCES = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float16: dict(rtol=2e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=8e-3),
}


def check(x, backend_name):
    """Compare softmax(x) and its input gradient with torch's, row by row; rows of all
    -inf must give 0 and pass no gradient."""
    x = x.detach().requires_grad_()
    with backend.force_backend(backend_name):
        y = softmax(x)
    empty = (x.detach() == float("-inf")).all(-1, keepdim=True)
    x64 = x.detach().double().masked_fill(empty, 0.0).requires_grad_()  # finite stand-in for empty rows
    y_ref = torch.softmax(x64, -1).masked_fill(empty, 0.0)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y.double(), y_ref, **TOLERANCES[x.dtype])
    dy = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y.backward(dy.to(x.dtype))
    y_ref.backward(dy)
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad.double(), x64.grad, **TOLERANCES[x.dtype])


def with_masked_entries(shape, dtype):
    torch.manual_seed(0)
    x = 4 * torch.randn(shape, dtype=dtype)
    if x.dim() >= 2 and x.shape[-1] > 3:
        x[..., 1, 2:] = float("-inf")  # a partly masked row
        x[..., 0, :] = float("-inf")  # a fully masked row
    return x


SHAPES = [(3, 5, 37), (1, 1), (2, 1000), (7,), (4, 2, 3, 6)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.interpreter
def test_triton_matches_torch(shape, dtype):
    check(with_masked_entries(shape, dtype), "triton")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.interpreter
def test_triton_half_precision(dtype):
    check(with_masked_entries((6, 50), dtype), "triton")


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_matches_torch(shape):
    check(with_masked_entries(shape, torch.float32), "torch")


@pytest.mark.interpreter
def test_large_logits_do_not_overflow():
    x = torch.tensor([[1000.0, 999.0, -1000.0], [-1e30, -1e30, -1e30]])
    check(x, "triton")


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.interpreter
def test_empty_input(backend_name):
    x = torch.empty(0, 5, requires_grad=True)
    with backend.force_backend(backend_name):
        y = softmax(x)
    y.sum().backward()
    assert y.shape == (0, 5) and x.grad.shape == (0, 5)


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.interpreter
def test_gradcheck_float64(backend_name):
    torch.manual_seed(0)
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    with backend.force_backend(backend_name):
        assert torch.autograd.gradcheck(softmax, (x,))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="at least 1 dimension"):
        softmax(torch.tensor(1.0))
    with pytest.raises(TypeError, match="x must have dtype"):
        softmax(torch.ones(3, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.gpu
def test_cuda(dtype):
    x = with_masked_entries((8, 12, 128, 333), dtype).cuda()
    assert backend.use_triton(x)
    check(x, "triton")
