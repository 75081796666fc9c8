"""Chapter 4's graded exercise end to end through nbgrader: release, submit, autograde.

As ``test_nbgrader_autograde.py`` does for Chapter 1, everything happens in a temporary
course directory (a copy of solutions/ and of nbgrader_config.py), so the repository's own
gradebook and folders are never touched. One module-scoped fixture runs nbgrader once
(generate_assignment, autograde of three submissions under one seed, then one submission
under a second seed); the tests read the resulting gradebook.

Submissions:

* ``full``    the release with the source's solutions filled in: full marks;
* ``blank``   the release as students receive it: 0;
* ``partial`` tasks 1-3 right, GELU (task 4) with the study notes' misplaced parenthesis in
  the tanh form, the rest untouched: exactly the points of tasks 1-3;
* ``full_b``  ``full`` again, graded under a different seed: full marks again.

The seed-dependence test runs the source notebook in this process under two seeds and
records every call of a task function: the hidden tests must ask other questions under
another seed, and never repeat a visible one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib import nbgrader_tools

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "ch04_bert"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
SOURCE_NB = ROOT / "solutions" / ASSIGNMENT / NOTEBOOK
RELEASE_NB = ROOT / "exercises" / ASSIGNMENT / NOTEBOOK
# The functions the students write, in notebook order, and the grade_id of each solution cell.
TASKS = {
    "wordpiece_encode": "task1_wordpiece",
    "mask_tokens": "task2_mask_tokens",
    "attention": "task3_attention",
    "gelu": "task4_gelu",
    "bert_embeddings": "task5_embeddings",
    "bert_parameter_count": "task6_parameter_count",
}
TOTAL_POINTS = 18
SEED_A, SEED_B = 11, 987654
NBGRADER_TIMEOUT_S = 300

# The study notes' GELU: sqrt(2/pi) alone inside the tanh, multiplied by (x + 0.044715 x^3)
# outside it. The erf form is right, so only the tanh checks fail, in both test cells.
GELU_WITH_MISPLACED_PARENTHESIS = '''
def gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi)) * (x + 0.044715 * x**3))
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
'''


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _is_hidden(cell) -> bool:
    return "BEGIN HIDDEN TESTS" in cell.source


def _grade_points(source_nb) -> dict[str, float]:
    return {_nbgrader(c)["grade_id"]: float(_nbgrader(c)["points"]) for c in source_nb.cells if _nbgrader(c).get("grade")}


def _task_points(source_nb, solution_grade_id: str) -> float:
    return sum(p for gid, p in _grade_points(source_nb).items() if gid.startswith(solution_grade_id + "_"))


def _copy_nb(nb) -> nbformat.NotebookNode:
    return nbformat.from_dict(json.loads(json.dumps(nb)))


# ---- the course run ----------------------------------------------------------------------


def _run_nbgrader(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nbgrader", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=NBGRADER_TIMEOUT_S)
    assert proc.returncode == 0, f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _submit(course: Path, student: str, nb) -> None:
    target = course / "submitted" / student / ASSIGNMENT
    target.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target / NOTEBOOK)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    shutil.copytree(ROOT / "solutions", course / "solutions", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy2(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    env = dict(os.environ)
    env.pop("COURSE_GRADING_SEED", None)
    env["JUPYTER_CONFIG_DIR"] = str(course / ".jupyter")
    env["JUPYTER_RUNTIME_DIR"] = str(course / ".runtime")
    repo_db = ROOT / "gradebook.db"
    repo_db_before = repo_db.stat().st_mtime_ns if repo_db.exists() else None

    _run_nbgrader(["generate_assignment", ASSIGNMENT, "--force"], course, env)
    release_nb = nbformat.read(course / "exercises" / ASSIGNMENT / NOTEBOOK, as_version=4)
    source_nb = nbformat.read(SOURCE_NB, as_version=4)

    full = nbgrader_tools.fill_solutions(release_nb, source_nb)
    partial = _copy_nb(release_nb)
    for cell, filled in zip(partial.cells, full.cells):
        gid = _nbgrader(cell).get("grade_id")
        if gid in (TASKS["wordpiece_encode"], TASKS["mask_tokens"], TASKS["attention"]):
            cell.source = filled.source
        elif gid == TASKS["gelu"]:
            cell.source = GELU_WITH_MISPLACED_PARENTHESIS.strip()
    for student, nb in {"full": full, "blank": release_nb, "partial": partial}.items():
        _submit(course, student, nb)
    _run_nbgrader(["autograde", ASSIGNMENT], course, {**env, "COURSE_GRADING_SEED": str(SEED_A)})
    _submit(course, "full_b", full)
    _run_nbgrader(["autograde", ASSIGNMENT, "--student", "full_b"], course, {**env, "COURSE_GRADING_SEED": str(SEED_B)})

    repo_db_after = repo_db.stat().st_mtime_ns if repo_db.exists() else None
    assert repo_db_after == repo_db_before, "the repository's gradebook.db was written by the test"
    return course, source_nb, release_nb


def _scores(course: Path, student: str) -> tuple[float, float, dict[str, float]]:
    from nbgrader.api import Gradebook
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id=config.CourseDirectory.course_id) as gb:
        nb = gb.find_submission_notebook(Path(NOTEBOOK).stem, ASSIGNMENT, student)
        per_grade = {g.name: float(g.score) for g in nb.grades}
        sub = gb.find_submission(ASSIGNMENT, student)
        return float(sub.score), float(sub.max_score), per_grade


# ---- recording what the tests ask (for the seed check) -----------------------------------


def _encode(value):
    import torch

    if isinstance(value, torch.Tensor):
        return ["tensor", str(value.dtype), list(value.shape), value.tolist()]
    if isinstance(value, torch.Generator):  # the masking task receives a seeded generator
        return ["generator", value.initial_seed()]
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return value


def _record(source_nb, seed: int) -> list[tuple[str, str, str]]:
    """Run the source notebook (solutions and hidden tests) in this process under ``seed``,
    recording (cell kind, function, call key) for every call of a task function."""
    import torch

    log: list[tuple[str, str, str]] = []
    ns: dict = {}
    kind = ["other"]

    def wrap(name, fn):
        def recorded(*args, **kwargs):
            key = repr([[_encode(a) for a in args], sorted((k, _encode(v)) for k, v in kwargs.items())])
            log.append((kind[0], name, key))
            return fn(*args, **kwargs)

        recorded.__wrapped_task__ = True
        return recorded

    old = os.environ.get("COURSE_GRADING_SEED")
    os.environ["COURSE_GRADING_SEED"] = str(seed)
    state = torch.random.get_rng_state()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for cell in source_nb.cells:
                if cell.cell_type != "code":
                    continue
                meta = _nbgrader(cell)
                kind[0] = "hidden" if _is_hidden(cell) else "visible" if meta.get("grade") else "other"
                source = nbgrader_tools._strip_solution_markers(cell.source) if meta.get("solution") else cell.source
                exec(compile(source, f"<cell {meta.get('grade_id', cell.get('id'))}>", "exec"), ns)
                for name in TASKS:
                    if name in ns and not getattr(ns[name], "__wrapped_task__", False):
                        ns[name] = wrap(name, ns[name])
    finally:
        torch.random.set_rng_state(state)
        if old is None:
            os.environ.pop("COURSE_GRADING_SEED", None)
        else:
            os.environ["COURSE_GRADING_SEED"] = old
    return log


# ---- the tests ----------------------------------------------------------------------------


def test_release_in_a_course_with_a_gradebook_equals_the_committed_release(graded):
    _, _, release_nb = graded
    committed = json.loads(RELEASE_NB.read_text(encoding="utf-8"))
    assert json.loads(nbformat.writes(release_nb)) == committed, "run `make exercises`"


def test_source_notebook_is_well_formed(graded):
    _, source_nb, _ = graded
    points = _grade_points(source_nb)
    assert sum(points.values()) == TOTAL_POINTS
    solution_ids = [_nbgrader(c)["grade_id"] for c in source_nb.cells if _nbgrader(c).get("solution")]
    assert solution_ids == list(TASKS.values())
    for solution_id in TASKS.values():
        gids = [g for g in points if g.startswith(solution_id + "_")]
        assert sorted(gids) == [f"{solution_id}_hidden_tests", f"{solution_id}_visible_tests"]
    for cell in source_nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "solutions/ notebooks are committed without outputs"
        if _is_hidden(cell):
            assert "grading.rng(" in cell.source, "hidden tests must draw their inputs from the grading seed"


def test_full_solution_scores_full_marks(graded):
    course, _, _ = graded
    score, max_score, per_grade = _scores(course, "full")
    assert max_score == TOTAL_POINTS
    assert score == max_score, per_grade


def test_unmodified_release_scores_zero(graded):
    course, _, _ = graded
    score, max_score, per_grade = _scores(course, "blank")
    assert score == 0, per_grade
    assert max_score == TOTAL_POINTS


def test_gelu_with_misplaced_parenthesis_loses_exactly_its_task(graded):
    course, source_nb, _ = graded
    score, _, per_grade = _scores(course, "partial")
    expected = sum(_task_points(source_nb, TASKS[name]) for name in ("wordpiece_encode", "mask_tokens", "attention"))
    assert score == expected, per_grade
    gelu = TASKS["gelu"]
    assert per_grade[f"{gelu}_visible_tests"] == 0 and per_grade[f"{gelu}_hidden_tests"] == 0, per_grade


def test_correct_submission_gets_full_marks_under_another_seed(graded):
    course, _, _ = graded
    score, max_score, per_grade = _scores(course, "full_b")
    assert score == max_score, per_grade


def test_hidden_inputs_come_from_the_grading_seed():
    """Under two seeds the hidden tests ask every task different questions; the visible
    tests ask the same ones, and none of the hidden questions is a visible one."""
    source_nb = nbformat.read(SOURCE_NB, as_version=4)
    runs = {seed: _record(source_nb, seed) for seed in (SEED_A, SEED_B)}
    for name in TASKS:
        hidden = {seed: {key for kind, fn, key in log if kind == "hidden" and fn == name} for seed, log in runs.items()}
        visible = {seed: {key for kind, fn, key in log if kind == "visible" and fn == name} for seed, log in runs.items()}
        assert hidden[SEED_A] and hidden[SEED_B], f"the hidden tests never call {name}"
        shared = hidden[SEED_A] & hidden[SEED_B]
        assert len(shared) <= len(hidden[SEED_A]) // 4, f"{name}: {len(shared)} hidden inputs do not depend on the seed"
        assert visible[SEED_A] == visible[SEED_B]
        assert visible[SEED_A].isdisjoint(hidden[SEED_A]), f"{name}: a hidden test repeats a visible input"
