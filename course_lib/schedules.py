"""Chapter 3: learning-rate schedules and layer-wise learning rates.

A schedule multiplies each parameter group's base learning rate by a factor that
depends on the step t (counted from 0, one ``scheduler.step()`` per optimizer step).
Each factor is a plain function of t, so the book can plot it; the public
constructors wrap it in ``torch.optim.lr_scheduler.LambdaLR``, which handles the
bookkeeping (``initial_lr`` per group, ``state_dict``, ``get_last_lr``).

* ``linear_warmup_linear_decay``: BERT (Devlin et al. 2019) as Hugging Face writes it.
* ``linear_warmup_cosine_decay``: GPT-2/3 and nanoGPT.
* ``slanted_triangular``: ULMFiT (Howard & Ruder 2018, eq. 3).
* ``inverse_sqrt_warmup``: the Transformer (Vaswani et al. 2017, eq. 3), where warm-up for
  Transformers began: linear up to the peak, then 1/√t.
* ``layerwise_lr_groups``: discriminative fine-tuning (ULMFiT) / layer-wise LR decay (BERT).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR


def _check_steps(warmup_steps: int, total_steps: int) -> None:
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps] = [0, {total_steps}], got {warmup_steps}")


# ---- the factors: multiplier of the base learning rate at step t --------------------------


def linear_warmup_linear_decay_factor(t: int, warmup_steps: int, total_steps: int) -> float:
    """0 → 1 linearly over the warm-up, then 1 → 0 linearly until ``total_steps``; 0 after.

    Hugging Face's ``get_linear_schedule_with_warmup``. Google's original BERT code
    decays over the *whole* run, 1 - t/T, and uses the warm-up value while t < warmup,
    so its rate drops from 1 to 1 - warmup/T when warm-up ends; this form is continuous."""
    if t < warmup_steps:
        return t / warmup_steps
    return max(0.0, (total_steps - t) / max(1, total_steps - warmup_steps))


def linear_warmup_cosine_decay_factor(t: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """0 → 1 linearly over the warm-up, then half a cosine from 1 down to ``min_lr_ratio``
    at ``total_steps``, and ``min_lr_ratio`` after. GPT (Radford et al. 2018) anneals to 0;
    GPT-3 (Brown et al. 2020) and nanoGPT stop at 10% of the peak (min_lr_ratio=0.1).
    ``total_steps`` is where the decay ends, not necessarily the end of the run: GPT-3 decays
    over 260B tokens and then trains on at 10% to 300B (Brown et al. 2020, Appendix B)."""
    if t < warmup_steps:
        return t / warmup_steps
    progress = min(1.0, (t - warmup_steps) / max(1, total_steps - warmup_steps))  # 0 → 1
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def slanted_triangular_factor(t: int, total_steps: int, cut_frac: float = 0.1, ratio: float = 32) -> float:
    """ULMFiT's slanted triangular rate (Howard & Ruder 2018, eq. 3), as a fraction of η_max:

        cut = ⌊T · cut_frac⌋
        p   = t / cut                                   if t < cut
              1 - (t - cut) / (cut · (1/cut_frac - 1))  otherwise
        η_t = η_max · (1 + p · (ratio - 1)) / ratio

    A short linear climb from η_max/ratio to η_max at t = cut, then a long linear fall
    back to η_max/ratio at t ≈ T. Past the end p would turn negative; it is held at 0."""
    cut = math.floor(total_steps * cut_frac)
    if t < cut:
        p = t / cut
    else:
        p = max(0.0, 1 - (t - cut) / (cut * (1 / cut_frac - 1)))
    return (1 + p * (ratio - 1)) / ratio


def inverse_sqrt_warmup_factor(t: int, warmup_steps: int) -> float:
    """The Transformer's schedule (Vaswani et al. 2017, eq. 3) as a fraction of its peak:

        f(t) = min(t / W, √(W / t))      (0 at t = 0, 1 at t = W)

    The paper's rate is d_model^-0.5 · min(s^-0.5, s · W^-1.5) at step s = 1, 2, ...; it is
    peak · f(s) with peak = d_model^-0.5 · W^-0.5 (7.0e-4 for d_model = 512, W = 4000).
    A linear climb to the peak, then a decay like 1/√t that never reaches zero, so the
    schedule needs no total number of steps."""
    if t < warmup_steps:
        return t / warmup_steps
    return math.sqrt(warmup_steps / t)


# ---- schedulers -----------------------------------------------------------------------------


def linear_warmup_linear_decay(optimizer, warmup_steps: int, total_steps: int, last_epoch: int = -1) -> LambdaLR:
    """BERT's schedule: see :func:`linear_warmup_linear_decay_factor`."""
    _check_steps(warmup_steps, total_steps)
    factor = functools.partial(linear_warmup_linear_decay_factor, warmup_steps=warmup_steps, total_steps=total_steps)
    return LambdaLR(optimizer, factor, last_epoch)


def linear_warmup_cosine_decay(
    optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0, last_epoch: int = -1
) -> LambdaLR:
    """GPT's schedule: see :func:`linear_warmup_cosine_decay_factor`."""
    _check_steps(warmup_steps, total_steps)
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    factor = functools.partial(
        linear_warmup_cosine_decay_factor, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio
    )
    return LambdaLR(optimizer, factor, last_epoch)


def slanted_triangular(
    optimizer, total_steps: int, cut_frac: float = 0.1, ratio: float = 32, last_epoch: int = -1
) -> LambdaLR:
    """ULMFiT's schedule: see :func:`slanted_triangular_factor`. The optimizer's lr is η_max."""
    if not 0.0 < cut_frac < 1.0:
        raise ValueError(f"cut_frac must be in (0, 1), got {cut_frac}")
    if ratio < 1:
        raise ValueError(f"ratio must be >= 1 (η_max / η_min), got {ratio}")
    if math.floor(total_steps * cut_frac) < 1:
        raise ValueError(
            f"total_steps * cut_frac must be at least 1 step of warm-up, got {total_steps} * {cut_frac} = "
            f"{total_steps * cut_frac}"
        )
    factor = functools.partial(slanted_triangular_factor, total_steps=total_steps, cut_frac=cut_frac, ratio=ratio)
    return LambdaLR(optimizer, factor, last_epoch)


def inverse_sqrt_warmup(optimizer, warmup_steps: int, last_epoch: int = -1) -> LambdaLR:
    """The Transformer's schedule: see :func:`inverse_sqrt_warmup_factor`. The optimizer's lr
    is the peak, reached at t = ``warmup_steps``."""
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 1:
        raise ValueError(f"warmup_steps must be an int >= 1 (the step of the peak), got {warmup_steps!r}")
    factor = functools.partial(inverse_sqrt_warmup_factor, warmup_steps=warmup_steps)
    return LambdaLR(optimizer, factor, last_epoch)


# ---- layer-wise learning rates --------------------------------------------------------------


def layerwise_lr_groups(
    named_params: torch.nn.Module | Iterable[tuple[str, torch.nn.Parameter]],
    base_lr: float,
    decay: float,
    layer_of: Callable[[str], int],
) -> list[dict]:
    """Parameter groups with a learning rate that shrinks by ``decay`` per layer down the network.

    ``layer_of(name)`` gives each parameter's layer: 0 for the lowest (the embeddings),
    larger towards the output. With L the highest layer found, layer l gets

        lr_l = base_lr · decay^(L - l)

    so the top layer trains at ``base_lr``. ULMFiT's discriminative fine-tuning uses
    decay = 1/2.6 (lr_{l-1} = lr_l / 2.6); for BERT, Sun et al. (2019, "How to Fine-Tune
    BERT") call it "layer-wise decreasing layer rate" and use 0.95 (later work: "layer-wise
    learning-rate decay"). Pass the result to any optimizer; a
    schedule then multiplies every group's lr by the same factor. Each group also
    records its ``layer`` and parameter ``names``; frozen parameters are left out."""
    if base_lr < 0:
        raise ValueError(f"base_lr must be >= 0, got {base_lr}")
    if not decay > 0:
        raise ValueError(f"decay must be > 0 (1/2.6 for ULMFiT, ~0.95 for BERT), got {decay}")
    if isinstance(named_params, torch.nn.Module):
        named_params = named_params.named_parameters()
    by_layer: dict[int, list[tuple[str, torch.nn.Parameter]]] = {}
    for name, param in named_params:
        if param.requires_grad:
            layer = layer_of(name)
            if not isinstance(layer, int) or layer < 0:
                raise ValueError(f"layer_of({name!r}) must return an int >= 0, got {layer!r}")
            by_layer.setdefault(layer, []).append((name, param))
    if not by_layer:
        raise ValueError("layerwise_lr_groups: no trainable parameters were given")
    top = max(by_layer)
    return [
        {
            "params": [p for _, p in by_layer[layer]],
            "lr": base_lr * decay ** (top - layer),
            "layer": layer,
            "names": [n for n, _ in by_layer[layer]],
        }
        for layer in sorted(by_layer)
    ]
