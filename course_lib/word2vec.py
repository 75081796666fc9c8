"""word2vec: skip-gram and CBOW with negative sampling or hierarchical softmax.

Mikolov et al. 2013a, "Efficient Estimation of Word Representations in Vector Space"
(the two architectures) and 2013b, "Distributed Representations of Words and Phrases
and their Compositionality" (negative sampling, subsampling of frequent words), as
implemented in the original ``word2vec.c`` and in gensim, whose interface this module
copies::

    model = Word2Vec(sentences, vector_size=100, window=5, min_count=5, sg=1, negative=5)
    model.wv.most_similar(positive=["king", "woman"], negative=["man"])

The pieces, in the order training uses them, are small functions:

* :func:`build_vocab` counts words and keeps those seen ``min_count`` times, most
  frequent first (gensim's order);
* :func:`keep_probability` and :func:`subsample`: each occurrence of a frequent word is
  dropped with a probability that grows with its frequency;
* :func:`reduced_windows` and :func:`context_pairs`: the (centre, context) pairs inside
  each centre word's randomly shrunk window;
* :func:`noise_distribution`, :func:`make_alias_table` and :func:`sample_negatives`:
  negatives drawn from the unigram distribution raised to the power 3/4;
* :func:`build_huffman_tree`: the binary codes and inner-node paths of hierarchical
  softmax, built as word2vec.c builds them;
* the updates: :func:`course_lib.kernels.sgns.sgns_step` (skip-gram with negative
  sampling, a Triton kernel on the GPU), :func:`negative_sampling_step` and
  :func:`hierarchical_softmax_step`, both reductions to one logistic-regression step,
  :func:`logistic_step`.

**How training is batched.** word2vec.c updates the weights after every single pair,
in a few threads that share the weights without locks. A per-pair Python loop would
run a thousand times slower, so :class:`Word2Vec` generates the pairs of a chunk of
``batch_words`` words at once with tensor operations and updates the weights in
mini-batches of ``batch_size`` training examples: every gradient of a mini-batch is
computed from the same weights and repeated rows receive the sum of their updates.
Small mini-batches behave like word2vec.c's sequential updates; very large ones do not
(the most frequent words are drawn as negatives hundreds of times per batch), see
``benchmarks/word2vec.py`` for accuracy against batch size. On the CPU, ``workers``
threads take chunks in turn and update the shared weights without locks, as gensim's
threads do; each runs torch single-threaded. On a GPU, skip-gram with negative sampling
runs the fused Hogwild kernel of :mod:`course_lib.kernels.sgns`.

**Known differences from gensim.** Skip-gram trains the centre word's vector to predict
its context words, as in the paper; word2vec.c and gensim let each context word's
vector predict the centre, which gives the same pairs (in expectation) with the roles
swapped. The sigmoid is exact: word2vec.c reads it from a table of 1000 values on
[-6, 6], and gensim skips the update of a pair whose score lies outside that range.
Word vectors start uniform in [-1/D, 1/D) as in gensim (word2vec.c draws from
[-0.5/D, 0.5/D); on a small corpus, where training does not run to convergence, the
larger start gives visibly better analogies). The default is skip-gram (``sg=1``);
gensim's is CBOW.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import tqdm

from .kernels.backend import requested_backend, use_triton
from .kernels.sgns import MAX_DIM, sgns_step_reference, sgns_step_triton

__all__ = [
    "AliasTable",
    "KeyedVectors",
    "Vocab",
    "Word2Vec",
    "Word2VecConfig",
    "build_huffman_tree",
    "build_vocab",
    "context_pairs",
    "hierarchical_softmax_step",
    "keep_probability",
    "linear_decay",
    "logistic_step",
    "make_alias_table",
    "negative_sampling_step",
    "noise_distribution",
    "pad_huffman",
    "reduced_windows",
    "sample_negatives",
    "subsample",
]

# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------


@dataclass
class Vocab:
    """The words kept for training, most frequent first.

    Attributes:
        index_to_key: the words; row ``i`` of every weight table belongs to ``index_to_key[i]``.
        counts: (V,) int64, how often each word occurs in the corpus.
        n_sentences: sentences in the corpus.
        n_tokens: tokens in the corpus, including the words dropped by ``min_count``.
    """

    index_to_key: list[str]
    counts: np.ndarray
    n_sentences: int = 0
    n_tokens: int = 0

    def __len__(self) -> int:
        return len(self.index_to_key)

    @property
    def key_to_index(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.index_to_key)}


def _check_sentences(sentences: object) -> None:
    if sentences is None:
        raise ValueError("sentences is None: pass a list of sentences, each a list of tokens")
    if isinstance(sentences, (str, bytes)):
        raise TypeError("sentences must be an iterable of sentences (lists of tokens), got a single str")


def _sentence_tokens(sentence: object, number: int) -> Sequence[str]:
    if isinstance(sentence, (str, bytes)):
        raise TypeError(
            f"sentence {number} is a str ({sentence[:40]!r}); each sentence must be a list of "
            "tokens, e.g. text.split()"
        )
    return sentence  # type: ignore[return-value]


def build_vocab(sentences: Iterable[Sequence[str]], min_count: int = 5) -> Vocab:
    """Count the words of ``sentences`` and keep those that occur ``min_count`` times or more.

    Words are sorted by decreasing count; ties go in the order gensim uses (the word seen
    *last* for the first time comes first), so that both libraries number words alike.
    """
    _check_sentences(sentences)
    counter: Counter[str] = Counter()  # remembers the order in which words were first seen
    n_sentences = 0
    for n_sentences, sentence in enumerate(sentences, start=1):
        counter.update(_sentence_tokens(sentence, n_sentences - 1))
    n_tokens = sum(counter.values())
    if n_tokens == 0:
        raise ValueError(f"the corpus is empty: {n_sentences} sentences and no words to train on")
    words = list(counter)
    counts = np.fromiter(counter.values(), dtype=np.int64, count=len(words))
    first_seen = np.arange(len(words))
    order = np.lexsort((-first_seen, -counts))  # by count descending, then first_seen descending
    order = order[counts[order] >= min_count]
    if len(order) == 0:
        top = words[int(np.argmax(counts))]
        raise ValueError(
            f"no word occurs min_count={min_count} times or more; the most frequent word, "
            f"{top!r}, occurs {int(counts.max())} times. Lower min_count or use a larger corpus."
        )
    return Vocab([words[i] for i in order], counts[order], n_sentences, n_tokens)


# ---------------------------------------------------------------------------
# Subsampling of frequent words
# ---------------------------------------------------------------------------


def keep_probability(counts: np.ndarray, sample: float) -> np.ndarray:
    """The probability of keeping each occurrence of each word, as word2vec.c computes it.

    With ``t = sample * total`` (``total`` = all occurrences of vocabulary words), a word
    seen ``f`` times is kept with probability ``(sqrt(f / t) + 1) * t / f``, capped at 1:
    words rarer than about ``2.6 t`` are always kept. (The paper's formula, ``1 - sqrt(t/f)``
    as the probability of *dropping* a word, with ``t`` a frequency, is close to this but not
    what the code does.) ``sample=0`` keeps everything.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if sample == 0:
        return np.ones_like(counts)
    threshold = sample * counts.sum()
    return np.minimum((np.sqrt(counts / threshold) + 1.0) * threshold / counts, 1.0)


def subsample(token_ids: torch.Tensor, keep_prob: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A boolean mask: which tokens survive subsampling (one uniform draw per token)."""
    draws = torch.rand(token_ids.shape, generator=generator, device=token_ids.device)
    return draws < keep_prob[token_ids]


# ---------------------------------------------------------------------------
# Context windows
# ---------------------------------------------------------------------------


def reduced_windows(
    n: int, window: int, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """For each of ``n`` centre words, its window radius: ``window - b`` with ``b`` uniform
    in ``{0, ..., window - 1}``, so radius 1 to ``window``.

    Nearby words thus fall inside the window more often than distant ones: a word at
    distance ``d`` is used with probability ``(window - d + 1) / window``, word2vec's way of
    weighting close context more."""
    b = torch.randint(0, window, (n,), generator=generator, device=device)
    return window - b


def context_pairs(sentence_ids: torch.Tensor, radius: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All (centre, context) position pairs: ``context`` lies within ``radius[centre]``
    (at most ``window``) of ``centre`` and in the same sentence.

    Positions index a run of tokens whose sentence numbers are ``sentence_ids`` (N,)
    (non-decreasing; subsampled tokens already removed, so the window reaches past them,
    as in word2vec.c). Returns ``(centre_pos, context_pos)``, both (P,), ordered by centre
    position and then by context position: the order word2vec.c visits them in."""
    n = sentence_ids.shape[0]
    offsets = torch.cat([torch.arange(-window, 0), torch.arange(1, window + 1)]).to(sentence_ids.device)  # (2w,)
    centre = torch.arange(n, device=sentence_ids.device)[:, None]  # (N, 1)
    context = centre + offsets  # (N, 2w)
    inside = (context >= 0) & (context < n) & (offsets.abs() <= radius[:, None])  # (N, 2w)
    same_sentence = sentence_ids[context.clamp(0, max(n - 1, 0))] == sentence_ids[:, None]
    rows, cols = (inside & same_sentence).nonzero(as_tuple=True)  # row-major: sorted by centre
    return rows, context[rows, cols]


# ---------------------------------------------------------------------------
# Negative sampling
# ---------------------------------------------------------------------------


def noise_distribution(counts: np.ndarray, ns_exponent: float = 0.75) -> np.ndarray:
    """P_n(w) ∝ count(w)^ns_exponent: the unigram distribution flattened by the 3/4 power,
    which draws rare words more often than their frequency (Mikolov et al. 2013b)."""
    weights = np.asarray(counts, dtype=np.float64) ** ns_exponent
    return weights / weights.sum()


class AliasTable(NamedTuple):
    """Walker's alias table for a distribution over V outcomes: outcome ``i`` keeps the
    fraction ``prob[i]`` of its bucket and hands the rest to ``alias[i]``."""

    prob: torch.Tensor  # (V,) float32
    alias: torch.Tensor  # (V,) int64


def make_alias_table(probs: np.ndarray) -> AliasTable:
    """Build the alias table of ``probs`` (Vose's algorithm, O(V)).

    Scale the probabilities by V so that the average is 1; then repeatedly pair an outcome
    below 1 ("small") with one above 1 ("large"): the small one fills its bucket up to 1
    with the large one, whose excess shrinks by as much. Every bucket ends up holding at
    most two outcomes, so a draw costs two random numbers and no search."""
    V = len(probs)
    scaled = np.asarray(probs, dtype=np.float64) * V
    prob = np.ones(V)
    alias = np.arange(V)
    small = [i for i in range(V) if scaled[i] < 1.0]
    large = [i for i in range(V) if scaled[i] >= 1.0]
    while small and large:
        s, l = small.pop(), large.pop()
        prob[s], alias[s] = scaled[s], l
        scaled[l] -= 1.0 - scaled[s]
        (small if scaled[l] < 1.0 else large).append(l)
    return AliasTable(torch.from_numpy(prob).float(), torch.from_numpy(alias))


def sample_negatives(table: AliasTable, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Draw word indices from the noise distribution: a uniform bucket ``i``, then ``i``
    itself with probability ``prob[i]``, else its alias. (word2vec.c instead fills a table of
    10^8 entries with each word in proportion to P_n(w) and draws a random entry; gensim
    binary-searches a cumulative table; all three sample the same distribution.)"""
    V, n, device = table.prob.shape[0], math.prod(shape), table.prob.device
    bucket = torch.randint(0, V, (n,), generator=generator, device=device)
    coin = torch.rand(n, generator=generator, device=device)
    keep = coin < table.prob.index_select(0, bucket)
    return torch.where(keep, bucket, table.alias.index_select(0, bucket)).view(shape)


# ---------------------------------------------------------------------------
# Hierarchical softmax
# ---------------------------------------------------------------------------


def build_huffman_tree(counts: Sequence[int] | np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    """The Huffman codes and paths of hierarchical softmax, built as word2vec.c builds them.

    ``counts`` must be sorted in decreasing order (as :func:`build_vocab` returns them).
    Leaves are the V words; the V - 1 inner nodes are numbered in the order they are
    created, so the root is the last one, V - 2. word2vec.c merges the two lightest nodes
    with two pointers instead of a heap: one walks the leaves from the rarest word up, the
    other the inner nodes in creation order (their weights only grow); on a tie the inner
    node wins. Of the two merged nodes, the second gets bit 1.

    Returns ``(codes, points)``: for word ``w``, ``points[w]`` are the inner nodes on the
    path from the root down to ``w``'s parent (rows of ``syn1``), and ``codes[w][d]`` is the
    branch taken at ``points[w][d]``. Hierarchical softmax trains the inner node's output
    vector to predict the label ``1 - code`` with a logistic regression at every step.
    """
    V = len(counts)
    # Leaves, then inner nodes; an inner node not created yet weighs "infinity" (word2vec.c: 1e15).
    weight = [int(c) for c in counts] + [math.inf] * (V - 1)
    parent = [0] * (2 * V - 1)
    bit = [0] * (2 * V - 1)
    leaf, inner = V - 1, V  # the lightest unused leaf (the rarest word) and inner node

    def pop_lightest() -> int:
        nonlocal leaf, inner
        if leaf >= 0 and weight[leaf] < weight[inner]:
            leaf -= 1
            return leaf + 1
        inner += 1
        return inner - 1

    for a in range(V - 1):  # create inner node V + a
        first, second = pop_lightest(), pop_lightest()
        weight[V + a] = weight[first] + weight[second]
        parent[first] = parent[second] = V + a
        bit[second] = 1

    root = 2 * V - 2
    codes, points = [], []
    for w in range(V):
        code, point, node = [], [], w
        while node != root:  # climb to the root, then read the path top-down
            code.append(bit[node])
            point.append(parent[node] - V)
            node = parent[node]
        codes.append(code[::-1])
        points.append(point[::-1])
    return codes, points


def pad_huffman(codes: list[list[int]], points: list[list[int]], device) -> tuple[torch.Tensor, ...]:
    """Pad codes and points into (V, L) tensors plus the (V,) code lengths."""
    V = len(codes)
    L = max(1, max((len(c) for c in codes), default=1))
    code_table = np.zeros((V, L), dtype=np.float32)
    point_table = np.zeros((V, L), dtype=np.int64)
    for w, (code, point) in enumerate(zip(codes, points)):
        code_table[w, : len(code)] = code
        point_table[w, : len(point)] = point
    lengths = np.array([len(c) for c in codes], dtype=np.int64)
    return tuple(torch.from_numpy(t).to(device) for t in (code_table, point_table, lengths))


# ---------------------------------------------------------------------------
# Learning rate
# ---------------------------------------------------------------------------


def linear_decay(alpha: float, min_alpha: float, progress: float) -> float:
    """The learning rate after the fraction ``progress`` of all training words (all epochs):
    linear from ``alpha`` down to ``min_alpha`` (word2vec.c, gensim)."""
    return max(min_alpha, alpha - (alpha - min_alpha) * progress)


# ---------------------------------------------------------------------------
# The updates
# ---------------------------------------------------------------------------


def logistic_step(
    h: torch.Tensor, W_out: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor, active: torch.Tensor, lr: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step of ``T`` binary logistic regressions per example, the core of both
    negative sampling and hierarchical softmax.

    Example ``b`` with hidden vector ``h[b]`` (D,) predicts ``labels[b, t]`` from
    ``σ(W_out[rows[b, t]] · h[b])`` wherever ``active[b, t]`` is 1. The rows of ``W_out`` are
    updated in place (``g · h``, with ``g = lr · (label - σ)``); the gradient for ``h``,
    word2vec.c's ``neu1e`` (B, D), is returned for the caller to add to the input vectors,
    together with the per-example loss (B,). Everything is computed from the weights before
    the step."""
    B, T = rows.shape
    D = h.shape[1]
    u = W_out.index_select(0, rows.reshape(-1)).view(B, T, D)  # (B, T, D)
    score = torch.bmm(h[:, None, :], u.transpose(1, 2)).squeeze(1)  # (B, T)
    g = (labels - torch.sigmoid(score)) * (lr * active)  # (B, T)
    loss = (F.softplus(torch.where(labels > 0, -score, score)) * active).sum(1)  # -log σ(±score)
    W_out.index_add_(0, rows.reshape(-1), (g[:, :, None] * h[:, None, :]).view(-1, D))
    neu1e = torch.bmm(g[:, None, :], u).squeeze(1)  # (B, D)
    return neu1e, loss


def negative_sampling_step(
    h: torch.Tensor, syn1neg: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor, lr: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative sampling: ``targets`` (B,) get label 1, ``negatives`` (B, K) label 0; a
    negative equal to its target is skipped. Returns ``(neu1e, loss)``."""
    rows = torch.cat([targets[:, None], negatives], dim=1)  # (B, 1 + K)
    labels = torch.zeros(rows.shape, dtype=h.dtype, device=h.device)
    labels[:, 0] = 1.0
    active = (rows != targets[:, None]).to(h.dtype)  # a negative equal to its target is skipped ...
    active[:, 0] = 1.0  # ... the target itself never is
    return logistic_step(h, syn1neg, rows, labels, active, lr)


def hierarchical_softmax_step(
    h: torch.Tensor,
    syn1: torch.Tensor,
    targets: torch.Tensor,
    codes: torch.Tensor,
    points: torch.Tensor,
    code_lengths: torch.Tensor,
    lr: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hierarchical softmax: ``P(target | h)`` is the product, along the target's path in
    the Huffman tree, of ``σ(±syn1[node] · h)``; each node is one logistic regression with
    label ``1 - code`` (word2vec.c's convention). ``codes``, ``points`` (V, L) and
    ``code_lengths`` (V,) come from :func:`build_huffman_tree`. Returns ``(neu1e, loss)``."""
    L = codes.shape[1]
    active = (torch.arange(L, device=h.device) < code_lengths[targets][:, None]).to(h.dtype)  # (B, L)
    return logistic_step(h, syn1, points[targets], 1.0 - codes[targets], active, lr)


# ---------------------------------------------------------------------------
# Word vectors
# ---------------------------------------------------------------------------

_VECTORS_FILE, _VOCAB_FILE = "model.safetensors", "config.json"


class KeyedVectors:
    """Word vectors with gensim's ``KeyedVectors`` interface (a subset).

    ``vectors`` is a (V, D) float32 numpy array whose row ``i`` is the vector of
    ``index_to_key[i]``; ``kv["king"]`` returns that row."""

    def __init__(self, index_to_key: Sequence[str], vectors: np.ndarray, counts: np.ndarray | None = None):
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(index_to_key):
            raise ValueError(
                f"vectors must have shape (len(index_to_key), vector_size) = ({len(index_to_key)}, D), "
                f"got {vectors.shape}"
            )
        self.index_to_key = list(index_to_key)
        self.key_to_index = {word: i for i, word in enumerate(self.index_to_key)}
        if len(self.key_to_index) != len(self.index_to_key):
            raise ValueError("index_to_key contains a word twice")
        self.vectors = vectors
        self.counts = None if counts is None else np.asarray(counts, dtype=np.int64)

    # -- lookup ---------------------------------------------------------------

    @property
    def vector_size(self) -> int:
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return len(self.index_to_key)

    def __contains__(self, word: object) -> bool:
        return word in self.key_to_index

    def __repr__(self) -> str:
        return f"KeyedVectors({len(self)} words, vector_size={self.vector_size})"

    def get_index(self, word: str) -> int:
        try:
            return self.key_to_index[word]
        except KeyError:
            raise KeyError(f"word {word!r} is not in the vocabulary ({len(self)} words)") from None

    def __getitem__(self, words: str | Sequence[str]) -> np.ndarray:
        """The vector of one word (D,), or of a list of words (n, D)."""
        if isinstance(words, str):
            return self.vectors[self.get_index(words)]
        return self.vectors[[self.get_index(w) for w in words]]

    def _norms(self) -> np.ndarray:
        # Recomputed at every call: training updates `vectors` in place, so a cache would go stale.
        return np.linalg.norm(self.vectors, axis=1)

    def get_normed_vectors(self) -> np.ndarray:
        """The vectors scaled to unit length (a zero vector stays zero)."""
        norms = self._norms()
        return self.vectors / np.where(norms == 0, 1, norms)[:, None].astype(self.vectors.dtype)

    # -- similarity -------------------------------------------------------------

    def similarity(self, w1: str, w2: str) -> float:
        """Cosine similarity of two words."""
        a, b = self[w1], self[w2]
        return float(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b)))

    def most_similar(
        self,
        positive: str | Sequence[str] | None = None,
        negative: str | Sequence[str] | None = None,
        topn: int = 10,
        restrict_vocab: int | None = None,
    ) -> list[tuple[str, float]]:
        """The ``topn`` words closest (by cosine) to the mean of the positive words' unit
        vectors minus the negative words' ones, leaving out the query words: 3CosAdd, the
        analogy rule of Mikolov et al. 2013 (``most_similar(["king", "woman"], ["man"])``)."""
        positive = [positive] if isinstance(positive, str) else list(positive or [])
        negative = [negative] if isinstance(negative, str) else list(negative or [])
        if not positive and not negative:
            raise ValueError("most_similar needs at least one word in positive or negative")
        if topn < 1:
            return []
        query = [self.get_index(w) for w in positive + negative]  # KeyError names an unknown word
        weights = np.array([1.0] * len(positive) + [-1.0] * len(negative), dtype=self.vectors.dtype)
        norms = self._norms()
        mean = (weights[:, None] * self.vectors[query] / norms[query, None]).sum(0) / len(query)
        mean /= np.linalg.norm(mean)
        end = len(self) if restrict_vocab is None else min(restrict_vocab, len(self))
        sims = self.vectors[:end] @ mean / norms[:end]  # (end,) cosine similarities
        best = np.argsort(-sims, kind="stable")[: topn + len(query)]
        excluded = set(query)
        return [(self.index_to_key[i], float(sims[i])) for i in best if i not in excluded][:topn]

    # -- evaluation ---------------------------------------------------------------

    def _ok_vocab(self, restrict_vocab: int, case_insensitive: bool) -> dict[str, int]:
        """gensim's lookup table: the first ``restrict_vocab`` words (upper-cased when
        ``case_insensitive``; the most frequent spelling wins)."""
        ok = self.index_to_key[:restrict_vocab]
        fold = str.upper if case_insensitive else (lambda w: w)
        return {fold(w): i for i, w in reversed(list(enumerate(ok)))}

    def evaluate_word_analogies(
        self, analogies: str | Path, restrict_vocab: int = 300000, case_insensitive: bool = True
    ) -> tuple[float, list[dict]]:
        """Accuracy on an analogy file in the format of ``questions-words.txt``, as gensim
        computes it: for "a b c d", the answer is the word closest to b - a + c by 3CosAdd
        (:meth:`most_similar`) among the first ``restrict_vocab`` words, the question words
        excluded. Questions with a word outside those are skipped.

        Returns ``(accuracy, sections)``: each section is ``{"section": name, "correct":
        [...], "incorrect": [...]}`` (4-tuples, upper-cased when ``case_insensitive``), and the
        last one, "Total accuracy", pools them all."""
        fold = str.upper if case_insensitive else (lambda w: w)
        ok_vocab = self._ok_vocab(restrict_vocab, case_insensitive)
        end = min(restrict_vocab, len(self))
        unit = self.get_normed_vectors()[:end]
        # every row carrying a given (folded) spelling: all of them are excluded as answers
        rows_of: dict[str, list[int]] = {}
        for i, w in enumerate(self.index_to_key[:end]):
            rows_of.setdefault(fold(w), []).append(i)

        sections: list[dict] = []
        questions: list[tuple[int, tuple[str, str, str, str]]] = []  # (section number, question)
        with open(analogies, encoding="utf-8", errors="replace") as f:
            for line_no, line in enumerate(f):
                if line.startswith(": "):
                    sections.append({"section": line.lstrip(": ").strip(), "correct": [], "incorrect": []})
                    continue
                if not sections:
                    raise ValueError(f"{analogies}:{line_no + 1}: question before the first ': section' line")
                words = [fold(w) for w in line.split()]
                if len(words) != 4:
                    continue  # gensim skips malformed lines too
                if all(w in ok_vocab for w in words):
                    questions.append((len(sections) - 1, tuple(words)))  # type: ignore[arg-type]
        step = max(1, 2**24 // max(end, 1))  # questions per matrix product: 64 MB of similarities
        for start in range(0, len(questions), step):
            batch = questions[start : start + step]
            a, b, c = (np.array([ok_vocab[q[k]] for _, q in batch]) for k in range(3))
            query = unit[b] + unit[c] - unit[a]  # (n, D)
            query /= np.linalg.norm(query, axis=1, keepdims=True)
            sims = query @ unit.T  # (n, end)
            for j, (_, q) in enumerate(batch):
                for w in q[:3]:
                    sims[j, rows_of[w]] = -np.inf
            predicted = sims.argmax(1)
            for (s, q), p in zip(batch, predicted):
                hit = fold(self.index_to_key[p]) == q[3]
                sections[s]["correct" if hit else "incorrect"].append(q)
        total = {
            "section": "Total accuracy",
            "correct": [q for s in sections for q in s["correct"]],
            "incorrect": [q for s in sections for q in s["incorrect"]],
        }
        sections.append(total)
        n = len(total["correct"]) + len(total["incorrect"])
        return (len(total["correct"]) / n if n else 0.0), sections

    def evaluate_word_pairs(
        self,
        pairs: str | Path,
        delimiter: str = "\t",
        restrict_vocab: int = 300000,
        case_insensitive: bool = True,
    ) -> tuple[tuple[float, float], tuple[float, float], float]:
        """Correlation between the model's cosine similarities and human judgements in a
        file like ``wordsim353.tsv`` (``word1<TAB>word2<TAB>score``, ``#`` comments), as gensim
        computes it. Returns ``((pearson_r, p), (spearman_rho, p), oov_percent)``; pairs with
        a word outside the first ``restrict_vocab`` words are skipped and counted in
        ``oov_percent``."""
        from scipy import stats  # gensim's dependency; imported here because only this needs it

        fold = str.upper if case_insensitive else (lambda w: w)
        ok_vocab = self._ok_vocab(restrict_vocab, case_insensitive)
        gold, model, oov = [], [], 0
        with open(pairs, encoding="utf-8") as f:
            for line in f:
                if not line or line.startswith("#"):
                    continue
                try:
                    a, b, score = [fold(w) for w in line.split(delimiter)]
                    score = float(score)
                except ValueError:
                    continue  # gensim skips malformed lines too
                if a not in ok_vocab or b not in ok_vocab:
                    oov += 1
                    continue
                va, vb = self.vectors[ok_vocab[a]], self.vectors[ok_vocab[b]]
                gold.append(score)
                model.append(float(np.dot(va / np.linalg.norm(va), vb / np.linalg.norm(vb))))
        if not gold:
            raise ValueError(f"no pair of {pairs} has both words in the vocabulary (or the file is malformed)")
        pearson = stats.pearsonr(gold, model)
        spearman = stats.spearmanr(gold, model)
        return (
            (float(pearson[0]), float(pearson[1])),
            (float(spearman[0]), float(spearman[1])),
            100.0 * oov / (len(gold) + oov),
        )

    # -- files ----------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write a directory with ``model.safetensors`` (the vectors) and ``config.json``
        (the vocabulary). No pickle: loading runs no code from the file."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({"wv.vectors": np.ascontiguousarray(self.vectors, dtype=np.float32)}, str(path / _VECTORS_FILE))
        vocab = {"index_to_key": self.index_to_key, "counts": None if self.counts is None else self.counts.tolist()}
        (path / _VOCAB_FILE).write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "KeyedVectors":
        """Read what :meth:`save` (or :meth:`Word2Vec.save`) wrote."""
        from safetensors.numpy import load_file

        path = Path(path)
        meta = json.loads((path / _VOCAB_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(path / _VECTORS_FILE))
        return cls(meta["index_to_key"], tensors["wv.vectors"], meta.get("counts"))


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


@dataclass
class Word2VecConfig:
    """The hyperparameters, with gensim's names and meanings (except ``sg=1`` by default).

    ``batch_words``: words per chunk whose pairs, subsampling and negatives are drawn at
    once (None: 50,000 on the CPU, 2^20 on a GPU); it changes speed and memory, not
    quality. ``batch_size``: training examples per
    weight update ((centre, context) pairs for skip-gram, centre words for CBOW); ``None``
    picks :data:`DEFAULT_BATCH_SIZE` (1024 for the torch path, 4096 pairs per launch of the
    Triton kernel). ``workers``: CPU threads that train concurrently, sharing the weights
    without locks (None: up to 4, as many as there are cores; results are reproducible
    only with ``workers=1``)."""

    vector_size: int = 100
    window: int = 5
    min_count: int = 5
    sg: int = 1
    hs: int = 0
    negative: int = 5
    ns_exponent: float = 0.75
    sample: float = 1e-3
    alpha: float = 0.025
    min_alpha: float = 1e-4
    epochs: int = 5
    cbow_mean: int = 1
    seed: int = 1
    batch_words: int | None = None
    batch_size: int | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

        def is_int(name: str) -> bool:
            v = getattr(self, name)
            return isinstance(v, (int, np.integer))

        def is_real(name: str) -> bool:
            v = getattr(self, name)
            return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)

        need(is_int("vector_size") and self.vector_size >= 1, "vector_size", "an int >= 1")
        need(is_int("window") and self.window >= 1, "window", "an int >= 1")
        need(is_int("min_count") and self.min_count >= 0, "min_count", "an int >= 0")
        need(self.sg in (0, 1), "sg", "0 (CBOW) or 1 (skip-gram)")
        need(self.hs in (0, 1), "hs", "0 or 1")
        need(is_int("negative") and self.negative >= 0, "negative", "an int >= 0")
        if not self.hs and not self.negative:
            raise ValueError("hs=0 and negative=0 leave nothing to train: set hs=1 or negative > 0")
        need(is_real("ns_exponent"), "ns_exponent", "a finite number")
        need(is_real("sample") and 0 <= self.sample < 1, "sample", "a number in [0, 1)")
        need(is_real("alpha") and self.alpha > 0, "alpha", "a number > 0")
        need(is_real("min_alpha") and 0 <= self.min_alpha <= self.alpha, "min_alpha", f"in [0, alpha={self.alpha}]")
        need(is_int("epochs") and self.epochs >= 1, "epochs", "an int >= 1")
        need(self.cbow_mean == 1, "cbow_mean", "1 (the mean of the context vectors; the sum is not implemented)")
        need(is_int("seed"), "seed", "an int")
        for name in ("batch_words", "batch_size", "workers"):
            value = getattr(self, name)
            need(value is None or (is_int(name) and value >= 1), name, "None or an int >= 1")


# Training examples per update. Torch path: the gradients of a mini-batch all come from the
# same weights; with 16k pairs over a 400-word vocabulary training diverges, 1k-4k pairs learn
# as well as sequential SGD (benchmarks/word2vec.py, part 3). Triton kernel: a launch of 4096
# programs, in place, keeps the number of programs that can read a row before another
# program's update to it lands about as small.
DEFAULT_BATCH_SIZE = {"torch": 1024, "triton": 4096}


class Word2Vec:
    """word2vec with gensim's interface; trains at construction when ``sentences`` is given.

    >>> model = Word2Vec(sentences, vector_size=50, window=5, min_count=5, sg=1, negative=5)
    >>> model.wv.most_similar(positive=["woman", "king"], negative=["man"], topn=1)

    After training: ``wv`` (the word vectors, a :class:`KeyedVectors`), ``syn1neg`` (the
    output vectors of negative sampling) and ``syn1`` (those of the Huffman tree's inner
    nodes), numpy arrays; ``last_words_per_second`` (corpus tokens read per second by the
    last :meth:`train`) and ``epoch_losses`` (mean loss per training example, per epoch).
    """

    def __init__(
        self,
        sentences: Iterable[Sequence[str]] | None = None,
        vector_size: int = 100,
        window: int = 5,
        min_count: int = 5,
        sg: int = 1,
        hs: int = 0,
        negative: int = 5,
        ns_exponent: float = 0.75,
        sample: float = 1e-3,
        alpha: float = 0.025,
        min_alpha: float = 1e-4,
        epochs: int = 5,
        cbow_mean: int = 1,
        seed: int = 1,
        device: str | torch.device | None = None,
        batch_words: int | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
        progress: bool = True,
    ):
        self.config = Word2VecConfig(
            vector_size, window, min_count, sg, hs, negative, ns_exponent, sample, alpha, min_alpha,
            epochs, cbow_mean, seed, batch_words, batch_size, workers,
        )
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r}, but torch sees no CUDA device; use device='cpu'")
        self.progress = progress
        self.vocab: Vocab | None = None
        self.wv: KeyedVectors | None = None
        self.syn1neg: np.ndarray | None = None
        self.syn1: np.ndarray | None = None
        self.last_words_per_second = 0.0
        self.epoch_losses: list[float] = []
        if sentences is not None:
            sentences = _materialize(sentences)
            self.build_vocab(sentences)
            self.train(sentences)

    def __getattr__(self, name: str):
        # model.window, model.sg, ... read the config, as gensim's attributes do.
        config = self.__dict__.get("config")
        if config is not None and name in config.__dataclass_fields__:
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        c = self.config
        arch = ("skip-gram" if c.sg else "CBOW") + (" hs" if c.hs else "")
        arch += f" negative={c.negative}" if c.negative else ""
        size = f"{len(self.wv)} words" if self.wv is not None else "no vocabulary"
        return f"Word2Vec({arch}, vector_size={c.vector_size}, window={c.window}, {size})"

    # -- vocabulary and weights ----------------------------------------------------------

    def build_vocab(self, sentences: Iterable[Sequence[str]]) -> "Word2Vec":
        """Count the words, keep those seen ``min_count`` times, and initialise the weights:
        word vectors uniform in [-1/D, 1/D) (gensim), output vectors zero."""
        self.vocab = build_vocab(sentences, self.config.min_count)
        V, D = len(self.vocab), self.config.vector_size
        generator = torch.Generator().manual_seed(self.config.seed)
        vectors = ((2 * torch.rand(V, D, generator=generator) - 1) / D).numpy()
        self.wv = KeyedVectors(self.vocab.index_to_key, vectors, self.vocab.counts)
        self.syn1neg = np.zeros((V, D), dtype=np.float32) if self.config.negative else None
        self.syn1 = np.zeros((max(V - 1, 1), D), dtype=np.float32) if self.config.hs else None
        return self

    # -- training ---------------------------------------------------------------------

    def _use_kernel(self) -> bool:
        """The fused Triton kernel trains skip-gram with negative sampling (vectors of at most
        :data:`~course_lib.kernels.sgns.MAX_DIM` dimensions) on CUDA, or wherever the Triton
        backend is forced; on the CPU the batched torch path is faster than the interpreter
        by orders of magnitude, so ``auto`` never picks it there."""
        if not (self.config.sg and self.config.negative) or self.config.vector_size > MAX_DIM:
            return False
        probe = torch.empty(0, device=self.device)
        if requested_backend() == "triton":
            return use_triton(probe, op="word2vec")  # raises if Triton cannot run here
        return self.device.type == "cuda" and use_triton(probe, op="word2vec")

    def train(self, sentences: Iterable[Sequence[str]], epochs: int | None = None) -> "Word2Vec":
        """Train for ``epochs`` (default: the config's) passes over ``sentences``, the learning
        rate falling linearly from ``alpha`` to ``min_alpha`` over all of them."""
        if self.vocab is None or self.wv is None:
            raise RuntimeError("call build_vocab(sentences) before train(), or pass sentences to Word2Vec()")
        c = self.config
        epochs = c.epochs if epochs is None else epochs
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
        sentences = _materialize(sentences)
        token_ids, sentence_ids, n_tokens = _encode(sentences, self.wv.key_to_index)
        n_train = len(token_ids)  # vocabulary tokens per epoch, before subsampling
        if n_train == 0:
            raise ValueError("no word of these sentences is in the vocabulary")
        device = self.device
        on_cpu = device.type == "cpu"
        # On the CPU, torch.from_numpy shares memory: training updates wv.vectors in place.
        W_in = torch.from_numpy(self.wv.vectors).to(device)
        syn1neg = torch.from_numpy(self.syn1neg).to(device) if c.negative else None
        syn1 = torch.from_numpy(self.syn1).to(device) if c.hs else None
        counts = self.vocab.counts
        tables = _Tables(
            keep_prob=torch.from_numpy(keep_probability(counts, c.sample)).float().to(device),
            noise=_to(make_alias_table(noise_distribution(counts, c.ns_exponent)), device) if c.negative else None,
            huffman=pad_huffman(*build_huffman_tree(counts), device) if c.hs else None,
        )
        use_kernel = self._use_kernel()
        batch_size = c.batch_size or DEFAULT_BATCH_SIZE["triton" if use_kernel else "torch"]
        # CPU: `workers` threads share the weights without locks (Hogwild, as gensim's and
        # word2vec.c's threads do), each running torch ops single-threaded: mini-batches are
        # too small for torch's own intra-op threads to pay off. GPU: one thread.
        workers = 1 if not on_cpu else (c.workers or _default_workers())
        ids = torch.from_numpy(token_ids).to(device)
        sents = torch.from_numpy(sentence_ids).to(device)
        chunk = c.batch_words or (50_000 if on_cpu else 2**20)
        if workers > 1:  # at least 4 chunks per worker and epoch, or the epochs would overlap
            chunk = min(chunk, max(1000, -(-n_train // (4 * workers))))
        jobs = iter([(epoch, lo, hi) for epoch in range(epochs) for lo, hi in _chunk_bounds(sentence_ids, chunk)])
        lock = threading.Lock()
        losses = [[0.0, 0] for _ in range(epochs)]  # per epoch: summed loss, training examples
        bar = tqdm.tqdm(
            total=n_tokens * epochs, unit="word", unit_scale=True, disable=not self.progress, desc="word2vec"
        )

        def worker(number: int) -> None:
            generator = torch.Generator(device).manual_seed(c.seed + 7919 * number)
            while True:
                with lock:
                    epoch, lo, hi = next(jobs, (None, 0, 0))
                if epoch is None:
                    return
                done = epoch * n_train + lo  # training words before this chunk

                def lr_at(position: int) -> float:
                    return linear_decay(c.alpha, c.min_alpha, (done + position) / (epochs * n_train))

                loss, n = self._train_chunk(
                    ids[lo:hi], sents[lo:hi], W_in, syn1neg, syn1, tables, generator, lr_at, batch_size, use_kernel
                )
                with lock:
                    losses[epoch][0] += float(loss)  # a host sync on the GPU, once per chunk
                    losses[epoch][1] += n
                    bar.update(round(n_tokens * (hi - lo) / n_train))
                    rate = bar.n / (time.perf_counter() - start)
                    mean_loss = losses[epoch][0] / max(losses[epoch][1], 1)
                    bar.set_postfix(words_s=f"{rate:,.0f}", loss=f"{mean_loss:.3f}", refresh=False)

        threads = torch.get_num_threads()
        if on_cpu:
            torch.set_num_threads(1)
        start = time.perf_counter()
        try:
            if workers == 1:
                worker(0)
            else:
                with ThreadPoolExecutor(workers) as pool:
                    for future in [pool.submit(worker, k) for k in range(workers)]:
                        future.result()  # re-raises a worker's exception here
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
        finally:
            bar.close()
            torch.set_num_threads(threads)
        self.epoch_losses = [total / max(n, 1) for total, n in losses]
        first, last = self.epoch_losses[0], self.epoch_losses[-1]
        if not math.isfinite(last) or last > 1.5 * first:  # training made the model worse
            warnings.warn(
                f"word2vec training diverged (loss per epoch: {self.epoch_losses}); lower batch_size "
                f"(now {batch_size}) or alpha (now {c.alpha})", RuntimeWarning, stacklevel=2,
            )
        self.last_words_per_second = n_tokens * epochs / elapsed
        if not on_cpu:  # bring the weights home
            self.wv.vectors[...] = W_in.cpu().numpy()
            if c.negative:
                self.syn1neg[...] = syn1neg.cpu().numpy()
            if c.hs:
                self.syn1[...] = syn1.cpu().numpy()
        return self

    def _train_chunk(self, ids, sents, W_in, syn1neg, syn1, tables, generator, lr_at, batch_size, use_kernel):
        """Subsample a chunk of tokens, draw its windows and negatives, and train on them in
        mini-batches. Returns (summed loss as a tensor, number of training examples)."""
        c = self.config
        keep = subsample(ids, tables.keep_prob, generator)
        position = keep.nonzero().squeeze(1)  # where each kept token was, for the learning rate
        ids, sents = ids[keep].long(), sents[keep]
        radius = reduced_windows(len(ids), c.window, generator, ids.device)
        centre_pos, context_pos = context_pairs(sents, radius, c.window)
        loss = torch.zeros((), dtype=torch.float64, device=ids.device)
        if len(centre_pos) == 0:
            return loss, 0

        if c.sg:  # one training example per (centre, context) pair
            centres, contexts = ids[centre_pos], ids[context_pos]
            negatives = sample_negatives(tables.noise, (len(centres), c.negative), generator) if c.negative else None
            n = len(centres)
            bounds = _batches(n, batch_size)
            lrs = _batch_lrs(lr_at, position, centre_pos, bounds)
            for (s, e), lr in zip(bounds, lrs):
                loss += self._sg_batch(W_in, syn1neg, syn1, tables, centres[s:e], contexts[s:e],
                                       None if negatives is None else negatives[s:e], lr, use_kernel)
            return loss, n

        # CBOW: one training example per centre word that has at least one context word
        rows, n_contexts = torch.unique_consecutive(centre_pos, return_counts=True)  # (n,) centre positions
        example_of = torch.repeat_interleave(torch.arange(len(rows), device=ids.device), n_contexts)  # (P,)
        starts = torch.cumsum(n_contexts, 0) - n_contexts  # where each example's context words begin
        negatives = sample_negatives(tables.noise, (len(rows), c.negative), generator) if c.negative else None
        n = len(rows)
        bounds = _batches(n, batch_size)
        lrs = _batch_lrs(lr_at, position, rows, bounds)
        targets, context_ids = ids[rows], ids[context_pos]
        pair_starts = starts.tolist() + [len(centre_pos)]
        for (s, e), lr in zip(bounds, lrs):
            ps, pe = pair_starts[s], pair_starts[e]
            loss += self._cbow_batch(
                W_in, syn1neg, syn1, tables, targets[s:e], context_ids[ps:pe], example_of[ps:pe] - s,
                n_contexts[s:e], None if negatives is None else negatives[s:e], lr,
            )
        return loss, n

    def _sg_batch(self, W_in, syn1neg, syn1, tables, centres, contexts, negatives, lr, use_kernel):
        """Skip-gram: the centre word's vector predicts each context word."""
        loss = 0.0
        neu1e = None
        if self.config.hs:  # computed before the NS step touches W_in, applied after it
            v = W_in.index_select(0, centres)
            neu1e, hs_loss = hierarchical_softmax_step(v, syn1, contexts, *tables.huffman, lr)
            loss = hs_loss.sum()
        if negatives is not None:
            step = sgns_step_triton if use_kernel else sgns_step_reference
            loss = loss + step(W_in, syn1neg, centres, contexts, negatives, lr).sum()
        if neu1e is not None:
            W_in.index_add_(0, centres, neu1e)
        return loss

    def _cbow_batch(self, W_in, syn1neg, syn1, tables, targets, context_ids, slot, n_contexts, negatives, lr):
        """CBOW: the mean of the context vectors predicts the centre word; every context
        vector then receives the whole of ``neu1e`` (word2vec.c and gensim, cbow_mean=1).
        ``slot`` (P,) says which of the B examples each context word belongs to."""
        B, D = len(targets), W_in.shape[1]
        h = torch.zeros(B, D, dtype=W_in.dtype, device=W_in.device)
        h.index_add_(0, slot, W_in.index_select(0, context_ids))  # (B, D) the sum of the context vectors
        h /= n_contexts[:, None].to(h.dtype)  # ... and their mean
        neu1e = torch.zeros_like(h)
        loss = 0.0
        if self.config.hs:
            e, l_hs = hierarchical_softmax_step(h, syn1, targets, *tables.huffman, lr)
            neu1e += e
            loss = l_hs.sum()
        if negatives is not None:
            e, l_ns = negative_sampling_step(h, syn1neg, targets, negatives, lr)
            neu1e += e
            loss = loss + l_ns.sum()
        W_in.index_add_(0, context_ids, neu1e.index_select(0, slot))
        return loss

    # -- files ----------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write a directory: ``model.safetensors`` (``wv.vectors``, ``syn1neg``, ``syn1``) and
        ``config.json`` (the hyperparameters and the vocabulary with its counts)."""
        if self.wv is None:
            raise RuntimeError("nothing to save: the model has no vocabulary yet")
        from safetensors.numpy import save_file

        path = self.wv.save(path)
        tensors = {"wv.vectors": self.wv.vectors}
        if self.syn1neg is not None:
            tensors["syn1neg"] = self.syn1neg
        if self.syn1 is not None:
            tensors["syn1"] = self.syn1
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(path / _VECTORS_FILE))
        meta = json.loads((path / _VOCAB_FILE).read_text(encoding="utf-8"))
        meta.update(
            config=asdict(self.config),
            n_sentences=self.vocab.n_sentences,
            n_tokens=self.vocab.n_tokens,
        )
        (path / _VOCAB_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None, progress: bool = True) -> "Word2Vec":
        """Read what :meth:`save` wrote; the model can go on training."""
        from safetensors.numpy import load_file

        path = Path(path)
        meta = json.loads((path / _VOCAB_FILE).read_text(encoding="utf-8"))
        if "config" not in meta:
            raise ValueError(f"{path} holds only word vectors (KeyedVectors.save); load it with KeyedVectors.load")
        known = {f.name for f in fields(Word2VecConfig)}
        model = cls(**{k: v for k, v in meta["config"].items() if k in known}, device=device, progress=progress)
        tensors = load_file(str(path / _VECTORS_FILE))
        counts = np.asarray(meta["counts"], dtype=np.int64)
        model.vocab = Vocab(meta["index_to_key"], counts, meta.get("n_sentences", 0), meta.get("n_tokens", 0))
        model.wv = KeyedVectors(meta["index_to_key"], tensors["wv.vectors"].copy(), counts)
        model.syn1neg = tensors["syn1neg"].copy() if "syn1neg" in tensors else None
        model.syn1 = tensors["syn1"].copy() if "syn1" in tensors else None
        return model


# ---------------------------------------------------------------------------
# Training helpers
# ---------------------------------------------------------------------------


@dataclass
class _Tables:
    keep_prob: torch.Tensor  # (V,)
    noise: AliasTable | None  # the noise distribution
    huffman: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # codes, points (V, L), lengths (V,)


def _to(table: AliasTable, device) -> AliasTable:
    return AliasTable(*(t.to(device) for t in table))


def _default_workers() -> int:
    """gensim's default is 3 threads; use up to 4, but no more than the cores we may run on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _materialize(sentences):
    """Training reads the corpus more than once: a generator would be empty the second time."""
    _check_sentences(sentences)
    return sentences if isinstance(sentences, Sequence) else list(sentences)


def _encode(sentences, key_to_index) -> tuple[np.ndarray, np.ndarray, int]:
    """The corpus as vocabulary indices (out-of-vocabulary words removed, so windows reach
    past them, as in word2vec.c) with each token's sentence number; plus the token count."""
    ids, sentence_of, n_tokens = [], [], 0
    lookup = key_to_index.get
    for number, sentence in enumerate(sentences):
        sentence = _sentence_tokens(sentence, number)
        n_tokens += len(sentence)
        known = [i for i in map(lookup, sentence) if i is not None]
        ids.append(known)
        sentence_of.append(len(known))
    token_ids = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32)
    sentence_ids = np.repeat(np.arange(len(sentence_of), dtype=np.int64), sentence_of)
    return token_ids, sentence_ids, n_tokens


def _chunk_bounds(sentence_ids: np.ndarray, batch_words: int) -> list[tuple[int, int]]:
    """Split the token stream into runs of about ``batch_words`` tokens at sentence starts."""
    n = len(sentence_ids)
    bounds, lo = [], 0
    while lo < n:
        hi = min(lo + batch_words, n)
        if hi < n:  # move back to the start of the sentence that straddles hi
            start = int(np.searchsorted(sentence_ids, sentence_ids[hi], side="left"))
            hi = start if start > lo else int(np.searchsorted(sentence_ids, sentence_ids[hi], side="right"))
        bounds.append((lo, hi))
        lo = hi
    return bounds


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _batch_lrs(lr_at, position: torch.Tensor, centre_of_example: torch.Tensor, bounds) -> list[float]:
    """The learning rate of each mini-batch, taken at its first centre word."""
    firsts = centre_of_example[torch.tensor([s for s, _ in bounds], device=centre_of_example.device)]
    return [lr_at(p) for p in position[firsts].tolist()]


