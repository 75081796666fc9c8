"""End to end through nbgrader: release, submit, autograde, read the gradebook.

Everything happens in a temporary course directory (a copy of solutions/ and of the
repository's nbgrader_config.py, whose root is wherever the file lies), so the repository's
own gradebook and folders are never touched. One module-scoped fixture runs nbgrader
(generate_assignment, then autograde for every submission under one seed); the tests only read
the resulting gradebook. The solution under other seeds: the seed-dependence test executes the
source, hidden tests included, under two seeds in this process (a failing hidden test raises),
and the adversarial class (``test_autograde_adversarial.py``) grades it in the sandbox.

Submissions:

* ``full``    the release with the source's solutions filled in: full marks;
* ``blank``   the release as students receive it: 0;
* ``partial`` tasks 1 and 2 right, task 3 subtly wrong (cosine without normalising ``B``),
  the rest untouched: exactly the points of tasks 1 and 2;
* ``cheat``   every function is a table of the answers the visible tests expect, recorded by
  running the visible tests against the real solution: the visible-test points only, because
  the hidden tests draw other inputs from ``COURSE_GRADING_SEED``.
"""

from __future__ import annotations

import json

import nbformat
import pytest

from tests import nbgrader_roundtrip as rt

ASSIGNMENT = "ch01_embeddings"
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

WRONG_COSINE = '''
def cosine_similarity_matrix(A: torch.Tensor, B: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B must have the same vector size, got {A.shape[1]} and {B.shape[1]}")
    A_unit = A / A.norm(dim=1, keepdim=True).clamp_min(eps)
    return A_unit @ B.T  # forgot to normalise B: right only when B's rows have length 1
'''


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
    log: list[tuple[str, str, str, object]] = []
    ns: dict = {}
    exec(CALL_KEY_SRC, ns)
    call_key = ns["_call_key"]

    def wrap(name, fn, kind):
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

    rt.run_source_wrapped(source_nb, seed, TASKS, wrap, ns)
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
    sub = rt.copy_nb(release_nb)
    for cell in sub.cells:
        gid = rt.nbgrader_meta(cell).get("grade_id")
        for name, solution_id in TASKS.items():
            if gid == solution_id:
                table = f"_ANSWERS_{name} = _json.loads({json.dumps(json.dumps(tables[name]))})\n"
                func = f"def {name}(*args, **kwargs):\n    return _replay(_ANSWERS_{name}, args, kwargs)\n"
                cell.source = (replay if name == "one_hot" else "") + table + func
    return sub


graded = rt.graded_fixture(
    ASSIGNMENT,
    right_ids=[TASKS["one_hot"], TASKS["lookup_as_matmul"]],
    wrong_id=TASKS["cosine_similarity_matrix"],
    wrong_source=WRONG_COSINE,
    seed_a=SEED_A,
    extra_submissions=lambda release_nb, source_nb: {"cheat": _hard_coded_submission(release_nb, source_nb)},
)


def _scores(course, student: str):
    return rt.scores(course, ASSIGNMENT, student)


# ---- the tests ----------------------------------------------------------------------------


@pytest.mark.slow  # runs nbgrader (the module's `graded` fixture)
def test_release_in_a_course_with_a_gradebook_equals_the_committed_release(graded):
    _, _, release_nb = graded
    rt.check_release_equals_committed(release_nb, ASSIGNMENT)


@pytest.mark.slow  # runs nbgrader (the module's `graded` fixture)
def test_source_notebook_is_well_formed(graded):
    _, source_nb, _ = graded
    points = rt.check_source_well_formed(source_nb, TASKS)
    assert 10 <= sum(points.values()) <= 15


@pytest.mark.slow  # runs nbgrader (the module's `graded` fixture)
def test_full_solution_scores_full_marks(graded):
    course, _, _ = graded
    score, max_score, per_grade = _scores(course, "full")
    assert max_score > 0
    assert score == max_score, per_grade


@pytest.mark.slow  # runs nbgrader (the module's `graded` fixture)
def test_unmodified_release_scores_zero(graded):
    course, _, _ = graded
    score, max_score, per_grade = _scores(course, "blank")
    assert score == 0, per_grade
    assert max_score > 0


@pytest.mark.slow  # runs nbgrader (the module's `graded` fixture)
def test_partly_wrong_submission_gets_exactly_the_points_of_its_correct_tasks(graded):
    course, source_nb, _ = graded
    score, max_score, per_grade = _scores(course, "partial")
    expected = rt.task_points(source_nb, TASKS["one_hot"]) + rt.task_points(source_nb, TASKS["lookup_as_matmul"])
    assert 0 < score < max_score
    assert score == expected, per_grade
    rt.check_task_scored_zero(per_grade, TASKS["cosine_similarity_matrix"])


@pytest.mark.slow  # runs nbgrader (the module's `graded` fixture)
def test_hard_coded_visible_answers_earn_only_the_visible_points(graded):
    course, source_nb, _ = graded
    score, _, per_grade = _scores(course, "cheat")
    for gid, got in per_grade.items():
        want = 0.0 if gid.endswith("_hidden_tests") else rt.grade_points(source_nb)[gid]
        assert got == want, (gid, per_grade)
    assert score == rt.visible_points(source_nb)


def test_hidden_inputs_come_from_the_grading_seed():
    """Under two seeds the hidden tests ask every task different questions; the visible
    tests ask the same ones, and none of the hidden questions is a visible one. The solution
    passes every hidden test under both seeds (a failing one raises while recording)."""
    source_nb = nbformat.read(rt.source_nb_path(ASSIGNMENT), as_version=4)
    runs = {seed: _record(source_nb, seed) for seed in (SEED_A, SEED_B)}
    rt.check_hidden_inputs_depend_on_seed(runs, TASKS, SEED_A, SEED_B)
