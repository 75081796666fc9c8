"""Embedding lookup as Triton kernels: ``out[n] = weight[indices[n]]``.

The forward pass is a gather: every output row is a copy of one row of ``weight``.
The backward pass is the matching scatter: every row of ``grad_out`` is added into
the row of ``grad_weight`` it was read from, so a token that occurs k times in the
batch receives the sum of its k gradients.

This file follows Liger-Kernel's ``ops/`` layout: the kernels, their launchers, a
plain-PyTorch reference of each pass and one ``torch.autograd.Function`` that
dispatches between them. ``embedding`` is the
public entry point; it matches ``torch.nn.functional.embedding(indices, weight,
padding_idx=padding_idx)`` in values and in the gradient with respect to ``weight``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .backend import FLOAT_DTYPES, INDEX_DTYPES, check_tensor, use_triton

# Fixed tile sizes instead of triton.autotune, which needs a GPU to run its configs.
# A tile of 16 token positions x up to 256 features keeps ~4K elements per program:
# enough work to hide memory latency, few enough registers to keep many programs resident.
BLOCK_N = 16
MAX_BLOCK_D = 256


def _block_d(D: int) -> int:
    return min(triton.next_power_of_2(D), MAX_BLOCK_D)


# ---- kernels ----------------------------------------------------------------------------


@triton.jit
def _embedding_forward_kernel(
    indices_ptr,  # (N,)   int32 or int64
    weight_ptr,  # (V, D)
    out_ptr,  # (N, D)
    N,
    D,
    stride_row,  # weight.stride(0)
    stride_col,  # weight.stride(1): 1 for a dense table, and Triton specialises on that
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One program copies a BLOCK_N x BLOCK_D tile: BLOCK_N token positions, BLOCK_D features.
    positions = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    features = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    # (BLOCK_N, BLOCK_D): the edge tiles hang over N and D, which need not be powers of 2.
    mask = (positions < N)[:, None] & (features < D)[None, :]

    # int64 offsets: row * stride overflows int32 once a table or batch passes 2^31 elements.
    rows = tl.load(indices_ptr + positions, mask=positions < N, other=0).to(tl.int64)  # (BLOCK_N,)
    values = tl.load(weight_ptr + rows[:, None] * stride_row + features[None, :] * stride_col, mask=mask)
    # A pure copy: no arithmetic, so bf16 and fp16 need no conversion to fp32.
    tl.store(out_ptr + positions.to(tl.int64)[:, None] * D + features[None, :], values, mask=mask)


@triton.jit
def _embedding_backward_kernel(
    grad_out_ptr,  # (N, D)
    indices_ptr,  # (N,)
    grad_weight_ptr,  # (V, D)  fp32 or fp64 accumulator, zero-filled
    N,
    D,
    padding_idx,  # -1 when there is none: no index in [0, V) equals it
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    positions = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    features = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    rows = tl.load(indices_ptr + positions, mask=positions < N, other=0).to(tl.int64)  # (BLOCK_N,)
    # The padding row gets no gradient: its positions simply write nothing.
    keep = (positions < N) & (rows != padding_idx)  # (BLOCK_N,)
    mask = keep[:, None] & (features < D)[None, :]  # (BLOCK_N, BLOCK_D)

    grad_offsets = positions.to(tl.int64)[:, None] * D + features[None, :]  # (BLOCK_N, BLOCK_D)
    grad = tl.load(grad_out_ptr + grad_offsets, mask=mask, other=0.0)
    # Convert right after loading: the sum is kept in the accumulator's precision.
    grad = grad.to(grad_weight_ptr.dtype.element_ty)
    # Many positions may hold the same index, in this tile or in others running at the same
    # time, so a plain store would lose updates. The atomic add makes each one count, but in
    # whatever order the hardware serves them; float addition is not associative, so the last
    # bits of an fp32 sum can change from run to run. The difference is a rounding error of
    # the same size as any other summation order's, far below the noise of SGD; use the
    # reference backend (force_backend("torch")) where bitwise reproducibility matters.
    tl.atomic_add(grad_weight_ptr + rows[:, None] * D + features[None, :], grad, mask=mask)


# ---- launchers --------------------------------------------------------------------------


def embedding_forward_triton(indices: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Gather rows of ``weight`` (V, D) at ``indices`` (any shape): returns ``indices.shape + (D,)``."""
    D = weight.shape[1]
    flat = indices.contiguous().view(-1)  # (N,): the kernel sees a dense, flat list of positions
    N = flat.numel()
    out = torch.empty(N, D, dtype=weight.dtype, device=weight.device)  # (N, D)
    if N > 0 and D > 0:  # an empty grid is not a valid launch
        grid = (triton.cdiv(N, BLOCK_N), triton.cdiv(D, _block_d(D)))
        _embedding_forward_kernel[grid](
            flat, weight, out, N, D, *weight.stride(), BLOCK_N=BLOCK_N, BLOCK_D=_block_d(D)
        )
    return out.reshape(*indices.shape, D)


def embedding_backward_triton(
    grad_out: torch.Tensor, indices: torch.Tensor, num_embeddings: int, padding_idx: int | None
) -> torch.Tensor:
    """Scatter-add ``grad_out`` (``indices.shape + (D,)``) into a (num_embeddings, D) gradient.

    ``padding_idx`` must already be normalised to [0, num_embeddings) or be None."""
    D = grad_out.shape[-1]
    flat = indices.contiguous().view(-1)  # (N,)
    N = flat.numel()
    # Half-precision sums of many repeated tokens would lose bits at every add; fp64 stays fp64.
    acc_dtype = torch.float64 if grad_out.dtype == torch.float64 else torch.float32
    grad_weight = torch.zeros(num_embeddings, D, dtype=acc_dtype, device=grad_out.device)  # (V, D)
    if N > 0 and D > 0:
        grad_out = grad_out.reshape(N, D).contiguous()  # (N, D); autograd may hand us a strided view
        grid = (triton.cdiv(N, BLOCK_N), triton.cdiv(D, _block_d(D)))
        _embedding_backward_kernel[grid](
            grad_out,
            flat,
            grad_weight,
            N,
            D,
            -1 if padding_idx is None else padding_idx,
            BLOCK_N=BLOCK_N,
            BLOCK_D=_block_d(D),
        )
    return grad_weight.to(grad_out.dtype)


# ---- input checks -----------------------------------------------------------------------


def _check_inputs(indices: torch.Tensor, weight: torch.Tensor, padding_idx: int | None) -> int | None:
    """Fail with a readable message before any kernel runs; return padding_idx in [0, V) or None.

    A bad index inside a kernel would read or write out of bounds silently (or, on CUDA,
    end in a device-side assert that names nothing), so the range is checked here."""
    check_tensor("indices", indices, dtypes=INDEX_DTYPES)
    check_tensor("weight", weight, dim=2, dtypes=FLOAT_DTYPES, device=indices.device)
    V = weight.shape[0]
    if indices.numel() > 0:
        # One reduction and one host sync; the search for the culprit runs only on failure.
        low, high = (int(x) for x in torch.aminmax(indices))
        if low < 0 or high >= V:
            position = tuple(((indices < 0) | (indices >= V)).nonzero()[0].tolist())
            raise IndexError(
                f"indices must be in [0, num_embeddings) = [0, {V}), "
                f"got {int(indices[position])} at position {position}"
            )
    if padding_idx is None:
        return None
    if not -V <= padding_idx < V:
        raise ValueError(f"padding_idx must be in [-{V}, {V}) for a weight with {V} rows, got {padding_idx}")
    return padding_idx % V  # torch's convention: -1 is the last row


# ---- reference --------------------------------------------------------------------------


def embedding_forward_reference(indices: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The gather in plain PyTorch: ``indices.shape + (D,)``."""
    return weight.index_select(0, indices.reshape(-1)).reshape(*indices.shape, weight.shape[1])


def embedding_backward_reference(
    grad_out: torch.Tensor, indices: torch.Tensor, num_embeddings: int, padding_idx: int | None
) -> torch.Tensor:
    """The scatter-add in plain PyTorch: ``index_add_`` sums the rows of repeated indices."""
    D = grad_out.shape[-1]
    flat, grad = indices.reshape(-1), grad_out.reshape(-1, D)  # (N,), (N, D)
    if padding_idx is not None:
        keep = flat != padding_idx  # the padding row gets no gradient
        flat, grad = flat[keep], grad[keep]
    grad_weight = torch.zeros(num_embeddings, D, dtype=grad_out.dtype, device=grad_out.device)  # (V, D)
    return grad_weight.index_add_(0, flat, grad)


# ---- autograd and dispatch --------------------------------------------------------------


class EmbeddingFunction(torch.autograd.Function):
    """The lookup for autograd. Forward and backward each run as Triton kernels or as the
    PyTorch reference, as :func:`course_lib.kernels.backend.use_triton` decides for the
    inputs (the choice is kept on the context as ``used_triton``). Inputs must already be
    checked and ``padding_idx`` normalised."""

    @staticmethod
    def forward(ctx, indices: torch.Tensor, weight: torch.Tensor, padding_idx: int | None) -> torch.Tensor:
        ctx.used_triton = use_triton(indices, weight, op="embedding")
        ctx.save_for_backward(indices)
        ctx.num_embeddings, ctx.padding_idx = weight.shape[0], padding_idx
        forward = embedding_forward_triton if ctx.used_triton else embedding_forward_reference
        return forward(indices, weight)

    @staticmethod
    @torch.autograd.function.once_differentiable  # the kernels have no backward of their own
    def backward(ctx, grad_out: torch.Tensor):
        (indices,) = ctx.saved_tensors
        backward = embedding_backward_triton if ctx.used_triton else embedding_backward_reference
        grad_weight = backward(grad_out, indices, ctx.num_embeddings, ctx.padding_idx)
        return None, grad_weight, None  # indices and padding_idx take no gradient


def embedding(indices: torch.Tensor, weight: torch.Tensor, padding_idx: int | None = None) -> torch.Tensor:
    """``torch.nn.functional.embedding(indices, weight, padding_idx)``: same values, same
    gradient with respect to ``weight``, with clear errors for bad input."""
    padding_idx = _check_inputs(indices, weight, padding_idx)
    return EmbeddingFunction.apply(indices, weight, padding_idx)
