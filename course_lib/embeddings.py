"""Chapter 1: word embeddings.

A vocabulary of V words, each word an integer id. Two ways to turn an id into a
vector:

* a one-hot vector e_i in R^V: orthogonal to every other word's, so it carries
  no notion of similarity;
* a dense row W[i] of a learned matrix W in R^{V x D}, D << V. Looking a row up
  is exactly the product one_hot(i) @ W, but costs O(D) instead of O(V*D).

``Embedding`` is a drop-in for ``torch.nn.Embedding``: same constructor, same
single parameter ``weight`` (so state_dicts load either way), and the lookup
runs as a Triton gather/scatter-add kernel on the GPU (``course_lib.kernels``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .kernels.backend import FLOAT_DTYPES, INDEX_DTYPES, check_tensor
from .kernels.embedding import embedding


def _check_ids(name: str, ids: torch.Tensor, num_embeddings: int) -> None:
    check_tensor(name, ids, dtypes=INDEX_DTYPES)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_embeddings):
        bad = ids[(ids < 0) | (ids >= num_embeddings)][0].item()
        raise IndexError(f"{name} contains {bad}, outside the vocabulary [0, {num_embeddings})")


def one_hot(ids: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot vectors: (...,) integer ids -> (..., num_classes), a single 1 per row."""
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    _check_ids("ids", ids, num_classes)
    out = torch.zeros(*ids.shape, num_classes, dtype=dtype, device=ids.device)
    return out.scatter_(-1, ids.unsqueeze(-1).long(), 1)


def lookup_as_matmul(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The embedding lookup written as the textbook product one_hot(ids) @ W.

    Equal to ``weight[ids]`` (the product picks out one row per id), but it builds
    a (..., V) matrix and does V*D multiply-adds per id: the reason real code never
    computes it this way."""
    check_tensor("weight", weight, dim=2, dtypes=FLOAT_DTYPES)
    return one_hot(ids, weight.shape[0], dtype=weight.dtype) @ weight  # (..., V) @ (V, D) -> (..., D)


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Pairwise cosine similarities: (N, D), (M, D) -> (N, M); ``b`` defaults to ``a``.

    cos(u, v) = u.v / (|u| |v|). Norms are clamped below by ``eps`` (as
    ``torch.nn.functional.cosine_similarity`` does) so a zero vector gives 0, not NaN."""
    b = a if b is None else b
    check_tensor("a", a, dim=2, dtypes=FLOAT_DTYPES)
    check_tensor("b", b, dim=2, dtypes=FLOAT_DTYPES)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same vector size, got {a.shape[1]} and {b.shape[1]}")
    a_n = a / a.norm(dim=1, keepdim=True).clamp_min(eps)  # (N, D) unit rows
    b_n = b / b.norm(dim=1, keepdim=True).clamp_min(eps)  # (M, D)
    return a_n @ b_n.T  # (N, M)


def nearest_neighbours(
    weight: torch.Tensor, query: int | torch.Tensor, k: int = 5, exclude: list[int] | tuple[int, ...] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k rows of ``weight`` most cosine-similar to a query.

    ``query`` is a row id (that row is then excluded: a word is trivially its own
    nearest neighbour) or a (D,) vector. Extra ids in ``exclude`` are skipped too
    (analogy search excludes the three question words). Returns (ids, scores),
    each (k,), most similar first; ties keep the lower id first."""
    check_tensor("weight", weight, dim=2, dtypes=FLOAT_DTYPES)
    V = weight.shape[0]
    skip = list(exclude)
    if isinstance(query, torch.Tensor) and query.dim() == 1 and query.is_floating_point():
        if query.shape[0] != weight.shape[1]:
            raise ValueError(f"query vector has size {query.shape[0]}, weight rows have size {weight.shape[1]}")
        vec = query
    else:
        qid = int(query)
        if not 0 <= qid < V:
            raise IndexError(f"query id {qid} is outside the vocabulary [0, {V})")
        vec, skip = weight[qid], skip + [qid]
    if not 0 < k <= V - len(set(skip)):
        raise ValueError(f"k must be in [1, {V - len(set(skip))}] for a vocabulary of {V} with {len(set(skip))} excluded, got {k}")
    # Row by row (not one matrix product, whose rounding depends on a row's position), so
    # identical rows get bit-identical scores and the stable sort below can order the tie.
    unit = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-8)  # (V, D)
    scores = (unit * (vec / vec.norm().clamp_min(1e-8))).sum(dim=1)  # (V,)
    if skip:
        scores[torch.tensor(skip, device=scores.device)] = -math.inf
    # A stable sort makes ties deterministic (lower id first), unlike torch.topk.
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    return order, scores[order]


class Embedding(nn.Module):
    """A lookup table of ``num_embeddings`` vectors of size ``embedding_dim``.

    Same constructor, parameter name, initialisation (N(0, 1)) and ``padding_idx``
    behaviour as ``torch.nn.Embedding`` (the padding row starts at zero and never
    receives a gradient), so a state_dict from one loads into the other."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        _weight: torch.Tensor | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if num_embeddings <= 0 or embedding_dim <= 0:
            raise ValueError(f"num_embeddings and embedding_dim must be positive, got {num_embeddings}, {embedding_dim}")
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx must be within [-{num_embeddings}, {num_embeddings}), got {padding_idx}")
            padding_idx %= num_embeddings  # negative indices count from the end, as in torch
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        if _weight is None:
            self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(f"_weight must have shape ({num_embeddings}, {embedding_dim}), got {tuple(_weight.shape)}")
            self.weight = nn.Parameter(_weight)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        if self.padding_idx is not None:
            with torch.no_grad():
                self.weight[self.padding_idx].fill_(0)

    @classmethod
    def from_pretrained(cls, embeddings: torch.Tensor, freeze: bool = True, padding_idx: int | None = None) -> "Embedding":
        check_tensor("embeddings", embeddings, dim=2, dtypes=FLOAT_DTYPES)
        emb = cls(*embeddings.shape, padding_idx=padding_idx, _weight=embeddings.clone())
        emb.weight.requires_grad_(not freeze)
        return emb

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return embedding(ids, self.weight, self.padding_idx)  # (...,) -> (..., D)

    def extra_repr(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


def pca(x: torch.Tensor, k: int = 2) -> torch.Tensor:
    """Project rows of x (N, D) onto their top-k principal components -> (N, k), for plots.

    Centre, then take the right singular vectors; the sign of each component is
    fixed (largest-|loading| entry positive) so pictures do not flip between runs."""
    check_tensor("x", x, dim=2, dtypes=FLOAT_DTYPES)
    if not 1 <= k <= min(x.shape):
        raise ValueError(f"k must be in [1, {min(x.shape)}] for x of shape {tuple(x.shape)}, got {k}")
    xc = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)  # vh: (min(N, D), D)
    comps = vh[:k]  # (k, D)
    signs = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)))
    return xc @ (comps * signs).T  # (N, k)
