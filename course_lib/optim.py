"""Chapter 3: optimizers, written out one update rule at a time.

Every optimizer here is a ``torch.optim.Optimizer`` with torch.optim's constructor
arguments and defaults, its state names (so a ``state_dict`` loads into the
torch.optim counterpart and back) and its exact order of floating-point operations
(so 100 steps agree with torch.optim to the last bit on the CPU). The update of one
parameter is a plain function, ``sgd_step``, ``adagrad_step``, ``rmsprop_step``,
``adadelta_step`` and ``adam_step``; the classes only loop over parameters and call it.

Notation in the comments: θ parameters, g gradient, η learning rate, λ weight decay,
μ momentum, t the step (1 on the first update), ε the small constant that keeps
divisions finite. Where torch writes a rule differently from its paper, the comment
says so.

``fused=True`` (SGD, Adam, AdamW) updates a whole parameter group in one Triton
launch (:mod:`course_lib.kernels.optim_step`) instead of one small op per tensor.
torch's switches between its own implementations (``foreach``, ``capturable``,
``differentiable``) are not offered: here there is the plain path and the fused one.
Learning-rate schedules live in :mod:`course_lib.schedules` and are re-exported here.
``clip_grad_norm_`` is torch.nn.utils.clip_grad_norm_ (gradient clipping by global norm).
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from .kernels.optim_step import fused_adam_step, fused_sgd_step, optimizer_state_dtype
from .schedules import layerwise_lr_groups, linear_warmup_cosine_decay, linear_warmup_linear_decay, slanted_triangular
from .schedules import inverse_sqrt_warmup

__all__ = [
    "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW",
    "sgd_step", "adagrad_step", "rmsprop_step", "adadelta_step", "adam_step",
    "linear_warmup_linear_decay", "linear_warmup_cosine_decay", "slanted_triangular", "layerwise_lr_groups",
    "inverse_sqrt_warmup", "clip_grad_norm_",
]  # fmt: skip


# ---- one update of one parameter -----------------------------------------------------------
# Each function updates ``param`` (and the tensors in ``state``) in place from ``grad``.
# ``maximize=True`` ascends instead of descending: the gradient's sign is flipped first.
# ``weight_decay`` (except in AdamW) is the L2 penalty λ/2·‖θ‖², added to the gradient: g ← g + λθ.


def sgd_step(param, grad, state, *, lr, momentum, dampening, weight_decay, nesterov, maximize):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    Plain:     θ ← θ - η g
    Momentum:  b ← μ b + (1 - dampening) g;   θ ← θ - η b
    The textbook (Polyak 1964; Sutskever et al. 2013) puts η inside the velocity,
    v ← μ v + η g; θ ← θ - v. That is the same run while η is constant, but once a
    schedule changes η, torch's form changes the step size at once and the textbook
    form only through new gradients.
    """
    if maximize:
        grad = -grad
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    if momentum != 0:
        buf = state.get("momentum_buffer")
        if buf is None:  # first step: b_1 = g_1 (no dampening), not μ·0 + (1 - dampening)·g_1
            buf = state["momentum_buffer"] = grad.detach().clone()
        else:
            buf.mul_(momentum).add_(grad, alpha=1 - dampening)
        if nesterov:
            # Nesterov (Sutskever et al. 2013) evaluates the gradient at the look-ahead point:
            #   v ← μ v - η ∇f(θ + μ v);  θ ← θ + v.
            # Tracking θ' = θ + μ v instead of θ (Bengio et al. 2013) needs only the gradient at
            # the current parameters, and gives torch's form:  θ ← θ - η (g + μ b).
            grad = grad.add(buf, alpha=momentum)
        else:
            grad = buf
    param.add_(grad, alpha=-lr)


def adagrad_step(param, grad, state, *, lr, lr_decay, weight_decay, eps, maximize):
    """Adagrad (Duchi, Hazan & Singer 2011): each coordinate's step shrinks with the
    sum of its squared gradients, so rare features keep large steps.

    G ← G + g²;   θ ← θ - η_t · g / (√G + ε),   η_t = η / (1 + (t - 1)·lr_decay)
    torch adds ε outside the square root (some texts write √(G + ε)) and G may start
    at ``initial_accumulator_value``; lr_decay is torch's addition (0 = the paper).
    """
    state["step"] += 1
    step = state["step"].item()
    if maximize:
        grad = -grad
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    clr = lr / (1 + (step - 1) * lr_decay)
    state["sum"].addcmul_(grad, grad, value=1)
    std = state["sum"].sqrt().add_(eps)
    param.addcdiv_(grad, std, value=-clr)


def rmsprop_step(param, grad, state, *, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    """RMSProp (Hinton, Coursera lecture 6e, 2012): Adagrad with a leaky sum, so old
    gradients are forgotten and the step does not decay to zero.

    v ← α v + (1 - α) g²;   θ ← θ - η g / (√v + ε)
    centered (Graves 2013) divides by an estimate of the standard deviation instead,
    √(v - ḡ²) with ḡ ← α ḡ + (1 - α) g. With momentum: b ← μ b + g / (√v + ε); θ ← θ - η b.
    """
    state["step"] += 1
    if maximize:
        grad = -grad
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    square_avg = state["square_avg"]
    square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
    if centered:
        grad_avg = state["grad_avg"]
        grad_avg.lerp_(grad, 1 - alpha)  # ḡ + (1 - α)(g - ḡ) = α ḡ + (1 - α) g
        avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
    else:
        avg = square_avg.sqrt()
    avg = avg.add_(eps)
    if momentum > 0:
        buf = state["momentum_buffer"]
        buf.mul_(momentum).addcdiv_(grad, avg)
        param.add_(buf, alpha=-lr)
    else:
        param.addcdiv_(grad, avg, value=-lr)


def adadelta_step(param, grad, state, *, lr, rho, eps, weight_decay, maximize):
    """AdaDelta (Zeiler 2012): RMSProp's denominator, and a numerator that is the RMS
    of past *updates*, so the step has the units of θ and needs no learning rate.

    E[g²] ← ρ E[g²] + (1 - ρ) g²
    Δθ = √(E[Δθ²] + ε) / √(E[g²] + ε) · g        (the old E[Δθ²], from step t - 1)
    E[Δθ²] ← ρ E[Δθ²] + (1 - ρ) Δθ²;   θ ← θ - η Δθ
    The paper has no η: torch multiplies by ``lr``, whose default 1.0 gives the paper.
    (A formula with a global η over √(E[g²] + ε) alone is RMSProp, not AdaDelta.)
    """
    state["step"] += 1
    if maximize:
        grad = -grad
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    square_avg, acc_delta = state["square_avg"], state["acc_delta"]
    square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
    std = square_avg.add(eps).sqrt_()
    delta = acc_delta.add(eps).sqrt_().div_(std).mul_(grad)
    acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
    param.add_(delta, alpha=-lr)


def adam_step(param, grad, state, *, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay):
    """Adam (Kingma & Ba 2015) and, with ``decoupled_weight_decay``, AdamW (Loshchilov & Hutter 2019).

    m ← β1 m + (1 - β1) g;   v ← β2 v + (1 - β2) g²          (moment estimates, m_0 = v_0 = 0)
    m̂ = m / (1 - β1^t);      v̂ = v / (1 - β2^t)              (bias correction: undo the zero start)
    θ ← θ - η m̂ / (√v̂ + ε)
    torch folds the corrections into the step size, θ ← θ - (η / (1 - β1^t)) · m / (√v / √(1 - β2^t) + ε),
    which is the formula above with ε exactly where the paper puts it.
    AMSGrad (Reddi et al. 2018) divides by the running maximum of v instead of v (torch keeps
    the bias corrections, which the paper's AMSGrad does not have).
    AdamW shrinks θ ← θ(1 - ηλ) directly instead of adding λθ to g: with Adam's per-coordinate
    scaling, an L2 term in g is divided by √v̂ like the rest, so it no longer acts as weight decay.
    The paper multiplies λ by the schedule's multiplier only; torch multiplies by the whole
    learning rate η, so torch's λ is the paper's λ divided by the base learning rate.
    """
    state["step"] += 1
    step = state["step"].item()
    if maximize:
        grad = -grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            param.mul_(1 - lr * weight_decay)
        else:
            grad = grad.add(param, alpha=weight_decay)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg.lerp_(grad, 1 - beta1)  # m + (1 - β1)(g - m) = β1 m + (1 - β1) g
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    if amsgrad:
        torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
        exp_avg_sq = state["max_exp_avg_sq"]
    denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-step_size)


# ---- the optimizer classes: argument checks, state, and the loop over parameters -----------


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _zeros(param: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.zeros_like(param, dtype=dtype, memory_format=torch.preserve_format)


def _new_step() -> torch.Tensor:
    # A 0-d CPU tensor, as torch.optim keeps it: reading it never waits for the GPU.
    return torch.tensor(0.0, dtype=torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32)


class _Optimizer(Optimizer):
    """Shared by every optimizer below: ``step`` visits each parameter that has a gradient
    and applies the subclass's one-parameter update; groups with ``fused=True`` are
    handed whole to ``_fused_group_step``."""

    def _update(self, param: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError(
                        f"{type(self).__name__} does not support sparse gradients (parameter group {index}, "
                        f"shape {tuple(p.shape)}); use torch.optim.SparseAdam, or an nn.Embedding without sparse=True"
                    )
            if group.get("fused"):
                self._fused_group_step(params, group)
            else:
                for p in params:
                    self._update(p, p.grad, self.state[p], group)
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        # torch.optim casts every floating-point state tensor to its parameter's dtype, and for
        # fused groups moves "step" to the parameter's device. The fused path keeps fp16/bf16
        # parameters' states in fp32 and every step on the CPU, so those are restored here.
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        ours = [(p, group) for group in self.param_groups for p in group["params"]]
        for saved_id, (p, group) in zip(saved_ids, ours):
            if not group.get("fused"):
                continue
            for key, value in state_dict["state"].get(saved_id, {}).items():
                if key == "step":
                    self.state[p][key] = value.to("cpu", copy=True)
                elif torch.is_tensor(value) and value.is_floating_point():
                    self.state[p][key] = value.to(p.device, optimizer_state_dtype(p.dtype), copy=True)


class SGD(_Optimizer):
    """torch.optim.SGD: see :func:`sgd_step`."""

    def __init__(
        self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *, maximize=False, fused=None
    ):
        _check(lr >= 0.0, f"Invalid learning rate: {lr} (expected lr >= 0)")
        _check(momentum >= 0.0, f"Invalid momentum value: {momentum} (expected momentum >= 0)")
        _check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay} (expected weight_decay >= 0)")
        _check(
            not nesterov or (momentum > 0 and dampening == 0),
            f"Nesterov momentum requires a momentum and zero dampening "
            f"(got momentum={momentum}, dampening={dampening})",
        )
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, fused=fused)  # fmt: skip
        super().__init__(params, defaults)

    def _update(self, param, grad, state, group):
        sgd_step(param, grad, state, lr=group["lr"], momentum=group["momentum"], dampening=group["dampening"],
                 weight_decay=group["weight_decay"], nesterov=group["nesterov"],
                 maximize=group["maximize"])  # fmt: skip

    def _fused_group_step(self, params, group):
        has_momentum = group["momentum"] != 0
        buffers = [self.state[p].get("momentum_buffer") for p in params] if has_momentum else None
        buffers = fused_sgd_step(
            params, [p.grad for p in params], buffers, lr=group["lr"], momentum=group["momentum"],
            dampening=group["dampening"], weight_decay=group["weight_decay"], nesterov=group["nesterov"],
            maximize=group["maximize"],
        )  # fmt: skip
        if has_momentum:  # buffers created on the first step are stored, as sgd_step does
            for p, buf in zip(params, buffers):
                self.state[p]["momentum_buffer"] = buf


class Adagrad(_Optimizer):
    """torch.optim.Adagrad: see :func:`adagrad_step`."""

    def __init__(
        self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10, *, maximize=False
    ):
        _check(lr >= 0.0, f"Invalid learning rate: {lr} (expected lr >= 0)")
        _check(lr_decay >= 0.0, f"Invalid lr_decay value: {lr_decay} (expected lr_decay >= 0)")
        _check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay} (expected weight_decay >= 0)")
        _check(
            initial_accumulator_value >= 0.0,
            f"Invalid initial_accumulator_value value: {initial_accumulator_value} (expected a value >= 0)",
        )
        _check(eps >= 0.0, f"Invalid epsilon value: {eps} (expected eps >= 0)")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, maximize=maximize)  # fmt: skip
        super().__init__(params, defaults)
        # Unlike the others, torch.optim.Adagrad creates its state at construction, so every
        # parameter has a "sum" even before its first gradient: keep the same for state_dicts.
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["step"] = _new_step()
                self.state[p]["sum"] = torch.full_like(
                    p, initial_accumulator_value, memory_format=torch.preserve_format
                )

    def _update(self, param, grad, state, group):
        adagrad_step(param, grad, state, lr=group["lr"], lr_decay=group["lr_decay"],
                     weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"])  # fmt: skip


class RMSprop(_Optimizer):
    """torch.optim.RMSprop: see :func:`rmsprop_step`."""

    def __init__(
        self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, *, maximize=False
    ):
        _check(lr >= 0.0, f"Invalid learning rate: {lr} (expected lr >= 0)")
        _check(eps >= 0.0, f"Invalid epsilon value: {eps} (expected eps >= 0)")
        _check(momentum >= 0.0, f"Invalid momentum value: {momentum} (expected momentum >= 0)")
        _check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay} (expected weight_decay >= 0)")
        _check(alpha >= 0.0, f"Invalid alpha value: {alpha} (expected alpha >= 0)")
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, maximize=maximize)  # fmt: skip
        super().__init__(params, defaults)

    def _update(self, param, grad, state, group):
        if not state:
            state["step"] = _new_step()
            state["square_avg"] = _zeros(param)
            if group["momentum"] > 0:
                state["momentum_buffer"] = _zeros(param)
            if group["centered"]:
                state["grad_avg"] = _zeros(param)
        rmsprop_step(param, grad, state, lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
                     weight_decay=group["weight_decay"], momentum=group["momentum"], centered=group["centered"],
                     maximize=group["maximize"])  # fmt: skip


class Adadelta(_Optimizer):
    """torch.optim.Adadelta: see :func:`adadelta_step`."""

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, *, maximize=False):
        _check(lr >= 0.0, f"Invalid learning rate: {lr} (expected lr >= 0)")
        _check(0.0 <= rho <= 1.0, f"Invalid rho value: {rho} (expected 0 <= rho <= 1)")
        _check(eps >= 0.0, f"Invalid epsilon value: {eps} (expected eps >= 0)")
        _check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay} (expected weight_decay >= 0)")
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _update(self, param, grad, state, group):
        if not state:
            state["step"] = _new_step()
            state["square_avg"] = _zeros(param)
            state["acc_delta"] = _zeros(param)
        adadelta_step(param, grad, state, lr=group["lr"], rho=group["rho"], eps=group["eps"],
                      weight_decay=group["weight_decay"], maximize=group["maximize"])  # fmt: skip


class Adam(_Optimizer):
    """torch.optim.Adam (``decoupled_weight_decay=True`` makes it AdamW): see :func:`adam_step`."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 maximize=False, fused=None, decoupled_weight_decay=False):  # fmt: skip
        _check(lr >= 0.0, f"Invalid learning rate: {lr} (expected lr >= 0)")
        _check(eps >= 0.0, f"Invalid epsilon value: {eps} (expected eps >= 0)")
        for i, beta in enumerate(betas):
            _check(0.0 <= beta < 1.0, f"Invalid beta parameter at index {i}: {beta} (expected 0 <= beta < 1)")
        _check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay} (expected weight_decay >= 0)")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, fused=fused, decoupled_weight_decay=decoupled_weight_decay)  # fmt: skip
        super().__init__(params, defaults)

    def _init_state(self, param, state, group):
        # fused=True keeps the moments of fp16/bf16 parameters in fp32 (its math runs in fp32).
        dtype = optimizer_state_dtype(param.dtype) if group["fused"] else param.dtype
        state["step"] = _new_step()
        state["exp_avg"] = _zeros(param, dtype)
        state["exp_avg_sq"] = _zeros(param, dtype)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = _zeros(param, dtype)

    def _update(self, param, grad, state, group):
        if not state:
            self._init_state(param, state, group)
        beta1, beta2 = group["betas"]
        adam_step(param, grad, state, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                  weight_decay=group["weight_decay"], amsgrad=group["amsgrad"], maximize=group["maximize"],
                  decoupled_weight_decay=group["decoupled_weight_decay"])  # fmt: skip

    def _fused_group_step(self, params, group):
        # One fused call per distinct step t (normally one: every parameter got a gradient each time).
        by_step: dict[int, list[torch.Tensor]] = {}
        for p in params:
            state = self.state[p]
            if not state:
                self._init_state(p, state, group)
            state["step"] += 1
            by_step.setdefault(int(state["step"].item()), []).append(p)
        beta1, beta2 = group["betas"]
        for step, ps in by_step.items():
            states = [self.state[p] for p in ps]
            fused_adam_step(
                ps, [p.grad for p in ps], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else None, step=step, lr=group["lr"],
                beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                amsgrad=group["amsgrad"], maximize=group["maximize"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
            )  # fmt: skip


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay, on by default (λ = 1e-2)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, fused=None):  # fmt: skip
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, fused=fused,
                         decoupled_weight_decay=True)  # fmt: skip


# ---- gradient clipping by global norm -------------------------------------------------------


@torch.no_grad()
def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False):
    """Scale all gradients by one factor so that their joint norm is at most ``max_norm``.

    ‖g‖ = ‖(‖g_1‖, ‖g_2‖, ...)‖      the norm of every gradient together, as one long vector
    g_i ← g_i · min(1, max_norm / (‖g‖ + 1e-6))
    One factor for all tensors keeps the update's direction and caps only its length (BERT
    and GPT-3 clip at 1.0). Returns ‖g‖ before clipping. This is torch.nn.utils.clip_grad_norm_,
    operation for operation: it multiplies even when the factor is 1 (on a GPU that avoids
    waiting for the norm on the CPU), and it adds 1e-6, which Google's BERT code
    (tf.clip_by_global_norm: g · max_norm / max(‖g‖, max_norm)) does not.
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    max_norm, norm_type = float(max_norm), float(norm_type)
    _check(max_norm >= 0.0, f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    if not grads:
        return torch.tensor(0.0)
    by_kind: dict[tuple, list[torch.Tensor]] = {}  # torch stacks the norms grouped by device and dtype
    for g in grads:
        by_kind.setdefault((g.device, g.dtype), []).append(g)
    norms = [torch.linalg.vector_norm(g, norm_type) for kind in by_kind.values() for g in kind]
    total_norm = torch.linalg.vector_norm(torch.stack([n.to(grads[0].device) for n in norms]), norm_type)
    if error_if_nonfinite and not torch.isfinite(total_norm):
        raise RuntimeError(
            f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is {total_norm.item()}, "
            "so they cannot be clipped (pass error_if_nonfinite=False to scale them anyway)"
        )
    clip_coef = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    for g in grads:
        g.mul_(clip_coef.to(g.device))
    return total_norm
