"""Shared machinery of the nbgrader round-trip tests (``test_nbgrader_*.py``).

Everything happens in a temporary course directory (a copy of solutions/ and of the
repository's nbgrader_config.py, whose root is wherever the file lies), so the repository's
own gradebook and folders are never touched. ``graded_fixture`` builds a module-scoped
fixture that runs nbgrader once (generate_assignment, then autograde of every submission under
one seed); the tests only read the gradebook. A correct submission under other seeds is checked
without a second nbgrader run: ``record_calls`` executes the source, hidden tests included, under
two seeds in this process (a failing hidden test raises), and the sandboxed grader
(``test_autograde_chapters.py``) grades ``full`` under a third.

Submissions made for every chapter:

* ``full``    the release with the source's solutions filled in;
* ``blank``   the release as students receive it;
* ``partial`` some tasks right, one subtly wrong, the rest untouched;

plus whatever the chapter adds (``extra_submissions``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import nbformat
import pytest

from course_lib import nbgrader_tools

ROOT = Path(__file__).resolve().parent.parent
NBGRADER_TIMEOUT_S = 300


def notebook_name(assignment: str) -> str:
    return f"{assignment}.ipynb"


def source_nb_path(assignment: str) -> Path:
    return ROOT / "solutions" / assignment / notebook_name(assignment)


def release_nb_path(assignment: str) -> Path:
    return ROOT / "exercises" / assignment / notebook_name(assignment)


# ---- reading the source notebook ---------------------------------------------------------


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_hidden(cell) -> bool:
    return "BEGIN HIDDEN TESTS" in cell.source


def grade_points(source_nb) -> dict[str, float]:
    return {nbgrader_meta(c)["grade_id"]: float(nbgrader_meta(c)["points"]) for c in source_nb.cells if nbgrader_meta(c).get("grade")}


def visible_points(source_nb) -> float:
    return sum(float(nbgrader_meta(c)["points"]) for c in source_nb.cells if nbgrader_meta(c).get("grade") and not is_hidden(c))


def task_points(source_nb, solution_grade_id: str) -> float:
    return sum(p for gid, p in grade_points(source_nb).items() if gid.startswith(solution_grade_id + "_"))


def copy_nb(nb) -> nbformat.NotebookNode:
    return nbformat.from_dict(json.loads(json.dumps(nb)))


# ---- the course run ----------------------------------------------------------------------


def run_nbgrader(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nbgrader", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=NBGRADER_TIMEOUT_S)
    assert proc.returncode == 0, f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def submit(course: Path, assignment: str, student: str, nb) -> None:
    target = course / "submitted" / student / assignment
    target.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target / notebook_name(assignment))


def partial_submission(release_nb, full, right_ids: Iterable[str], wrong_id: str, wrong_source: str) -> nbformat.NotebookNode:
    """The release with the cells ``right_ids`` solved and the cell ``wrong_id`` set to ``wrong_source``."""
    right_ids = tuple(right_ids)
    partial = copy_nb(release_nb)
    for cell, filled in zip(partial.cells, full.cells):
        gid = nbgrader_meta(cell).get("grade_id")
        if gid in right_ids:
            cell.source = filled.source
        elif gid == wrong_id:
            cell.source = wrong_source.strip()
    return partial


def copy_course(course: Path, release: bool = False) -> None:
    """A temporary course: solutions/ (and the committed exercises/) plus nbgrader_config.py,
    whose root is wherever the file lies."""
    shutil.copytree(ROOT / "solutions", course / "solutions", ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    if release:
        shutil.copytree(ROOT / "exercises", course / "exercises")
    shutil.copy2(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")


def sandbox_course(tmp_path_factory) -> Path:
    """A temporary course with the committed release, for the sandboxed grader (which needs root)."""
    if os.geteuid() != 0:
        pytest.skip("the grading sandbox needs root (CI runs as root)")
    course = tmp_path_factory.mktemp("course")
    copy_course(course, release=True)
    return course


def grading_env(course: Path | None = None) -> dict[str, str]:
    """The environment of a grading run: no grading seed of the caller's, no Triton interpreter
    (CPU tensors take the plain PyTorch path, as on a grading server) and, given a course, no
    personal Jupyter configuration."""
    env = dict(os.environ)
    env.pop("COURSE_GRADING_SEED", None)
    env.pop("TRITON_INTERPRET", None)
    if course is not None:
        env["JUPYTER_CONFIG_DIR"] = str(course / ".jupyter")
        env["JUPYTER_RUNTIME_DIR"] = str(course / ".runtime")
    return env


def run_course(
    course: Path,
    assignment: str,
    *,
    right_ids: Iterable[str],
    wrong_id: str,
    wrong_source: str,
    seed_a: int,
    extra_submissions: Callable[[nbformat.NotebookNode, nbformat.NotebookNode], dict] | None = None,
) -> tuple[Path, nbformat.NotebookNode, nbformat.NotebookNode]:
    """Run nbgrader once for every submission in a fresh course under ``course``; returns
    ``(course dir, source notebook, release notebook)``. ``extra_submissions(release_nb,
    source_nb)`` returns further {student: notebook} graded under ``seed_a``."""
    copy_course(course)
    env = grading_env(course)
    repo_db = ROOT / "gradebook.db"
    repo_db_before = repo_db.stat().st_mtime_ns if repo_db.exists() else None

    # With the gradebook this time: autograde restores the test cells from it.
    run_nbgrader(["generate_assignment", assignment, "--force"], course, env)
    release_nb = nbformat.read(course / "exercises" / assignment / notebook_name(assignment), as_version=4)
    source_nb = nbformat.read(source_nb_path(assignment), as_version=4)

    full = nbgrader_tools.fill_solutions(release_nb, source_nb)
    submissions = {
        "full": full,
        "blank": release_nb,
        "partial": partial_submission(release_nb, full, right_ids, wrong_id, wrong_source),
    }
    if extra_submissions is not None:
        submissions.update(extra_submissions(release_nb, source_nb))
    for student, nb in submissions.items():
        submit(course, assignment, student, nb)
    run_nbgrader(["autograde", assignment], course, {**env, "COURSE_GRADING_SEED": str(seed_a)})

    repo_db_after = repo_db.stat().st_mtime_ns if repo_db.exists() else None
    assert repo_db_after == repo_db_before, "the repository's gradebook.db was written by the test"
    return course, source_nb, release_nb


def graded_fixture(assignment: str, **options):
    """A module-scoped fixture around :func:`run_course`."""

    @pytest.fixture(scope="module")
    def graded(tmp_path_factory):
        return run_course(tmp_path_factory.mktemp("course"), assignment, **options)

    return graded


def scores(course: Path, assignment: str, student: str) -> tuple[float, float, dict[str, float]]:
    """(total score, max score, {grade_id: score}) of one student's submission, from the gradebook."""
    from nbgrader.api import Gradebook
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id=config.CourseDirectory.course_id) as gb:
        nb = gb.find_submission_notebook(Path(notebook_name(assignment)).stem, assignment, student)
        per_grade = {g.name: float(g.score) for g in nb.grades}
        sub = gb.find_submission(assignment, student)
        return float(sub.score), float(sub.max_score), per_grade


# ---- running the source notebook in this process (for the seed check) --------------------


def encode_arg(value):
    import torch

    if isinstance(value, torch.Tensor):
        return ["tensor", str(value.dtype), list(value.shape), value.tolist()]
    return value


def run_source_wrapped(source_nb, seed: int, task_names: Iterable[str], wrap: Callable, ns: dict | None = None) -> None:
    """Execute the source notebook (solutions and hidden tests) in ``ns`` under ``seed``; every
    task function is replaced by ``wrap(name, fn, kind)`` as soon as a cell defines it, where
    ``kind[0]`` is the kind ("hidden", "visible", "other") of the cell running at call time."""
    import torch

    task_names = tuple(task_names)
    ns = {} if ns is None else ns
    kind = ["other"]
    old = os.environ.get("COURSE_GRADING_SEED")
    os.environ["COURSE_GRADING_SEED"] = str(seed)
    state = torch.random.get_rng_state()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for cell in source_nb.cells:
                if cell.cell_type != "code":
                    continue
                meta = nbgrader_meta(cell)
                kind[0] = "hidden" if is_hidden(cell) else "visible" if meta.get("grade") else "other"
                source = nbgrader_tools._strip_solution_markers(cell.source) if meta.get("solution") else cell.source
                exec(compile(source, f"<cell {meta.get('grade_id', cell.get('id'))}>", "exec"), ns)
                for name in task_names:
                    if name in ns and not getattr(ns[name], "__wrapped_task__", False):
                        ns[name] = wrap(name, ns[name], kind)
                        ns[name].__wrapped_task__ = True
    finally:
        torch.random.set_rng_state(state)
        if old is None:
            os.environ.pop("COURSE_GRADING_SEED", None)
        else:
            os.environ["COURSE_GRADING_SEED"] = old


def record_calls(source_nb, seed: int, task_names: Iterable[str], encode: Callable = encode_arg) -> list[tuple[str, str, str]]:
    """(cell kind, function, call key) for every call of a task function in the source notebook under ``seed``."""
    log: list[tuple[str, str, str]] = []

    def wrap(name, fn, kind):
        def recorded(*args, **kwargs):
            key = repr([[encode(a) for a in args], sorted((k, encode(v)) for k, v in kwargs.items())])
            log.append((kind[0], name, key))
            return fn(*args, **kwargs)

        return recorded

    run_source_wrapped(source_nb, seed, task_names, wrap)
    return log


# ---- checks shared by the tests -----------------------------------------------------------


def check_release_equals_committed(release_nb, assignment: str) -> None:
    committed = json.loads(release_nb_path(assignment).read_text(encoding="utf-8"))
    assert json.loads(nbformat.writes(release_nb)) == committed, "run `make exercises`"


def check_source_well_formed(source_nb, tasks: dict[str, str]) -> dict[str, float]:
    """Structure checks on the source notebook; returns its {grade_id: points}."""
    points = grade_points(source_nb)
    solution_ids = [nbgrader_meta(c)["grade_id"] for c in source_nb.cells if nbgrader_meta(c).get("solution")]
    assert solution_ids == list(tasks.values())
    for solution_id in tasks.values():
        gids = [g for g in points if g.startswith(solution_id + "_")]
        assert sorted(gids) == [f"{solution_id}_hidden_tests", f"{solution_id}_visible_tests"]
    for cell in source_nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "solutions/ notebooks are committed without outputs"
        if is_hidden(cell):
            assert "grading.rng(" in cell.source, "hidden tests must draw their inputs from the grading seed"
    return points


def check_task_scored_zero(per_grade: dict[str, float], solution_id: str) -> None:
    assert per_grade[f"{solution_id}_visible_tests"] == 0 and per_grade[f"{solution_id}_hidden_tests"] == 0, per_grade


def check_hidden_inputs_depend_on_seed(runs: dict[int, list[tuple]], task_names: Iterable[str], seed_a: int, seed_b: int) -> None:
    """Under two seeds the hidden tests ask every task different questions; the visible tests
    ask the same ones, and none of the hidden questions is a visible one. ``runs`` maps each
    seed to a log whose entries start with (cell kind, function, call key)."""
    for name in task_names:
        hidden = {seed: {e[2] for e in log if e[0] == "hidden" and e[1] == name} for seed, log in runs.items()}
        visible = {seed: {e[2] for e in log if e[0] == "visible" and e[1] == name} for seed, log in runs.items()}
        assert hidden[seed_a] and hidden[seed_b], f"the hidden tests never call {name}"
        shared = hidden[seed_a] & hidden[seed_b]
        assert len(shared) <= len(hidden[seed_a]) // 4, f"{name}: {len(shared)} hidden inputs do not depend on the seed"
        assert visible[seed_a] == visible[seed_b]
        assert visible[seed_a].isdisjoint(hidden[seed_a]), f"{name}: a hidden test repeats a visible input"
