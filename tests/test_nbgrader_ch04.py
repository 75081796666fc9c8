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

The shared machinery (course run, gradebook, recorder, checks) lives in ``nbgrader_roundtrip.py``.
"""

from __future__ import annotations

import nbformat

from tests import nbgrader_roundtrip as rt

ASSIGNMENT = "ch04_bert"
# The functions the students write, in notebook order, and the grade_id of each solution cell.
TASKS = {
    "wordpiece_encode": "task1_wordpiece",
    "mask_tokens": "task2_mask_tokens",
    "attention": "task3_attention",
    "gelu": "task4_gelu",
    "bert_embeddings": "task5_embeddings",
    "bert_parameter_count": "task6_parameter_count",
}
SEED_A, SEED_B = 11, 987654
TOTAL_POINTS = 18

# The study notes' GELU: sqrt(2/pi) alone inside the tanh, multiplied by (x + 0.044715 x^3)
# outside it. The erf form is right, so only the tanh checks fail, in both test cells.
GELU_WITH_MISPLACED_PARENTHESIS = '''
def gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi)) * (x + 0.044715 * x**3))
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
'''


def _encode(value):
    import torch

    if isinstance(value, torch.Generator):  # the masking task receives a seeded generator
        return ["generator", value.initial_seed()]
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return rt.encode_arg(value)


graded = rt.graded_fixture(
    ASSIGNMENT,
    right_ids=[TASKS[name] for name in ("wordpiece_encode", "mask_tokens", "attention")],
    wrong_id=TASKS["gelu"],
    wrong_source=GELU_WITH_MISPLACED_PARENTHESIS,
    seed_a=SEED_A,
    seed_b=SEED_B,
)


def _scores(course, student: str):
    return rt.scores(course, ASSIGNMENT, student)


# ---- the tests ----------------------------------------------------------------------------


def test_release_in_a_course_with_a_gradebook_equals_the_committed_release(graded):
    _, _, release_nb = graded
    rt.check_release_equals_committed(release_nb, ASSIGNMENT)


def test_source_notebook_is_well_formed(graded):
    _, source_nb, _ = graded
    points = rt.check_source_well_formed(source_nb, TASKS)
    assert sum(points.values()) == TOTAL_POINTS


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
    expected = sum(rt.task_points(source_nb, TASKS[name]) for name in ("wordpiece_encode", "mask_tokens", "attention"))
    assert score == expected, per_grade
    rt.check_task_scored_zero(per_grade, TASKS["gelu"])


def test_correct_submission_gets_full_marks_under_another_seed(graded):
    course, _, _ = graded
    score, max_score, per_grade = _scores(course, "full_b")
    assert score == max_score, per_grade


def test_hidden_inputs_come_from_the_grading_seed():
    """Under two seeds the hidden tests ask every task different questions; the visible
    tests ask the same ones, and none of the hidden questions is a visible one."""
    source_nb = nbformat.read(rt.source_nb_path(ASSIGNMENT), as_version=4)
    runs = {seed: rt.record_calls(source_nb, seed, TASKS, encode=_encode) for seed in (SEED_A, SEED_B)}
    rt.check_hidden_inputs_depend_on_seed(runs, TASKS, SEED_A, SEED_B)
