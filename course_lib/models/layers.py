"""The few pieces that several model files share, exactly: nothing here is specific to one
architecture, and each model file still holds its own layers under Hugging Face's names.

* :class:`LayerNorm`: ``nn.LayerNorm``'s parameters, computed by the fused kernel, which can
  add a residual first (post-LN models: BERT, RoBERTa, ALBERT, BART).
* :func:`activation`: the activation functions by their Hugging Face names (``gelu`` is the
  exact erf form; ``gelu_new`` the tanh approximation of GPT-2 and BERT's TF code).
* :func:`attend`: multi-head attention's core, after the projections: the FlashAttention
  kernel (key-padding mask, causal mask, additive bias), or, when the probabilities
  themselves are needed (to return or plot them, or to drop some out in training), the
  materialised softmax path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels.backend import use_triton
from ..kernels.bias_gelu import bias_gelu
from ..kernels.flash_attention import attention_scores, flash_attention
from ..kernels.layer_norm import layer_norm
from ..kernels.softmax import softmax

# HF's names for the GELU forms -> F.gelu's ``approximate``. "gelu" is the exact x * Phi(x)
# with the erf; the others are the tanh approximation
# 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (the whole bracket inside the tanh).
GELU_APPROXIMATE = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
ACTIVATIONS = (*GELU_APPROXIMATE, "relu")


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm's parameters (``weight``, ``bias``: HF's names) computed by the fused
    kernel, which can also add a residual first: forward(x, residual) = LN(x + residual)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps, residual=residual)


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"the activation must be one of {list(ACTIVATIONS)}, got {name!r}")
    return name


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function called ``name`` in Hugging Face configs."""
    check_activation(name)
    if name == "relu":
        return F.relu
    approximate = GELU_APPROXIMATE[name]
    return lambda x: F.gelu(x, approximate=approximate)


def linear_act(x: torch.Tensor, linear: nn.Linear, name: str) -> torch.Tensor:
    """act(x W^T + b): for the GELUs, where Triton runs, the matmul without its bias, then
    bias + GELU fused in one kernel (one pass over the (B, T, 4H) activations instead of
    two). Without Triton, what PyTorch does best: the bias inside the matmul (one addmm) and
    ATen's GELU, forward and backward (HF's path, so CPU training is not slower than HF's)."""
    check_activation(name)
    if name in GELU_APPROXIMATE and linear.bias is not None and use_triton(x, linear.weight, op="bias_gelu"):
        return bias_gelu(F.linear(x, linear.weight), linear.bias, GELU_APPROXIMATE[name])
    return activation(name)(linear(x))


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
    dropout: float = 0.0,
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(Q K^T * scale + bias, masked) V for q (B, nh, Tq, hs), k and v (B, nh, Tk, hs).

    Returns ``(y, probs)``: y (B, nh, Tq, hs), and the (B, nh, Tq, Tk) probabilities when
    ``need_weights`` (else None). ``dropout`` > 0 (training) drops probabilities, which
    needs them materialised; otherwise the (Tq, Tk) matrix is never stored. Masks follow
    :func:`course_lib.kernels.flash_attention.flash_attention`."""
    if not (need_weights or dropout > 0):
        return flash_attention(q, k, v, attention_mask, scale, causal=causal, bias=bias), None
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = attention_scores(q, k, attention_mask, bias, scale, causal).to(q.dtype)  # (B, nh, Tq, Tk)
    probs = softmax(scores)  # rows sum to 1 over the visible keys (all-zero rows where none is)
    return F.dropout(probs, dropout, training=dropout > 0) @ v, (probs if need_weights else None)


__all__ = ["ACTIVATIONS", "GELU_APPROXIMATE", "LayerNorm", "activation", "attend", "check_activation", "linear_act"]
