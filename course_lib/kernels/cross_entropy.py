"""Fused linear + cross-entropy: the language-model loss without the (N, V) logits.

A language model's last step is a matmul to the vocabulary and a cross-entropy,

    z = x W^T (+ b),   x: (N, H) hidden states (N = B*T tokens),  W: (V, H),
    loss_n = logsumexp(z_n) - z_n[y_n],         loss = mean over the non-ignored n.

Written plainly, z is an (N, V) matrix: for GPT-2 (V = 50257) and a batch of 8 x 1024
tokens that is 1.6 GB in fp32, and autograd keeps it, its softmax and its gradient: the
largest tensors of the whole training step by far. But the loss needs only one number per
row (its log-sum-exp), and the gradient of the loss with respect to z is known in closed
form as soon as the forward has seen the row:

    dloss/dz_n = (softmax(z_n) - onehot(y_n)) / s,     s = #non-ignored rows (mean)  or 1 (sum)

so dx = dz W and dW = dz^T x can be accumulated at once, chunk by chunk, and dz thrown away.
Liger-Kernel's ``FusedLinearCrossEntropy`` (Hsu et al., 2024) does exactly this, and so does
this file:

1. **Chunked over the tokens.** Rows are processed ``chunk`` at a time; only a (chunk, V)
   block of logits ever exists. The default chunk (Liger's rule) makes that block about as
   large as x itself: chunk = next_pow2(ceil(N / ceil(V / H))).
2. **Chunked over the vocabulary, inside the kernel.** One program per row walks its V
   logits in blocks of ``BLOCK_V`` with an *online* log-sum-exp (running maximum m and sum
   d = sum exp(z - m), rescaled by exp(m - m') when the maximum grows: the same trick as
   FlashAttention's softmax), then walks them again writing the gradient (softmax - onehot)
   * s *in place* over the logits, so no second (chunk, V) buffer is allocated.
3. **Gradients in the forward.** The loss is a scalar, so the backward only multiplies the
   saved dx, dW (and db) by the incoming gradient (1.0 for ``loss.backward()``).

The matmuls are torch's (cuBLAS / the CPU's BLAS); the kernel is the softmax-and-gradient
step in between. Layout as in ``embedding.py``: kernel, launcher, PyTorch reference of that
step, the chunk loop shared by both, one autograd Function, the public
:func:`linear_cross_entropy`; and :func:`linear_cross_entropy_reference`, the unfused
computation the tests and the benchmark compare with.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .backend import FLOAT_DTYPES, INDEX_DTYPES, check_tensor, use_triton

# A program walks its row in blocks of at most this many logits (Liger's MAX_FUSED_SIZE);
# read at call time, so tests can shrink it to exercise many blocks on small vocabularies.
MAX_BLOCK_V = 32768
# A block of 32K fp32 logits is 128 KB of registers: spread over 32 warps (1024 threads), as
# Liger does, each thread holds 32 of them.
NUM_WARPS = 32


def _block_v(V: int) -> int:
    return min(MAX_BLOCK_V, triton.next_power_of_2(V))


def default_chunk_size(N: int, H: int, V: int) -> int:
    """Liger's rule: a (chunk, V) block of logits about the size of the (N, H) input."""
    return max(1, triton.next_power_of_2(math.ceil(N / math.ceil(V / H))))


# ---- kernel -----------------------------------------------------------------------------


@triton.jit
def _cross_entropy_kernel(
    logits_ptr,  # (n, V) one chunk's logits; overwritten with dloss/dlogits
    target_ptr,  # (n,) int32/int64
    loss_ptr,  # (n,) fp32 (fp64 for fp64 logits): the unscaled per-row loss, 0 for ignored rows
    stride_row,
    V,
    ignore_index,
    divisor,  # the gradient's 1/s: the number of non-ignored rows for the mean, 1 for the sum
    FP64: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    target = tl.load(target_ptr + row).to(tl.int64)
    valid = target != ignore_index
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    # Pass 1: the online log-sum-exp over V in blocks of BLOCK_V.
    m = tl.full((), float("-inf"), ACC)  # running maximum
    d = tl.zeros((), ACC)  # running sum of exp(z - m)
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        z = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(ACC)
        m_new = tl.maximum(m, tl.max(z, axis=0))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m = m_new
    lse = m + tl.log(d)
    z_target = tl.load(base + tl.where(valid, target, 0)).to(ACC)  # an ignored row reads column 0, unused
    tl.store(loss_ptr + row, tl.where(valid, lse - z_target, 0.0))
    # Pass 2: dloss/dz = (softmax(z) - onehot(target)) / divisor, written over the logits.
    row_scale = tl.where(valid, 1.0, 0.0).to(ACC) / divisor  # ignored rows get a zero gradient
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        z = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(ACC)
        g = tl.exp(z - lse)
        g = tl.where(cols == target, g - 1.0, g) * row_scale
        tl.store(base + cols, g.to(logits_ptr.dtype.element_ty), mask=cols < V)


# ---- launcher ---------------------------------------------------------------------------


def cross_entropy_step_triton(logits: torch.Tensor, target: torch.Tensor, divisor: int, ignore_index: int):
    """Per-row losses of a (n, V) chunk; the chunk is overwritten with its gradient divided
    by ``divisor`` (an int, so that fp64 gradients are exact: Triton passes floats as fp32)."""
    n, V = logits.shape
    loss = torch.empty(n, dtype=_acc_dtype(logits.dtype), device=logits.device)
    if n == 0:
        return loss
    _cross_entropy_kernel[(n,)](
        logits, target, loss, logits.stride(0), V, ignore_index, divisor,
        FP64=logits.dtype == torch.float64, BLOCK_V=_block_v(V), num_warps=NUM_WARPS,
    )  # fmt: skip
    return loss


# ---- reference of the same step ---------------------------------------------------------


def cross_entropy_step_reference(logits: torch.Tensor, target: torch.Tensor, divisor: int, ignore_index: int):
    """The kernel's step in PyTorch: per-row losses, and the gradient written over ``logits``."""
    z = logits.to(_acc_dtype(logits.dtype))
    valid = target != ignore_index  # (n,)
    safe = torch.where(valid, target, 0).long()[:, None]  # (n, 1)
    lse = torch.logsumexp(z, dim=-1)  # (n,)
    loss = torch.where(valid, lse - z.gather(1, safe)[:, 0], 0.0)
    g = torch.exp(z - lse[:, None])  # softmax, (n, V)
    g.scatter_add_(1, safe, torch.full_like(safe, -1, dtype=g.dtype))  # - onehot
    logits.copy_(g * (valid.to(g.dtype) / divisor)[:, None])
    return loss


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- the chunk loop ---------------------------------------------------------------------


def linear_cross_entropy_forward(x, weight, target, bias, ignore_index, reduction, chunk_size, need_grad, used_triton):
    """Loss, and (when ``need_grad``) dx, dW, db, never holding more than one chunk of logits."""
    N, H = x.shape
    V = weight.shape[0]
    n_valid = int((target != ignore_index).sum())
    divisor = max(n_valid, 1) if reduction == "mean" else 1  # the gradient's scale is 1 / divisor
    chunk = chunk_size or default_chunk_size(N, H, V)
    acc = _acc_dtype(x.dtype)
    step = cross_entropy_step_triton if used_triton else cross_entropy_step_reference
    grad_x = torch.empty_like(x) if need_grad else None
    # dW sums over every chunk: accumulated in fp32 for half-precision weights (as the matmuls' accumulators).
    grad_w = torch.zeros(V, H, dtype=acc, device=x.device) if need_grad else None
    grad_b = torch.zeros(V, dtype=acc, device=x.device) if need_grad and bias is not None else None
    total = torch.zeros((), dtype=acc, device=x.device)
    for start in range(0, N, chunk):
        xc, tc = x[start : start + chunk], target[start : start + chunk]  # (n, H), (n,)
        logits = xc @ weight.t()  # (n, V): the only block of logits there is
        if bias is not None:
            logits += bias
        total += step(logits, tc, divisor, ignore_index).sum()  # logits now hold dloss/dlogits
        if need_grad:
            grad_x[start : start + chunk] = logits @ weight  # (n, V) @ (V, H)
            grad_w.addmm_(logits.t().to(acc), xc.to(acc))  # (V, n) @ (n, H)
            if grad_b is not None:
                grad_b += logits.sum(0, dtype=acc)
    if reduction == "mean":
        loss = total / n_valid if n_valid else torch.full((), float("nan"), dtype=acc, device=x.device)
    else:
        loss = total
    grads = (grad_x, grad_w.to(weight.dtype), grad_b.to(bias.dtype) if grad_b is not None else None) if need_grad else None
    return loss, grads


class LinearCrossEntropyFunction(torch.autograd.Function):
    """The loss for autograd; its gradients are computed in the forward and only scaled here."""

    @staticmethod
    def forward(ctx, x, weight, target, bias, ignore_index, reduction, chunk_size, need_grad):
        tensors = (x, weight, target) if bias is None else (x, weight, target, bias)
        used_triton = use_triton(*tensors, op="linear_cross_entropy")
        loss, grads = linear_cross_entropy_forward(x, weight, target, bias, ignore_index, reduction, chunk_size,
                                                   need_grad, used_triton)
        if grads is not None:
            ctx.save_for_backward(*(g for g in grads if g is not None))
        ctx.has_bias = bias is not None
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        grads = list(ctx.saved_tensors)
        if not grads:
            raise RuntimeError("linear_cross_entropy was called without gradients (need_grad was False)")
        if not torch.equal(grad_loss, torch.ones_like(grad_loss)):  # loss.backward() passes 1: nothing to do
            grads = [g * grad_loss.to(g.dtype) for g in grads]
        grad_x, grad_w = grads[0], grads[1]
        grad_b = grads[2] if ctx.has_bias else None
        return grad_x, grad_w, None, grad_b, None, None, None, None


def linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``F.cross_entropy(x @ weight.T + bias, target, ignore_index=..., reduction=...)``
    without ever storing the (N, V) logits: x (N, H), weight (V, H), target (N,), bias (V,).

    ``reduction``: "mean" (over the non-ignored rows; NaN when every row is ignored, as
    torch) or "sum". The loss is computed in fp32 (fp64 for fp64 inputs). ``chunk_size``:
    rows per chunk (default: :func:`default_chunk_size`)."""
    check_tensor("x", x, dim=2, dtypes=FLOAT_DTYPES)
    check_tensor("weight", weight, dim=2, dtypes=(x.dtype,), device=x.device)
    check_tensor("target", target, dim=1, dtypes=INDEX_DTYPES, device=x.device)
    N, H = x.shape
    V = weight.shape[0]
    if weight.shape[1] != H:
        raise ValueError(f"weight must be (V, H) with x's H = {H}: x {tuple(x.shape)}, weight {tuple(weight.shape)}")
    if V == 0:
        raise ValueError(f"weight must have at least one row (the vocabulary), got {tuple(weight.shape)}")
    if target.shape[0] != N:
        raise ValueError(f"target must have one entry per row of x ({N}), got {tuple(target.shape)}")
    if bias is not None:
        check_tensor("bias", bias, dim=1, dtypes=(x.dtype,), device=x.device)
        if bias.shape[0] != V:
            raise ValueError(f"bias must have shape ({V},), got {tuple(bias.shape)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    bad = (target != ignore_index) & ((target < 0) | (target >= V))
    if bad.any():
        raise ValueError(f"target contains {int(target[bad][0])}, outside [0, V = {V}) and not ignore_index = {ignore_index}")
    x, weight = x.contiguous(), weight.contiguous()
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    return LinearCrossEntropyFunction.apply(x, weight, target.contiguous(), bias, int(ignore_index), reduction,
                                            chunk_size, need_grad)


def linear_cross_entropy_reference(x, weight, target, bias=None, *, ignore_index=-100, reduction="mean"):
    """The unfused computation: all (N, V) logits, then ``F.cross_entropy`` in fp32."""
    logits = F.linear(x, weight, bias)  # (N, V)
    return F.cross_entropy(logits.float() if x.dtype != torch.float64 else logits, target,
                           ignore_index=ignore_index, reduction=reduction)


__all__ = ["default_chunk_size", "linear_cross_entropy", "linear_cross_entropy_reference"]
