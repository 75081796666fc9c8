"""Fused bias + GELU as Triton kernels: ``y = gelu(x + bias)``.

In BERT's feed-forward block the first linear layer is followed by GELU. Written
naively that is three passes over a (B, T, 4H) tensor: the matmul writes x W^T, adding
the bias reads and writes it again, GELU reads and writes it a third time. Doing the
matmul without its bias and fusing "add bias, apply GELU" into one kernel saves two of
those memory round trips. The matmul itself stays with cuBLAS.

GELU(u) = u * Phi(u), Phi the standard normal CDF (Hendrycks & Gimpel, 2016):

* exact (``approximate="none"``, HF ``hidden_act="gelu"``):
  gelu(u) = 0.5 u (1 + erf(u / sqrt(2)))
  gelu'(u) = Phi(u) + u phi(u),  phi(u) = exp(-u^2 / 2) / sqrt(2 pi)
* tanh form (``approximate="tanh"``, HF ``"gelu_new"`` / ``"gelu_pytorch_tanh"``):
  gelu(u) = 0.5 u (1 + tanh(k (u + c u^3))),  k = sqrt(2 / pi), c = 0.044715
  (the tanh's argument is k*(u + c u^3): the whole bracket sits inside the tanh)
  gelu'(u) = 0.5 (1 + t) + 0.5 u (1 - t^2) k (1 + 3 c u^2),  t = tanh(k (u + c u^3))

The backward returns dx = dy * gelu'(x + bias) and dbias = dx summed over every row.

Layout as in ``embedding.py``: kernels, launchers, PyTorch references, one autograd
Function that dispatches, the public :func:`bias_gelu`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .backend import FLOAT_DTYPES, check_tensor, use_triton

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
COEFF = 0.044715
APPROXIMATIONS = ("none", "tanh")
# An elementwise op is limited by memory bandwidth; 1024 elements per program is enough
# to keep the loads wide without spilling registers.
BLOCK = 1024


# ---- kernels ----------------------------------------------------------------------------


@triton.jit
def _tanh(z):
    # Triton's interpreter has no tanh. With e = exp(-2|z|) in (0, 1] nothing can overflow:
    # tanh(z) = sign(z) (1 - e) / (1 + e).
    e = tl.exp(-2.0 * tl.abs(z))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(z < 0, -t, t)


@triton.jit
def _load_u(x_ptr, b_ptr, offsets, mask, N, FP64: tl.constexpr):
    # u = x + bias; offsets % N is the feature (column) index of each element of the flat (M, N) input.
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0)
    b = tl.load(b_ptr + offsets % N, mask=mask, other=0.0)
    # Compute in fp32 (fp64 stays fp64): bf16 arithmetic is too coarse, and tl.exp wants fp32.
    return x.to(tl.float64 if FP64 else tl.float32) + b.to(tl.float64 if FP64 else tl.float32)


@triton.jit
def _bias_gelu_forward_kernel(
    x_ptr, b_ptr, y_ptr, numel, N, TANH: tl.constexpr, FP64: tl.constexpr, BLOCK: tl.constexpr
):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    u = _load_u(x_ptr, b_ptr, offsets, mask, N, FP64)
    if TANH:
        y = 0.5 * u * (1.0 + _tanh(0.7978845608028654 * (u + 0.044715 * u * u * u)))  # sqrt(2/pi)
    else:
        y = 0.5 * u * (1.0 + tl.math.erf(u * 0.7071067811865476))  # 1/sqrt(2)
    tl.store(y_ptr + offsets, y, mask=mask)


@triton.jit
def _bias_gelu_backward_kernel(
    dy_ptr, x_ptr, b_ptr, dx_ptr, numel, N, TANH: tl.constexpr, FP64: tl.constexpr, BLOCK: tl.constexpr
):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    u = _load_u(x_ptr, b_ptr, offsets, mask, N, FP64)
    dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float64 if FP64 else tl.float32)
    if TANH:
        t = _tanh(0.7978845608028654 * (u + 0.044715 * u * u * u))
        dgelu = 0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * u * u)
    else:
        cdf = 0.5 * (1.0 + tl.math.erf(u * 0.7071067811865476))
        pdf = tl.exp(-0.5 * u * u) * 0.3989422804014327  # 1/sqrt(2 pi)
        dgelu = cdf + u * pdf
    tl.store(dx_ptr + offsets, dy * dgelu, mask=mask)


# ---- launchers --------------------------------------------------------------------------


def bias_gelu_forward_triton(x: torch.Tensor, bias: torch.Tensor, approximate: str) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    if x.numel():
        _bias_gelu_forward_kernel[(triton.cdiv(x.numel(), BLOCK),)](
            x, bias.contiguous(), y, x.numel(), x.shape[-1],
            TANH=approximate == "tanh", FP64=x.dtype == torch.float64, BLOCK=BLOCK,
        )
    return y


def bias_gelu_backward_triton(dy: torch.Tensor, x: torch.Tensor, bias: torch.Tensor, approximate: str):
    dy, x = dy.contiguous(), x.contiguous()
    dx = torch.empty_like(x)
    if x.numel():
        _bias_gelu_backward_kernel[(triton.cdiv(x.numel(), BLOCK),)](
            dy, x, bias.contiguous(), dx, x.numel(), x.shape[-1],
            TANH=approximate == "tanh", FP64=x.dtype == torch.float64, BLOCK=BLOCK,
        )
    return dx, _bias_grad(dx, bias)


def _bias_grad(dx: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    # The bias was broadcast over all rows, so its gradient is the column sum of dx. A
    # reduction over rows is what torch.sum already does at full bandwidth; summed in fp32.
    acc = torch.float64 if dx.dtype == torch.float64 else torch.float32
    return dx.reshape(-1, dx.shape[-1]).sum(dim=0, dtype=acc).to(bias.dtype)


# ---- reference --------------------------------------------------------------------------


def bias_gelu_forward_reference(x: torch.Tensor, bias: torch.Tensor, approximate: str) -> torch.Tensor:
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return F.gelu(x.to(acc) + bias.to(acc), approximate=approximate).to(x.dtype)


def gelu_grad_reference(u: torch.Tensor, approximate: str) -> torch.Tensor:
    """gelu'(u), written out (see the module docstring)."""
    if approximate == "tanh":
        t = torch.tanh(SQRT_2_OVER_PI * (u + COEFF * u**3))
        return 0.5 * (1 + t) + 0.5 * u * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * COEFF * u * u)
    cdf = 0.5 * (1 + torch.erf(u * INV_SQRT_2))
    return cdf + u * torch.exp(-0.5 * u * u) * INV_SQRT_2PI


def bias_gelu_backward_reference(dy: torch.Tensor, x: torch.Tensor, bias: torch.Tensor, approximate: str):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    dx = (dy.to(acc) * gelu_grad_reference(x.to(acc) + bias.to(acc), approximate)).to(x.dtype)
    return dx, _bias_grad(dx, bias)


# ---- autograd and dispatch --------------------------------------------------------------


class BiasGeluFunction(torch.autograd.Function):
    """gelu(x + bias) for autograd. Saves x and bias (not y): gelu' needs u = x + bias."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bias: torch.Tensor, approximate: str) -> torch.Tensor:
        ctx.used_triton = use_triton(x, bias, op="bias_gelu")
        ctx.approximate = approximate
        ctx.save_for_backward(x, bias)
        forward = bias_gelu_forward_triton if ctx.used_triton else bias_gelu_forward_reference
        return forward(x, bias, approximate)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: torch.Tensor):
        x, bias = ctx.saved_tensors
        backward = bias_gelu_backward_triton if ctx.used_triton else bias_gelu_backward_reference
        dx, dbias = backward(dy, x, bias, ctx.approximate)
        return dx, dbias, None


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``F.gelu(x + bias, approximate=approximate)`` in one pass: x (..., N), bias (N,)."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    check_tensor("bias", bias, dim=1, dtypes=FLOAT_DTYPES, device=x.device)
    if x.dim() == 0 or x.shape[-1] != bias.shape[0]:
        raise ValueError(f"bias must have x's last dimension as its size: x {tuple(x.shape)}, bias {tuple(bias.shape)}")
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"approximate must be one of {APPROXIMATIONS}, got {approximate!r}")
    return BiasGeluFunction.apply(x, bias, approximate)
