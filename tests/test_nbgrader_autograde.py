"""End to end through nbgrader: release, submit, autograde, read the gradebook.

Everything happens in a temporary course directory (a copy of solutions/ and of the
repository's nbgrader_config.py, whose root is wherever the file lies), so the repository's
own gradebook and folders are never touched. One module-scoped fixture runs nbgrader
(generate_assignment, then autograde for every submission under one seed, then once more for
one submission under a second seed); the tests only read the resulting gradebook.

Submissions:

* ``full``    the release with the source's solutions filled in: full marks;
* ``blank``   the release as students receive it: 0;
* ``partial`` tasks 1 and 2 right, task 3 subtly wrong (cosine without normalising ``B``),
  the rest untouched: exactly the points of tasks 1 and 2;
* ``cheat``   every function is a table of the answers the visible tests expect, recorded by
  running the visible tests against the real solution: the visible-test points only, because
  the hidden tests draw other inputs from ``COURSE_GRADING_SEED``;
* ``full_b``  ``full`` again, graded under a different seed: full marks again.
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
ASSIGNMENT = "ch01_embeddings"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
SOURCE_NB = ROOT / "solutions" / ASSIGNMENT / NOTEBOOK
RELEASE_NB = ROOT / "exercises" / ASSIGNMENT / NOTEBOOK
# The functions the students write, in notebook order, and the grade_id of each solution cell.
TASKS = {
    "one_hot": "task1_one_hot",
    "lookup_as_matmul": "task2_lookup_as_matmul",
    "cosine_similarity_matrix": "task3_cosine_similarity_matrix",
    "nearest_neighbours": "task4_nearest_neighbours",
    "embedding_backward": "task5_embedding_backward",
    "analogy": "task6_analogy",
}
SEED_A, SEED_B = 7, 424242
NBGRADER_TIMEOUT_S = 300

WRONG_COSINE = '''
def cosine_similarity_matrix(A: torch.Tensor, B: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B must have the same vector size, got {A.shape[1]} and {B.shape[1]}")
    A_unit = A / A.norm(dim=1, keepdim=True).clamp_min(eps)
    return A_unit @ B.T  # forgot to normalise B: right only when B's rows have length 1
'''


# ---- reading the source notebook ---------------------------------------------------------


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _is_hidden(cell) -> bool:
    return "BEGIN HIDDEN TESTS" in cell.source


def _grade_points(source_nb) -> dict[str, float]:
    return {_nbgrader(c)["grade_id"]: float(_nbgrader(c)["points"]) for c in source_nb.cells if _nbgrader(c).get("grade")}


def _visible_points(source_nb) -> float:
    return sum(float(_nbgrader(c)["points"]) for c in source_nb.cells if _nbgrader(c).get("grade") and not _is_hidden(c))


def _task_points(source_nb, solution_grade_id: str) -> float:
    return sum(p for gid, p in _grade_points(source_nb).items() if gid.startswith(solution_grade_id + "_"))


# ---- recording what the tests call (for the hard-coded submission and the seed check) ---

# Shared by the recorder here and the replaying submission: one canonical text per call.
CALL_KEY_SRC = '''
def _call_key(args, kwargs):
    def enc(v):
        if isinstance(v, torch.Tensor):
            return ["tensor", str(v.dtype), list(v.shape), v.tolist()]
        return v
    return repr([[enc(a) for a in args], sorted((k, enc(v)) for k, v in kwargs.items())])
'''


def _encode_result(value):
    import torch

    if isinstance(value, torch.Tensor):
        return ["tensor", str(value.dtype).removeprefix("torch."), list(value.shape), value.tolist()]
    if isinstance(value, tuple):
        return ["tuple", [_encode_result(v) for v in value]]
    raise TypeError(f"cannot record a {type(value).__name__}")


def _record(source_nb, seed: int) -> list[tuple[str, str, str, object]]:
    """Run the source notebook (solutions and hidden tests) in this process, recording
    (cell kind, function, call key, outcome) for every call of a task function."""
    import torch

    log: list[tuple[str, str, str, object]] = []
    ns: dict = {}
    exec(CALL_KEY_SRC, ns)
    call_key = ns["_call_key"]
    kind = ["other"]

    def wrap(name, fn):
        def recorded(*args, **kwargs):
            key = call_key(args, kwargs)
            try:
                result = fn(*args, **kwargs)
            except Exception as err:
                log.append((kind[0], name, key, ["raise", type(err).__name__]))
                raise
            log.append((kind[0], name, key, ["return", _encode_result(result)]))
            return result

        recorded.__name__ = name
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
                    if name in ns and not hasattr(ns[name], "__wrapped_task__"):
                        ns[name] = wrap(name, ns[name])
                        ns[name].__wrapped_task__ = True
    finally:
        torch.random.set_rng_state(state)
        if old is None:
            os.environ.pop("COURSE_GRADING_SEED", None)
        else:
            os.environ["COURSE_GRADING_SEED"] = old
    return log


def _hard_coded_submission(release_nb, source_nb) -> nbformat.NotebookNode:
    """Every task function replays the answers recorded from the visible tests, and knows nothing else."""
    tables: dict[str, dict[str, object]] = {name: {} for name in TASKS}
    for kind, name, key, outcome in _record(source_nb, SEED_A):
        if kind != "hidden":
            tables[name][key] = outcome
    replay = CALL_KEY_SRC + '''
import json as _json

def _replay(table, args, kwargs):
    outcome = table[_call_key(args, kwargs)]  # KeyError for anything the visible tests did not ask
    def dec(v):
        if v[0] == "tensor":
            return torch.tensor(v[3], dtype=getattr(torch, v[1])).reshape(v[2])
        return tuple(dec(x) for x in v[1])
    if outcome[0] == "raise":
        import builtins
        raise getattr(builtins, outcome[1])("recorded answer")
    return dec(outcome[1])
'''
    sub = copy_nb(release_nb)
    for cell in sub.cells:
        gid = _nbgrader(cell).get("grade_id")
        for name, solution_id in TASKS.items():
            if gid == solution_id:
                table = f"_ANSWERS_{name} = _json.loads({json.dumps(json.dumps(tables[name]))})\n"
                func = f"def {name}(*args, **kwargs):\n    return _replay(_ANSWERS_{name}, args, kwargs)\n"
                cell.source = (replay if name == "one_hot" else "") + table + func
    return sub


def copy_nb(nb) -> nbformat.NotebookNode:
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
    """Run nbgrader once for every submission; return the course dir and the source notebook."""
    course = tmp_path_factory.mktemp("course")
    shutil.copytree(ROOT / "solutions", course / "solutions", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy2(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")  # its root is its own directory
    env = dict(os.environ)
    env.pop("COURSE_GRADING_SEED", None)
    env["JUPYTER_CONFIG_DIR"] = str(course / ".jupyter")  # no personal nbgrader/jupyter config leaks in
    env["JUPYTER_RUNTIME_DIR"] = str(course / ".runtime")
    repo_db = ROOT / "gradebook.db"
    repo_db_before = repo_db.stat().st_mtime_ns if repo_db.exists() else None

    # With the gradebook this time: autograde restores the test cells from it.
    _run_nbgrader(["generate_assignment", ASSIGNMENT, "--force"], course, env)
    release_nb = nbformat.read(course / "exercises" / ASSIGNMENT / NOTEBOOK, as_version=4)
    source_nb = nbformat.read(SOURCE_NB, as_version=4)

    full = nbgrader_tools.fill_solutions(release_nb, source_nb)
    partial = copy_nb(release_nb)
    for cell, filled in zip(partial.cells, full.cells):
        gid = _nbgrader(cell).get("grade_id")
        if gid in (TASKS["one_hot"], TASKS["lookup_as_matmul"]):
            cell.source = filled.source
        elif gid == TASKS["cosine_similarity_matrix"]:
            cell.source = WRONG_COSINE.strip()
    submissions = {
        "full": full,
        "blank": release_nb,
        "partial": partial,
        "cheat": _hard_coded_submission(release_nb, source_nb),
    }
    for student, nb in submissions.items():
        _submit(course, student, nb)
    _run_nbgrader(["autograde", ASSIGNMENT], course, {**env, "COURSE_GRADING_SEED": str(SEED_A)})
    _submit(course, "full_b", full)
    _run_nbgrader(["autograde", ASSIGNMENT, "--student", "full_b"], course, {**env, "COURSE_GRADING_SEED": str(SEED_B)})

    repo_db_after = repo_db.stat().st_mtime_ns if repo_db.exists() else None
    assert repo_db_after == repo_db_before, "the repository's gradebook.db was written by the test"
    return course, source_nb, release_nb


def _scores(course: Path, student: str) -> tuple[float, float, dict[str, float]]:
    """(total score, max score, {grade_id: score}) of one student's submission, from the gradebook."""
    from nbgrader.api import Gradebook
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id=config.CourseDirectory.course_id) as gb:
        nb = gb.find_submission_notebook(Path(NOTEBOOK).stem, ASSIGNMENT, student)
        per_grade = {g.name: float(g.score) for g in nb.grades}
        sub = gb.find_submission(ASSIGNMENT, student)
        return float(sub.score), float(sub.max_score), per_grade


# ---- the tests ----------------------------------------------------------------------------


def test_release_in_a_course_with_a_gradebook_equals_the_committed_release(graded):
    _, _, release_nb = graded
    committed = json.loads(RELEASE_NB.read_text(encoding="utf-8"))
    assert json.loads(nbformat.writes(release_nb)) == committed, "run `make exercises`"


def test_source_notebook_is_well_formed(graded):
    _, source_nb, _ = graded
    points = _grade_points(source_nb)
    assert 10 <= sum(points.values()) <= 15
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
    assert max_score > 0
    assert score == max_score, per_grade


def test_unmodified_release_scores_zero(graded):
    course, _, _ = graded
    score, max_score, per_grade = _scores(course, "blank")
    assert score == 0, per_grade
    assert max_score > 0


def test_partly_wrong_submission_gets_exactly_the_points_of_its_correct_tasks(graded):
    course, source_nb, _ = graded
    score, max_score, per_grade = _scores(course, "partial")
    expected = _task_points(source_nb, TASKS["one_hot"]) + _task_points(source_nb, TASKS["lookup_as_matmul"])
    assert 0 < score < max_score
    assert score == expected, per_grade
    cosine = TASKS["cosine_similarity_matrix"]
    assert per_grade[f"{cosine}_visible_tests"] == 0 and per_grade[f"{cosine}_hidden_tests"] == 0, per_grade


def test_hard_coded_visible_answers_earn_only_the_visible_points(graded):
    course, source_nb, _ = graded
    score, _, per_grade = _scores(course, "cheat")
    for gid, got in per_grade.items():
        want = 0.0 if gid.endswith("_hidden_tests") else _grade_points(source_nb)[gid]
        assert got == want, (gid, per_grade)
    assert score == _visible_points(source_nb)


def test_correct_submission_gets_full_marks_under_another_seed(graded):
    course, _, _ = graded
    score, max_score, per_grade = _scores(course, "full_b")
    assert score == max_score, per_grade


def test_hidden_inputs_come_from_the_grading_seed(graded):
    """Under two seeds the hidden tests ask every task different questions; the visible
    tests ask the same ones, and none of the hidden questions is a visible one."""
    _, source_nb, _ = graded
    runs = {seed: _record(source_nb, seed) for seed in (SEED_A, SEED_B)}
    for name in TASKS:
        hidden = {seed: {key for kind, fn, key, _ in log if kind == "hidden" and fn == name} for seed, log in runs.items()}
        visible = {seed: {key for kind, fn, key, _ in log if kind == "visible" and fn == name} for seed, log in runs.items()}
        assert hidden[SEED_A] and hidden[SEED_B], f"the hidden tests never call {name}"
        shared = hidden[SEED_A] & hidden[SEED_B]
        assert len(shared) <= len(hidden[SEED_A]) // 4, f"{name}: {len(shared)} hidden inputs do not depend on the seed"
        assert visible[SEED_A] == visible[SEED_B]
        assert visible[SEED_A].isdisjoint(hidden[SEED_A]), f"{name}: a hidden test repeats a visible input"
