"""course_lib.optim against torch.optim, step by step; schedules against hand-computed values.

Each optimizer runs 100 steps of the same small problem as its torch.optim counterpart
(several param groups, odd shapes, a 0-d and a 1-element parameter, an empty one) and
must agree to fp64 ~1e-12 / fp32 ~1e-6 relative in parameters and in every state tensor.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from course_lib import optim as co
from course_lib import schedules
from course_lib.kernels.backend import force_backend

SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4), (0, 3), (33,)]
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-6, atol=1e-6)}

PAIRS = {
    "SGD": (co.SGD, torch.optim.SGD),
    "Adagrad": (co.Adagrad, torch.optim.Adagrad),
    "RMSprop": (co.RMSprop, torch.optim.RMSprop),
    "Adadelta": (co.Adadelta, torch.optim.Adadelta),
    "Adam": (co.Adam, torch.optim.Adam),
    "AdamW": (co.AdamW, torch.optim.AdamW),
}

# (optimizer, options for every group, lr of the second group): each option that changes the math.
CASES = [
    ("SGD", dict(lr=0.05), 0.02),
    ("SGD", dict(lr=0.05, momentum=0.9), 0.02),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01), 0.02),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True), 0.02),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05, maximize=True), 0.02),
    ("Adagrad", dict(), 0.05),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1), 0.05),
    ("Adagrad", dict(lr=0.1, maximize=True, eps=1e-6), 0.05),
    ("RMSprop", dict(), 0.005),
    ("RMSprop", dict(centered=True), 0.005),
    ("RMSprop", dict(momentum=0.9, weight_decay=0.01), 0.005),
    ("RMSprop", dict(alpha=0.9, centered=True, momentum=0.5, maximize=True), 0.005),
    ("Adadelta", dict(), 0.5),
    ("Adadelta", dict(rho=0.5, eps=1e-4, weight_decay=0.01), 0.5),
    ("Adadelta", dict(maximize=True), 0.5),
    ("Adam", dict(lr=0.01), 0.003),
    ("Adam", dict(lr=0.01, weight_decay=0.05), 0.003),
    ("Adam", dict(lr=0.01, amsgrad=True), 0.003),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, amsgrad=True, weight_decay=0.01, maximize=True), 0.003),
    ("AdamW", dict(lr=0.01), 0.003),
    ("AdamW", dict(lr=0.01, weight_decay=0.0), 0.003),
    ("AdamW", dict(lr=0.01, amsgrad=True, weight_decay=0.1), 0.003),
    ("AdamW", dict(lr=0.01, maximize=True), 0.003),
]


def make_problem(dtype, seed=0):
    """Parameters of SHAPES and a loss whose gradient depends on them (so errors would compound)."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in SHAPES]
    weights = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in SHAPES]
    return params, weights


def loss_fn(params, weights):
    return sum(((w * p).sin().sum() + 0.05 * (p * p).sum()) for p, w in zip(params, weights))


def groups(params, options, second_lr):
    # Two groups: the second with its own lr (and, where the optimizer has one, weight decay).
    second = {"params": params[4:], "lr": second_lr}
    if "weight_decay" in options or options.get("momentum"):
        second["weight_decay"] = 0.02
    return [{"params": params[:4]}, second]


def run(optimizer, params, weights, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(params, weights).backward()
        optimizer.step()


def assert_same_state(ours, theirs, **tol):
    for p_ours, p_theirs in zip(ours.state, theirs.state):
        s_ours, s_theirs = ours.state[p_ours], theirs.state[p_theirs]
        assert set(s_ours) == set(s_theirs), (set(s_ours), set(s_theirs))
        for key in s_ours:
            torch.testing.assert_close(s_ours[key], s_theirs[key], **tol, msg=lambda m: f"state[{key!r}]: {m}")


def max_rel_diff(a, b):
    return max(((x - y).abs() / y.abs().clamp_min(1e-30)).max().item() for x, y in zip(a, b) if x.numel())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("name,options,second_lr", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_torch_optim(name, options, second_lr, dtype):
    ours_cls, torch_cls = PAIRS[name]
    ours_params, weights = make_problem(dtype)
    torch_params, _ = make_problem(dtype)
    ours = ours_cls(groups(ours_params, options, second_lr), **options)
    theirs = torch_cls(groups(torch_params, options, second_lr), **options)
    run(ours, ours_params, weights, 100)
    run(theirs, torch_params, weights, 100)
    for a, b in zip(ours_params, torch_params):
        torch.testing.assert_close(a, b, **TOL[dtype])
    assert_same_state(ours, theirs, **TOL[dtype])
    assert max_rel_diff(ours_params, torch_params) <= TOL[dtype]["rtol"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize(
    "name,options",
    [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)), ("SGD", dict(lr=0.05)),
     ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01)), ("AdamW", dict(lr=0.01))],
)  # fmt: skip
def test_fused_reference_backend_matches_torch_optim(name, options, dtype):
    # fused=True on the CPU without the interpreter runs the kernels' PyTorch reference.
    ours_cls, torch_cls = PAIRS[name]
    ours_params, weights = make_problem(dtype)
    torch_params, _ = make_problem(dtype)
    ours = ours_cls(ours_params, fused=True, **options)
    theirs = torch_cls(torch_params, **options)
    with force_backend("torch"):
        run(ours, ours_params, weights, 30)
    run(theirs, torch_params, weights, 30)
    for a, b in zip(ours_params, torch_params):
        torch.testing.assert_close(a, b, **TOL[dtype])


def test_parameters_without_gradient_are_skipped_like_torch():
    ours_params, weights = make_problem(torch.float64)
    torch_params, _ = make_problem(torch.float64)
    ours, theirs = co.Adam(ours_params, lr=0.01), torch.optim.Adam(torch_params, lr=0.01)
    for step in range(20):
        for opt, params in ((ours, ours_params), (theirs, torch_params)):
            opt.zero_grad()
            loss_fn(params[: 3 if step % 3 else None], weights).backward()  # params[3:] only every third step
            opt.step()
    for a, b in zip(ours_params, torch_params):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert_same_state(ours, theirs, rtol=1e-12, atol=1e-12)


# ---- state_dict ---------------------------------------------------------------------------

STATEFUL = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("Adagrad", dict(lr_decay=0.01)),
    ("RMSprop", dict(centered=True, momentum=0.5)),
    ("Adadelta", dict()),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
]


def saved(optimizer):
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer)


@pytest.mark.parametrize("name,options", STATEFUL, ids=[s[0] for s in STATEFUL])
@pytest.mark.parametrize("direction", ["ours->ours", "ours->torch", "torch->ours"])
def test_state_dict_round_trip(name, options, direction):
    """Stop after 40 steps, save, load into a fresh optimizer, continue for 60: same as 100 in one go."""
    ours_cls, torch_cls = PAIRS[name]
    first_cls, second_cls = {
        "ours->ours": (ours_cls, ours_cls), "ours->torch": (ours_cls, torch_cls), "torch->ours": (torch_cls, ours_cls),
    }[direction]  # fmt: skip
    params, weights = make_problem(torch.float64)
    straight = first_cls(groups(params, options, 0.003), **options)
    run(straight, params, weights, 40)
    checkpoint, params_at_40 = saved(straight), [p.detach().clone() for p in params]
    run(straight, params, weights, 60)

    resumed_params = [p.clone().requires_grad_() for p in params_at_40]
    resumed = second_cls(groups(resumed_params, options, 0.003), **options)
    resumed.load_state_dict(checkpoint)
    run(resumed, resumed_params, weights, 60)
    for a, b in zip(params, resumed_params):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fused_low_precision_states_stay_fp32_after_load():
    params = [torch.randn(5, 3, dtype=torch.bfloat16, requires_grad=True)]
    opt = co.AdamW(params, fused=True)
    params[0].grad = torch.randn(5, 3, dtype=torch.bfloat16)
    with force_backend("torch"):
        opt.step()
    assert opt.state[params[0]]["exp_avg"].dtype == torch.float32
    fresh = co.AdamW(params, fused=True)
    fresh.load_state_dict(saved(opt))  # torch.optim would cast the moments to bf16 here
    state = fresh.state[params[0]]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    assert state["step"].device.type == "cpu" and state["step"].item() == 1
    torch.testing.assert_close(state["exp_avg"], opt.state[params[0]]["exp_avg"], rtol=0, atol=0)


# ---- errors -------------------------------------------------------------------------------

BAD = [
    (co.SGD, dict(lr=-1.0), "Invalid learning rate: -1.0"),
    (co.SGD, dict(momentum=-0.1), "Invalid momentum value: -0.1"),
    (co.SGD, dict(weight_decay=-1), "Invalid weight_decay value: -1"),
    (co.SGD, dict(nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    (co.SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), "Nesterov momentum requires"),
    (co.Adagrad, dict(lr_decay=-1), "Invalid lr_decay value: -1"),
    (co.Adagrad, dict(initial_accumulator_value=-1), "Invalid initial_accumulator_value value: -1"),
    (co.Adagrad, dict(eps=-1e-10), "Invalid epsilon value"),
    (co.RMSprop, dict(alpha=-0.5), "Invalid alpha value: -0.5"),
    (co.RMSprop, dict(momentum=-1), "Invalid momentum value"),
    (co.Adadelta, dict(rho=1.5), "Invalid rho value: 1.5"),
    (co.Adadelta, dict(lr=-2.0), "Invalid learning rate: -2.0"),
    (co.Adam, dict(betas=(1.0, 0.999)), r"Invalid beta parameter at index 0: 1.0"),
    (co.Adam, dict(betas=(0.9, -0.1)), r"Invalid beta parameter at index 1: -0.1"),
    (co.Adam, dict(eps=-1.0), "Invalid epsilon value: -1.0"),
    (co.AdamW, dict(weight_decay=-0.01), "Invalid weight_decay value: -0.01"),
    (co.AdamW, dict(lr=-1e-3), "Invalid learning rate: -0.001"),
]


@pytest.mark.parametrize("cls,kwargs,message", BAD, ids=[f"{b[0].__name__}-{i}" for i, b in enumerate(BAD)])
def test_bad_hyperparameters(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls([torch.zeros(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("cls", [c for c, _ in PAIRS.values()], ids=list(PAIRS))
def test_sparse_gradient_is_refused(cls):
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    embedding(torch.tensor([1, 2])).sum().backward()
    optimizer = cls(embedding.parameters())
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        optimizer.step()


def test_defaults_match_torch():
    p = [torch.zeros(1, requires_grad=True)]
    for name, (ours_cls, torch_cls) in PAIRS.items():
        ours, theirs = ours_cls(p).defaults, torch_cls(p).defaults
        for key, value in ours.items():
            assert theirs[key] == value, (name, key, value, theirs[key])


def test_closure_is_called_and_returns_loss():
    params, weights = make_problem(torch.float64)
    optimizer = co.SGD(params, lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(params, weights)
        loss.backward()
        return loss

    assert torch.is_tensor(optimizer.step(closure))


# ---- schedules ----------------------------------------------------------------------------


def lrs(scheduler, steps):
    """The learning rate used at steps 0 .. steps-1 (of the first group)."""
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def sgd(lr=1.0, n_groups=1):
    return co.SGD([{"params": [torch.zeros(1, requires_grad=True)]} for _ in range(n_groups)], lr=lr)


def test_linear_warmup_linear_decay_values():
    got = lrs(schedules.linear_warmup_linear_decay(sgd(2.0), warmup_steps=4, total_steps=12), 14)
    expected = [0.0, 0.5, 1.0, 1.5, 2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert got == pytest.approx(expected, abs=1e-15)


def test_linear_warmup_cosine_decay_values():
    got = lrs(schedules.linear_warmup_cosine_decay(sgd(1.0), warmup_steps=2, total_steps=6, min_lr_ratio=0.1), 8)
    cos = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    assert got == pytest.approx([0.0, 0.5, *cos, 0.1], abs=1e-15)
    assert cos[2] == pytest.approx(0.55)  # half way down: the middle of [0.1, 1]


def test_slanted_triangular_values():
    # Howard & Ruder (2018), eq. 3, with their defaults cut_frac = 0.1, ratio = 32 and T = 1000.
    got = lrs(schedules.slanted_triangular(sgd(0.01), total_steps=1000), 1001)
    assert got[0] == pytest.approx(0.01 / 32)
    assert got[50] == pytest.approx(0.01 * (1 + 0.5 * 31) / 32)
    assert got[100] == pytest.approx(0.01)  # the peak, at t = cut = 100
    assert got[550] == pytest.approx(0.01 * (1 + 0.5 * 31) / 32)
    assert got[1000] == pytest.approx(0.01 / 32)
    assert max(got) == got[100]


def test_cosine_matches_torch_cosine_annealing():
    ours = lrs(schedules.linear_warmup_cosine_decay(sgd(0.3), warmup_steps=0, total_steps=50, min_lr_ratio=0.2), 51)
    theirs = lrs(torch.optim.lr_scheduler.CosineAnnealingLR(sgd(0.3), T_max=50, eta_min=0.06), 51)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12)


def test_linear_decay_matches_torch_linear_lr():
    ours = lrs(schedules.linear_warmup_linear_decay(sgd(0.3), warmup_steps=0, total_steps=40), 41)
    theirs = lrs(torch.optim.lr_scheduler.LinearLR(sgd(0.3), start_factor=1.0, end_factor=0.0, total_iters=40), 41)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12)


def test_schedules_apply_to_every_group_and_save():
    optimizer = sgd(1.0, n_groups=2)
    optimizer.param_groups[1]["lr"] = 0.5
    scheduler = schedules.linear_warmup_linear_decay(optimizer, warmup_steps=10, total_steps=100)
    lrs(scheduler, 5)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 0.25])
    state = copy.deepcopy(scheduler.state_dict())
    fresh = schedules.linear_warmup_linear_decay(sgd(1.0, n_groups=2), warmup_steps=10, total_steps=100)
    fresh.load_state_dict(state)
    assert fresh.last_epoch == 5


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda o: schedules.linear_warmup_linear_decay(o, 10, 5), "warmup_steps must be in"),
        (lambda o: schedules.linear_warmup_cosine_decay(o, 0, 0), "total_steps must be positive"),
        (lambda o: schedules.linear_warmup_cosine_decay(o, 1, 10, min_lr_ratio=2), "min_lr_ratio"),
        (lambda o: schedules.slanted_triangular(o, 5, cut_frac=0.1), "at least 1 step of warm-up"),
        (lambda o: schedules.slanted_triangular(o, 100, cut_frac=1.5), "cut_frac"),
    ],
)
def test_schedule_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make(sgd())


def test_inverse_sqrt_warmup_is_the_transformers_rate():
    # Vaswani et al. (2017), eq. 3: d^-0.5 · min(s^-0.5, s · W^-1.5), with the peak d^-0.5 · W^-0.5 as lr.
    d_model, warmup = 512, 40
    got = lrs(schedules.inverse_sqrt_warmup(sgd(d_model**-0.5 * warmup**-0.5), warmup_steps=warmup), 400)
    paper = [d_model**-0.5 * min(s**-0.5, s * warmup**-1.5) for s in range(1, 400)]
    assert got[0] == 0.0 and got[1:] == pytest.approx(paper, rel=1e-13)
    assert max(got) == got[warmup] == pytest.approx(d_model**-0.5 * warmup**-0.5)
    assert got[4 * warmup] == pytest.approx(got[warmup] / 2)  # 1/√t after the peak
    assert co.inverse_sqrt_warmup is schedules.inverse_sqrt_warmup
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="warmup_steps must be an int >= 1"):
            schedules.inverse_sqrt_warmup(sgd(), warmup_steps=bad)


# ---- gradient clipping --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.3, 1e6], ids=["clips", "no-op"])
def test_clip_grad_norm_matches_torch(dtype, norm_type, max_norm):
    shapes = [s for s in SHAPES if math.prod(s) or norm_type != math.inf]  # inf-norm of empty: no identity
    g = torch.Generator().manual_seed(1)
    grads = [3 * torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    ours, theirs = ([torch.zeros(s, dtype=dtype, requires_grad=True) for s in shapes] for _ in range(2))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if i != 2:  # one parameter without a gradient
            a.grad, b.grad = grads[i].clone(), grads[i].clone()
    total_ours = co.clip_grad_norm_(ours, max_norm, norm_type)
    total_theirs = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert torch.equal(total_ours, total_theirs)
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, theirs) if a.grad is not None)
    clipped = torch.linalg.vector_norm(torch.cat([a.grad.reshape(-1) for a in ours if a.grad is not None]), norm_type)
    assert clipped.item() <= max_norm * (1 + 1e-6) and (max_norm < 1 or torch.equal(ours[0].grad, grads[0]))


def test_clip_grad_norm_mixed_dtypes_and_errors():
    dtypes = [torch.float32, torch.float64, torch.float32, torch.bfloat16]
    ours, theirs = ([torch.zeros(3 + i, dtype=dt, requires_grad=True) for i, dt in enumerate(dtypes)] for _ in range(2))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        a.grad = torch.linspace(-2, 3, a.numel(), dtype=a.dtype) * (i + 1)
        b.grad = a.grad.clone()
    assert torch.equal(co.clip_grad_norm_(ours, 0.5), torch.nn.utils.clip_grad_norm_(theirs, 0.5))
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, theirs))
    single = torch.ones(4, requires_grad=True)
    single.grad = torch.full((4,), 2.0)
    assert co.clip_grad_norm_(single, 1.0).item() == 4.0  # a lone tensor is accepted, as in torch
    assert torch.equal(co.clip_grad_norm_([torch.zeros(2, requires_grad=True)], 1.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match="max_norm must be >= 0, got -1.0"):
        co.clip_grad_norm_([single], -1.0)
    single.grad[0] = math.nan
    with pytest.raises(RuntimeError, match="total norm of order 2.0 of the gradients is nan"):
        co.clip_grad_norm_([single], 1.0, error_if_nonfinite=True)


class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(3))
        self.head = torch.nn.Linear(4, 2)


def layer_of(name: str) -> int:
    if name.startswith("embed"):
        return 0
    if name.startswith("layers."):
        return 1 + int(name.split(".")[1])
    return 4  # the head


def test_layerwise_lr_groups_ulmfit():
    model = TinyModel()
    model.layers[0].bias.requires_grad_(False)  # frozen parameters are left out
    param_groups = schedules.layerwise_lr_groups(model, base_lr=0.01, decay=1 / 2.6, layer_of=layer_of)
    assert [g["layer"] for g in param_groups] == [0, 1, 2, 3, 4]
    for lower, upper in zip(param_groups, param_groups[1:]):
        assert lower["lr"] == pytest.approx(upper["lr"] / 2.6)  # lr_{l-1} = lr_l / 2.6
    assert param_groups[-1]["lr"] == 0.01 and param_groups[-1]["names"] == ["head.weight", "head.bias"]
    assert param_groups[1]["names"] == ["layers.0.weight"]
    base = [g["lr"] for g in param_groups]
    optimizer = co.AdamW(param_groups, lr=1.0)
    scheduler = schedules.linear_warmup_linear_decay(optimizer, warmup_steps=2, total_steps=10)
    lrs(scheduler, 1)  # the schedule scales every group by the same factor
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5 * lr for lr in base])


def test_layerwise_lr_groups_errors():
    with pytest.raises(ValueError, match="decay must be > 0"):
        schedules.layerwise_lr_groups(TinyModel(), 0.01, 0.0, layer_of)
    with pytest.raises(ValueError, match=r"layer_of\('embed.weight'\) must return an int"):
        schedules.layerwise_lr_groups(TinyModel(), 0.01, 0.95, lambda name: -1)
    assert co.layerwise_lr_groups is schedules.layerwise_lr_groups
