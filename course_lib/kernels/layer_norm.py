"""LayerNorm with a fused residual add as Triton kernels: ``y = LN(x + residual)``.

BERT is a post-LN Transformer: every sub-layer ends in ``LayerNorm(sublayer(h) + h)``.
Adding the residual inside the normalisation kernel saves writing the sum to memory
and reading it back. For one row h of N features (Ba, Kiros & Hinton, 2016):

    mean = sum(h) / N,    var = sum((h - mean)^2) / N    (the biased variance, as torch)
    rstd = 1 / sqrt(var + eps),    xhat = (h - mean) * rstd,    y = xhat * weight + bias

The forward saves h (only when there is a residual: otherwise h is x itself), mean and
rstd, so the backward never recomputes the statistics. With g = dy * weight:

    dh      = rstd * (g - mean(g) - xhat * mean(g * xhat))     (per row; d(x) = d(residual) = dh)
    dweight = sum over rows of dy * xhat,    dbias = sum over rows of dy

Layout as in ``embedding.py``: kernels, launchers, PyTorch references, one autograd
Function that dispatches, the public :func:`layer_norm`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .backend import FLOAT_DTYPES, check_tensor, use_triton

# One program holds a whole row (hidden size) in registers: 768 for BERT-base, 1024 for large.
MAX_N = 1 << 16
# The backward's weight/bias gradients are sums over all rows. Each of at most this many
# programs accumulates the rows it owns into a private partial sum (no atomics, so the
# result is deterministic), and torch adds the partials: a (PARTIALS, N) fp32 buffer.
PARTIALS = 256


# ---- kernels ----------------------------------------------------------------------------


@triton.jit
def _layer_norm_forward_kernel(
    x_ptr, r_ptr, w_ptr, b_ptr,  # (M, N), (M, N) or unused, (N,), (N,)
    y_ptr, h_ptr, mean_ptr, rstd_ptr,  # (M, N), (M, N) or unused, (M,), (M,)
    N, eps,
    HAS_RESIDUAL: tl.constexpr, FP64: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    h = tl.load(x_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float64 if FP64 else tl.float32)
    if HAS_RESIDUAL:
        h += tl.load(r_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float64 if FP64 else tl.float32)
        tl.store(h_ptr + row * N + cols, h, mask=mask)  # the backward normalises this sum again
    mean = tl.sum(h, axis=0) / N
    centred = tl.where(mask, h - mean, 0.0)  # padding lanes must not add (0 - mean)^2
    var = tl.sum(centred * centred, axis=0) / N
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float64 if FP64 else tl.float32)
    b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float64 if FP64 else tl.float32)
    tl.store(y_ptr + row * N + cols, centred * rstd * w + b, mask=mask)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def _layer_norm_backward_kernel(
    dy_ptr, h_ptr, w_ptr, mean_ptr, rstd_ptr,  # (M, N), (M, N), (N,), (M,), (M,)
    dh_ptr, dw_ptr, db_ptr,  # (M, N), (PARTIALS, N), (PARTIALS, N)
    M, N,
    FP64: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float64 if FP64 else tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float64 if FP64 else tl.float32)
    db = tl.zeros((BLOCK,), dtype=tl.float64 if FP64 else tl.float32)
    # Program pid owns rows pid, pid + G, pid + 2G, ... (G programs in all).
    for row in tl.range(pid, M, tl.num_programs(0)):
        row = tl.cast(row, tl.int64)  # 64-bit offsets: M * N may pass 2^31
        h = tl.load(h_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float64 if FP64 else tl.float32)
        dy = tl.load(dy_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float64 if FP64 else tl.float32)
        mean = tl.load(mean_ptr + row)
        rstd = tl.load(rstd_ptr + row)
        xhat = tl.where(mask, (h - mean) * rstd, 0.0)
        g = dy * w
        c_xhat = tl.sum(g * xhat, axis=0) / N  # mean(g * xhat)
        c_g = tl.sum(g, axis=0) / N  # mean(g)
        tl.store(dh_ptr + row * N + cols, (g - c_g - xhat * c_xhat) * rstd, mask=mask)
        dw += dy * xhat
        db += dy
    tl.store(dw_ptr + pid * N + cols, dw, mask=mask)
    tl.store(db_ptr + pid * N + cols, db, mask=mask)


# ---- launchers --------------------------------------------------------------------------


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def layer_norm_forward_triton(x, residual, weight, bias, eps):
    """Returns y, h (x + residual, or x itself), mean (M,), rstd (M,), with M = rows of x."""
    N = x.shape[-1]
    x = x.contiguous()
    M = x.numel() // N
    y = torch.empty_like(x)
    h = torch.empty_like(x) if residual is not None else x
    mean = torch.empty(M, dtype=_stats_dtype(x.dtype), device=x.device)
    rstd = torch.empty_like(mean)
    if M:
        r = residual.contiguous() if residual is not None else x  # unused when HAS_RESIDUAL is False
        _layer_norm_forward_kernel[(M,)](
            x, r, weight.contiguous(), bias.contiguous(), y, h, mean, rstd, N, eps,
            HAS_RESIDUAL=residual is not None, FP64=x.dtype == torch.float64, BLOCK=triton.next_power_of_2(N),
        )
    return y, h, mean, rstd


def layer_norm_backward_triton(dy, h, weight, mean, rstd):
    """Returns dh (also the residual's gradient), dweight, dbias."""
    N = h.shape[-1]
    M = h.numel() // N
    dh = torch.empty_like(h)
    G = max(1, min(M, PARTIALS))
    dw = torch.zeros(G, N, dtype=mean.dtype, device=h.device)  # (G, N) partial sums
    db = torch.zeros(G, N, dtype=mean.dtype, device=h.device)
    if M:
        _layer_norm_backward_kernel[(G,)](
            dy.contiguous(), h.contiguous(), weight.contiguous(), mean, rstd, dh, dw, db, M, N,
            FP64=h.dtype == torch.float64, BLOCK=triton.next_power_of_2(N),
        )
    return dh, dw.sum(0).to(weight.dtype), db.sum(0).to(weight.dtype)


# ---- reference --------------------------------------------------------------------------


def layer_norm_forward_reference(x, residual, weight, bias, eps):
    acc = _stats_dtype(x.dtype)
    h32 = x.to(acc) if residual is None else x.to(acc) + residual.to(acc)  # (..., N)
    h = x if residual is None else h32.to(x.dtype)  # saved for the backward, as the kernel does
    mean = h32.mean(dim=-1, keepdim=True)  # (..., 1)
    rstd = torch.rsqrt((h32 - mean).pow(2).mean(dim=-1, keepdim=True) + eps)  # (..., 1)
    y = (h32 - mean) * rstd * weight.to(acc) + bias.to(acc)
    return y.to(x.dtype), h, mean.reshape(-1), rstd.reshape(-1)


def layer_norm_backward_reference(dy, h, weight, mean, rstd):
    acc, N = mean.dtype, h.shape[-1]
    h32, dy32 = h.reshape(-1, N).to(acc), dy.reshape(-1, N).to(acc)  # (M, N)
    xhat = (h32 - mean[:, None]) * rstd[:, None]  # (M, N)
    g = dy32 * weight.to(acc)
    dh = rstd[:, None] * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True))
    dw, db = (dy32 * xhat).sum(0), dy32.sum(0)
    return dh.reshape(h.shape).to(h.dtype), dw.to(weight.dtype), db.to(weight.dtype)


# ---- autograd and dispatch --------------------------------------------------------------


class LayerNormFunction(torch.autograd.Function):
    """y = LN(x + residual) for autograd; saves h = x + residual, mean and rstd."""

    @staticmethod
    def forward(ctx, x, residual, weight, bias, eps):
        tensors = (x, weight, bias) if residual is None else (x, residual, weight, bias)
        ctx.used_triton = use_triton(*tensors, op="layer_norm")
        # Under autocast a residual may be float32 while x is half: each gets its own dtype back.
        ctx.residual_dtype = residual.dtype if residual is not None else None
        forward = layer_norm_forward_triton if ctx.used_triton else layer_norm_forward_reference
        y, h, mean, rstd = forward(x, residual, weight, bias, eps)
        ctx.save_for_backward(h, weight, mean, rstd)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        h, weight, mean, rstd = ctx.saved_tensors
        backward = layer_norm_backward_triton if ctx.used_triton else layer_norm_backward_reference
        dh, dweight, dbias = backward(dy, h, weight, mean, rstd)
        # x and residual enter only through their sum, so both receive dh.
        return dh, (dh.to(ctx.residual_dtype) if ctx.residual_dtype else None), dweight, dbias, None


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-5,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.layer_norm(x + residual, (N,), weight, bias, eps)`` over the last dimension N,
    in one pass (``residual=None``: plain LayerNorm of x). The sum and the statistics are
    computed in float32 (float64 for float64 x); y has x's dtype."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    if x.dim() == 0 or not 0 < x.shape[-1] <= MAX_N:
        raise ValueError(
            f"x's last dimension is normalised and must have 1 to {MAX_N} features, got shape {tuple(x.shape)}"
        )
    N = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        check_tensor(name, p, dim=1, dtypes=FLOAT_DTYPES, device=x.device)
        if p.shape[0] != N:
            raise ValueError(f"{name} must have shape ({N},) to match x {tuple(x.shape)}, got {tuple(p.shape)}")
    if residual is not None:
        check_tensor("residual", residual, dtypes=FLOAT_DTYPES, device=x.device)
        if residual.shape != x.shape:
            raise ValueError(f"residual must have x's shape {tuple(x.shape)}, got {tuple(residual.shape)}")
    tensors = (x, weight, bias) if residual is None else (x, residual, weight, bias)
    if (N > 1 and x.dtype in (torch.float32, torch.float64) and all(t.dtype == x.dtype for t in tensors)
            and not use_triton(*tensors, op="layer_norm")):
        # No Triton here (a CPU without the interpreter, or the torch backend forced), full
        # precision: PyTorch's own LayerNorm, one ATen kernel forward and one backward (what
        # HF's models call), instead of the ~20 small operations of the reference above; the
        # reference stays the definition the kernel is tested against, and serves half dtypes
        # and N = 1 (where y = bias exactly, but ATen's CPU mean leaves a rounding error that
        # 1/sqrt(eps) amplifies to ~3e-5 in float32).
        return torch.nn.functional.layer_norm(x if residual is None else x + residual, (N,), weight, bias, eps)
    return LayerNormFunction.apply(x, residual, weight, bias, float(eps))
