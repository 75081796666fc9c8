"""Independent checks for ch03_optimizers.ipynb (instructor-only; nbgrader does not release it).

One check per autograded test cell, same grade_id and points. The visible checks ask exactly
the questions of the notebook's visible test cells (``tests/test_autograde_spec.py`` verifies
that by recording the calls those cells make). The hidden checks draw new inputs from the
grading seed, in the style of the notebook's hidden test cells, and compare with
``course_lib.optim`` and ``course_lib.schedules``. The grader runs the student's functions on
these inputs in a fresh sandboxed process and compares the results here, outside it.

The notebook chains an optimizer's steps, feeding the state one call returns into the next.
The independent check cannot feed a student's outputs back in, so every step is its own case:
its inputs are the state of the *reference* trajectory before that step (the first momentum
buffer is ``None``), and its answer is one step of ``course_lib.optim`` from there. Every step
is thus checked on its own, without drift from the steps before it.
"""

from __future__ import annotations

import math

import torch

from course_lib import optim
from course_lib import schedules as ref
from course_lib.autograde.spec import AssignmentSpec, case, task_checks

# The notebook's tolerances for one step (its test cells use them too).
TOL = {torch.float32: (1e-5, 1e-6), torch.float64: (1e-10, 1e-12)}


# ---- the notebook's functions, as one step of course_lib.optim on clones --------------------


def _sgd_reference(param, grad, buf, lr, momentum, nesterov):
    param = param.clone()
    state = {} if buf is None else {"momentum_buffer": buf.clone()}
    optim.sgd_step(param, grad.clone(), state, lr=lr, momentum=momentum, dampening=0.0, weight_decay=0.0,
                   nesterov=nesterov, maximize=False)
    return param, state["momentum_buffer"]


def momentum_reference(param, grad, buf, lr, momentum):
    return _sgd_reference(param, grad, buf, lr, momentum, nesterov=False)


def nesterov_reference(param, grad, buf, lr, momentum):
    return _sgd_reference(param, grad, buf, lr, momentum, nesterov=True)


def adagrad_reference(param, grad, sum_sq, lr, eps=1e-10):
    param = param.clone()
    state = {"step": torch.tensor(0.0), "sum": sum_sq.clone()}
    optim.adagrad_step(param, grad.clone(), state, lr=lr, lr_decay=0.0, weight_decay=0.0, eps=eps, maximize=False)
    return param, state["sum"]


def _adam_reference(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled):
    param = param.clone()
    state = {"step": torch.tensor(float(t - 1)), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}  # step_ makes it t
    optim.adam_step(param, grad.clone(), state, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                    amsgrad=False, maximize=False, decoupled_weight_decay=decoupled)
    return param, state["exp_avg"], state["exp_avg_sq"]


def adam_reference(param, grad, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    return _adam_reference(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled=False)


def adamw_reference(param, grad, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    return _adam_reference(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled=True)


def _trajectory(reference, param, grads, state, *args, counted=False, **kwargs) -> list:
    """One case per step, from the reference trajectory's state before it:
    ``(param, grad, *state[, t], *args, **kwargs)``, as the notebook's loops call the function."""
    cases = []
    for t, grad in enumerate(grads, start=1):
        step_args = (param, grad, *state, *((t,) if counted else ()), *args)
        cases.append(case(*step_args, **kwargs))
        param, *state = reference(*step_args, **kwargs)
    return cases


def _randn(gen: torch.Generator, shape, n: int, dtype=torch.float32) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The notebook's visible draws: a start point, then ``n`` gradients, from one generator."""
    theta0 = torch.randn(shape, dtype=dtype, generator=gen)
    return theta0, [torch.randn(shape, dtype=dtype, generator=gen) for _ in range(n)]


def _uniform(r: torch.Generator, low: float, span: float) -> float:
    return float(torch.rand((), generator=r)) * span + low


def _shape(r: torch.Generator) -> list[int]:
    return torch.randint(1, 6, (int(torch.randint(1, 4, (), generator=r)),), generator=r).tolist()


# ---- the visible tests' questions ---------------------------------------------------------


def _two_hand_computed_steps(reference) -> list:
    """The momentum tasks' first two visible steps (the second from the first's reference state)."""
    p1, g1, g2 = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0]), torch.tensor([0.5, 1.0])
    p2, b2 = reference(p1, g1, None, lr=0.1, momentum=0.9)
    return [case(p1, g1, None, lr=0.1, momentum=0.9), case(p2, g2, b2, lr=0.1, momentum=0.9)]


def _visible_momentum_step() -> list:
    cases = _two_hand_computed_steps(momentum_reference)
    theta0, grads = _randn(torch.Generator().manual_seed(31), (3, 4), 10)  # ten steps against torch.optim.SGD
    return cases + _trajectory(momentum_reference, theta0.clone(), grads, (None,), 0.05, 0.9)


def _visible_nesterov_step() -> list:
    cases = _two_hand_computed_steps(nesterov_reference)
    theta0, grads = _randn(torch.Generator().manual_seed(32), 5, 10, torch.float64)
    return cases + _trajectory(nesterov_reference, theta0.clone(), grads, (None,), 0.05, 0.8)


def _visible_adagrad_step() -> list:
    p1, g1, g2 = torch.tensor([1.0, 1.0]), torch.tensor([3.0, -4.0]), torch.tensor([4.0, 0.0])
    p2, G2 = adagrad_reference(p1, g1, torch.zeros(2), lr=0.1, eps=0.0)
    cases = [
        case(p1, g1, torch.zeros(2), lr=0.1, eps=0.0),
        case(p2, g2, G2, lr=0.1, eps=0.0),
        case(torch.zeros(1), torch.tensor([1e-3]), torch.zeros(1), lr=1.0, eps=1e-2),  # eps outside the root
    ]
    theta0, grads = _randn(torch.Generator().manual_seed(33), (4, 3), 10)
    return cases + _trajectory(adagrad_reference, theta0.clone(), grads, (torch.zeros(4, 3),), 0.1)


def _visible_adam_step() -> list:
    zeros = torch.zeros(3, dtype=torch.float64)
    cases = [case(zeros, torch.tensor([0.001, -2.0, 30.0], dtype=torch.float64), zeros, zeros, t=1, lr=0.01, eps=0.0)]
    theta0, grads = _randn(torch.Generator().manual_seed(34), (3, 5), 10)
    for wd in (0.0, 0.1):  # without and with (L2) weight decay
        cases += _trajectory(adam_reference, theta0.clone(), grads, (torch.zeros(3, 5), torch.zeros(3, 5)), 0.01,
                             counted=True, beta1=0.8, beta2=0.99, weight_decay=wd)
    return cases


def _visible_adamw_step() -> list:
    cases = [case(torch.tensor([2.0, -4.0]), torch.zeros(2), torch.zeros(2), torch.zeros(2), t=1, lr=0.1,
                  weight_decay=0.5)]  # zero gradient: pure decay
    theta0, grads = _randn(torch.Generator().manual_seed(35), (2, 7), 10)
    return cases + _trajectory(adamw_reference, theta0.clone(), grads, (torch.zeros(2, 7), torch.zeros(2, 7)), 0.01,
                               counted=True, weight_decay=0.1)


VISIBLE = {
    "momentum_step": _visible_momentum_step(),
    "nesterov_step": _visible_nesterov_step(),
    "adagrad_step": _visible_adagrad_step(),
    "adam_step": _visible_adam_step(),
    "adamw_step": _visible_adamw_step(),
    "warmup_linear_decay": [
        *(case(t, 10, 100) for t in (0, 5, 10, 55, 100, 120)),  # W = 10, T = 100
        case(0, 0, 50),  # without warm-up
        case(25, 0, 50),
        case(10, 10, 10),  # W = T
    ],
    "slanted_triangular": [
        *(case(t, 1000) for t in (0, 50, 100, 550, 1000, 1200)),  # cut = 100; held at 1/ratio past the end
        case(3, 20, cut_frac=0.25, ratio=8),
    ],
}


# ---- hidden questions, drawn from the grading seed ----------------------------------------


def _hidden_momentum(r: torch.Generator, reference, dtypes, mu_low: float, mu_span: float) -> list:
    cases = []
    for n in range(4):
        dtype = dtypes[n % 2]
        shape = _shape(r)
        lr, mu = _uniform(r, 0.01, 0.5), _uniform(r, mu_low, mu_span)
        theta = torch.randn(shape, generator=r, dtype=dtype)
        grads = [torch.randn(shape, generator=r, dtype=dtype) for _ in range(6)]
        cases += _trajectory(reference, theta, grads, (None,), lr, mu)
    return cases


def hidden_momentum_step(r: torch.Generator) -> list:
    return _hidden_momentum(r, momentum_reference, (torch.float32, torch.float64), 0.0, 0.95)


def hidden_nesterov_step(r: torch.Generator) -> list:
    return _hidden_momentum(r, nesterov_reference, (torch.float64, torch.float32), 0.05, 0.9)


def hidden_adagrad_step(r: torch.Generator) -> list:
    cases = []
    for n in range(4):
        dtype = (torch.float32, torch.float64)[n % 2]
        shape = _shape(r)
        lr = _uniform(r, 0.01, 0.5)
        eps = (1e-10, 1e-3)[n // 2]  # a large eps shows where it is added
        scale = (1.0, 1e-3)[n // 2]  # small gradients: sqrt(G) comparable to eps
        theta = torch.randn(shape, generator=r, dtype=dtype)
        grads = [torch.randn(shape, generator=r, dtype=dtype) * scale for _ in range(6)]
        cases += _trajectory(adagrad_reference, theta, grads, (torch.zeros(shape, dtype=dtype),), lr, eps)
    return cases


def _hidden_adam(r: torch.Generator, reference, runs: int, decoupled: bool) -> list:
    cases = []
    for n in range(runs):
        dtype = (torch.float32, torch.float64)[(n + decoupled) % 2]
        shape = _shape(r)
        lr = _uniform(r, 1e-3, 0.05)
        beta1, beta2 = _uniform(r, 0.45, 0.5), _uniform(r, 0.895, 0.1)
        if decoupled:  # AdamW: a visible decay, the default eps
            eps, wd = 1e-8, _uniform(r, 0.01, 0.5)
            theta = torch.randn(shape, generator=r, dtype=dtype) * 3
            grads = [torch.randn(shape, generator=r, dtype=dtype) for _ in range(8)]
        else:  # Adam: eps from 1e-4 to 1e-8, L2 decay in two runs of three, gradients of varied size
            eps = 10 ** -float(torch.randint(4, 9, (), generator=r))
            wd = (0.0, _uniform(r, 0.0, 0.2))[n % 3 > 0]
            theta = torch.randn(shape, generator=r, dtype=dtype)
            grads = [torch.randn(shape, generator=r, dtype=dtype) * _uniform(r, 1.0, 3.0) for _ in range(8)]
        zeros = torch.zeros(shape, dtype=dtype)
        cases += _trajectory(reference, theta, grads, (zeros, zeros), lr, beta1, beta2, eps, wd, counted=True)
    return cases


def hidden_adam_step(r: torch.Generator) -> list:
    return _hidden_adam(r, adam_reference, 5, decoupled=False)


def hidden_adamw_step(r: torch.Generator) -> list:
    return _hidden_adam(r, adamw_reference, 4, decoupled=True)


def hidden_warmup_linear_decay(r: torch.Generator) -> list:
    cases = []
    for n in range(6):
        T = int(torch.randint(1, 400, (), generator=r))
        W = (0, T, int(torch.randint(0, T + 1, (), generator=r)))[min(n, 2)]  # no warm-up, W = T, any W
        ts = sorted({0, W, max(W - 1, 0), T, T + 3, *torch.randint(0, T + 10, (25,), generator=r).tolist()})
        cases += [case(t, W, T) for t in ts]
    return cases


def hidden_slanted_triangular(r: torch.Generator) -> list:
    cases = []
    for _ in range(5):
        cut_frac = _uniform(r, 0.05, 0.4)
        T = int(torch.randint(int(math.ceil(1 / cut_frac)) + 1, 600, (), generator=r))  # cut >= 1
        ratio = float(torch.randint(2, 64, (), generator=r))
        cut = math.floor(T * cut_frac)
        ts = sorted({0, cut - 1, cut, cut + 1, T, T + 5, *torch.randint(0, T + 20, (25,), generator=r).tolist()})
        cases += [case(t, T, cut_frac, ratio) for t in ts]
    return cases


# ---- the spec -----------------------------------------------------------------------------

SPEC = AssignmentSpec(
    notebook="ch03_optimizers.ipynb",
    preamble="import math\nimport torch\n",
    checks=[  # (solution grade_id, function, reference, visible cases, hidden cases, (visible, hidden) points)
        *task_checks("task1_momentum_step", "momentum_step", momentum_reference, VISIBLE["momentum_step"],
                     hidden_momentum_step, (1, 1), tolerances=TOL),
        *task_checks("task2_nesterov_step", "nesterov_step", nesterov_reference, VISIBLE["nesterov_step"],
                     hidden_nesterov_step, (1, 1), tolerances=TOL),
        *task_checks("task3_adagrad_step", "adagrad_step", adagrad_reference, VISIBLE["adagrad_step"],
                     hidden_adagrad_step, (1, 1), tolerances=TOL),
        *task_checks("task4_adam_step", "adam_step", adam_reference, VISIBLE["adam_step"], hidden_adam_step, (1, 2),
                     tolerances=TOL),
        *task_checks("task5_adamw_step", "adamw_step", adamw_reference, VISIBLE["adamw_step"], hidden_adamw_step,
                     (1, 1), tolerances=TOL),
        *task_checks("task6_warmup_linear_decay", "warmup_linear_decay", ref.linear_warmup_linear_decay_factor,
                     VISIBLE["warmup_linear_decay"], hidden_warmup_linear_decay, (1, 1), tolerances=TOL),
        *task_checks("task7_slanted_triangular", "slanted_triangular", ref.slanted_triangular_factor,
                     VISIBLE["slanted_triangular"], hidden_slanted_triangular, (1, 1), tolerances=TOL),
    ],
)
