"""Row softmax as Triton kernels: ``y = softmax(x)`` over the last dimension.

Forward:  y_j = exp(x_j - m) / sum_k exp(x_k - m), with m = max_k x_k. Subtracting the
row maximum changes nothing mathematically (it cancels in the ratio) but keeps every
exp(.) <= 1, so nothing overflows.

Backward: the Jacobian of softmax is diag(y) - y y^T, so for an upstream gradient dy

    dx = y * (dy - sum_k dy_k y_k)

which needs only the saved output y, not x.

A row whose entries are all -inf (an attention row whose every key is masked) has no
probability distribution; instead of the NaN that ``torch.softmax`` returns there, this
file defines its output as all zeros (and its gradient as zero), the same convention as
:mod:`course_lib.kernels.flash_attention`, so the two attention paths of the BERT model
agree on fully padded rows.

Layout as in ``embedding.py``: kernels, launchers, the PyTorch reference of each pass,
one ``torch.autograd.Function`` that dispatches, and the public :func:`softmax`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .backend import FLOAT_DTYPES, check_tensor, use_triton

# One program owns one whole row, held in registers: rows up to 2^16 entries (far beyond
# BERT's 512 keys). Longer rows would need the online (blocked) softmax of flash_attention.py.
MAX_ROW = 1 << 16


# ---- kernels ----------------------------------------------------------------------------


@triton.jit
def _softmax_forward_kernel(x_ptr, y_ptr, N, BLOCK: tl.constexpr, FP64: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    # Lanes past the end of the row read -inf: exp(-inf) = 0 adds nothing to the sum.
    x = tl.load(x_ptr + row * N + cols, mask=cols < N, other=float("-inf"))
    x = x.to(tl.float64 if FP64 else tl.float32)  # half precision is summed in fp32
    m = tl.max(x, axis=0)
    m = tl.where(m == float("-inf"), 0.0, m)  # an all -inf row: exp(-inf - 0) = 0, not NaN
    e = tl.exp(x - m)
    s = tl.sum(e, axis=0)
    y = e / tl.where(s == 0.0, 1.0, s)  # the all -inf row gives zeros
    tl.store(y_ptr + row * N + cols, y, mask=cols < N)


@triton.jit
def _softmax_backward_kernel(dy_ptr, y_ptr, dx_ptr, N, BLOCK: tl.constexpr, FP64: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    dy = tl.load(dy_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float64 if FP64 else tl.float32)
    y = tl.load(y_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float64 if FP64 else tl.float32)
    dot = tl.sum(dy * y, axis=0)  # sum_k dy_k y_k: one number per row
    tl.store(dx_ptr + row * N + cols, y * (dy - dot), mask=mask)


# ---- launchers --------------------------------------------------------------------------


def softmax_forward_triton(x: torch.Tensor) -> torch.Tensor:
    N = x.shape[-1]
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    if x.numel() == 0:
        return y
    rows = x.contiguous().view(-1, N)  # (M, N)
    _softmax_forward_kernel[(rows.shape[0],)](
        rows, y, N, BLOCK=triton.next_power_of_2(N), FP64=x.dtype == torch.float64
    )
    return y


def softmax_backward_triton(dy: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    N = y.shape[-1]
    dx = torch.empty_like(y, memory_format=torch.contiguous_format)
    if y.numel() == 0:
        return dx
    dy_rows, y_rows = dy.contiguous().view(-1, N), y.contiguous().view(-1, N)  # (M, N) each
    _softmax_backward_kernel[(y_rows.shape[0],)](
        dy_rows, y_rows, dx, N, BLOCK=triton.next_power_of_2(N), FP64=y.dtype == torch.float64
    )
    return dx


# ---- reference --------------------------------------------------------------------------


def softmax_forward_reference(x: torch.Tensor) -> torch.Tensor:
    """``torch.softmax`` over the last dimension, with all -inf rows set to zeros (not NaN)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = torch.softmax(x.to(acc), dim=-1)
    empty = (x == float("-inf")).all(dim=-1, keepdim=True)  # (..., 1)
    return y.masked_fill(empty, 0.0).to(x.dtype)


def softmax_backward_reference(dy: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    acc = torch.float64 if y.dtype == torch.float64 else torch.float32
    dy32, y32 = dy.to(acc), y.to(acc)
    return (y32 * (dy32 - (dy32 * y32).sum(dim=-1, keepdim=True))).to(y.dtype)


# ---- autograd and dispatch --------------------------------------------------------------


class SoftmaxFunction(torch.autograd.Function):
    """Softmax for autograd; the backend is chosen once in forward and kept as ``used_triton``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.used_triton = use_triton(x, op="softmax")
        y = (softmax_forward_triton if ctx.used_triton else softmax_forward_reference)(x)
        ctx.save_for_backward(y)  # the backward needs y only
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: torch.Tensor):
        (y,) = ctx.saved_tensors
        return (softmax_backward_triton if ctx.used_triton else softmax_backward_reference)(dy, y)


def softmax(x: torch.Tensor) -> torch.Tensor:
    """``torch.softmax(x, dim=-1)``, except that a row of all -inf gives zeros instead of NaN."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    if x.dim() == 0:
        raise ValueError("x must have at least 1 dimension (softmax runs over the last one), got a scalar")
    if x.shape[-1] > MAX_ROW:
        raise ValueError(f"softmax rows may have at most {MAX_ROW} entries, got x of shape {tuple(x.shape)}")
    return SoftmaxFunction.apply(x)
