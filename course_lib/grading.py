"""What exercise tests call to check a student's answer against ``course_lib``.

The adapter layer between graded notebooks and the library (as CS336's
``tests/adapters.py``): a test hands over the student's result and the
reference result, and gets either silence or a ``GradingError`` whose message
tells the student what differed, e.g.

    one_hot: wrong value at index (2, 5): expected 1.0, got 0.0
    (3 of 60 elements differ; max abs diff 1 > atol 1e-05 + rtol 1.3e-06 * |expected|)

Hidden tests draw their inputs from :func:`rng`, seeded by the environment
variable ``COURSE_GRADING_SEED`` that the instructor sets at grading time, so an
answer cannot be hard-coded from the public notebook.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import numpy as np
import torch

SEED_ENV = "COURSE_GRADING_SEED"
DEFAULT_SEED = 2026

# (rtol, atol) per dtype: torch.testing.assert_close's defaults.
TOLERANCES = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1.3e-6, 1e-5),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
}


class GradingError(AssertionError):
    """A check failed; the message is written for the student."""


def grading_seed() -> int:
    """The seed for hidden inputs: ``$COURSE_GRADING_SEED`` or a fixed default."""
    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return DEFAULT_SEED
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{SEED_ENV} must be an integer, got {raw!r}") from None


def rng(stream: int = 0) -> torch.Generator:
    """A CPU generator seeded from the grading seed; ``stream`` separates the draws of different tests."""
    return torch.Generator().manual_seed(grading_seed() * 1_000_003 + stream)


def _fail(name: str, msg: str) -> None:
    raise GradingError(f"{name}: {msg}" if name else msg)


def _fmt_index(flat: int, shape: tuple[int, ...]) -> str:
    if not shape:
        return "()"
    return str(tuple(int(i) for i in np.unravel_index(flat, shape)))


def check_type(got: Any, expected_type: type | tuple[type, ...], name: str = "") -> None:
    """The answer must be exactly of this type (subclasses that could override ``==`` are refused)."""
    types = expected_type if isinstance(expected_type, tuple) else (expected_type,)
    if type(got) not in types:
        want = " or ".join(t.__name__ for t in types)
        _fail(name, f"expected a {want}, got {type(got).__name__}" + (" (did you forget to return?)" if got is None else ""))


def check_tensor(
    got: Any,
    expected: torch.Tensor,
    name: str = "",
    *,
    rtol: float | None = None,
    atol: float | None = None,
    check_dtype: bool = True,
    equal_nan: bool = False,
) -> None:
    """``got`` must be a tensor of ``expected``'s shape (and dtype), finite where
    ``expected`` is, and elementwise |got - expected| <= atol + rtol * |expected|.
    Integer and boolean tensors must match exactly."""
    check_type(got, (torch.Tensor, torch.nn.Parameter), name)
    if tuple(got.shape) != tuple(expected.shape):
        _fail(name, f"wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}")
    if check_dtype and got.dtype != expected.dtype:
        _fail(name, f"wrong dtype: expected {expected.dtype}, got {got.dtype}")
    g = got.detach().cpu()
    e = expected.detach().cpu()
    if g.numel() == 0:
        return
    if not (e.is_floating_point() or e.is_complex()):
        bad = (g.to(e.dtype) != e).reshape(-1).nonzero()
        if len(bad):
            i = int(bad[0])
            _fail(name, f"wrong value at index {_fmt_index(i, tuple(e.shape))}: expected {e.reshape(-1)[i].item()}, "
                        f"got {g.reshape(-1)[i].item()} ({len(bad)} of {e.numel()} elements differ)")
        return
    d_rtol, d_atol = TOLERANCES.get(e.dtype, TOLERANCES[torch.float32])
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    g64, e64 = g.to(torch.float64), e.to(torch.float64)
    nonfinite = ~torch.isfinite(g64) & torch.isfinite(e64)
    if nonfinite.any():
        i = int(nonfinite.reshape(-1).nonzero()[0])
        _fail(name, f"non-finite value {g64.reshape(-1)[i].item()} at index {_fmt_index(i, tuple(e.shape))} "
                    f"where {e64.reshape(-1)[i].item():.6g} was expected")
    diff = (g64 - e64).abs()
    both_nan = torch.isnan(g64) & torch.isnan(e64) if equal_nan else torch.zeros_like(diff, dtype=torch.bool)
    same_inf = torch.isinf(e64) & (g64 == e64)
    bad = ~((diff <= atol + rtol * e64.abs()) | both_nan | same_inf)
    if bad.any():
        flat = bad.reshape(-1).nonzero().reshape(-1)
        i = int(flat[0])
        _fail(name, f"wrong value at index {_fmt_index(i, tuple(e.shape))}: expected {e64.reshape(-1)[i].item():.6g}, "
                    f"got {g64.reshape(-1)[i].item():.6g} ({len(flat)} of {e.numel()} elements differ; "
                    f"max abs diff {diff[bad].max().item():.3g} > atol {atol:g} + rtol {rtol:g} * |expected|)")


def check_scalar(got: Any, expected: float, name: str = "", *, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """A Python number (or 0-d tensor) close to ``expected``."""
    if isinstance(got, torch.Tensor) and got.dim() == 0:
        got = got.item()
    if type(got) not in (int, float) or isinstance(got, bool):
        _fail(name, f"expected a number, got {type(got).__name__}")
    if not math.isfinite(got):
        _fail(name, f"expected {expected:.6g}, got {got}")
    if abs(got - expected) > atol + rtol * abs(expected):
        _fail(name, f"expected {expected:.6g}, got {got:.6g} (difference {abs(got - expected):.3g})")


def check_raises(fn: Callable[[], Any], exc_type: type[BaseException] | tuple[type[BaseException], ...], name: str = "",
                 why: str = "") -> None:
    """Calling ``fn()`` must raise ``exc_type`` (e.g. for an out-of-vocabulary id)."""
    want = exc_type.__name__ if isinstance(exc_type, type) else " or ".join(e.__name__ for e in exc_type)
    try:
        fn()
    except exc_type:
        return
    except Exception as err:  # noqa: BLE001 - we report what came instead
        _fail(name, f"expected {want}{' ' + why if why else ''}, but got {type(err).__name__}: {err}")
    _fail(name, f"expected {want}{' ' + why if why else ''}, but nothing was raised")


def compare_with_reference(
    student_fn: Callable[..., Any],
    reference_fn: Callable[..., Any],
    cases: list[tuple[tuple, dict]] | list[tuple],
    name: str = "",
    **tolerances: Any,
) -> None:
    """Call both functions on each case (args tuple, or (args, kwargs)) and compare.

    Inputs are cloned for the student so an in-place edit cannot change what the
    reference sees. The message names the failing case."""
    for n, case in enumerate(cases):
        args, kwargs = (case if len(case) == 2 and isinstance(case[1], dict) else (case, {}))
        clone = lambda v: v.clone() if isinstance(v, torch.Tensor) else v  # noqa: E731
        expected = reference_fn(*[clone(a) for a in args], **{k: clone(v) for k, v in kwargs.items()})
        got = student_fn(*[clone(a) for a in args], **{k: clone(v) for k, v in kwargs.items()})
        label = f"{name or getattr(student_fn, '__name__', 'answer')} (case {n + 1} of {len(cases)})"
        if isinstance(expected, tuple):
            check_type(got, tuple, label)
            if len(got) != len(expected):
                _fail(label, f"expected a tuple of {len(expected)} results, got {len(got)}")
            for j, (g, e) in enumerate(zip(got, expected)):
                check_tensor(g, e, f"{label}, result {j}", **tolerances)
        else:
            check_tensor(got, expected, label, **tolerances)
