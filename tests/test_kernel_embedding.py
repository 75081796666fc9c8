"""The Triton embedding kernels against torch.nn.functional.embedding.

Interpreter tests run the real kernel code on CPU tensors (TRITON_INTERPRET=1) and stay
small because the interpreter is slow; GPU tests cover half precision and large shapes."""

import pytest
import torch
import torch.nn.functional as F

from course_lib.kernels import backend
from course_lib.kernels.embedding import (
    embedding,
    embedding_backward_reference,
    embedding_forward_reference,
)

# tests/conftest.py skips `interpreter` tests unless TRITON_INTERPRET=1, and `gpu` tests without CUDA.

# Forward is a copy, so it is exact in every dtype; the backward sums, and half precision
# rounds that sum once when it is cast back from the fp32 accumulator.
TOLERANCES = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
}


def assert_matches_torch(indices, weight, padding_idx=None):
    """Forward and weight gradient of `embedding` equal to F.embedding's, computed in fp32
    (or fp64) so that half-precision results are judged against an accurate value."""
    assert backend.use_triton(indices, weight), "the Triton kernels would not run here"
    exact = torch.float64 if weight.dtype == torch.float64 else torch.float32
    weight = weight.detach().requires_grad_()
    weight_ref = weight.detach().to(exact).requires_grad_()
    out = embedding(indices, weight, padding_idx=padding_idx)
    out_ref = F.embedding(indices, weight_ref, padding_idx=padding_idx)
    assert out.shape == out_ref.shape and out.dtype == weight.dtype
    assert torch.equal(out.to(exact), out_ref)

    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    out_ref.backward(grad_out.to(exact))
    assert weight.grad.dtype == weight.dtype
    torch.testing.assert_close(weight.grad.to(exact), weight_ref.grad, **TOLERANCES[weight.dtype])


# ---- interpreter: the kernels' code on CPU tensors ---------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "V, D, shape",
    [
        (37, 19, (50,)),  # D not a power of two: masked feature lanes
        (37, 1, (11,)),
        (5, 8, (1,)),  # a single index
        (37, 19, (3, 5, 7)),  # indices of any shape
        (10, 300, (20,)),  # D wider than one feature block
    ],
)
@pytest.mark.interpreter
def test_matches_torch(V, D, shape, dtype):
    torch.manual_seed(0)
    assert_matches_torch(torch.randint(0, V, shape), torch.randn(V, D, dtype=dtype))


@pytest.mark.interpreter
def test_int32_indices():
    torch.manual_seed(0)
    assert_matches_torch(torch.randint(0, 37, (40,), dtype=torch.int32), torch.randn(37, 19))


@pytest.mark.interpreter
def test_strided_inputs():
    torch.manual_seed(0)
    indices = torch.randint(0, 37, (40,))[::3]  # a view with stride 3
    assert_matches_torch(indices, torch.randn(37, 30)[:, 5:24])  # rows 30 elements apart
    assert_matches_torch(indices, torch.randn(19, 37).t())  # features 37 elements apart


@pytest.mark.parametrize("padding_idx", [0, 3, -1, -37])
@pytest.mark.interpreter
def test_padding_idx(padding_idx):
    torch.manual_seed(0)
    indices = torch.randint(0, 37, (60,))
    indices[::4] = padding_idx % 37  # make sure the padding row is read
    assert_matches_torch(indices, torch.randn(37, 19), padding_idx=padding_idx)


@pytest.mark.parametrize("shape", [(0,), (2, 0)])
@pytest.mark.interpreter
def test_empty_batch(shape):
    indices = torch.empty(shape, dtype=torch.long)
    weight = torch.randn(7, 5, requires_grad=True)
    assert backend.use_triton(indices, weight)
    out = embedding(indices, weight)
    assert out.shape == (*shape, 5)
    out.sum().backward()
    assert torch.equal(weight.grad, torch.zeros(7, 5))


@pytest.mark.interpreter
def test_duplicate_indices_accumulate():
    torch.manual_seed(0)
    indices = torch.full((300,), 3)  # one row, read by positions in many different programs
    indices[::7] = 5
    weight = torch.randn(8, 19, requires_grad=True)
    assert backend.use_triton(indices, weight)
    embedding(indices, weight).sum().backward()
    counts = torch.bincount(indices, minlength=8).float()
    torch.testing.assert_close(weight.grad, counts[:, None].expand(8, 19))
    assert_matches_torch(indices, weight)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.interpreter
def test_half_precision(dtype):
    torch.manual_seed(0)
    indices = torch.randint(0, 37, (3, 20))
    indices[0] = 2  # repeats, so the backward really sums
    assert_matches_torch(indices, torch.randn(37, 19).to(dtype), padding_idx=1)


@pytest.mark.interpreter
def test_gradcheck():
    torch.manual_seed(0)
    indices = torch.tensor([[0, 2, 2], [4, 1, 2]])
    weight = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert backend.use_triton(indices, weight)
    # No padding_idx: its zero gradient is a convention that finite differences cannot see.
    assert torch.autograd.gradcheck(lambda w: embedding(indices, w), (weight,))


@pytest.mark.interpreter
def test_force_backend():
    torch.manual_seed(0)
    indices, weight = torch.randint(0, 37, (4, 6)), torch.randn(37, 19, requires_grad=True)
    with backend.force_backend("torch"):
        assert not backend.use_triton(indices, weight)
        reference = embedding(indices, weight)
    with backend.force_backend("triton"):
        assert backend.use_triton(indices, weight)
        kernel = embedding(indices, weight)
    # The autograd context records which path ran.
    assert reference.grad_fn.used_triton is False
    assert kernel.grad_fn.used_triton is True
    assert torch.equal(kernel, reference)
    (g_ref,) = torch.autograd.grad(reference.sum(), weight)
    (g_kernel,) = torch.autograd.grad(kernel.sum(), weight)
    assert torch.equal(g_kernel, g_ref)


# ---- the reference and the input checks (no kernel runs) ---------------------------------


@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_reference_matches_torch(padding_idx):
    torch.manual_seed(0)
    indices = torch.tensor([[0, 2, 2], [4, 1, 4]])
    weight = torch.randn(5, 3, requires_grad=True)
    weight_ref = weight.detach().clone().requires_grad_()
    out = embedding_forward_reference(indices, weight)
    out_ref = F.embedding(indices, weight_ref, padding_idx=padding_idx)
    assert torch.equal(out, out_ref)
    grad_out = torch.randn_like(out)
    out_ref.backward(grad_out)
    pad = None if padding_idx is None else padding_idx % 5
    assert torch.equal(embedding_backward_reference(grad_out, indices, 5, pad), weight_ref.grad)


def test_float_indices_rejected():
    with pytest.raises(TypeError, match=r"indices must have dtype in \(int32, int64\), got float32"):
        embedding(torch.tensor([0.0, 1.0]), torch.randn(4, 3))


def test_1d_weight_rejected():
    with pytest.raises(ValueError, match=r"weight must have 2 dimensions, got shape \(4,\)"):
        embedding(torch.tensor([0, 1]), torch.randn(4))


@pytest.mark.parametrize("bad", [4, -1])
def test_out_of_range_index_rejected(bad):
    indices = torch.tensor([[0, 1], [2, bad]])
    with pytest.raises(IndexError, match=rf"\[0, 4\), got {bad} at position \(1, 1\)"):
        embedding(indices, torch.randn(4, 3))


@pytest.mark.parametrize("padding_idx", [4, -5])
def test_out_of_range_padding_idx_rejected(padding_idx):
    with pytest.raises(ValueError, match=rf"padding_idx must be in \[-4, 4\).*got {padding_idx}"):
        embedding(torch.tensor([0, 1]), torch.randn(4, 3), padding_idx=padding_idx)


@pytest.mark.gpu
def test_device_mismatch_rejected():
    with pytest.raises(ValueError, match="weight is on cpu but must be on cuda"):
        embedding(torch.tensor([0, 1], device="cuda"), torch.randn(4, 3))


# ---- CUDA: half precision, realistic sizes ------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "V, D, high",
    [
        (50257, 768, 50257),  # GPT-2's table, indices spread over the whole vocabulary
        (1000, 768, 8),  # duplicate-heavy: 8192 tokens land on 8 rows
        (30522, 1000, 30522),  # D not a multiple of the feature block
    ],
)
@pytest.mark.gpu
def test_cuda_matches_torch(V, D, high, dtype):
    torch.manual_seed(0)
    indices = torch.randint(0, high, (8, 1024), device="cuda")
    assert_matches_torch(indices, torch.randn(V, D, device="cuda").to(dtype), padding_idx=0)
