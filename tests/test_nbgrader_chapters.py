"""Chapters 2-4's graded exercises end to end through nbgrader: release, submit, autograde.

As ``test_nbgrader_autograde.py`` does for Chapter 1 (with more submissions), everything
happens in a temporary course directory (a copy of solutions/ and of nbgrader_config.py), so
the repository's own gradebook and folders are never touched. One module-scoped fixture per
chapter runs nbgrader once (generate_assignment, autograde of three submissions under one seed,
then one submission under a second seed); the tests read the resulting gradebook.

Submissions:

* ``full``    the release with the source's solutions filled in: full marks;
* ``blank``   the release as students receive it: 0;
* ``partial`` tasks 1-3 right, task 4 with a mistake of the study notes (below), the rest
  untouched: exactly the points of tasks 1-3;
* ``full_b``  ``full`` again, graded under a different seed: full marks again.

The seed-dependence test runs the source notebook in this process under two seeds and
records every call of a task function: the hidden tests must ask other questions under
another seed, and never repeat a visible one.

The shared machinery (course run, gradebook, recorder, checks) lives in ``nbgrader_roundtrip.py``;
``test_autograde_chapters.py`` grades the same partial submissions, disarmed, in the sandbox.
"""

from __future__ import annotations

import dataclasses

import nbformat
import pytest

from tests import nbgrader_roundtrip as rt

SEED_A, SEED_B = 11, 987654


@dataclasses.dataclass(frozen=True)
class Chapter:
    tasks: dict[str, str]  # the functions the students write, in notebook order -> solution grade_id
    total_points: float
    wrong_task: str  # task 4: the function the partial submission gets wrong
    wrong_source: str
    right_points: float  # tasks 1-3

    @property
    def right_ids(self) -> list[str]:
        return list(self.tasks.values())[:3]

    @property
    def wrong_id(self) -> str:
        return self.tasks[self.wrong_task]


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

# Adam without bias correction: right on no step (the first step is already 3x too large).
ADAM_WITHOUT_BIAS_CORRECTION = '''
def adam_step(param, grad, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    if weight_decay != 0:
        grad = grad + weight_decay * param
    new_m = beta1 * m + (1 - beta1) * grad
    new_v = beta2 * v + (1 - beta2) * grad * grad
    return param - lr * new_m / (new_v.sqrt() + eps), new_m, new_v
'''

# The study notes' GELU: sqrt(2/pi) alone inside the tanh, multiplied by (x + 0.044715 x^3)
# outside it. The erf form is right, so only the tanh checks fail, in both test cells.
GELU_WITH_MISPLACED_PARENTHESIS = '''
def gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi)) * (x + 0.044715 * x**3))
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
'''

CHAPTERS = {
    "ch02_word2vec": Chapter(
        tasks={"skipgram_pairs": "task1_skipgram_pairs", "noise_distribution": "task2_noise_distribution",
               "keep_probability": "task3_keep_probability", "sgns_loss_and_grads": "task4_sgns_loss_and_grads",
               "huffman_codes": "task5_huffman_codes", "analogy": "task6_analogy"},
        total_points=15, wrong_task="sgns_loss_and_grads", wrong_source=SGNS_NEGATIVES_AS_POSITIVES, right_points=7),
    "ch03_optimizers": Chapter(
        tasks={"momentum_step": "task1_momentum_step", "nesterov_step": "task2_nesterov_step",
               "adagrad_step": "task3_adagrad_step", "adam_step": "task4_adam_step", "adamw_step": "task5_adamw_step",
               "warmup_linear_decay": "task6_warmup_linear_decay", "slanted_triangular": "task7_slanted_triangular"},
        total_points=15, wrong_task="adam_step", wrong_source=ADAM_WITHOUT_BIAS_CORRECTION, right_points=6),
    "ch04_bert": Chapter(
        tasks={"wordpiece_encode": "task1_wordpiece", "mask_tokens": "task2_mask_tokens", "attention": "task3_attention",
               "gelu": "task4_gelu", "bert_embeddings": "task5_embeddings",
               "bert_parameter_count": "task6_parameter_count"},
        total_points=18, wrong_task="gelu", wrong_source=GELU_WITH_MISPLACED_PARENTHESIS, right_points=9),
}


def _encode(value):
    import torch

    if isinstance(value, torch.Generator):  # Chapter 4's masking task receives a seeded generator
        return ["generator", value.initial_seed()]
    if isinstance(value, (set, frozenset)):  # and WordPiece a vocabulary
        return sorted(value)
    return rt.encode_arg(value)


@pytest.fixture(scope="module", params=list(CHAPTERS))
def graded(request, tmp_path_factory):
    assignment = request.param
    chapter = CHAPTERS[assignment]
    course, source_nb, release_nb = rt.run_course(
        tmp_path_factory.mktemp(assignment), assignment, right_ids=chapter.right_ids, wrong_id=chapter.wrong_id,
        wrong_source=chapter.wrong_source, seed_a=SEED_A, seed_b=SEED_B)
    return assignment, chapter, course, source_nb, release_nb


# ---- the tests ----------------------------------------------------------------------------


def test_release_in_a_course_with_a_gradebook_equals_the_committed_release(graded):
    assignment, _, _, _, release_nb = graded
    rt.check_release_equals_committed(release_nb, assignment)


def test_source_notebook_is_well_formed(graded):
    _, chapter, _, source_nb, _ = graded
    points = rt.check_source_well_formed(source_nb, chapter.tasks)
    assert sum(points.values()) == chapter.total_points


def test_full_solution_scores_full_marks(graded):
    assignment, chapter, course, _, _ = graded
    score, max_score, per_grade = rt.scores(course, assignment, "full")
    assert max_score == chapter.total_points
    assert score == max_score, per_grade


def test_unmodified_release_scores_zero(graded):
    assignment, chapter, course, _, _ = graded
    score, max_score, per_grade = rt.scores(course, assignment, "blank")
    assert score == 0, per_grade
    assert max_score == chapter.total_points


def test_a_mistake_of_the_notes_loses_exactly_its_task(graded):
    assignment, chapter, course, source_nb, _ = graded
    score, _, per_grade = rt.scores(course, assignment, "partial")
    expected = sum(rt.task_points(source_nb, gid) for gid in chapter.right_ids)
    assert expected == chapter.right_points
    assert score == expected, per_grade
    rt.check_task_scored_zero(per_grade, chapter.wrong_id)


def test_correct_submission_gets_full_marks_under_another_seed(graded):
    assignment, _, course, _, _ = graded
    score, max_score, per_grade = rt.scores(course, assignment, "full_b")
    assert score == max_score, per_grade


@pytest.mark.parametrize("assignment", list(CHAPTERS))
def test_hidden_inputs_come_from_the_grading_seed(assignment):
    """Under two seeds the hidden tests ask every task different questions; the visible
    tests ask the same ones, and none of the hidden questions is a visible one."""
    tasks = CHAPTERS[assignment].tasks
    source_nb = nbformat.read(rt.source_nb_path(assignment), as_version=4)
    runs = {seed: rt.record_calls(source_nb, seed, tasks, encode=_encode) for seed in (SEED_A, SEED_B)}
    rt.check_hidden_inputs_depend_on_seed(runs, tasks, SEED_A, SEED_B)
