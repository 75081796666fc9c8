"""RMSNorm as Triton kernels: T5's "layer norm", forward and backward.

T5 (Raffel et al., 2020, section 2.1) normalises with a simplified LayerNorm: the
activations are only *rescaled*, with no mean subtracted and no additive bias. This is
RMSNorm (Zhang & Sennrich, 2019). For one row x of N features:

    ms = sum(x^2) / N                  (the mean square, accumulated in float32 as T5 does)
    rstd = 1 / sqrt(ms + eps),    xhat = x * rstd,    y = weight * xhat

LayerNorm's ``mean`` and ``bias`` are gone: one statistic per row instead of two, and one
reduction less in the backward. The forward saves rstd (M,) for the backward; with
g = dy * weight:

    dx      = rstd * (g - xhat * mean(g * xhat))       (per row)
    dweight = sum over rows of dy * xhat

(LayerNorm's backward has a third term, - mean(g), from the subtracted mean; RMSNorm's
has none.) Statistics are computed in float32 for fp16/bf16/fp32 inputs (float64 for
float64), whatever the input dtype: Hugging Face's ``T5LayerNorm`` computes the variance
with ``hidden_states.to(torch.float32)`` so that half-precision training cannot overflow
the sum of squares. As T5 does, xhat is rounded to the weight's dtype before the multiply.

Layout as in ``layer_norm.py``: kernels, launchers, PyTorch references, one autograd
Function that dispatches, the public :func:`rms_norm`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .backend import FLOAT_DTYPES, check_tensor, use_triton

# One program holds a whole row (d_model) in registers: 512 for t5-small, 1024 for t5-large.
MAX_N = 1 << 16
# The weight gradient is a sum over all rows: each of at most this many programs keeps a
# private partial sum of the rows it owns (deterministic, no atomics); torch adds them.
PARTIALS = 256


# ---- kernels ----------------------------------------------------------------------------


@triton.jit
def _rms_norm_forward_kernel(
    x_ptr, w_ptr, y_ptr, rstd_ptr,  # (M, N), (N,), (M, N), (M,)
    N, eps,
    FP64: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # 64-bit offsets: M * N may pass 2^31
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    x = tl.load(x_ptr + row * N + cols, mask=mask, other=0.0).to(ACC)  # padding lanes are 0: they add nothing
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0)
    xhat = (x * rstd).to(w.dtype)  # T5 rounds to the weight's dtype first (a no-op in fp32)
    tl.store(y_ptr + row * N + cols, xhat.to(ACC) * w.to(ACC), mask=mask)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def _rms_norm_backward_kernel(
    dy_ptr, x_ptr, w_ptr, rstd_ptr,  # (M, N), (M, N), (N,), (M,)
    dx_ptr, dw_ptr,  # (M, N), (PARTIALS, N)
    M, N,
    FP64: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(ACC)
    dw = tl.zeros((BLOCK,), dtype=ACC)
    # Program pid owns rows pid, pid + G, pid + 2G, ... (G programs in all).
    for row in tl.range(pid, M, tl.num_programs(0)):
        row = tl.cast(row, tl.int64)
        x = tl.load(x_ptr + row * N + cols, mask=mask, other=0.0).to(ACC)
        dy = tl.load(dy_ptr + row * N + cols, mask=mask, other=0.0).to(ACC)
        rstd = tl.load(rstd_ptr + row)
        xhat = x * rstd
        g = dy * w
        c = tl.sum(g * xhat, axis=0) / N  # mean(g * xhat)
        tl.store(dx_ptr + row * N + cols, (g - xhat * c) * rstd, mask=mask)
        dw += dy * xhat
    tl.store(dw_ptr + pid * N + cols, dw, mask=mask)


# ---- launchers --------------------------------------------------------------------------


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def rms_norm_forward_triton(x, weight, eps):
    """Returns y (x's shape and dtype) and rstd (M,), with M = rows of x."""
    N = x.shape[-1]
    x = x.contiguous()
    M = x.numel() // N
    y = torch.empty_like(x)
    rstd = torch.empty(M, dtype=_stats_dtype(x.dtype), device=x.device)
    if M:
        _rms_norm_forward_kernel[(M,)](
            x, weight.contiguous(), y, rstd, N, eps, FP64=x.dtype == torch.float64, BLOCK=triton.next_power_of_2(N)
        )
    return y, rstd


def rms_norm_backward_triton(dy, x, weight, rstd):
    """Returns dx and dweight."""
    N = x.shape[-1]
    M = x.numel() // N
    dx = torch.empty_like(x)
    G = max(1, min(M, PARTIALS))
    dw = torch.zeros(G, N, dtype=rstd.dtype, device=x.device)  # (G, N) partial sums
    if M:
        _rms_norm_backward_kernel[(G,)](
            dy.contiguous(), x.contiguous(), weight.contiguous(), rstd, dx, dw, M, N,
            FP64=x.dtype == torch.float64, BLOCK=triton.next_power_of_2(N),
        )
    return dx, dw.sum(0).to(weight.dtype)


# ---- reference --------------------------------------------------------------------------


def rms_norm_forward_reference(x, weight, eps):
    """Hugging Face's ``T5LayerNorm`` computation (fp32 statistics), returning rstd too."""
    acc = _stats_dtype(x.dtype)
    x32 = x.to(acc)
    rstd = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)  # (..., 1)
    xhat = (x32 * rstd).to(weight.dtype)  # as T5: rounded to the weight's dtype before the multiply
    return (xhat.to(acc) * weight.to(acc)).to(x.dtype), rstd.reshape(-1)


def rms_norm_backward_reference(dy, x, weight, rstd):
    acc, N = rstd.dtype, x.shape[-1]
    x32, dy32 = x.reshape(-1, N).to(acc), dy.reshape(-1, N).to(acc)  # (M, N)
    xhat = x32 * rstd[:, None]
    g = dy32 * weight.to(acc)
    dx = rstd[:, None] * (g - xhat * (g * xhat).mean(-1, keepdim=True))
    return dx.reshape(x.shape).to(x.dtype), (dy32 * xhat).sum(0).to(weight.dtype)


# ---- autograd and dispatch --------------------------------------------------------------


class RMSNormFunction(torch.autograd.Function):
    """y = weight * x / rms(x) for autograd; saves x, weight and rstd."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        ctx.used_triton = use_triton(x, weight, op="rms_norm")
        forward = rms_norm_forward_triton if ctx.used_triton else rms_norm_forward_reference
        y, rstd = forward(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        backward = rms_norm_backward_triton if ctx.used_triton else rms_norm_backward_reference
        dx, dweight = backward(dy, x, weight, rstd)
        return dx, dweight, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last dimension N (T5's LayerNorm:
    no mean subtracted, no bias). The mean square is computed in float32 (float64 for
    float64 x); y has x's dtype."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    if x.dim() == 0 or not 0 < x.shape[-1] <= MAX_N:
        raise ValueError(
            f"x's last dimension is normalised and must have 1 to {MAX_N} features, got shape {tuple(x.shape)}"
        )
    check_tensor("weight", weight, dim=1, dtypes=FLOAT_DTYPES, device=x.device)
    if weight.shape[0] != x.shape[-1]:
        raise ValueError(f"weight must have shape ({x.shape[-1]},) to match x {tuple(x.shape)}, got {tuple(weight.shape)}")
    if not eps >= 0:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    return RMSNormFunction.apply(x, weight, float(eps))


__all__ = ["RMSNormFunction", "rms_norm", "rms_norm_backward_reference", "rms_norm_forward_reference"]
