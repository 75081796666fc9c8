"""Independent checks for ch06_gpt.ipynb (instructor-only; nbgrader does not release it).

One check per autograded test cell, same grade_id and points. The visible checks ask exactly
the questions of the notebook's visible test cells (``tests/test_autograde_spec.py`` verifies
that by recording the calls those cells make). The hidden checks draw new inputs from the
grading seed, in the style of the notebook's hidden test cells, and compare with the
``course_lib`` references those cells use (``causal_mask`` and ``flash_attention`` in plain
PyTorch, ``causal_lm_loss``, ``top_k_filter`` / ``top_p_filter``, ``xlnet.permutation_masks``,
``generation.generate`` driving a bigram table). The grader runs the student's functions on
these inputs in a fresh sandboxed process and compares the results here, outside it.

Top-k/top-p filtering has several right answers where scores tie at the cut (which of the tied
tokens survive depends on the sort): its reference returns what :func:`compare_filter` needs,
and that compares as the notebook's ``_check_filter`` does.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from course_lib.autograde.spec import AssignmentSpec, case, task_checks
from course_lib.generation import generate, top_k_filter, top_p_filter
from course_lib.grading import GradingError
from course_lib.kernels import force_backend
from course_lib.kernels.flash_attention import causal_mask, flash_attention
from course_lib.models.gpt2 import causal_lm_loss
from course_lib.xlnet import permutation_masks

# ---- references ---------------------------------------------------------------------------


def causal_mask_reference(tq, tk):
    return causal_mask(tq, tk)


def shifted_loss_reference(logits, labels):
    return causal_lm_loss(logits, labels)


def filter_reference(scores, top_k=0, top_p=1.0, min_tokens_to_keep=1):
    """No unique answer where scores tie at the cut: what :func:`compare_filter` needs."""
    filtered = scores
    if top_k > 0:
        filtered = top_k_filter(filtered, top_k, min_tokens_to_keep)
    if top_p < 1.0:
        filtered = top_p_filter(filtered, top_p, min_tokens_to_keep)
    return {"filtered": filtered, "scores": scores}


def compare_filter(got, want) -> None:
    """The notebook's ``_check_filter``: same shape, the same number of kept tokens per row with
    the same scores, every other entry -inf, and no removed token above a kept one."""
    filtered, scores = want["filtered"], want["scores"]
    if type(got) is not torch.Tensor:
        raise GradingError(f"expected a torch.Tensor, got a {type(got).__name__}")
    if tuple(got.shape) != tuple(filtered.shape) or got.dtype != filtered.dtype:
        raise GradingError(f"expected shape {tuple(filtered.shape)} and dtype {filtered.dtype}, "
                           f"got {tuple(got.shape)} and {got.dtype}")
    kept_got, kept_want = got.isfinite(), filtered.isfinite()
    if not torch.equal(kept_got.sum(-1), kept_want.sum(-1)):
        raise GradingError(f"tokens kept per row: expected {kept_want.sum(-1).tolist()}, got {kept_got.sum(-1).tolist()}")
    if not bool((kept_got | (got == float("-inf"))).all()):
        raise GradingError("removed tokens must be -inf")
    for row in range(got.shape[0]):
        g, w, s = got[row], filtered[row], scores[row]
        if not torch.allclose(g[kept_got[row]].sort().values, w[kept_want[row]].sort().values, rtol=1e-6, atol=1e-6):
            raise GradingError(f"row {row}: the kept scores differ from the expected ones")
        kept, removed = s[kept_got[row]], s[~kept_got[row]]
        if removed.numel() and kept.numel() and kept.min() < removed.max():
            raise GradingError(f"row {row}: a removed token has a higher score than a kept one")


def permutation_masks_reference(order):
    return permutation_masks(order)


def cached_attention_reference(q, k, v, past_k, past_v):
    k_all, v_all = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
    with force_backend("torch"):
        return flash_attention(q, k_all, v_all, causal=True), k_all, v_all


def perplexity_reference(logits, labels):
    return math.exp(causal_lm_loss(logits, labels).item())


class _BigramLM(torch.nn.Module):
    """The decoding protocol (``model(input_ids, ...)`` -> ``.logits``) over a bigram table."""

    def __init__(self, transitions):
        super().__init__()
        self.transitions = transitions
        self.config = SimpleNamespace(vocab_size=transitions.shape[0], eos_token_id=None, pad_token_id=None,
                                      is_encoder_decoder=False)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        return SimpleNamespace(logits=self.transitions[input_ids], past_key_values=None)


def greedy_reference(transitions, input_ids, max_new_tokens, eos_token_id=None, pad_token_id=None):
    return generate(_BigramLM(transitions), input_ids, max_new_tokens,
                    eos_token_id=[] if eos_token_id is None else eos_token_id, pad_token_id=pad_token_id,
                    use_cache=False)


def _int(r: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high, (), generator=r))


# ---- the visible tests' questions ---------------------------------------------------------

_INF = float("inf")
_g = torch.Generator().manual_seed(0)
_LOSS_LOGITS = torch.randn(3, 7, 11, generator=_g)
_LOSS_LABELS = torch.randint(0, 11, (3, 7), generator=_g)
_LOSS_LABELS[1, :3] = -100
_HAND_LOGITS = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [5.0, -5.0]]])

_FILTER_S = torch.tensor([[1.0, 3.0, 2.0, 3.0, 0.0]])
_FOUR = torch.tensor([[0.0, -_INF, 0.0, 0.0, -_INF, 0.0]])
_FILTER_SCORES = torch.randn(4, 30, generator=torch.Generator().manual_seed(1)) * 2

_g = torch.Generator().manual_seed(5)
_FQ, _FK, _FV = (torch.randn(2, 3, 6, 8, generator=_g) for _ in range(3))
_EMPTY = torch.zeros(2, 3, 0, 8)

_CONFIDENT = torch.full((1, 4, 3), -30.0)
_CONFIDENT[0, torch.arange(4), torch.tensor([1, 2, 0, 0])] = 30.0
_g = torch.Generator().manual_seed(6)
_PPL_LOGITS, _PPL_LABELS = torch.randn(2, 9, 13, generator=_g), torch.randint(0, 13, (2, 9), generator=_g)
_PPL_LABELS[0, 4:] = -100

_CYCLE = torch.full((4, 4), -1.0)
_CYCLE[0, 1] = _CYCLE[1, 2] = _CYCLE[2, 0] = _CYCLE[3, 3] = 1.0
_g = torch.Generator().manual_seed(7)
_TABLE = torch.randn(12, 12, generator=_g)
_PROMPTS = torch.randint(0, 12, (3, 4), generator=_g)

VISIBLE = {
    "causal_mask": [case(3, 3), case(2, 4), case(1, 5), case(4, 7), case(6, 6), case(1, 1)],
    "shifted_lm_loss": [
        case(_HAND_LOGITS, torch.tensor([[1, 0, 1]])),
        case(_HAND_LOGITS, torch.tensor([[1, -100, 1]])),
        case(_LOSS_LOGITS, _LOSS_LABELS),
    ],
    "top_k_top_p_filter": [
        case(_FILTER_S, top_k=1),
        case(_FILTER_S, top_k=1, min_tokens_to_keep=3),
        case(_FOUR, top_p=0.5),
        case(_FILTER_SCORES, top_k=5),
        case(_FILTER_SCORES, top_p=0.8),
        case(_FILTER_SCORES, top_k=10, top_p=0.6),
        case(_FILTER_SCORES, top_p=0.05, min_tokens_to_keep=2),
    ],
    "permutation_masks": [
        case(torch.tensor([0, 1, 2, 3])),
        case(torch.tensor([2, 0, 1])),
        case(torch.randperm(9, generator=torch.Generator().manual_seed(4))),
    ],
    "attention_with_kv_cache": [
        case(_FQ, _FK, _FV, _EMPTY, _EMPTY),
        case(_FQ[:, :, 5:], _FK[:, :, 5:], _FV[:, :, 5:], _FK[:, :, :5], _FV[:, :, :5]),
        case(_FQ[:, :, 4:], _FK[:, :, 4:], _FV[:, :, 4:], _FK[:, :, :4], _FV[:, :, :4]),
    ],
    "perplexity": [
        case(torch.zeros(2, 5, 17), torch.zeros(2, 5, dtype=torch.long)),
        case(_CONFIDENT, torch.tensor([[0, 1, 2, 0]])),
        case(_PPL_LOGITS, _PPL_LABELS),
    ],
    "greedy_decode": [
        case(_CYCLE, torch.tensor([[0], [2]]), 4),
        case(_CYCLE, torch.tensor([[0], [1]]), 5, eos_token_id=2, pad_token_id=3),
        case(_TABLE, _PROMPTS, 8),
        case(_TABLE, _PROMPTS, 8, eos_token_id=5),
        case(_TABLE, _PROMPTS, 8, eos_token_id=5, pad_token_id=0),
    ],
}


# ---- hidden questions, drawn from the grading seed ----------------------------------------


def hidden_causal_mask(r: torch.Generator) -> list:
    cases = []
    for _ in range(8):
        tk = _int(r, 1, 40)
        cases.append(case(_int(r, 1, tk + 1), tk))
    return cases


def hidden_shifted_loss(r: torch.Generator) -> list:
    cases = []
    for _ in range(5):
        B, T, V = _int(r, 1, 4), _int(r, 1, 20) + 1, _int(r, 1, 60)
        logits = torch.randn(B, T, V, generator=r) * 3
        labels = torch.randint(0, V, (B, T), generator=r)
        labels[torch.rand(B, T, generator=r) < 0.3] = -100
        labels[0, 1] = _int(r, 0, V)  # at least one target
        cases.append(case(logits, labels))
    return cases


def hidden_filter(r: torch.Generator) -> list:
    cases = []
    for _ in range(6):
        B, V = _int(r, 1, 5), _int(r, 2, 50)
        scores = torch.randn(B, V, generator=r) * 3
        scores[0, : V // 2] = scores[0, 0]  # ties
        top_k = _int(r, 0, V + 3)
        top_p = float(torch.rand((), generator=r)) if torch.rand((), generator=r) < 0.8 else 1.0
        cases.append(case(scores, top_k=top_k, top_p=max(top_p, 0.01), min_tokens_to_keep=_int(r, 1, 4)))
    return cases


def hidden_permutation_masks(r: torch.Generator) -> list:
    return [case(torch.randperm(_int(r, 1, 16), generator=r)) for _ in range(6)]


def hidden_cached_attention(r: torch.Generator) -> list:
    cases = []
    for n in range(5):
        dtype = (torch.float32, torch.float64)[n % 2]
        B, nh, P, Tq, hs = _int(r, 1, 4), _int(r, 1, 4), _int(r, 0, 12), _int(r, 1, 6), _int(r, 1, 17)
        q, k, v = (torch.randn(B, nh, Tq, hs, generator=r, dtype=dtype) for _ in range(3))
        past_k, past_v = (torch.randn(B, nh, P, hs, generator=r, dtype=dtype) for _ in range(2))
        cases.append(case(q, k, v, past_k, past_v))
    return cases


def hidden_perplexity(r: torch.Generator) -> list:
    cases = []
    for _ in range(5):
        B, T, V = _int(r, 1, 4), _int(r, 2, 20), _int(r, 2, 80)
        logits = torch.randn(B, T, V, generator=r) * float(torch.rand((), generator=r) * 4)
        labels = torch.randint(0, V, (B, T), generator=r)
        labels[:, 1:][torch.rand(B, T - 1, generator=r) < 0.25] = -100
        labels[0, 1] = 0
        cases.append(case(logits, labels))
    return cases


def hidden_greedy(r: torch.Generator) -> list:
    cases = []
    for _ in range(6):
        V = _int(r, 3, 30)
        table = torch.randn(V, V, generator=r)
        B, T = _int(r, 1, 5), _int(r, 1, 6)
        prompts = torch.randint(0, V, (B, T), generator=r)
        eos = int(table.argmax(-1)[_int(r, 0, V)]) if torch.rand((), generator=r) < 0.7 else None  # an EOS that occurs
        pad = _int(r, 0, V) if torch.rand((), generator=r) < 0.5 else None
        cases.append(case(table, prompts, _int(r, 1, 12), eos_token_id=eos, pad_token_id=pad))
    return cases


# ---- the spec -----------------------------------------------------------------------------

_CACHED = {torch.float32: (1e-5, 1e-6), torch.float64: (1e-9, 1e-9)}  # the notebook's rtol=1e-5, atol=1e-6

SPEC = AssignmentSpec(
    notebook="ch06_gpt.ipynb",
    preamble="import math\nfrom types import SimpleNamespace\nimport torch\nimport torch.nn.functional as F\n",
    checks=[  # (solution grade_id, function, reference, visible cases, hidden cases, (visible, hidden) points)
        *task_checks("task1_causal_mask", "causal_mask", causal_mask_reference, VISIBLE["causal_mask"],
                     hidden_causal_mask, (1, 2)),
        *task_checks("task2_shifted_loss", "shifted_lm_loss", shifted_loss_reference, VISIBLE["shifted_lm_loss"],
                     hidden_shifted_loss, (1, 2)),
        *task_checks("task3_top_k_top_p", "top_k_top_p_filter", filter_reference, VISIBLE["top_k_top_p_filter"],
                     hidden_filter, (1, 2), compare=compare_filter),
        *task_checks("task4_permutation_masks", "permutation_masks", permutation_masks_reference,
                     VISIBLE["permutation_masks"], hidden_permutation_masks, (1, 2)),
        *task_checks("task5_kv_cache", "attention_with_kv_cache", cached_attention_reference,
                     VISIBLE["attention_with_kv_cache"], hidden_cached_attention, (1, 2), tolerances=_CACHED),
        *task_checks("task6_perplexity", "perplexity", perplexity_reference, VISIBLE["perplexity"], hidden_perplexity,
                     (1, 2), rtol=1e-5),
        *task_checks("task7_greedy", "greedy_decode", greedy_reference, VISIBLE["greedy_decode"], hidden_greedy, (1, 2)),
    ],
)
