"""Chapter 3's graded exercise end to end through nbgrader: release, submit, autograde.

As ``test_nbgrader_autograde.py`` does for Chapter 1, everything happens in a temporary
course directory (a copy of solutions/ and of nbgrader_config.py), so the repository's own
gradebook and folders are never touched. One module-scoped fixture runs nbgrader once
(generate_assignment, autograde of three submissions under one seed, then one submission
under a second seed); the tests read the resulting gradebook.

Submissions:

* ``full``    the release with the source's solutions filled in: full marks;
* ``blank``   the release as students receive it: 0;
* ``partial`` tasks 1-3 right, Adam (task 4) without bias correction, the rest untouched:
  exactly the points of tasks 1-3;
* ``full_b``  ``full`` again, graded under a different seed: full marks again.

The seed-dependence test runs the source notebook in this process under two seeds and
records every call of a task function: the hidden tests must ask other questions under
another seed, and never repeat a visible one.

The shared machinery (course run, gradebook, recorder, checks) lives in ``nbgrader_roundtrip.py``.
"""

from __future__ import annotations

import nbformat

from tests import nbgrader_roundtrip as rt

ASSIGNMENT = "ch03_optimizers"
# The functions the students write, in notebook order, and the grade_id of each solution cell.
TASKS = {
    "momentum_step": "task1_momentum_step",
    "nesterov_step": "task2_nesterov_step",
    "adagrad_step": "task3_adagrad_step",
    "adam_step": "task4_adam_step",
    "adamw_step": "task5_adamw_step",
    "warmup_linear_decay": "task6_warmup_linear_decay",
    "slanted_triangular": "task7_slanted_triangular",
}
SEED_A, SEED_B = 11, 987654
TOTAL_POINTS = 15

# Adam without bias correction: right on no step (the first step is already 3x too large).
ADAM_WITHOUT_BIAS_CORRECTION = '''
def adam_step(param, grad, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    if weight_decay != 0:
        grad = grad + weight_decay * param
    new_m = beta1 * m + (1 - beta1) * grad
    new_v = beta2 * v + (1 - beta2) * grad * grad
    return param - lr * new_m / (new_v.sqrt() + eps), new_m, new_v
'''


graded = rt.graded_fixture(
    ASSIGNMENT,
    right_ids=[TASKS[name] for name in ("momentum_step", "nesterov_step", "adagrad_step")],
    wrong_id=TASKS["adam_step"],
    wrong_source=ADAM_WITHOUT_BIAS_CORRECTION,
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


def test_adam_without_bias_correction_loses_exactly_its_task(graded):
    course, source_nb, _ = graded
    score, _, per_grade = _scores(course, "partial")
    expected = sum(rt.task_points(source_nb, TASKS[name]) for name in ("momentum_step", "nesterov_step", "adagrad_step"))
    assert score == expected, per_grade
    rt.check_task_scored_zero(per_grade, TASKS["adam_step"])


def test_correct_submission_gets_full_marks_under_another_seed(graded):
    course, _, _ = graded
    score, max_score, per_grade = _scores(course, "full_b")
    assert score == max_score, per_grade


def test_hidden_inputs_come_from_the_grading_seed():
    """Under two seeds the hidden tests ask every task different questions; the visible
    tests ask the same ones, and none of the hidden questions is a visible one."""
    source_nb = nbformat.read(rt.source_nb_path(ASSIGNMENT), as_version=4)
    runs = {seed: rt.record_calls(source_nb, seed, TASKS) for seed in (SEED_A, SEED_B)}
    rt.check_hidden_inputs_depend_on_seed(runs, TASKS, SEED_A, SEED_B)
