"""Chapter 2's graded exercise end to end through nbgrader: release, submit, autograde.

As ``test_nbgrader_autograde.py`` does for Chapter 1, everything happens in a temporary
course directory (a copy of solutions/ and of nbgrader_config.py), so the repository's own
gradebook and folders are never touched. One module-scoped fixture runs nbgrader once
(generate_assignment, autograde of three submissions under one seed, then one submission
under a second seed); the tests read the resulting gradebook.

Submissions:

* ``full``    the release with the source's solutions filled in: full marks;
* ``blank``   the release as students receive it: 0;
* ``partial`` tasks 1-3 right, the SGNS gradients (task 4) with the negatives treated like the
  context word (``sigma(s) - 1`` instead of ``sigma(s)``), the rest untouched: exactly the points
  of tasks 1-3;
* ``full_b``  ``full`` again, graded under a different seed: full marks again.

The seed-dependence test runs the source notebook in this process under two seeds and
records every call of a task function: the hidden tests must ask other questions under
another seed, and never repeat a visible one.

The shared machinery (course run, gradebook, recorder, checks) lives in ``nbgrader_roundtrip.py``.
"""

from __future__ import annotations

import nbformat

from tests import nbgrader_roundtrip as rt

ASSIGNMENT = "ch02_word2vec"
# The functions the students write, in notebook order, and the grade_id of each solution cell.
TASKS = {
    "skipgram_pairs": "task1_skipgram_pairs",
    "noise_distribution": "task2_noise_distribution",
    "keep_probability": "task3_keep_probability",
    "sgns_loss_and_grads": "task4_sgns_loss_and_grads",
    "huffman_codes": "task5_huffman_codes",
    "analogy": "task6_analogy",
}
SEED_A, SEED_B = 11, 987654
TOTAL_POINTS = 15

# The loss is right, and so is every gradient of the context word; but the negatives get
# sigma(s) - 1, the derivative for label 1, instead of sigma(s): a sign-and-offset slip that
# the derivation in the book warns about.
SGNS_NEGATIVES_AS_POSITIVES = '''
def sgns_loss_and_grads(v, u_pos, u_neg):
    s_pos = (u_pos * v).sum(-1)
    s_neg = torch.einsum("bkd,bd->bk", u_neg, v)
    loss = -F.logsigmoid(s_pos) - F.logsigmoid(-s_neg).sum(-1)
    g_pos = torch.sigmoid(s_pos) - 1.0
    g_neg = torch.sigmoid(s_neg) - 1.0
    grad_v = g_pos[:, None] * u_pos + torch.einsum("bk,bkd->bd", g_neg, u_neg)
    return loss, grad_v, g_pos[:, None] * v, g_neg[:, :, None] * v[:, None, :]
'''


graded = rt.graded_fixture(
    ASSIGNMENT,
    right_ids=[TASKS[name] for name in ("skipgram_pairs", "noise_distribution", "keep_probability")],
    wrong_id=TASKS["sgns_loss_and_grads"],
    wrong_source=SGNS_NEGATIVES_AS_POSITIVES,
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


def test_wrong_negative_gradient_loses_exactly_its_task(graded):
    course, source_nb, _ = graded
    score, _, per_grade = _scores(course, "partial")
    expected = sum(rt.task_points(source_nb, TASKS[name]) for name in ("skipgram_pairs", "noise_distribution", "keep_probability"))
    assert expected == 7
    assert score == expected, per_grade
    rt.check_task_scored_zero(per_grade, TASKS["sgns_loss_and_grads"])


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
