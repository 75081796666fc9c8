"""Fused optimizer steps: Adam/AdamW and SGD (with momentum) over many tensors in ONE launch.

An optimizer step is elementwise, so its cost is memory traffic: AdamW reads θ, g, m, v
and writes θ, m, v, seven numbers per parameter. Done the plain way (one small op per
tensor and per formula, as ``course_lib.optim.adam_step``) it also pays a kernel launch
per op per tensor (GPT-2 small: 148 tensors x ~10 ops) and re-reads the tensors once per
op. The fused step reads and writes each number once, for all tensors at once.

Design: a multi-tensor apply driven by a table of addresses
--------------------------------------------------------------
The host builds one small int64 table per list of tensors, one column per tensor:

    row 0..4   data_ptr() of param, grad and the (up to three) state tensors
    row 5      numel
    row 6      first block: prefix sum of ceil(numel / BLOCK) over the tensors before it

The grid has one program per BLOCK elements of *all* tensors together (empty tensors
are left out of the table). Program ``pid`` binary-searches row 6 for the last tensor
whose first block is <= pid, turns that column's addresses into typed pointers and
updates its elements [(pid - first_block) * BLOCK, ... + BLOCK). The table
depends only on the tensors' addresses and sizes, which do not change from step to step,
so it is built, checked and copied to the device once and then cached.

Tensors are bucketed by parameter dtype (pointer types are compile-time constants): in
an ordinary run that is one launch per step. Adam's step t is shared by the call, so the
bias corrections 1 - β^t are computed once on the host, in float64. States are fp32 for
fp16/bf16 parameters and the math runs in fp32 (fp64 for fp64 parameters); only the
final parameter is rounded back to its dtype.

Under TRITON_INTERPRET=1 the same table-driven kernels run: the interpreter hands CPU
tensors to the kernel without copying them, so the addresses in the table are valid
host addresses and loading through them works as on the GPU.

An autograd.Function does not apply: an optimizer step is not part of the graph that
is differentiated, so the public functions ``fused_adam_step`` and ``fused_sgd_step``
dispatch directly (Triton on CUDA or under the interpreter, the PyTorch references
``adam_step_reference`` / ``sgd_step_reference`` otherwise). ``course_lib.optim``'s
SGD, Adam and AdamW call them when constructed with ``fused=True``.
"""

from __future__ import annotations

import itertools
from typing import Callable, NamedTuple, Sequence

import torch
import triton
import triton.language as tl

from .backend import FLOAT_DTYPES, check_tensor, interpreter_active, use_triton

__all__ = ["fused_adam_step", "fused_sgd_step", "optimizer_state_dtype", "adam_step_reference", "sgd_step_reference"]

# 1024 elements per program: 4 KiB of fp32 per tensor read, enough in flight per SM to
# stream at full bandwidth. A fixed size instead of triton.autotune (which needs a GPU).
BLOCK = 1024
NUM_WARPS = 4

_TL_DTYPES = {
    torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32, torch.float64: tl.float64,
}  # fmt: skip


def optimizer_state_dtype(param_dtype: torch.dtype) -> torch.dtype:
    """The dtype of the fused step's states and math: fp64 stays fp64, everything else fp32."""
    return torch.float64 if param_dtype == torch.float64 else torch.float32


# ---- kernels ----------------------------------------------------------------------------


@triton.jit
def _find_tensor(first_blocks_ptr, num_tensors, pid):
    # Binary search for the last t with first_blocks[t] <= pid (first_blocks[0] == 0).
    lo = 0
    hi = num_tensors - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tl.load(first_blocks_ptr + mid) <= pid:
            lo = mid
        else:
            hi = mid - 1
    return lo


@triton.jit
def _pointer(address_ptr, DTYPE: tl.constexpr, ALIGNED: tl.constexpr):
    # An address read from the table, as a typed pointer. ALIGNED promises the compiler a
    # 16-byte aligned start (the host checked it), which it needs to emit vector loads.
    ptr = tl.load(address_ptr).to(tl.pointer_type(DTYPE))
    if ALIGNED:
        ptr = tl.multiple_of(ptr, 16)
    return ptr


# Triton's interpreter (3.7) converts fp32 -> bf16 by truncation, where CUDA and torch round
# to nearest even. Under the interpreter the kernels round by hand, so that CPU runs produce
# the numbers a GPU would; compiled kernels skip it (a compile-time constant).
_ROUND_BF16_BY_HAND = tl.constexpr(interpreter_active())


@triton.jit
def _to_dtype(value, DTYPE: tl.constexpr):
    # An fp32 value rounded to nearest (ties to even) in DTYPE.
    if _ROUND_BF16_BY_HAND and DTYPE == tl.bfloat16:
        bits = value.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000  # add half a bf16 ulp (ties to even), cut
        value = tl.where(value != value, value, bits.to(tl.float32, bitcast=True))  # NaN stays NaN
    return value.to(DTYPE)


@triton.jit
def _adam_update(
    param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, max_exp_avg_sq_ptr, offsets, mask,
    lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt,
    L2_DECAY: tl.constexpr, DECOUPLED_DECAY: tl.constexpr, AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr,
):  # fmt: skip
    # Convert right after loading: fp16/bf16 values are only ever stored, never computed with.
    math_dtype = exp_avg_ptr.dtype.element_ty
    param = tl.load(param_ptr + offsets, mask=mask).to(math_dtype)
    grad = tl.load(grad_ptr + offsets, mask=mask).to(math_dtype)
    exp_avg = tl.load(exp_avg_ptr + offsets, mask=mask)
    exp_avg_sq = tl.load(exp_avg_sq_ptr + offsets, mask=mask)

    if MAXIMIZE:
        grad = -grad
    if L2_DECAY:  # Adam: g ← g + λθ
        grad = grad + weight_decay * param
    if DECOUPLED_DECAY:  # AdamW: θ ← θ(1 - ηλ)
        param = param * (1 - lr * weight_decay)
    exp_avg = exp_avg + (1 - beta1) * (grad - exp_avg)  # m ← β1 m + (1 - β1) g, as a lerp like torch
    exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad  # v ← β2 v + (1 - β2) g²
    tl.store(exp_avg_ptr + offsets, exp_avg, mask=mask)
    tl.store(exp_avg_sq_ptr + offsets, exp_avg_sq, mask=mask)
    if AMSGRAD:  # divide by the running maximum of v
        exp_avg_sq = tl.maximum(tl.load(max_exp_avg_sq_ptr + offsets, mask=mask), exp_avg_sq)
        tl.store(max_exp_avg_sq_ptr + offsets, exp_avg_sq, mask=mask)
    denom = tl.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps  # √v̂ + ε
    param = param - step_size * (exp_avg / denom)  # θ ← θ - η m̂ / (√v̂ + ε)
    tl.store(param_ptr + offsets, _to_dtype(param, param_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _adam_kernel(
    param_addrs, grad_addrs, exp_avg_addrs, exp_avg_sq_addrs, max_exp_avg_sq_addrs,  # (T,) int64 addresses
    numels, first_blocks,  # (T,) int64
    num_tensors,
    lr: tl.float64, beta1: tl.float64, beta2: tl.float64, eps: tl.float64, weight_decay: tl.float64,
    step_size: tl.float64,  # lr / (1 - beta1^t)
    bias_correction2_sqrt: tl.float64,  # sqrt(1 - beta2^t)
    PARAM_DTYPE: tl.constexpr, STATE_DTYPE: tl.constexpr,  # STATE_DTYPE is also the dtype of the math
    L2_DECAY: tl.constexpr, DECOUPLED_DECAY: tl.constexpr, AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr,
    ALIGNED: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    t = _find_tensor(first_blocks, num_tensors, pid)
    start = (pid - tl.load(first_blocks + t)) * BLOCK  # int64: this program's first element in tensor t
    offsets = start + tl.arange(0, BLOCK)  # (BLOCK,)
    numel = tl.load(numels + t)
    param_ptr = _pointer(param_addrs + t, PARAM_DTYPE, ALIGNED)
    grad_ptr = _pointer(grad_addrs + t, PARAM_DTYPE, ALIGNED)
    exp_avg_ptr = _pointer(exp_avg_addrs + t, STATE_DTYPE, ALIGNED)
    exp_avg_sq_ptr = _pointer(exp_avg_sq_addrs + t, STATE_DTYPE, ALIGNED)
    max_exp_avg_sq_ptr = _pointer(max_exp_avg_sq_addrs + t, STATE_DTYPE, ALIGNED)  # the params' row if unused

    # Scalars arrive as fp64 (exact for fp64 parameters) and are rounded once to the math dtype.
    # tl.full, not .to(): under the interpreter a scalar argument stays a Python float.
    lr = tl.full((), lr, STATE_DTYPE)
    beta1 = tl.full((), beta1, STATE_DTYPE)
    beta2 = tl.full((), beta2, STATE_DTYPE)
    eps = tl.full((), eps, STATE_DTYPE)
    weight_decay = tl.full((), weight_decay, STATE_DTYPE)
    step_size = tl.full((), step_size, STATE_DTYPE)
    bias_correction2_sqrt = tl.full((), bias_correction2_sqrt, STATE_DTYPE)

    # A whole block runs without a mask, so the compiler can use 16-byte vector loads; only
    # the last block of each tensor, which may stick out past its end, is masked.
    if start + BLOCK <= numel:
        _adam_update(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, max_exp_avg_sq_ptr, offsets, None,
                     lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt,
                     L2_DECAY, DECOUPLED_DECAY, AMSGRAD, MAXIMIZE)  # fmt: skip
    else:
        _adam_update(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, max_exp_avg_sq_ptr, offsets, offsets < numel,
                     lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt,
                     L2_DECAY, DECOUPLED_DECAY, AMSGRAD, MAXIMIZE)  # fmt: skip


@triton.jit
def _sgd_update(
    param_ptr, grad_ptr, buf_ptr, offsets, mask, lr, momentum, dampening, weight_decay,
    HAS_WEIGHT_DECAY: tl.constexpr, HAS_MOMENTUM: tl.constexpr, FIRST_STEP: tl.constexpr,
    NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr,
):  # fmt: skip
    math_dtype = buf_ptr.dtype.element_ty
    param = tl.load(param_ptr + offsets, mask=mask).to(math_dtype)
    grad = tl.load(grad_ptr + offsets, mask=mask).to(math_dtype)
    if MAXIMIZE:
        grad = -grad
    if HAS_WEIGHT_DECAY:  # g ← g + λθ
        grad = grad + weight_decay * param
    if HAS_MOMENTUM:
        if FIRST_STEP:  # b_1 = g_1
            buf = grad
        else:  # b ← μ b + (1 - dampening) g
            buf = tl.load(buf_ptr + offsets, mask=mask) * momentum + (1 - dampening) * grad
        tl.store(buf_ptr + offsets, buf, mask=mask)
        if NESTEROV:  # torch's form: θ ← θ - η (g + μ b)
            grad = grad + momentum * buf
        else:
            grad = buf
    param = param - lr * grad
    tl.store(param_ptr + offsets, _to_dtype(param, param_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sgd_kernel(
    param_addrs, grad_addrs, buf_addrs,  # (T,) int64 addresses (without momentum, buf_addrs is the params' row)
    numels, first_blocks,  # (T,) int64
    num_tensors,
    lr: tl.float64, momentum: tl.float64, dampening: tl.float64, weight_decay: tl.float64,
    PARAM_DTYPE: tl.constexpr, STATE_DTYPE: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr, HAS_MOMENTUM: tl.constexpr, FIRST_STEP: tl.constexpr,
    NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    t = _find_tensor(first_blocks, num_tensors, pid)
    start = (pid - tl.load(first_blocks + t)) * BLOCK  # int64
    offsets = start + tl.arange(0, BLOCK)  # (BLOCK,)
    numel = tl.load(numels + t)
    param_ptr = _pointer(param_addrs + t, PARAM_DTYPE, ALIGNED)
    grad_ptr = _pointer(grad_addrs + t, PARAM_DTYPE, ALIGNED)
    buf_ptr = _pointer(buf_addrs + t, STATE_DTYPE, ALIGNED)
    lr = tl.full((), lr, STATE_DTYPE)
    momentum = tl.full((), momentum, STATE_DTYPE)
    dampening = tl.full((), dampening, STATE_DTYPE)
    weight_decay = tl.full((), weight_decay, STATE_DTYPE)
    if start + BLOCK <= numel:  # unmasked whole block, as in _adam_kernel
        _sgd_update(param_ptr, grad_ptr, buf_ptr, offsets, None, lr, momentum, dampening, weight_decay,
                    HAS_WEIGHT_DECAY, HAS_MOMENTUM, FIRST_STEP, NESTEROV, MAXIMIZE)  # fmt: skip
    else:
        _sgd_update(param_ptr, grad_ptr, buf_ptr, offsets, offsets < numel, lr, momentum, dampening, weight_decay,
                    HAS_WEIGHT_DECAY, HAS_MOMENTUM, FIRST_STEP, NESTEROV, MAXIMIZE)  # fmt: skip


# ---- launchers --------------------------------------------------------------------------
# A plan says how to launch a list of tensors: one entry per bucket of tensors that share a
# parameter dtype and a flag (SGD: "this buffer is new"), each with its address table.
# Addresses, sizes and dtypes do not change from step to step, so plans are cached by
# exactly those: a step then costs one dictionary lookup and one launch per bucket, and a
# key can only ever describe the table it maps to, even if memory is freed and reused.


class _Bucket(NamedTuple):
    dtype: torch.dtype  # the parameters' dtype
    flag: bool
    table: torch.Tensor  # (7, T) int64 on the tensors' device; rows as in the module docstring
    num_tensors: int
    num_blocks: int  # the grid
    aligned: bool  # every address is a multiple of 16 bytes


_PLANS: dict[tuple, list[_Bucket]] = {}
_MAX_PLANS = 64


def _plan(
    tensor_lists: list[Sequence[torch.Tensor]], flags: Sequence[bool], validate: Callable[[], None]
) -> list[_Bucket]:
    params = tensor_lists[0]
    key = (
        params[0].device, len(tensor_lists), tuple(flags), tuple(p.dtype for p in params),
        tuple(p.numel() for p in params), tuple(t.data_ptr() for tensors in tensor_lists for t in tensors),
    )  # fmt: skip
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    validate()  # only for tensors not seen before: the checks cost as much as the launch
    members: dict[tuple[torch.dtype, bool], list[int]] = {}
    for i, p in enumerate(params):
        if p.numel() > 0:  # an empty tensor has nothing to update (and would own no block)
            members.setdefault((p.dtype, bool(flags[i])), []).append(i)
    plan = []
    for (dtype, flag), idx in members.items():
        addresses = [[tensors[i].data_ptr() for i in idx] for tensors in tensor_lists]
        addresses += [addresses[0]] * (5 - len(addresses))  # unused state rows repeat the params'
        numels = [params[i].numel() for i in idx]
        blocks = [triton.cdiv(n, BLOCK) for n in numels]
        first_blocks = [0, *itertools.accumulate(blocks)][:-1]  # exclusive prefix sum
        table = torch.tensor([*addresses, numels, first_blocks], dtype=torch.int64).to(params[0].device)
        aligned = all(a % 16 == 0 for row in addresses for a in row)
        plan.append(_Bucket(dtype, flag, table, len(idx), sum(blocks), aligned))
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.pop(next(iter(_PLANS)))  # the oldest
    _PLANS[key] = plan
    return plan


def adam_step_triton(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, step, lr, beta1, beta2, eps,
                     weight_decay, amsgrad, maximize, decoupled_weight_decay,
                     validate=lambda: None) -> None:  # fmt: skip
    lists = [params, grads, exp_avgs, exp_avg_sqs] + ([max_exp_avg_sqs] if amsgrad else [])
    # Bias corrections in float64 on the host, once per step for every tensor.
    step_size = lr / (1 - beta1**step)
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    for bucket in _plan(lists, [False] * len(params), validate):
        _adam_kernel[(bucket.num_blocks,)](
            *bucket.table, bucket.num_tensors,
            lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt,
            PARAM_DTYPE=_TL_DTYPES[bucket.dtype], STATE_DTYPE=_TL_DTYPES[optimizer_state_dtype(bucket.dtype)],
            L2_DECAY=weight_decay != 0 and not decoupled_weight_decay,
            DECOUPLED_DECAY=weight_decay != 0 and decoupled_weight_decay,
            AMSGRAD=amsgrad, MAXIMIZE=maximize, ALIGNED=bucket.aligned, BLOCK=BLOCK, num_warps=NUM_WARPS,
        )  # fmt: skip


def sgd_step_triton(params, grads, momentum_buffers, first_steps, *, lr, momentum, dampening, weight_decay,
                    nesterov, maximize, validate=lambda: None) -> None:  # fmt: skip
    has_momentum = momentum_buffers is not None
    lists = [params, grads] + ([momentum_buffers] if has_momentum else [])
    for bucket in _plan(lists, first_steps, validate):
        table = bucket.table
        _sgd_kernel[(bucket.num_blocks,)](
            table[0], table[1], table[2], table[5], table[6], bucket.num_tensors,
            lr, momentum, dampening, weight_decay,
            PARAM_DTYPE=_TL_DTYPES[bucket.dtype], STATE_DTYPE=_TL_DTYPES[optimizer_state_dtype(bucket.dtype)],
            HAS_WEIGHT_DECAY=weight_decay != 0, HAS_MOMENTUM=has_momentum, FIRST_STEP=bucket.flag,
            NESTEROV=nesterov, MAXIMIZE=maximize, ALIGNED=bucket.aligned, BLOCK=BLOCK, num_warps=NUM_WARPS,
        )  # fmt: skip


# ---- reference --------------------------------------------------------------------------


def adam_step_reference(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, step, lr, beta1, beta2, eps,
                        weight_decay, amsgrad, maximize, decoupled_weight_decay,
                        validate=lambda: None) -> None:  # fmt: skip
    """The kernel's math in PyTorch, one tensor at a time, in the states' dtype."""
    validate()
    step_size = lr / (1 - beta1**step)
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        theta, g = p.to(m.dtype), g.to(m.dtype)  # fp32 copies of fp16/bf16 parameters
        g = -g if maximize else g
        if weight_decay != 0 and not decoupled_weight_decay:
            g = g + weight_decay * theta
        if weight_decay != 0 and decoupled_weight_decay:
            theta = theta * (1 - lr * weight_decay)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        if amsgrad:
            v = torch.maximum(max_exp_avg_sqs[i], v, out=max_exp_avg_sqs[i])
        p.copy_(theta - step_size * (m / (v.sqrt() / bias_correction2_sqrt + eps)))


def sgd_step_reference(params, grads, momentum_buffers, first_steps, *, lr, momentum, dampening, weight_decay,
                       nesterov, maximize, validate=lambda: None) -> None:  # fmt: skip
    validate()
    for i, (p, g) in enumerate(zip(params, grads)):
        theta, g = p.to(optimizer_state_dtype(p.dtype)), g.to(optimizer_state_dtype(p.dtype))
        g = -g if maximize else g
        if weight_decay != 0:
            g = g + weight_decay * theta
        if momentum_buffers is not None:
            buf = momentum_buffers[i]
            if first_steps[i]:
                buf.copy_(g)
            else:
                buf.mul_(momentum).add_(g, alpha=1 - dampening)
            g = g + momentum * buf if nesterov else buf
        p.copy_(theta - lr * g)


# ---- input checks and public API ----------------------------------------------------------


def _check_lists(params, grads, states: dict[str, Sequence[torch.Tensor]]) -> None:
    """Fail with a sentence before launching: a wrong size or dtype inside the kernel would
    read or write the wrong memory without any error."""
    device = params[0].device if params else None
    for i, p in enumerate(params):
        check_tensor(f"params[{i}]", p, dtypes=FLOAT_DTYPES, device=device)
        check_tensor(f"grads[{i}]", grads[i], dtypes=(p.dtype,), device=device)
        named = [(f"grads[{i}]", grads[i])] + [(f"{name}[{i}]", tensors[i]) for name, tensors in states.items()]
        for name, t in named[1:]:
            check_tensor(name, t, dtypes=(optimizer_state_dtype(p.dtype),), device=device)
        for name, t in [(f"params[{i}]", p), *named]:
            if t.shape != p.shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)} but params[{i}] has {tuple(p.shape)}")
            if t.is_sparse or not t.is_contiguous():
                raise ValueError(f"the fused step needs dense contiguous tensors; {name} has layout {t.layout} "
                                 f"and strides {t.stride() if not t.is_sparse else None}")  # fmt: skip


def _check_lengths(params, **lists) -> None:
    if not isinstance(params, (list, tuple)):
        raise TypeError(f"params must be a list of tensors, got {type(params).__name__}")
    for name, tensors in lists.items():
        if len(tensors) != len(params):
            raise ValueError(f"{name} has {len(tensors)} tensors but params has {len(params)}")


def fused_adam_step(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                    exp_avg_sqs: list[torch.Tensor], max_exp_avg_sqs: list[torch.Tensor] | None = None, *,
                    step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float = 0.0,
                    amsgrad: bool = False, maximize: bool = False,
                    decoupled_weight_decay: bool = False) -> None:  # fmt: skip
    """One Adam (or, with ``decoupled_weight_decay``, AdamW) step of every tensor, in place.

    ``step`` is the step t after this update (1 on the first), shared by all tensors. The
    states must have dtype ``optimizer_state_dtype(param.dtype)``. Runs one Triton launch
    per parameter dtype where :func:`use_triton` allows, else :func:`adam_step_reference`."""
    states = {"exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs}
    if amsgrad:
        if max_exp_avg_sqs is None:
            raise ValueError("amsgrad=True needs max_exp_avg_sqs")
        states["max_exp_avg_sqs"] = max_exp_avg_sqs
    _check_lengths(params, grads=grads, **states)
    if int(step) < 1:
        raise ValueError(f"step must count from 1 (the step after this update), got {step}")
    if not params:
        return
    run = adam_step_triton if use_triton(*params, op="fused_adam_step") else adam_step_reference
    run(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step=int(step), lr=float(lr), beta1=float(beta1),
        beta2=float(beta2), eps=float(eps), weight_decay=float(weight_decay), amsgrad=amsgrad, maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
        validate=lambda: _check_lists(params, grads, states))  # fmt: skip


def fused_sgd_step(params: list[torch.Tensor], grads: list[torch.Tensor],
                   momentum_buffers: list[torch.Tensor | None] | None = None, *, lr: float, momentum: float = 0.0,
                   dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                   maximize: bool = False) -> list[torch.Tensor] | None:  # fmt: skip
    """One SGD step of every tensor, in place. With momentum, ``momentum_buffers[i]`` may be
    None (its first step): a new buffer is created (fp32 for fp16/bf16 parameters).

    Returns the momentum buffers (None without momentum), as torch.optim's functional
    ``sgd`` fills in its ``momentum_buffer_list``."""
    if momentum == 0:
        momentum_buffers = None
    elif momentum_buffers is None:
        momentum_buffers = [None] * len(params)
    _check_lengths(params, grads=grads, **({} if momentum_buffers is None else {"momentum_buffers": momentum_buffers}))
    first_steps = [False] * len(params)
    if momentum_buffers is not None:
        momentum_buffers = list(momentum_buffers)
        for i, (p, buf) in enumerate(zip(params, momentum_buffers)):
            if buf is None:  # the kernel writes b_1 = g_1 into it
                momentum_buffers[i] = torch.empty_like(p, dtype=optimizer_state_dtype(p.dtype))
                first_steps[i] = True
    if params:
        states = {} if momentum_buffers is None else {"momentum_buffers": momentum_buffers}
        run = sgd_step_triton if use_triton(*params, op="fused_sgd_step") else sgd_step_reference
        run(params, grads, momentum_buffers, first_steps, lr=float(lr), momentum=float(momentum),
            dampening=float(dampening), weight_decay=float(weight_decay), nesterov=nesterov, maximize=maximize,
            validate=lambda: _check_lists(params, grads, states))  # fmt: skip
    return momentum_buffers
