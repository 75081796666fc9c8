"""Independent checks for ch05_roberta_albert.ipynb (instructor-only; nbgrader does not release it).

One check per autograded test cell, same grade_id and points. The visible checks ask exactly
the questions of the notebook's visible test cells (``tests/test_autograde_spec.py`` verifies
that by recording the calls those cells make). The hidden checks draw new inputs from the
grading seed, in the style of the notebook's hidden test cells, and compare with the
``course_lib`` references those cells use (``bytes_to_unicode``, ``ByteLevelBPETokenizer.bpe``,
``create_position_ids_from_input_ids``, ALBERT's ``parameter_count``, ``encode_examples`` and
``span_length_distribution``). The grader runs the student's functions on these inputs in a
fresh sandboxed process and compares the results here, outside it.
"""

from __future__ import annotations

import torch

from course_lib.autograde.spec import AssignmentSpec, case, task_checks
from course_lib.models.albert import AlbertConfig, parameter_count
from course_lib.models.roberta import create_position_ids_from_input_ids
from course_lib.pretraining import NSPExample, encode_examples
from course_lib.pretraining import span_length_distribution as _span_length_distribution
from course_lib.tokenization import ByteLevelBPETokenizer, bytes_to_unicode

# ---- references ---------------------------------------------------------------------------


def byte_symbols_reference(text):
    table = bytes_to_unicode()
    return "".join(table[b] for b in text.encode("utf-8"))


def bpe_encode_reference(symbols, merges):
    """course_lib's BPE loop, with a vocabulary of the 256 byte symbols, the merges' parts and their products."""
    merges = [tuple(m) for m in merges]
    tokens = sorted(set(bytes_to_unicode().values()) | set(symbols) | {t for m in merges for t in (*m, m[0] + m[1])})
    return ByteLevelBPETokenizer({t: i for i, t in enumerate(tokens)}, merges, special_tokens=[]).bpe(symbols)


def roberta_position_ids_reference(input_ids, padding_idx):
    return create_position_ids_from_input_ids(input_ids, padding_idx)


def albert_parameter_count_reference(vocab_size, embedding_size, hidden_size, num_layers, num_groups, inner_group_num,
                                     intermediate_size, max_position, type_vocab_size=2):
    config = AlbertConfig(vocab_size=vocab_size, embedding_size=embedding_size, hidden_size=hidden_size,
                          num_hidden_layers=num_layers, num_hidden_groups=num_groups, inner_group_num=inner_group_num,
                          num_attention_heads=1, intermediate_size=intermediate_size,
                          max_position_embeddings=max_position, type_vocab_size=type_vocab_size)
    return parameter_count(config)["total"]


def sop_inputs_reference(tokens_a, tokens_b, swap, cls_id, sep_id):
    """``[CLS] first [SEP] second [SEP]`` as ``encode_examples`` builds a pair; label 1 when swapped."""
    first, second = (tokens_b, tokens_a) if swap else (tokens_a, tokens_b)
    n = len(first) + len(second) + 3
    enc = encode_examples([NSPExample(list(first), list(second), bool(swap))], cls_id=cls_id, sep_id=sep_id,
                          pad_id=0, max_length=n)
    return enc["input_ids"][0].tolist(), enc["token_type_ids"][0].tolist(), int(enc["next_sentence_label"][0])


def span_length_distribution_reference(p, max_length):
    return _span_length_distribution(p, max_length, "truncate")


def _int(r: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high, (), generator=r))


# ---- the visible tests' questions ---------------------------------------------------------

_VISIBLE_TEXTS = ["\t tab", "naïve café", "🙂 emoji", "\x00\x7f\xad", "".join(map(chr, range(256)))]
_MERGES = [("l", "o"), ("lo", "w"), ("e", "r")]
_POS_IDS = torch.randint(0, 6, (4, 9), generator=torch.Generator().manual_seed(3))

VISIBLE = {
    "byte_symbols": [case(t) for t in ("Hi you", "a\nb", "我", "", *_VISIBLE_TEXTS)],
    "bpe_encode": [
        case("lower", _MERGES), case("", _MERGES), case("x", _MERGES), case("aaa", [("a", "a")]),
        case("abab", [("a", "b"), ("ab", "ab")]), case("abc", [("b", "c"), ("a", "b")]),
    ],
    "roberta_position_ids": [
        case(torch.tensor([[0, 31, 2, 1, 1]]), 1),
        case(torch.tensor([[1, 1, 0, 7, 2]]), 1),
        case(torch.tensor([[5, 0, 6], [0, 0, 0]]), 0),
        case(_POS_IDS, 2),
    ],
    "albert_parameter_count": [
        case(30000, 128, 768, 12, 1, 1, 3072, 512),  # ALBERT-base: 11,683,584
        case(30000, 128, 4096, 12, 1, 1, 16384, 512),  # ALBERT-xxlarge
        case(50, 6, 8, 5, 2, 3, 12, 10),
    ],
    "sop_inputs": [
        case([5, 6], [7], False, 2, 3),
        case([5, 6], [7], True, 2, 3),
        case([9], [8, 7, 6], True, 0, 1),
    ],
    "span_length_distribution": [case(0.2, 10), case(0.5, 1), case(0.3, 6)],
}


# ---- hidden questions, drawn from the grading seed ----------------------------------------


def hidden_byte_symbols(r: torch.Generator) -> list:
    alphabet = [*range(0, 0x250), *range(0x4E00, 0x4E80), *range(0x1F600, 0x1F640), 0x200D, 0xFE0F]
    cases = []
    for _ in range(20):
        n = _int(r, 1, 30)  # never the visible tests' empty string
        cases.append(case("".join(chr(alphabet[int(i)]) for i in torch.randint(0, len(alphabet), (n,), generator=r))))
    return cases


def hidden_bpe_encode(r: torch.Generator) -> list:
    letters = "abcdĠ"

    def rand_str(n):
        return "".join(letters[int(i)] for i in torch.randint(0, len(letters), (n,), generator=r))

    cases = []
    for _ in range(3):
        corpus = [rand_str(_int(r, 2, 9)).replace("Ġ", " ") for _ in range(60)]
        merges = list(ByteLevelBPETokenizer.train(corpus, 256 + 5 + _int(r, 5, 40), min_frequency=1).merges)
        cases += [case(rand_str(_int(r, 1, 10)), merges) for _ in range(15)]
    return cases


def hidden_roberta_position_ids(r: torch.Generator) -> list:
    cases = []
    for _ in range(8):
        V = _int(r, 2, 50)
        pad = _int(r, 0, V)
        B, T = _int(r, 1, 6), _int(r, 1, 30)
        ids = torch.randint(0, V, (B, T), generator=r)
        ids[torch.rand(B, T, generator=r) < 0.3] = pad
        cases.append(case(ids, pad))
    return cases


def hidden_albert_parameter_count(r: torch.Generator) -> list:
    cases = []
    for _ in range(8):
        V, E, H, L, I, P, S = (_int(r, lo, hi) for lo, hi in ((10, 60000), (1, 512), (1, 2048), (1, 48), (1, 8192),
                                                               (1, 1024), (1, 5)))
        cases.append(case(V, E, H, L, _int(r, 1, L + 1), _int(r, 1, 4), I, P, S))
    return cases


def hidden_sop_inputs(r: torch.Generator) -> list:
    cases = []
    for _ in range(10):
        a = torch.randint(5, 100, (_int(r, 1, 12),), generator=r).tolist()
        b = torch.randint(5, 100, (_int(r, 1, 12),), generator=r).tolist()
        swap = bool(_int(r, 0, 2))
        cls_id, sep_id = (int(i) for i in torch.randperm(5, generator=r)[:2])
        cases.append(case(a, b, swap, cls_id, sep_id))
    return cases


def hidden_span_length_distribution(r: torch.Generator) -> list:
    return [case(float(torch.rand((), generator=r, dtype=torch.float64) * 0.9 + 0.05), _int(r, 1, 25))
            for _ in range(8)]


# ---- the spec -----------------------------------------------------------------------------

SPEC = AssignmentSpec(
    notebook="ch05_roberta_albert.ipynb",
    preamble="import math\nimport torch\n",
    checks=[  # (solution grade_id, function, reference, visible cases, hidden cases, (visible, hidden) points)
        *task_checks("task1_byte_symbols", "byte_symbols", byte_symbols_reference, VISIBLE["byte_symbols"],
                     hidden_byte_symbols, (1, 2)),
        *task_checks("task2_bpe_encode", "bpe_encode", bpe_encode_reference, VISIBLE["bpe_encode"],
                     hidden_bpe_encode, (1, 2)),
        *task_checks("task3_position_ids", "roberta_position_ids", roberta_position_ids_reference,
                     VISIBLE["roberta_position_ids"], hidden_roberta_position_ids, (1, 2)),
        *task_checks("task4_albert_parameters", "albert_parameter_count", albert_parameter_count_reference,
                     VISIBLE["albert_parameter_count"], hidden_albert_parameter_count, (1, 2)),
        *task_checks("task5_sop_inputs", "sop_inputs", sop_inputs_reference, VISIBLE["sop_inputs"],
                     hidden_sop_inputs, (1, 2)),
        *task_checks("task6_span_lengths", "span_length_distribution", span_length_distribution_reference,
                     VISIBLE["span_length_distribution"], hidden_span_length_distribution, (1, 2)),
    ],
)
