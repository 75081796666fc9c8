"""Independent checks for ch02_word2vec.ipynb (instructor-only; nbgrader does not release it).

One check per autograded test cell, same grade_id and points. The visible checks ask exactly
the questions of the notebook's visible test cells (``tests/test_autograde_spec.py`` verifies
that by recording the calls those cells make). The hidden checks draw new inputs from the
grading seed, in the style of the notebook's hidden test cells, and compare with
``course_lib.word2vec`` (and autograd, for the SGNS gradients). The grader runs the student's
functions on these inputs in a fresh sandboxed process and compares the results here, outside it.

Two answers are not unique: any optimal Huffman code is right, and an analogy may have tied
answers. Their checks have their own ``compare`` functions, which check what the notebook's
tests check (``check_huffman``; a tie within 1e-6 of the expected cosine).
"""

from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F

from course_lib import word2vec as ref
from course_lib.autograde.spec import AssignmentSpec, case, task_checks
from course_lib.grading import GradingError


def skipgram_pairs_reference(sentence_ids, radius):
    """``context_pairs`` with the widest radius as its window (a wider one gives the same pairs)."""
    window = max(int(radius.max()), 0) if radius.numel() else 0
    return ref.context_pairs(sentence_ids, radius, window)


def noise_distribution_reference(counts, power=0.75):
    return torch.from_numpy(ref.noise_distribution(counts.numpy(), power))


def keep_probability_reference(counts, sample):
    return torch.from_numpy(ref.keep_probability(counts.numpy(), sample))


def sgns_loss_and_grads_reference(v, u_pos, u_neg):
    """The loss and its gradients by autograd, in float64, cast back to the inputs' dtype."""
    leaves = [x.double().clone().requires_grad_() for x in (v, u_pos, u_neg)]
    loss = (-F.logsigmoid((leaves[1] * leaves[0]).sum(-1))
            - F.logsigmoid(-torch.einsum("bkd,bd->bk", leaves[2], leaves[0])).sum(-1))
    loss.sum().backward()
    return tuple(t.detach().to(v.dtype) for t in (loss, *(leaf.grad for leaf in leaves)))


def huffman_codes_reference(counts):
    """What any Huffman code of ``counts`` is judged by: the optimal weighted code length."""
    ordered = sorted(counts, reverse=True)
    ref_codes, _ = ref.build_huffman_tree(ordered)
    return {"counts": [int(c) for c in counts],
            "optimum": sum(int(c) * len(code) for c, code in zip(ordered, ref_codes))}


def compare_huffman(got, want):
    """What the notebook's ``check_huffman`` checks: a list of 0/1 int lists, prefix-free, a full
    tree (Kraft sum exactly 1), and the optimal weighted length."""
    counts, V = want["counts"], len(want["counts"])
    if type(got) is not list or len(got) != V:
        raise GradingError(f"expected a list of {V} codes, got {type(got).__name__}"
                           + (f" of length {len(got)}" if type(got) is list else ""))
    for w, code in enumerate(got):
        if type(code) is not list or not all(type(b) is int and b in (0, 1) for b in code):
            raise GradingError(f"codes[{w}] must be a list of 0/1 ints, got {code!r}"[:200])
    if V == 1:
        if got != [[]]:
            raise GradingError(f"a single word has the empty code [], got {got!r}"[:200])
        return
    if any(len(code) > V - 1 for code in got):  # deeper than any full tree of V leaves
        raise GradingError(f"a code is longer than {V - 1} bits: the tree is not a Huffman tree")
    strings = sorted("".join(map(str, code)) for code in got)
    for a, b in zip(strings, strings[1:]):
        if b.startswith(a):
            raise GradingError(f"code {a!r} is a prefix of code {b!r}")
    kraft = sum(Fraction(1, 2 ** len(code)) for code in got)
    if kraft != 1:
        raise GradingError(f"sum of 2^-len(code) is {float(kraft):.6g}, not 1: the tree is not full")
    length = sum(c * len(code) for c, code in zip(counts, got))
    if length != want["optimum"]:
        raise GradingError(f"weighted code length {length}, but the optimum is {want['optimum']}")


def analogy_reference(vectors, words, a, b, c):
    """course_lib's answer, and the cosine (float64, unit vectors) of every allowed word."""
    kv = ref.KeyedVectors(words, vectors.numpy())
    best = kv.most_similar(positive=[b, c], negative=[a], topn=1)[0][0]
    unit = vectors.double() / vectors.double().norm(dim=1, keepdim=True)
    q = unit[words.index(b)] - unit[words.index(a)] + unit[words.index(c)]
    cosines = (unit @ q / q.norm()).tolist()
    allowed = [i for i, w in enumerate(words) if w not in (a, b, c)]
    return {"word": best, "allowed": [words[i] for i in allowed], "cosines": [cosines[i] for i in allowed]}


def compare_analogy(got, want):
    """The expected word, or an allowed word (not a, b or c) whose cosine ties with it within 1e-6."""
    if type(got) is not str:
        raise GradingError(f"expected a str, got {type(got).__name__}")
    if got == want["word"]:
        return
    cosine = dict(zip(want["allowed"], want["cosines"]))
    if got not in cosine:
        raise GradingError(f"{got!r}"[:80] + " is not an allowed answer (one of a, b, c, or not a word)")
    if not abs(cosine[got] - cosine[want["word"]]) < 1e-6:
        raise GradingError(f"expected {want['word']!r} (cosine {cosine[want['word']]:.6f}), "
                           f"got {got!r} (cosine {cosine[got]:.6f})")


def _ints(r: torch.Generator, low: int, high: int, n: int = 1) -> list[int]:
    return [int(x) for x in torch.randint(low, high, (n,), generator=r)]


def _word_counts(r: torch.Generator, V: int, power: float = 1.5) -> torch.Tensor:
    """Heavy-tailed counts, like word counts."""
    return (1 / torch.rand(V, generator=r) ** power).long().clamp(1, 10**6)


# ---- the visible tests' questions ---------------------------------------------------------

_SENTENCE_IDS = torch.tensor([0] * 7 + [1] * 3 + [2] * 9)
_SGNS_G = torch.Generator().manual_seed(42)
_SGNS_V, _SGNS_POS, _SGNS_NEG = (torch.randn(4, 5, generator=_SGNS_G, dtype=torch.float64),
                                 torch.randn(4, 5, generator=_SGNS_G, dtype=torch.float64),
                                 torch.randn(4, 3, 5, generator=_SGNS_G, dtype=torch.float64))
_WORDS = ["man", "woman", "king", "queen", "throne", "palace"]
_VECTORS = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, -0.8], [0.9, 0.1], [-1.0, 0.0], [0.5, 0.5]])
_SCALED = _VECTORS * torch.tensor([[1.0], [5.0], [0.2], [3.0], [1.0], [1.0]])
_ANALOGY_G = torch.Generator().manual_seed(0)
_RANDOM_VECTORS = torch.randn(30, 6, generator=_ANALOGY_G) * torch.rand(30, 1, generator=_ANALOGY_G) * 3
_RANDOM_WORDS = [f"w{i}" for i in range(30)]

VISIBLE = {
    "skipgram_pairs": [
        case(torch.zeros(5, dtype=torch.int64), torch.tensor([1, 2, 1, 1, 2])),
        case(torch.tensor([0, 0, 0, 1, 1]), torch.full((5,), 2)),
        case(torch.tensor([0, 1, 1]), torch.tensor([3, 3, 3])),
        case(_SENTENCE_IDS, torch.randint(1, 5, (19,), generator=torch.Generator().manual_seed(21))),
    ],
    "noise_distribution": [
        case(torch.tensor([16, 1])),
        case(torch.tensor([16, 1]), power=1.0),
        case(torch.tensor([5, 3, 9, 1]), power=0.0),
        case(torch.tensor([1200, 500, 31, 30, 7, 5, 5, 1])),
    ],
    "keep_probability": [
        case(torch.tensor([800, 150, 40, 10]), 0.01),
        case(torch.tensor([800, 150, 40, 10]), 0.0),
        case(torch.tensor([5000, 2100, 900, 120, 40, 9, 1]), 1e-3),
    ],
    "sgns_loss_and_grads": [
        case(torch.zeros(1, 2), torch.tensor([[1.0, 2.0]]), torch.tensor([[[3.0, 0.0], [0.0, -1.0]]])),
        case(torch.tensor([[20.0, 0.0]]), torch.tensor([[-10.0, 0.0]]), torch.tensor([[[10.0, 0.0]]])),
        case(_SGNS_V, _SGNS_POS, _SGNS_NEG),
    ],
    "huffman_codes": [
        case([5, 3, 2, 1]),
        case([7]),
        case([2, 9]),
        case([4, 4, 4, 4]),
        case([1000 // r for r in range(1, 51)]),
    ],
    "analogy": [
        # asked three times: for the type, for the answer, and in the failure message
        *(case(_VECTORS, _WORDS, "man", "woman", "king") for _ in range(3)),
        case(_SCALED, _WORDS, "man", "woman", "king"),
        *(case(_RANDOM_VECTORS.clone(), list(_RANDOM_WORDS), a, b, c)
          for a, b, c in [("w0", "w1", "w2"), ("w5", "w17", "w9"), ("w29", "w3", "w11")]),
    ],
}


# ---- hidden questions, drawn from the grading seed ----------------------------------------


def hidden_skipgram_pairs(r: torch.Generator) -> list:
    cases = []
    for n in range(7):
        (n_sentences,) = _ints(r, 1, 8)
        lengths = torch.randint(1, 12, (n_sentences,), generator=r)
        sentence = torch.arange(n_sentences)
        if n == 6:  # sentences that subsampling emptied leave gaps in the numbering
            sentence = torch.cumsum(torch.randint(1, 4, (n_sentences,), generator=r), 0)
        sentence_ids = torch.repeat_interleave(sentence, lengths)
        (window,) = _ints(r, 1, 7)
        cases.append(case(sentence_ids, ref.reduced_windows(len(sentence_ids), window, r)))
    return cases


def hidden_noise_distribution(r: torch.Generator) -> list:
    cases = []
    for n in range(6):
        (V,) = _ints(r, 1, 300)
        counts = _word_counts(r, V)
        power = (0.75, 0.0, 1.0, float(torch.rand((), generator=r)) * 1.5)[n % 4]
        cases.append(case(counts, power))
    return cases


def hidden_keep_probability(r: torch.Generator) -> list:
    cases = []
    for n in range(6):
        (V,) = _ints(r, 1, 300)
        counts = _word_counts(r, V)
        sample = 0.0 if n == 0 else 10 ** -float(torch.rand((), generator=r) * 4 + 1)  # 1e-5 .. 1e-1
        cases.append(case(counts, sample))
    return cases


def hidden_sgns_loss_and_grads(r: torch.Generator) -> list:
    cases = []
    for n in range(6):
        dtype = (torch.float64, torch.float32)[n % 2]
        B, K, D = (_ints(r, 1, high)[0] for high in (9, 8, 17))
        scale = (0.1, 1.0, 4.0)[n % 3]  # small, typical and large scores
        v, u_pos = (torch.randn(B, D, generator=r, dtype=dtype) * scale for _ in range(2))
        cases.append(case(v, u_pos, torch.randn(B, K, D, generator=r, dtype=dtype) * scale))
    return cases


def hidden_huffman_codes(r: torch.Generator) -> list:
    cases = []
    for n in range(6):
        (V,) = _ints(r, 1, 200)
        if n % 3 == 0:  # many ties
            counts = torch.randint(1, 4, (V,), generator=r).tolist()
        else:  # heavy-tailed, in random order
            counts = _word_counts(r, V, 1.3).tolist()
        cases.append(case(counts))
    (V,) = _ints(r, 1, 4)  # one to three words
    cases.append(case(_word_counts(r, V, 1.3).tolist()))
    return cases


def hidden_analogy(r: torch.Generator) -> list:
    cases = []
    for _ in range(5):
        V, D = _ints(r, 5, 60)[0], _ints(r, 2, 17)[0]
        vectors = torch.randn(V, D, generator=r) * (0.1 + 10 * torch.rand(V, 1, generator=r))
        words = [f"word{int(i)}" for i in torch.randperm(1000, generator=r)[:V]]
        for _ in range(4):
            a, b, c = (words[int(i)] for i in torch.randperm(V, generator=r)[:3])
            cases.append(case(vectors.clone(), list(words), a, b, c))
    return cases


# ---- the spec -----------------------------------------------------------------------------

# The notebook's tolerances for float32 results against a float64 autograd reference.
SGNS_TOLERANCES = {torch.float32: (1e-4, 1e-5), torch.float64: (1e-7, 1e-7)}

SPEC = AssignmentSpec(
    notebook="ch02_word2vec.ipynb",
    preamble="import math\nimport numpy as np\nimport torch\nimport torch.nn.functional as F\n",
    checks=[  # (solution grade_id, function, reference, visible cases, hidden cases, (visible, hidden) points)
        *task_checks("task1_skipgram_pairs", "skipgram_pairs", skipgram_pairs_reference, VISIBLE["skipgram_pairs"],
                     hidden_skipgram_pairs, (1, 2)),
        *task_checks("task2_noise_distribution", "noise_distribution", noise_distribution_reference,
                     VISIBLE["noise_distribution"], hidden_noise_distribution, (1, 1)),
        *task_checks("task3_keep_probability", "keep_probability", keep_probability_reference,
                     VISIBLE["keep_probability"], hidden_keep_probability, (1, 1)),
        *task_checks("task4_sgns_loss_and_grads", "sgns_loss_and_grads", sgns_loss_and_grads_reference,
                     VISIBLE["sgns_loss_and_grads"], hidden_sgns_loss_and_grads, (1, 2), tolerances=SGNS_TOLERANCES),
        *task_checks("task5_huffman_codes", "huffman_codes", huffman_codes_reference, VISIBLE["huffman_codes"],
                     hidden_huffman_codes, (1, 2), compare=compare_huffman),
        *task_checks("task6_analogy", "analogy", analogy_reference, VISIBLE["analogy"], hidden_analogy, (1, 1),
                     compare=compare_analogy),
    ],
)
