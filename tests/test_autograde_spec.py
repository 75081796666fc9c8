"""Each assignment's grading spec agrees with its notebook, and never reaches the students.

* every autograded test cell has one check with the same points (``AssignmentSpec.validate_against``);
* a visible check asks exactly the questions of its visible test cell (the calls that cell makes
  are recorded by running the source notebook's cells in this process);
* the instructor's own solution passes every check, visible and hidden, under two seeds;
* nbgrader's release leaves ``grading_spec.py`` out (``CourseDirectory.ignore``), and the
  committed exercises/ has none.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import nbformat
import pytest
import torch
from traitlets.config.loader import PyFileConfigLoader

from course_lib import nbgrader_tools
from course_lib.autograde import check
from course_lib.autograde.spec import SPEC_FILENAME, load_spec

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENTS = [a for a in nbgrader_tools.list_assignments(ROOT / "solutions")
               if (ROOT / "solutions" / a / SPEC_FILENAME).is_file()]


def _nbg(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _source_notebook(assignment: str):
    spec = load_spec(ROOT / "solutions" / assignment / SPEC_FILENAME, assignment)
    nb = nbformat.read(ROOT / "solutions" / assignment / spec.notebook, as_version=4)
    return spec, nb


@pytest.mark.parametrize("assignment", nbgrader_tools.list_assignments(ROOT / "solutions"))
def test_every_assignment_has_a_spec(assignment):
    # Without one the sandboxed grader refuses the assignment: a chapter's exercise is not done.
    assert assignment in ASSIGNMENTS, (f"solutions/{assignment}/{SPEC_FILENAME} is missing: `python -m "
                                       f"course_lib.autograde {assignment}` cannot grade it until it is written")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_spec_matches_the_notebooks_test_cells(assignment):
    spec, nb = _source_notebook(assignment)
    cells = {_nbg(c)["grade_id"]: float(_nbg(c)["points"]) for c in nb.cells if _nbg(c).get("grade") and c.cell_type == "code"}
    spec.validate_against(cells)


def _run_source(nb, record: set[str]):
    """Run the source notebook's cells here; return {grade_id of visible test cell: [(function, args, kwargs)]}
    and the namespace. Calls are recorded only when a test cell calls a task function directly."""
    ns: dict = {}
    calls: dict[str, list] = {}
    current = [None]
    depth = [0]

    def wrap(name, fn):
        def recorded(*args, **kwargs):
            if depth[0] == 0 and current[0] is not None:  # as asked: before the call consumes a generator
                calls.setdefault(current[0], []).append((name, check._clone(args), check._clone(kwargs)))
            depth[0] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1

        return recorded

    with contextlib.redirect_stdout(io.StringIO()):
        for cell in nb.cells:
            if cell.cell_type != "code" or "BEGIN HIDDEN TESTS" in cell.source:
                continue
            meta = _nbg(cell)
            current[0] = meta["grade_id"] if meta.get("grade") else None
            source = nbgrader_tools._strip_solution_markers(cell.source) if meta.get("solution") else cell.source
            exec(compile(source, f"<{meta.get('grade_id')}>", "exec"), ns)
            for name in record:
                if name in ns and not getattr(ns[name], "__recorded__", False):
                    ns[name] = wrap(name, ns[name])
                    ns[name].__recorded__ = True
    return calls, ns


def _same(a, b) -> bool:
    """The same question: identical arguments, except that floating-point tensors may differ by
    rounding (a chained test feeds the solution's own outputs back; the spec, a reference's)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape):
            return False
        return torch.allclose(a, b, rtol=1e-5, atol=1e-6) if a.is_floating_point() else torch.equal(a, b)
    if isinstance(a, torch.Generator) or isinstance(b, torch.Generator):
        return type(a) is type(b) and torch.equal(a.get_state(), b.get_state())
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_visible_checks_ask_what_the_visible_tests_ask(assignment):
    spec, nb = _source_notebook(assignment)
    calls, _ = _run_source(nb, {c.function for c in spec.checks})
    for c in spec.checks:
        if c.hidden:
            continue
        asked = [(args, kwargs) for name, args, kwargs in calls.get(c.cell, []) if name == c.function]
        cases = c.make_cases(0, assignment)
        assert len(asked) == len(cases), f"{c.cell}: the test cell makes {len(asked)} calls, the spec has {len(cases)}"
        for n, ((args, kwargs), mine) in enumerate(zip(asked, cases)):
            assert _same(tuple(args), tuple(mine.args)) and _same(kwargs, mine.kwargs), f"{c.cell}: case {n + 1} differs"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
@pytest.mark.parametrize("seed", [7, 424242])
def test_the_solution_passes_every_check(assignment, seed, tmp_path):
    spec, nb = _source_notebook(assignment)
    _, ns = _run_source(nb, set())
    prepared = check.prepare(spec, seed, tmp_path / "job")
    for c, outcomes in zip(spec.checks, prepared.expected):
        for n, (c_case, (kind, want)) in enumerate(zip(c.make_cases(seed, assignment), outcomes)):
            label = f"{c.cell} case {n + 1}"
            if kind == "raises":
                with pytest.raises(Exception) as err:
                    ns[c.function](*c_case.args, **c_case.kwargs)
                assert type(err.value).__name__ == want or want in [k.__name__ for k in type(err.value).__mro__], label
            else:
                check.compare_result(ns[c.function](*c_case.args, **c_case.kwargs), want, label, c)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_hidden_cases_change_with_the_seed(assignment):
    spec, _ = _source_notebook(assignment)
    for c in spec.checks:
        if c.hidden:
            a, b = c.make_cases(7, assignment), c.make_cases(8, assignment)
            assert not all(_same(x.args, y.args) and _same(x.kwargs, y.kwargs) for x, y in zip(a, b)), c.cell


def test_the_release_never_contains_the_spec():
    config = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    assert SPEC_FILENAME in config.CourseDirectory.ignore
    assert not list((ROOT / "exercises").rglob(SPEC_FILENAME))
