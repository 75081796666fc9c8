"""The fused multi-tensor optimizer steps (course_lib.kernels.optim_step).

On the CPU the Triton kernels run through the interpreter (marked ``interpreter``): the
fused step must equal the plain per-parameter step over 10 steps on a list of odd-sized
tensors (one element, empty, more than one block). On CUDA (marked ``gpu``) it is also
compared with torch.optim's own fused AdamW and SGD.
"""

from __future__ import annotations

import pytest
import torch

from course_lib import optim as co
from course_lib.kernels import optim_step as K
from course_lib.kernels.backend import force_backend

# 1 element, empty, prime sizes, and 1030 = one whole block (1024) plus a masked tail.
SHAPES = [(1,), (0,), (3, 7), (1030,), (5,), (2, 0, 3), (13, 11)]
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-6, atol=1e-6)}

CASES = [
    ("Adam", co.Adam, dict(lr=0.01)),
    ("Adam-l2-amsgrad", co.Adam, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("AdamW", co.AdamW, dict(lr=0.01)),
    ("AdamW-maximize", co.AdamW, dict(lr=0.01, weight_decay=0.05, maximize=True, betas=(0.8, 0.95))),
    ("SGD", co.SGD, dict(lr=0.1)),
    ("SGD-momentum", co.SGD, dict(lr=0.1, momentum=0.9)),
    ("SGD-momentum-dampening-wd", co.SGD, dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    ("SGD-nesterov", co.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD-nesterov-wd", co.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05, maximize=True)),
]


def tensors(shapes, dtype, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).to(device) for s in shapes]


def run_pair(cls, options, dtype, steps=10, device="cpu", shapes=SHAPES, peer=None):
    """(fused params, plain params, fused optimizer, plain optimizer) after ``steps`` steps on
    the same gradients; ``peer`` replaces the plain optimizer (e.g. torch.optim.AdamW)."""
    fused_params = [p.requires_grad_() for p in tensors(shapes, dtype, device=device)]
    plain_params = [p.requires_grad_() for p in tensors(shapes, dtype, device=device)]
    fused = cls(fused_params, fused=True, **options)
    plain = (peer or cls)(plain_params, **options)
    for step in range(steps):
        for grads_of in (fused_params, plain_params):
            for p, g in zip(grads_of, tensors(shapes, dtype, seed=100 + step, device=device)):
                p.grad = g
        fused.step()
        plain.step()
    return fused_params, plain_params, fused, plain


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("name,cls,options", CASES, ids=[c[0] for c in CASES])
def test_fused_equals_plain_step(name, cls, options, dtype):
    with force_backend("triton"):  # fail, rather than fall back, if the kernel cannot run
        fused_params, plain_params, fused, plain = run_pair(cls, options, dtype)
    for a, b in zip(fused_params, plain_params):
        torch.testing.assert_close(a, b, **TOL[dtype])
    for p, q in zip(fused_params, plain_params):
        for key, value in plain.state[q].items():
            torch.testing.assert_close(fused.state[p][key], value, **TOL[dtype])


@pytest.mark.interpreter
def test_adam_parameters_at_different_steps():
    # A parameter that misses gradients falls behind in t: one launch per distinct step.
    shapes = [(4,), (6,), (1,)]
    fused_params = [p.requires_grad_() for p in tensors(shapes, torch.float64)]
    plain_params = [p.requires_grad_() for p in tensors(shapes, torch.float64)]
    fused, plain = co.AdamW(fused_params, fused=True), co.AdamW(plain_params)
    for step in range(6):
        for params in (fused_params, plain_params):
            for i, (p, g) in enumerate(zip(params, tensors(shapes, torch.float64, seed=step))):
                p.grad = g if (i != 1 or step % 2) else None
        fused.step()
        plain.step()
    assert [int(fused.state[p]["step"]) for p in fused_params] == [6, 3, 6]
    for a, b in zip(fused_params, plain_params):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_params_fp32_states(dtype):
    """fp16/bf16 parameters: fp32 moments and fp32 math, against the PyTorch reference."""
    shapes = [(1,), (37,), (1030,)]
    for kind in ("adam", "sgd"):
        outs = []
        for backend in ("triton", "torch"):
            params, grads = tensors(shapes, dtype), tensors(shapes, dtype, seed=1)
            states = [torch.zeros_like(p, dtype=torch.float32) for p in params]
            squares = [torch.zeros_like(p, dtype=torch.float32) for p in params]
            with force_backend(backend):
                for step in range(1, 4):
                    if kind == "adam":
                        K.fused_adam_step(params, grads, states, squares, step=step, lr=0.01, beta1=0.9, beta2=0.999,
                                          eps=1e-8, weight_decay=0.01, decoupled_weight_decay=True)  # fmt: skip
                    else:
                        states = K.fused_sgd_step(params, grads, None if step == 1 else states, lr=0.1, momentum=0.9,
                                                  nesterov=True)  # fmt: skip
            assert all(s.dtype == torch.float32 for s in states)
            outs.append((params, states))
        (p_triton, s_triton), (p_torch, s_torch) = outs
        # Both round the same fp32 result to the parameter's format; a different order of fp32
        # operations can tip a value onto the other side of a rounding boundary (1 ulp).
        for a, b in zip(p_triton, p_torch):
            torch.testing.assert_close(a.float(), b.float(), rtol=torch.finfo(dtype).eps, atol=1e-6)
        for a, b in zip(s_triton, s_torch):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.interpreter
def test_mixed_dtypes_and_unaligned_views():
    # fp32 and fp64 in one call (two launches) and tensors that start 4 bytes into their
    # storage (no 16-byte alignment promise): same result as the reference.
    base32, base64 = torch.randn(40), torch.randn(30, dtype=torch.float64)
    outs = []
    for backend in ("triton", "torch"):
        params = [base32[1:].clone()[0:], base32.clone()[1:], base64.clone(), base64.clone()[3:]]
        grads = [torch.ones_like(p) * 0.5 for p in params]
        bufs = None
        with force_backend(backend):
            for _ in range(3):
                bufs = K.fused_sgd_step(params, grads, bufs, lr=0.1, momentum=0.9, weight_decay=0.1)
        outs.append(params)
    assert outs[0][1].data_ptr() % 16 != 0
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.interpreter
def test_plans_are_cached():
    params, grads = tensors([(5,), (9,)], torch.float32), tensors([(5,), (9,)], torch.float32, seed=1)
    m, v = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    K.fused_adam_step(params, grads, m, v, step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8)
    cached = len(K._PLANS)
    K.fused_adam_step(params, grads, m, v, step=2, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8)
    assert len(K._PLANS) == cached


def test_bad_inputs_are_named():
    p, g = [torch.zeros(3), torch.zeros(4)], [torch.zeros(3), torch.zeros(4)]
    m = [torch.zeros(3), torch.zeros(4)]
    adam = dict(step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8)
    with force_backend("torch"):
        with pytest.raises(ValueError, match="grads has 1 tensors but params has 2"):
            K.fused_adam_step(p, g[:1], m, m, **adam)
        with pytest.raises(TypeError, match=r"exp_avgs\[1\] must have dtype in \(float32\), got float64"):
            K.fused_adam_step(p, g, [m[0], m[1].double()], m, **adam)
        with pytest.raises(ValueError, match=r"exp_avg_sqs\[0\] has shape \(1,\) but params\[0\] has \(3,\)"):
            K.fused_adam_step(p, g, m, [torch.zeros(1), m[1]], **adam)
        with pytest.raises(ValueError, match=r"contiguous.*params\[0\]"):
            K.fused_sgd_step([torch.zeros(3, 2).t()], [torch.zeros(2, 3)], lr=0.1)
        with pytest.raises(ValueError, match="step must count from 1"):
            K.fused_adam_step(p, g, m, m, **{**adam, "step": 0})
        with pytest.raises(ValueError, match="amsgrad=True needs max_exp_avg_sqs"):
            K.fused_adam_step(p, g, m, m, amsgrad=True, **adam)


# ---- CUDA --------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("options", [dict(lr=1e-3), dict(lr=1e-2, weight_decay=0.1, amsgrad=True)])
def test_cuda_adamw_matches_torch_fused(options):
    shapes = [(1,), (0,), (50257, 64), (768,), (3, 1031), (4096, 3)]
    ours, theirs, _, _ = run_pair(
        co.AdamW, options, torch.float32, steps=20, device="cuda", shapes=shapes,
        peer=lambda params, **kw: torch.optim.AdamW(params, fused=True, **kw),
    )  # fmt: skip
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("options", [dict(lr=0.1, momentum=0.9), dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)])
def test_cuda_sgd_matches_torch_fused(options):
    ours, theirs, _, _ = run_pair(
        co.SGD, options, torch.float32, steps=20, device="cuda",
        peer=lambda params, **kw: torch.optim.SGD(params, fused=True, **kw),
    )  # fmt: skip
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
def test_cuda_fused_adamw_matches_reference(dtype):
    shapes = [(1,), (7, 129), (100_003,)]
    outs = []
    for backend in ("triton", "torch"):
        params = tensors(shapes, dtype, device="cuda")
        grads = tensors(shapes, dtype, seed=1, device="cuda")
        m = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        v = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        with force_backend(backend):
            for step in range(1, 6):
                K.fused_adam_step(params, grads, m, v, step=step, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                                  weight_decay=0.1, decoupled_weight_decay=True)  # fmt: skip
        outs.append(params + m + v)
    for a, b in zip(*outs):
        torch.testing.assert_close(a.float(), b.float(), rtol=max(1e-6, torch.finfo(a.dtype).eps), atol=1e-6)
