"""Chapters 2-8's graded exercises end to end through nbgrader: release, submit, autograde.

As ``test_nbgrader_autograde.py`` does for Chapter 1 (with more submissions), everything
happens in a temporary course directory (a copy of solutions/ and of nbgrader_config.py), so
the repository's own gradebook and folders are never touched. One module-scoped fixture per
chapter runs nbgrader once (generate_assignment, autograde of three submissions under one
seed); the tests read the resulting gradebook.

Submissions:

* ``full``    the release with the source's solutions filled in: full marks;
* ``blank``   the release as students receive it: 0;
* ``partial`` tasks 1-3 right, task 4 with a mistake of the study notes (below), the rest
  untouched: exactly the points of tasks 1-3;

The seed-dependence test runs the source notebook, hidden tests included, in this process under
two seeds and records every call of a task function: the hidden tests must ask other questions
under another seed, and never repeat a visible one; and since a failing hidden test raises, the
solution passes them under both seeds. (``test_autograde_chapters.py`` grades ``full`` under a
third seed in the sandbox: no second nbgrader run is needed here for "correct under another seed".)

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

# The study notes' "ALBERT only initialises one encoder layer, but computes 24 times" read as a parameter count of
# 24 layers: the layers counted once per forward step (num_layers) instead of once per distinct layer (groups x inner).
# Right only when every step has its own layer (num_groups = num_layers, inner_group_num = 1).
ALBERT_LAYERS_COUNTED_PER_STEP = '''
def albert_parameter_count(vocab_size, embedding_size, hidden_size, num_layers, num_groups, inner_group_num,
                           intermediate_size, max_position, type_vocab_size=2):
    E, H, I = embedding_size, hidden_size, intermediate_size
    embeddings = (vocab_size + max_position + type_vocab_size) * E + 2 * E
    layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H
    return embeddings + E * H + H + num_layers * layer + H * H + H
'''

# The study notes' "twice the parameters, so twice the cost": every token through both stacks, as
# if an encoder-decoder were a decoder of 2L layers. The decoder's count is right.
FLOPS_FROM_PARAMETERS = '''
def forward_flops(arch, d_model, d_ff, n_layers, vocab_size, n_input, n_output):
    d, N = d_model, n_input + n_output
    layers = n_layers if arch == "decoder" else 2 * n_layers
    return layers * (N * (8 * d * d + 4 * d * d_ff) + 4 * d * N * N) + N * 2 * d * vocab_size
'''

# Seed 003's XLNet: "permute the input sentence" and predict it left to right. The masks come out
# causal in the permuted order, indexed by rank instead of by position: right only for the identity order.
XLNET_PERMUTED_SENTENCE = '''
def permutation_masks(order):
    T = order.shape[-1]
    content = torch.ones(T, T, dtype=torch.bool).tril()
    return content, content.tril(-1)
'''

# A natural reading of "the last 100 ids are the sentinels": <extra_id_0> = vocab_size - 100, counting up. T5
# counts down from the end (<extra_id_0> = vocab_size - 1, t5-small's 32099); the runs and their order are right.
SENTINELS_COUNTING_UP = '''
def span_corruption_with_sentinels(tokens, noise_mask, vocab_size):
    def replace_runs(mask):
        previous = torch.cat([torch.zeros(1, dtype=torch.bool), mask[:-1]])
        first = mask & ~previous
        out = torch.where(first, vocab_size - 100 + torch.cumsum(first.long(), 0) - 1, tokens)
        return out[~(mask & previous)]

    return replace_runs(noise_mask), replace_runs(~noise_mask)
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
    "ch05_roberta_albert": Chapter(
        tasks={"byte_symbols": "task1_byte_symbols", "bpe_encode": "task2_bpe_encode",
               "roberta_position_ids": "task3_position_ids", "albert_parameter_count": "task4_albert_parameters",
               "sop_inputs": "task5_sop_inputs", "span_length_distribution": "task6_span_lengths"},
        total_points=18, wrong_task="albert_parameter_count", wrong_source=ALBERT_LAYERS_COUNTED_PER_STEP,
        right_points=9),
    "ch06_gpt": Chapter(
        tasks={"causal_mask": "task1_causal_mask", "shifted_lm_loss": "task2_shifted_loss",
               "top_k_top_p_filter": "task3_top_k_top_p", "permutation_masks": "task4_permutation_masks",
               "attention_with_kv_cache": "task5_kv_cache", "perplexity": "task6_perplexity",
               "greedy_decode": "task7_greedy"},
        total_points=21, wrong_task="permutation_masks", wrong_source=XLNET_PERMUTED_SENTENCE, right_points=9),
    "ch07_t5": Chapter(
        tasks={"relative_position_bucket": "task1_buckets", "rms_norm": "task2_rms_norm",
               "shift_right": "task3_shift_right", "span_corruption_with_sentinels": "task4_sentinels",
               "noise_span_counts": "task5_counts", "t5_attention": "task6_attention",
               "infill_spans": "task7_infilling"},
        total_points=21, wrong_task="span_corruption_with_sentinels", wrong_source=SENTINELS_COUNTING_UP,
        right_points=9),
    "ch08_decoder_only": Chapter(
        tasks={"attention_mask": "task1_masks", "numerical_rank": "task2_numerical_rank",
               "kv_cache_bytes": "task3_kv_cache_bytes", "forward_flops": "task4_forward_flops",
               "loss_tokens": "task5_loss_tokens", "dialogue_tokens": "task6_dialogue_tokens"},
        total_points=18, wrong_task="forward_flops", wrong_source=FLOPS_FROM_PARAMETERS, right_points=9),
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
        wrong_source=chapter.wrong_source, seed_a=SEED_A)
    return assignment, chapter, course, source_nb, release_nb


# ---- the tests ----------------------------------------------------------------------------


@pytest.mark.slow  # runs nbgrader (the module's `graded` fixture)
def test_release_in_a_course_with_a_gradebook_equals_the_committed_release(graded):
    assignment, _, _, _, release_nb = graded
    rt.check_release_equals_committed(release_nb, assignment)


@pytest.mark.slow  # runs nbgrader (the module's `graded` fixture)
def test_source_notebook_is_well_formed(graded):
    _, chapter, _, source_nb, _ = graded
    points = rt.check_source_well_formed(source_nb, chapter.tasks)
    assert sum(points.values()) == chapter.total_points


@pytest.mark.slow  # runs nbgrader (the module's `graded` fixture)
def test_full_solution_scores_full_marks(graded):
    assignment, chapter, course, _, _ = graded
    score, max_score, per_grade = rt.scores(course, assignment, "full")
    assert max_score == chapter.total_points
    assert score == max_score, per_grade


@pytest.mark.slow  # runs nbgrader (the module's `graded` fixture)
def test_unmodified_release_scores_zero(graded):
    assignment, chapter, course, _, _ = graded
    score, max_score, per_grade = rt.scores(course, assignment, "blank")
    assert score == 0, per_grade
    assert max_score == chapter.total_points


@pytest.mark.slow  # runs nbgrader (the module's `graded` fixture)
def test_a_mistake_of_the_notes_loses_exactly_its_task(graded):
    assignment, chapter, course, source_nb, _ = graded
    score, _, per_grade = rt.scores(course, assignment, "partial")
    expected = sum(rt.task_points(source_nb, gid) for gid in chapter.right_ids)
    assert expected == chapter.right_points
    assert score == expected, per_grade
    rt.check_task_scored_zero(per_grade, chapter.wrong_id)


@pytest.mark.parametrize("assignment", list(CHAPTERS))
def test_hidden_inputs_come_from_the_grading_seed(assignment):
    """Under two seeds the hidden tests ask every task different questions; the visible
    tests ask the same ones, and none of the hidden questions is a visible one. The solution
    passes every hidden test under both seeds (a failing one raises in ``record_calls``)."""
    tasks = CHAPTERS[assignment].tasks
    source_nb = nbformat.read(rt.source_nb_path(assignment), as_version=4)
    runs = {seed: rt.record_calls(source_nb, seed, tasks, encode=_encode) for seed in (SEED_A, SEED_B)}
    rt.check_hidden_inputs_depend_on_seed(runs, tasks, SEED_A, SEED_B)
