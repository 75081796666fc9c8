"""Independent checks for ch08_decoder_only.ipynb (instructor-only; nbgrader does not release it).

One check per autograded test cell, same grade_id and points. The visible checks ask exactly the
questions of the notebook's visible test cells (``tests/test_autograde_spec.py`` verifies that by
recording the calls those cells make). The hidden checks draw new inputs from the grading seed, in
the style of the notebook's hidden test cells, and compare with ``course_lib.decoder_only``
(``attention_mask``, ``numerical_rank``, ``kv_cache_bytes``, ``forward_flops``, ``loss_tokens``,
``dialogue_tokens``). The grader runs the student's functions on these inputs in a fresh sandboxed
process and compares the results here, outside it.
"""

from __future__ import annotations

import torch

from course_lib import decoder_only as do
from course_lib.autograde.spec import AssignmentSpec, case, task_checks

# ---- references ---------------------------------------------------------------------------


def attention_mask_reference(kind, n_input, n_output):
    return do.attention_mask(kind, n_input, n_output)


def numerical_rank_reference(A, rtol=None):
    return do.numerical_rank(A, rtol)


def kv_cache_bytes_reference(n_layer, n_kv_head, head_size, seq_len, batch=1, bytes_per_element=2):
    return do.kv_cache_bytes(n_layer, n_kv_head, head_size, seq_len, batch, bytes_per_element)


def forward_flops_reference(arch, d_model, d_ff, n_layers, vocab_size, n_input, n_output):
    if arch not in ("decoder", "encoder-decoder"):
        raise ValueError(f"unknown arch {arch!r}")
    ed = arch == "encoder-decoder"
    shape = do.TransformerShape(d_model, 1, d_model, d_ff, vocab_size, n_encoder_layers=n_layers if ed else 0,
                                n_decoder_layers=n_layers, cross_attention=ed)
    return do.forward_flops(shape, n_input, n_output)


def loss_tokens_reference(objective, n_tokens, mask_rate=0.15, mean_span=3.0):
    return do.loss_tokens(objective, n_tokens, mask_rate=mask_rate, mean_span=mean_span)


def dialogue_tokens_reference(turns, design):
    return do.dialogue_tokens([tuple(t) for t in turns], design)


def _int(r: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high, (), generator=r))


# ---- the visible tests' questions ---------------------------------------------------------

_g = torch.Generator().manual_seed(0)
_LOW = torch.randn(6, 2, generator=_g, dtype=torch.float64) @ torch.randn(2, 5, generator=_g, dtype=torch.float64)
_DIAG = torch.diag(torch.tensor([3.0, 1.0, 1e-4]))
_TURNS = [(3, 2), (4, 1), (2, 2)]

VISIBLE = {
    "attention_mask": [case("causal", 1, 2), case("prefix", 2, 1), case("bidirectional", 2, 1),
                       *(case(kind, 3, 4) for kind in do.KINDS), case("sideways", 1, 1)],
    "numerical_rank": [case(_DIAG, rtol=1e-3), case(_DIAG), case(torch.zeros(3, 4)), case(_LOW),
                       case(_LOW, rtol=1e-3)],
    "kv_cache_bytes": [case(12, 12, 64, 1024), case(1, 1, 1, 1), case(2, 3, 4, 5, batch=6, bytes_per_element=4)],
    "forward_flops": [case("decoder", 2, 4, 1, 3, 1, 1), case("encoder-decoder", 2, 4, 1, 3, 1, 1),
                      *(case(arch, 64, 256, 4, 2000, 32, 32) for arch in ("decoder", "encoder-decoder"))],
    "loss_tokens": [case("span", 512), case("clm", 64), case("mlm", 100),
                    *(case(objective, 77) for objective in do.OBJECTIVES)],
    "dialogue_tokens": [case(_TURNS, "decoder"), case(_TURNS, "prefix"), case([(10, 5)] * 4, "encoder-decoder"),
                        case([(1, 1)], "rnn")],
}


# ---- hidden questions, drawn from the grading seed ----------------------------------------


def hidden_attention_mask(r: torch.Generator) -> list:
    return [case(do.KINDS[n % 4], _int(r, 0, 9), _int(r, 0, 9)) for n in range(12)]


def hidden_numerical_rank(r: torch.Generator) -> list:
    cases = []
    for n in range(10):
        M, N = _int(r, 1, 12), _int(r, 1, 12)
        k = _int(r, 1, min(M, N) + 1)
        dtype = (torch.float32, torch.float64)[n % 2]
        A = torch.randn(M, k, generator=r, dtype=dtype) @ torch.randn(k, N, generator=r, dtype=dtype)
        A = A * torch.logspace(0, -_int(r, 0, 8), N, dtype=dtype)
        cases.append(case(A, rtol=(None, 1e-3, 1e-6)[n % 3]))
    return cases


def hidden_kv_cache_bytes(r: torch.Generator) -> list:
    return [case(*(_int(r, 1, hi) for hi in (100, 64, 257, 8193, 33)), bytes_per_element=(1, 2, 4)[n % 3])
            for n in range(8)]


def hidden_forward_flops(r: torch.Generator) -> list:
    bounds = ((1, 2049), (1, 8193), (1, 49), (2, 60000), (0, 600), (1, 600))
    return [case(("decoder", "encoder-decoder")[n % 2], *(_int(r, lo, hi) for lo, hi in bounds)) for n in range(10)]


def hidden_loss_tokens(r: torch.Generator) -> list:
    cases = []
    for n in range(12):
        objective = do.OBJECTIVES[n % 4]
        tokens = _int(r, 2, 3000)
        rate = float(torch.empty(()).uniform_(0.05, 0.5, generator=r))
        cases.append(case(objective, tokens, mask_rate=rate, mean_span=float(_int(r, 1, 11))))
    return cases


def hidden_dialogue_tokens(r: torch.Generator) -> list:
    cases = []
    for n in range(9):
        turns = [(_int(r, 0, 200), _int(r, 0, 200)) for _ in range(_int(r, 1, 12))]
        cases.append(case(turns, ("decoder", "prefix", "encoder-decoder")[n % 3]))
    return cases


# ---- the spec -----------------------------------------------------------------------------

SPEC = AssignmentSpec(
    notebook="ch08_decoder_only.ipynb",
    preamble="import torch\n",
    checks=[  # (solution grade_id, function, reference, visible cases, hidden cases, (visible, hidden) points)
        *task_checks("task1_masks", "attention_mask", attention_mask_reference, VISIBLE["attention_mask"],
                     hidden_attention_mask, (1, 2)),
        *task_checks("task2_numerical_rank", "numerical_rank", numerical_rank_reference, VISIBLE["numerical_rank"],
                     hidden_numerical_rank, (1, 2)),
        *task_checks("task3_kv_cache_bytes", "kv_cache_bytes", kv_cache_bytes_reference, VISIBLE["kv_cache_bytes"],
                     hidden_kv_cache_bytes, (1, 2)),
        *task_checks("task4_forward_flops", "forward_flops", forward_flops_reference, VISIBLE["forward_flops"],
                     hidden_forward_flops, (1, 2)),
        *task_checks("task5_loss_tokens", "loss_tokens", loss_tokens_reference, VISIBLE["loss_tokens"],
                     hidden_loss_tokens, (1, 2)),
        *task_checks("task6_dialogue_tokens", "dialogue_tokens", dialogue_tokens_reference,
                     VISIBLE["dialogue_tokens"], hidden_dialogue_tokens, (1, 2)),
    ],
)
