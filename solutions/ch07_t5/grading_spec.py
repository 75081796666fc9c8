"""Independent checks for ch07_t5.ipynb (instructor-only; nbgrader does not release it).

One check per autograded test cell, same grade_id and points. The visible checks ask exactly
the questions of the notebook's visible test cells (``tests/test_autograde_spec.py`` verifies
that by recording the calls those cells make). The hidden checks draw new inputs from the
grading seed, in the style of the notebook's hidden test cells, and compare with the
``course_lib`` references those cells use (``models.t5.relative_position_bucket``,
``kernels.rms_norm.rms_norm_forward_reference``, ``models.seq2seq.shift_right``,
``span_corruption.span_corruption`` / ``span_counts`` / ``infill_spans``, and ``flash_attention``
in plain PyTorch with ``scale=1.0`` and T5's ``bias=``). The grader runs the student's functions
on these inputs in a fresh sandboxed process and compares the results here, outside it.
"""

from __future__ import annotations

import torch

from course_lib.autograde.spec import AssignmentSpec, case, task_checks
from course_lib.kernels import force_backend
from course_lib.kernels.flash_attention import flash_attention
from course_lib.kernels.rms_norm import rms_norm_forward_reference
from course_lib.models.seq2seq import shift_right
from course_lib.models.t5 import relative_position_bucket
from course_lib.span_corruption import infill_spans, random_spans_noise_mask, span_corruption, span_counts

# ---- references ---------------------------------------------------------------------------


def bucket_reference(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    return relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance)


def rms_norm_reference(x, weight, eps=1e-6):
    return rms_norm_forward_reference(x, weight, eps)[0]


def shift_right_reference(labels, decoder_start_token_id, pad_token_id):
    return shift_right(labels, decoder_start_token_id, pad_token_id)


def corruption_reference(tokens, noise_mask, vocab_size):
    sentinels = [vocab_size - 1 - i for i in range(len(tokens) + 1)]  # <extra_id_0> = vocab_size - 1, counting down
    return span_corruption(tokens, sentinels, None, noise_mask=noise_mask)


def counts_reference(length, noise_density=0.15, mean_noise_span_length=3.0):
    return span_counts(length, noise_density, mean_noise_span_length)


def attention_reference(q, k, v, position_bias=None, key_padding_mask=None, causal=False):
    with force_backend("torch"):
        return flash_attention(q, k, v, key_padding_mask, scale=1.0, causal=causal, bias=position_bias)


def infill_reference(tokens, starts, lengths, mask_token_id):
    return infill_spans(tokens, starts, lengths, mask_token_id)


def _int(r: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high, (), generator=r))


# ---- the visible tests' questions ---------------------------------------------------------

_OFFSETS = torch.tensor([0, -1, 1, -1000, 1000])
_GRID = torch.arange(-200, 200)
_POS = torch.arange(6)

_g = torch.Generator().manual_seed(2)
_X, _W = torch.randn(2, 3, 17, generator=_g) * 3 + 1, torch.randn(17, generator=_g)

_LABELS = torch.randint(3, 50, (4, 9), generator=torch.Generator().manual_seed(3))
_LABELS[1, 5:] = -100
_LABELS[3, 2:] = -100

_WORDS = torch.arange(10, 21)
_FIG2 = torch.zeros(11, dtype=torch.bool)
_FIG2[[2, 3, 8]] = True
_g = torch.Generator().manual_seed(4)
_TOKENS = torch.randint(2, 400, (40,), generator=_g)
_MASK40 = random_spans_noise_mask(40, generator=_g)

_g = torch.Generator().manual_seed(6)
_Q, _K, _V = (torch.randn(2, 3, 5, 4, generator=_g) for _ in range(3))
_BIAS = torch.randn(1, 3, 5, 5, generator=_g)
_ENC_K, _ENC_V = torch.randn(2, 3, 7, 4, generator=_g), torch.randn(2, 3, 7, 4, generator=_g)
_PAD = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
_ENC_MASK = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])

_INFILL = torch.tensor([10, 11, 12, 13, 14])

VISIBLE = {
    "relative_position_bucket": [
        case(_OFFSETS),
        case(_OFFSETS, bidirectional=False),
        case(_GRID),
        case(_GRID, bidirectional=False),
        case(_GRID, num_buckets=8, max_distance=20),
        case(_GRID, bidirectional=False, num_buckets=7, max_distance=9),
        case(_POS[None, :] - _POS[:, None], num_buckets=8, max_distance=16),
    ],
    "rms_norm": [
        case(torch.tensor([[3.0, 4.0]]), torch.ones(2), 0.0),
        case(torch.full((1, 5), 2.0), torch.arange(5.0), 0.0),
        case(_X, _W),
        case(_X.double(), _W.double(), 1e-5),
    ],
    "shift_right": [
        case(torch.tensor([[5, 6, 7]]), 0, 0),
        case(torch.tensor([[0, 8, 9, 2, -100, -100]]), 2, 1),
        case(_LABELS, 0, 0),
        case(torch.tensor([[4]]), 7, 0),
    ],
    "span_corruption_with_sentinels": [
        case(_WORDS, _FIG2, 100),
        case(_TOKENS, _MASK40, 500),
        case(_TOKENS[:2], torch.tensor([False, True]), 500),
    ],
    "noise_span_counts": [
        case(568),
        case(10),
        case(30),
        case(1),
        case(100, noise_density=0.5, mean_noise_span_length=8.0),
        case(20, noise_density=0.99),
    ],
    "t5_attention": [
        case(torch.tensor([[[[1.0, 1.0]]]]), torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]]), torch.eye(2)[None, None]),
        case(_Q, _K, _V, _BIAS),
        case(_Q, _K, _V, _BIAS, _PAD),
        case(_Q, _K, _V, _BIAS, causal=True),
        case(_Q[:, :, :2], _ENC_K, _ENC_V, None, _ENC_MASK),
    ],
    "infill_spans": [
        case(_INFILL, [1, 4], [2, 0], 0),
        case(_INFILL, [5], [0], 0),
        case(_INFILL, [0, 2], [2, 3], 9),
        case(torch.arange(100, 130), [3, 9, 9, 20, 30], [4, 0, 5, 1, 0], 1),
    ],
}


# ---- hidden questions, drawn from the grading seed ----------------------------------------


def hidden_buckets(r: torch.Generator) -> list:
    cases = []
    for _ in range(8):
        num_buckets = _int(r, 4, 80)
        max_distance = num_buckets // 2 + 1 + _int(r, 0, 300)
        bidirectional = bool(torch.rand((), generator=r) < 0.5)
        rel = torch.randint(-2 * max_distance, 2 * max_distance + 1, (_int(r, 1, 200),), generator=r)
        cases.append(case(rel, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance))
    return cases


def hidden_rms_norm(r: torch.Generator) -> list:
    cases = []
    for n in range(6):
        dtype = (torch.float32, torch.float64)[n % 2]
        shape = tuple(_int(r, 1, 6) for _ in range(_int(r, 1, 3)))
        N = _int(r, 1, 70)
        x = torch.randn(*shape, N, generator=r, dtype=dtype) * float(torch.rand((), generator=r) * 5 + 0.1)
        w = torch.randn(N, generator=r, dtype=dtype)
        cases.append(case(x, w, float(10 ** -_int(r, 3, 9))))
    return cases


def hidden_shift_right(r: torch.Generator) -> list:
    cases = []
    for _ in range(6):
        B, T = _int(r, 1, 6), _int(r, 1, 15)
        labels = torch.randint(3, 100, (B, T), generator=r)
        lengths = torch.randint(1, T + 1, (B,), generator=r)
        labels[torch.arange(T)[None, :] >= lengths[:, None]] = -100
        cases.append(case(labels, _int(r, 0, 3), _int(r, 0, 3)))
    return cases


def hidden_corruption(r: torch.Generator) -> list:
    cases = []
    for _ in range(6):
        n, vocab_size = _int(r, 2, 120), _int(r, 300, 2000)
        tokens = torch.randint(2, 250, (n,), generator=r)
        density = float(torch.rand((), generator=r) * 0.3 + 0.05)
        mask = random_spans_noise_mask(n, density, float(_int(r, 1, 6)), generator=r)
        cases.append(case(tokens, mask, vocab_size))
    return cases


def hidden_counts(r: torch.Generator) -> list:
    cases = []
    for _ in range(12):
        length = _int(r, 0, 700)
        density = round(float(torch.rand((), generator=r) * 0.6 + 0.01), 3)
        mean = float(_int(r, 1, 9)) + (0.5 if torch.rand((), generator=r) < 0.3 else 0.0)
        cases.append(case(length, noise_density=density, mean_noise_span_length=mean))
    return cases


def hidden_attention(r: torch.Generator) -> list:
    cases = []
    for n in range(6):
        dtype = (torch.float32, torch.float64)[n % 2]
        B, nh, Tq, hs = _int(r, 1, 4), _int(r, 1, 4), _int(r, 1, 9), _int(r, 1, 12)
        cross = n % 3 == 2
        Tk = _int(r, 1, 12) if cross else Tq
        q = torch.randn(B, nh, Tq, hs, generator=r, dtype=dtype)
        k, v = (torch.randn(B, nh, Tk, hs, generator=r, dtype=dtype) for _ in range(2))
        bias = None if cross else torch.randn(1, nh, Tq, Tk, generator=r, dtype=dtype)
        lengths = torch.randint(1, Tk + 1, (B,), generator=r)
        mask = (torch.arange(Tk)[None, :] < lengths[:, None]).long()
        causal = not cross and n % 3 == 1
        cases.append(case(q, k, v, bias, None if causal else mask, causal))
    return cases


def hidden_infill(r: torch.Generator) -> list:
    cases = []
    for _ in range(6):
        n = _int(r, 1, 60)
        tokens = torch.randint(5, 1000, (n,), generator=r)
        starts, lengths, pos = [], [], 0
        while pos <= n:  # gaps, Poisson(3) spans and insertions, left to right, never overlapping
            pos += _int(r, 0, 6)
            if pos > n:
                break
            length = min(int(torch.poisson(torch.tensor([3.0]), generator=r)), n - pos)
            starts.append(pos)
            lengths.append(length)
            pos += max(length, 1)
        cases.append(case(tokens, starts, lengths, _int(r, 0, 5)))
    return cases


# ---- the spec -----------------------------------------------------------------------------

SPEC = AssignmentSpec(
    notebook="ch07_t5.ipynb",
    preamble="import math\nimport torch\nimport torch.nn.functional as F\n",
    checks=[  # (solution grade_id, function, reference, visible cases, hidden cases, (visible, hidden) points)
        *task_checks("task1_buckets", "relative_position_bucket", bucket_reference, VISIBLE["relative_position_bucket"],
                     hidden_buckets, (1, 2)),
        *task_checks("task2_rms_norm", "rms_norm", rms_norm_reference, VISIBLE["rms_norm"], hidden_rms_norm, (1, 2)),
        *task_checks("task3_shift_right", "shift_right", shift_right_reference, VISIBLE["shift_right"],
                     hidden_shift_right, (1, 2)),
        *task_checks("task4_sentinels", "span_corruption_with_sentinels", corruption_reference,
                     VISIBLE["span_corruption_with_sentinels"], hidden_corruption, (1, 2)),
        *task_checks("task5_counts", "noise_span_counts", counts_reference, VISIBLE["noise_span_counts"],
                     hidden_counts, (1, 2)),
        *task_checks("task6_attention", "t5_attention", attention_reference, VISIBLE["t5_attention"],
                     hidden_attention, (1, 2), rtol=1e-5, atol=1e-6),
        *task_checks("task7_infilling", "infill_spans", infill_reference, VISIBLE["infill_spans"], hidden_infill,
                     (1, 2)),
    ],
)
