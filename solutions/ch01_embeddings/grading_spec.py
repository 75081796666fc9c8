"""Independent checks for ch01_embeddings.ipynb (instructor-only; nbgrader does not release it).

One check per autograded test cell, same grade_id and points. The visible checks ask exactly
the questions of the notebook's visible test cells (``tests/test_autograde_spec.py`` verifies
that by recording the calls those cells make). The hidden checks draw new inputs from the
grading seed, in the style of the notebook's hidden test cells, and compare with
``course_lib.embeddings``. The grader runs the student's functions on these inputs in a fresh
sandboxed process and compares the results here, outside it.
"""

from __future__ import annotations

import torch

from course_lib import embeddings as ref
from course_lib.autograde.spec import AssignmentSpec, case, task_checks


def embedding_backward_reference(grad_out, ids, vocab_size, padding_idx=None):
    """The gradient of a lookup, through autograd of course_lib's Embedding."""
    table = torch.zeros(vocab_size, grad_out.shape[-1], dtype=grad_out.dtype)
    emb = ref.Embedding.from_pretrained(table, freeze=False, padding_idx=padding_idx)
    emb(ids).backward(grad_out)
    return emb.weight.grad


def analogy_reference(W, a, b, c, k=1):
    return ref.nearest_neighbours(W, W[b] - W[a] + W[c], k, exclude=(a, b, c))


def _ints(r: torch.Generator, low: int, high: int, n: int = 1) -> list[int]:
    return [int(x) for x in torch.randint(low, high, (n,), generator=r)]


# ---- the visible tests' questions ---------------------------------------------------------

_W_NN = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [2.0, 0.0]])
_W_TIES = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
_W_ANALOGY = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 0.0], [3.0, 1.0], [-1.0, 2.0]])
_GRAD_OUT = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
_A = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
_B = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, -1.0]])
_W3 = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])

VISIBLE = {
    "one_hot": [
        case(torch.tensor([2, 0, 2]), 4),
        case(torch.tensor([[1, 3]]), 5),
        case(torch.tensor(1), 3),
        case(torch.tensor([0, 4]), 4),  # raises IndexError
        case(torch.tensor([-1]), 4),  # raises IndexError
    ],
    "lookup_as_matmul": [
        case(torch.tensor([2, 0]), _W3),
        case(torch.tensor([[3, 1], [0, 0]]), torch.arange(12, dtype=torch.float64).reshape(4, 3)),
        case(torch.tensor([3]), _W3),  # raises IndexError
    ],
    "cosine_similarity_matrix": [
        case(_A, _B),
        case(_A, _B[:2]),
        case(_A, torch.ones(2, 3)),  # raises ValueError
    ],
    "nearest_neighbours": [
        case(_W_NN, 0, k=3),
        case(_W_TIES, 0, k=3),
        case(_W_NN, 5, k=1),  # raises IndexError
        case(_W_NN, 0, k=5),  # raises ValueError
        case(_W_NN, 0, k=0),  # raises ValueError
    ],
    "embedding_backward": [
        case(_GRAD_OUT, torch.tensor([1, 3, 1]), vocab_size=4),
        case(_GRAD_OUT, torch.tensor([1, 3, 1]), 4, padding_idx=1),
        case(_GRAD_OUT, torch.tensor([1, 4, 1]), 4),  # raises IndexError
    ],
    "analogy": [
        case(_W_ANALOGY, a=0, b=1, c=2),
        case(_W_ANALOGY, 0, 1, 2, k=2),
    ],
}


# ---- hidden questions, drawn from the grading seed ----------------------------------------


def hidden_one_hot(r: torch.Generator) -> list:
    cases = []
    for _ in range(6):
        (V,) = _ints(r, 1, 50)
        shape = _ints(r, 1, 5, _ints(r, 0, 4)[0])
        cases.append(case(torch.randint(0, V, shape, generator=r), V))
    (V,) = _ints(r, 2, 50)
    ids = torch.randint(0, V, (7,), generator=r)
    ids[_ints(r, 0, 7)[0]] = V + _ints(r, 0, 3)[0]
    cases.append(case(ids.clone(), V))  # out of vocabulary
    ids[ids >= V] = -_ints(r, 1, 4)[0]
    cases.append(case(ids, V))  # negative id
    return cases


def hidden_lookup_as_matmul(r: torch.Generator) -> list:
    cases = []
    for dtype in (torch.float32, torch.float64, torch.float32, torch.float32):
        V, D = _ints(r, 1, 40, 2)
        shape = _ints(r, 1, 5, _ints(r, 0, 3)[0])
        cases.append(case(torch.randint(0, V, shape, generator=r), torch.randn(V, D, generator=r, dtype=dtype)))
    (V,) = _ints(r, 2, 30)
    cases.append(case(torch.tensor([0, V]), torch.randn(V, 3, generator=r)))  # out of vocabulary
    return cases


def hidden_cosine_similarity_matrix(r: torch.Generator) -> list:
    cases = []
    for dtype in (torch.float32, torch.float64, torch.float32):
        N, M, D = _ints(r, 1, 20, 3)
        A = torch.randn(N, D, generator=r, dtype=dtype) * torch.rand(N, 1, generator=r, dtype=dtype) * 10
        B = torch.randn(M, D, generator=r, dtype=dtype) * torch.rand(M, 1, generator=r, dtype=dtype) * 10
        A[_ints(r, 0, N)[0]] = 0.0  # a zero vector
        B[_ints(r, 0, M)[0]] *= 1e-10  # a norm below eps
        cases.append(case(A, B))
    eps = float(torch.rand((), generator=r)) * 0.5 + 0.01  # a large eps matters
    cases.append(case(torch.randn(5, 4, generator=r) * 0.05, torch.randn(6, 4, generator=r), eps=eps))
    (D,) = _ints(r, 2, 9)
    cases.append(case(torch.randn(3, D, generator=r), torch.randn(4, D + 1, generator=r)))  # sizes differ
    return cases


def hidden_nearest_neighbours(r: torch.Generator) -> list:
    cases = []
    for dtype in (torch.float32, torch.float64, torch.float32, torch.float64):
        (V,) = _ints(r, 6, 40)
        (D,) = _ints(r, 2, 12)
        W = torch.randn(V, D, generator=r, dtype=dtype)
        cases.append(case(W, _ints(r, 0, V)[0], _ints(r, 1, V)[0]))
    # Ties: rows of +-1 entries (or zeros) have norms 1 or 2, so equal cosines are exactly equal.
    for _ in range(2):
        (V,) = _ints(r, 10, 30)
        (D,) = _ints(r, 4, 7)
        W = torch.zeros(V, D)
        for row in range(V):
            nonzero = torch.randperm(D, generator=r)[: 1 if bool(torch.rand((), generator=r) < 0.4) else 4]
            W[row, nonzero] = torch.randint(0, 2, (len(nonzero),), generator=r).float() * 2 - 1
        W[_ints(r, 0, V)[0]] = 0.0
        cases.append(case(W, _ints(r, 0, V)[0], V - 1))  # the full ranking
    W = cases[0].args[0]
    V = W.shape[0]
    cases.append(case(W, V, 1))  # query out of range: IndexError
    cases.append(case(W, 0, V))  # k too large: ValueError
    return cases


def hidden_embedding_backward(r: torch.Generator) -> list:
    cases = []
    for dtype in (torch.float32, torch.float64, torch.float32, torch.float32):
        (V,) = _ints(r, 2, 12)
        (D,) = _ints(r, 1, 10)
        shape = _ints(r, 1, 8, _ints(r, 1, 3)[0])
        ids = torch.randint(0, V, shape, generator=r)
        grad_out = torch.randn(*shape, D, generator=r, dtype=dtype)
        pad = int(ids.reshape(-1)[0]) if bool(torch.rand((), generator=r) < 0.5) else None
        cases.append(case(grad_out, ids, V, padding_idx=pad))
    (V,) = _ints(r, 2, 12)
    ids = torch.randint(0, V, (5,), generator=r)
    ids[2] = V
    cases.append(case(torch.randn(5, 3, generator=r), ids, V))  # out of vocabulary
    return cases


def hidden_analogy(r: torch.Generator) -> list:
    cases = []
    for n in range(5):
        (V,) = _ints(r, 8, 40)
        (D,) = _ints(r, 2, 12)
        W = torch.randn(V, D, generator=r, dtype=torch.float64 if n % 2 else torch.float32)
        a, b, c = (int(x) for x in torch.randperm(V, generator=r)[:3])
        W[_ints(r, 0, V)[0]] = W[b] - W[a] + W[c]  # a planted answer
        cases.append(case(W, a, b, c, k=_ints(r, 1, 6)[0]))
    return cases


# ---- the spec -----------------------------------------------------------------------------

SPEC = AssignmentSpec(
    notebook="ch01_embeddings.ipynb",
    preamble="import torch\nimport torch.nn.functional as F\n",
    checks=[  # (solution grade_id, function, reference, visible cases, hidden cases, (visible, hidden) points)
        *task_checks("task1_one_hot", "one_hot", ref.one_hot, VISIBLE["one_hot"], hidden_one_hot, (1, 1)),
        *task_checks("task2_lookup_as_matmul", "lookup_as_matmul", ref.lookup_as_matmul, VISIBLE["lookup_as_matmul"],
                     hidden_lookup_as_matmul, (1, 1)),
        *task_checks("task3_cosine_similarity_matrix", "cosine_similarity_matrix", ref.cosine_similarity_matrix,
                     VISIBLE["cosine_similarity_matrix"], hidden_cosine_similarity_matrix, (1, 2)),
        *task_checks("task4_nearest_neighbours", "nearest_neighbours", ref.nearest_neighbours,
                     VISIBLE["nearest_neighbours"], hidden_nearest_neighbours, (1, 2)),
        *task_checks("task5_embedding_backward", "embedding_backward", embedding_backward_reference,
                     VISIBLE["embedding_backward"], hidden_embedding_backward, (1, 2)),
        *task_checks("task6_analogy", "analogy", analogy_reference, VISIBLE["analogy"], hidden_analogy, (1, 1)),
    ],
)
