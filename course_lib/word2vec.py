"""word2vec: skip-gram and CBOW with negative sampling or hierarchical softmax.

Mikolov et al. 2013a, "Efficient Estimation of Word Representations in Vector Space"
(the two architectures) and 2013b, "Distributed Representations of Words and Phrases
and their Compositionality" (negative sampling, subsampling of frequent words), as
implemented in the original ``word2vec.c`` and in gensim, whose interface and defaults
this module copies::

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
* :func:`build_huffman_tree` (in :mod:`course_lib.huffman`): the binary codes and
  inner-node paths of hierarchical softmax, built as word2vec.c builds them;
* the updates: :func:`negative_sampling_step` and :func:`hierarchical_softmax_step`, both
  reductions to one logistic-regression step, :func:`logistic_step`, and
  :func:`course_lib.kernels.sgns.sgns_step` (skip-gram with negative sampling fused into
  one Triton kernel for the GPU).

The word vectors are a :class:`~course_lib.keyedvectors.KeyedVectors`.

**Two ways to run the same algorithm.** word2vec is sequential SGD: one small step per
training example, each step seeing the weights the previous one left.

* On the CPU (the default there), :class:`Word2Vec` runs exactly that, in C
  (:mod:`course_lib.kernels.word2vec_cpu`, compiled on first use with the machine's C
  compiler): ``workers`` Python threads train chunks of ``batch_words`` words at once,
  each in a C call that releases the GIL, and share the weights without locks, as
  word2vec.c's and gensim's threads do (Hogwild). Step for step this is word2vec.c's
  loop: the context word's input vector predicts the centre word (skip-gram), the mean of
  the context predicts the centre and every context vector receives the whole update
  (CBOW, ``cbow_mean=1``), the learning rate falls linearly over all words of all epochs.
* On a GPU, where one-example steps cannot fill the device, the same pairs are generated
  with tensor operations and trained in mini-batches of ``batch_size`` examples whose
  gradients all come from the same weights; skip-gram with negative sampling runs the
  fused Hogwild kernel of :mod:`course_lib.kernels.sgns`. Small mini-batches behave like
  sequential SGD, very large ones do not (the most frequent words are drawn as negatives
  hundreds of times per batch); ``benchmarks/word2vec.py`` measures accuracy against batch
  size. ``engine="torch"`` runs this batched path on the CPU too, the fallback when no C
  compiler is found.

**Known differences from gensim.** The sigmoid table is indexed exactly (word2vec.c and
gensim compute its scale in integer arithmetic, see
:func:`~course_lib.kernels.word2vec_cpu.sigmoid_tables`); outside [-6, 6] σ is taken as 0
or 1 (word2vec.c's rule for negative sampling) where gensim skips the example. Negatives
are drawn with an alias table (word2vec.c: a table of 10^8 words; gensim: a binary search),
the same distribution. The Huffman tree is word2vec.c's; gensim builds another, equally
optimal one (its heap breaks ties between equal counts differently), and hierarchical
softmax shapes the vectors after the tree: the two libraries' nearest neighbours then agree
less than two gensim seeds do, at the same analogy accuracy. Word vectors start uniform in [-1/D, 1/D), as in gensim (word2vec.c:
[-0.5/D, 0.5/D)). The random numbers differ, so results agree in distribution, not bitwise.
"""

from __future__ import annotations

import itertools
import json
import math
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

from .huffman import build_huffman_tree, pad_huffman
from .kernels import word2vec_cpu
from .kernels.backend import requested_backend, use_triton
from .kernels.sgns import MAX_DIM, sgns_step_reference, sgns_step_triton
from .keyedvectors import _VECTORS_FILE, _VOCAB_FILE, KeyedVectors

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
# The model
# ---------------------------------------------------------------------------


@dataclass
class Word2VecConfig:
    """The hyperparameters, with gensim's names, meanings and defaults (CBOW, ``sg=0``).

    ``shrink_windows``: draw each centre word's window radius uniformly from 1 to
    ``window`` (word2vec.c, gensim) or always use ``window``. ``batch_words``: words per
    job, the unit of work a thread takes (None: gensim's 10,000 on the CPU engine, 2^20 for
    the batched engines, whose pairs and negatives are drawn a job at a time). ``batch_size``:
    training examples per weight update of the batched engines ((context, centre) pairs for
    skip-gram, centre words for CBOW); ``None`` picks :data:`DEFAULT_BATCH_SIZE`. The CPU
    engine updates after every example and ignores it. ``workers``: threads that train
    concurrently, sharing the weights without locks (gensim's default, 3; results are
    reproducible only with ``workers=1``)."""

    vector_size: int = 100
    window: int = 5
    min_count: int = 5
    sg: int = 0
    hs: int = 0
    negative: int = 5
    ns_exponent: float = 0.75
    sample: float = 1e-3
    alpha: float = 0.025
    min_alpha: float = 1e-4
    epochs: int = 5
    cbow_mean: int = 1
    seed: int = 1
    shrink_windows: bool = True
    batch_words: int | None = None
    batch_size: int | None = None
    workers: int = 3

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

        def is_int(name: str) -> bool:
            v = getattr(self, name)
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

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
        need(self.cbow_mean in (0, 1), "cbow_mean", "1 (the mean of the context vectors) or 0 (their sum)")
        need(is_int("seed"), "seed", "an int")
        need(self.shrink_windows in (True, False), "shrink_windows", "True or False")
        for name in ("batch_words", "batch_size"):
            value = getattr(self, name)
            need(value is None or (is_int(name) and value >= 1), name, "None or an int >= 1")
        need(is_int("workers") and self.workers >= 1, "workers", "an int >= 1")


# Training examples per update of the batched engines. torch: the gradients of a mini-batch
# all come from the same weights; with 16k pairs over a 400-word vocabulary training
# diverges, 1k-4k pairs learn about as well as sequential SGD on that corpus
# (benchmarks/word2vec.py, part 4). Triton: a launch of 4096 programs, in place, keeps the
# number of programs that can read a row before another program's update to it lands small.
DEFAULT_BATCH_SIZE = {"torch": 1024, "triton": 4096}
ENGINES = ("c", "torch", "triton")


class Word2Vec:
    """word2vec with gensim's interface and defaults; trains at construction when
    ``sentences`` is given.

    >>> model = Word2Vec(sentences, vector_size=50, window=5, min_count=5, sg=1, negative=5)
    >>> model.wv.most_similar(positive=["woman", "king"], negative=["man"], topn=1)

    Beyond gensim's arguments: ``device`` (default: CUDA when available), ``engine`` (None:
    ``"c"``, the per-example C loop, on the CPU; on CUDA ``"triton"`` for skip-gram with
    negative sampling and ``"torch"`` otherwise, both batched; see the module docstring),
    ``batch_size`` and ``progress`` (a tqdm bar).

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
        sg: int = 0,
        hs: int = 0,
        negative: int = 5,
        ns_exponent: float = 0.75,
        sample: float = 1e-3,
        alpha: float = 0.025,
        min_alpha: float = 1e-4,
        epochs: int = 5,
        cbow_mean: int = 1,
        seed: int = 1,
        shrink_windows: bool = True,
        batch_words: int | None = None,
        workers: int = 3,
        device: str | torch.device | None = None,
        engine: str | None = None,
        batch_size: int | None = None,
        progress: bool = True,
    ):
        self.config = Word2VecConfig(
            vector_size, window, min_count, sg, hs, negative, ns_exponent, sample, alpha, min_alpha,
            epochs, cbow_mean, seed, shrink_windows, batch_words, batch_size, workers,
        )
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r}, but torch sees no CUDA device; use device='cpu'")
        if engine is not None and engine not in ENGINES:
            raise ValueError(f"engine must be None or one of {ENGINES}, got {engine!r}")
        if engine == "c" and self.device.type != "cpu":
            raise ValueError(f"engine='c' runs on the CPU, but device={self.device}")
        self.engine = engine
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

    def _engine(self) -> str:
        """Which engine trains (see the class docstring). A forced Triton backend
        (``force_backend("triton")``, ``COURSE_LIB_BACKEND=triton``) sends skip-gram with
        negative sampling to the fused kernel even on the CPU, through the interpreter; the
        CPU engine falls back to the batched torch path, with a warning, if no C compiler
        is found."""
        c = self.config
        fits_kernel = bool(c.sg and c.negative) and c.vector_size <= MAX_DIM
        probe = torch.empty(0, device=self.device)
        if self.engine is not None:
            if self.engine == "triton":
                if not fits_kernel:
                    raise ValueError(f"engine='triton' trains skip-gram with negative sampling and vector_size <= "
                                     f"{MAX_DIM}, got sg={c.sg}, negative={c.negative}, vector_size={c.vector_size}")
                use_triton(probe, op="word2vec")  # raises if Triton cannot run here
            return self.engine
        if requested_backend() == "triton" and fits_kernel:
            use_triton(probe, op="word2vec")  # raises if Triton cannot run here
            return "triton"
        if self.device.type == "cpu":
            try:
                word2vec_cpu.library()
                return "c"
            except RuntimeError as error:
                warnings.warn(f"{error}; training with the batched torch engine instead (slower, and "
                              "mini-batches are not word2vec's sequential updates)", RuntimeWarning, stacklevel=3)
                return "torch"
        return "triton" if fits_kernel and use_triton(probe, op="word2vec") else "torch"

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
        tokens, starts, n_tokens = _encode(sentences, self.wv.key_to_index)
        n_train = len(tokens)  # vocabulary tokens per epoch, before subsampling
        if n_train == 0:
            raise ValueError("no word of these sentences is in the vocabulary")
        engine = self._engine()
        batch_words = c.batch_words or (10_000 if engine == "c" else 2**20)
        workers = c.workers if self.device.type == "cpu" else 1  # a GPU is fed by one thread
        if workers > 1:  # at least 4 jobs per worker and epoch, or the epochs would overlap much
            batch_words = min(batch_words, max(1000, -(-n_train // (4 * workers))))
        chunks = _chunks(starts, batch_words)
        jobs = [(epoch, first, last) for epoch in range(epochs) for first, last in chunks]
        train_job = (self._c_trainer if engine == "c" else self._batched_trainer)(tokens, starts, engine)

        def learning_rates(epoch: int, first: int, last: int) -> tuple[float, float]:
            # linear over all training words of all epochs (word2vec.c, gensim)
            done = epoch * n_train
            total = epochs * n_train
            return (linear_decay(c.alpha, c.min_alpha, (done + starts[first]) / total),
                    linear_decay(c.alpha, c.min_alpha, (done + starts[last]) / total))

        losses = [[0.0, 0] for _ in range(epochs)]  # per epoch: summed loss, training examples
        bar = tqdm.tqdm(total=n_tokens * epochs, unit="word", unit_scale=True, disable=not self.progress,
                        desc="word2vec")
        lock = threading.Lock()
        queue = iter(enumerate(jobs))

        def worker(number: int) -> None:
            state = train_job.start(number)
            while True:
                with lock:
                    index, job = next(queue, (None, None))
                if job is None:
                    return
                epoch, first, last = job
                loss, n = train_job(state, index, first, last, *learning_rates(*job))
                with lock:
                    losses[epoch][0] += float(loss)  # on the GPU, one host sync per job
                    losses[epoch][1] += n
                    bar.update(round(n_tokens * (starts[last] - starts[first]) / n_train))
                    rate = bar.n / (time.perf_counter() - start)
                    bar.set_postfix(words_s=f"{rate:,.0f}", loss=f"{losses[epoch][0] / max(losses[epoch][1], 1):.3f}",
                                    refresh=False)

        threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(1)  # the batched engine's small ops: one thread each is fastest
        start = time.perf_counter()
        try:
            if workers == 1:
                worker(0)
            else:
                with ThreadPoolExecutor(workers) as pool:
                    for future in [pool.submit(worker, k) for k in range(workers)]:
                        future.result()  # re-raises a worker's exception here
            train_job.finish()
            elapsed = time.perf_counter() - start
        finally:
            bar.close()
            torch.set_num_threads(threads)
        self.epoch_losses = [total / max(n, 1) for total, n in losses]
        first, last = self.epoch_losses[0], self.epoch_losses[-1]
        if not math.isfinite(last) or last > 1.5 * first:  # training made the model worse
            hint = f"lower batch_size (now {train_job.batch_size}) or alpha" if engine != "c" else "lower alpha"
            warnings.warn(f"word2vec training diverged (loss per epoch: {self.epoch_losses}); {hint} "
                          f"(now {c.alpha})", RuntimeWarning, stacklevel=2)
        self.last_words_per_second = n_tokens * epochs / elapsed
        return self

    # -- the CPU engine: word2vec.c's loop in C ----------------------------------------

    def _c_trainer(self, tokens: np.ndarray, starts: np.ndarray, engine: str) -> "_Trainer":
        c = self.config
        counts = self.vocab.counts
        noise = make_alias_table(noise_distribution(counts, c.ns_exponent)) if c.negative else None
        huffman = pad_huffman(*build_huffman_tree(counts), "cpu") if c.hs else None
        tables = word2vec_cpu.make_tables(
            keep_probability(counts, c.sample) if c.sample else None,
            None if noise is None else noise.prob.numpy(), None if noise is None else noise.alias.numpy(),
            None if huffman is None else [t.numpy() for t in huffman],
        )
        model = word2vec_cpu.model_struct(
            self.wv.vectors, self.syn1neg, self.syn1, tables, sg=c.sg, hs=c.hs, negative=c.negative,
            window=c.window, cbow_mean=c.cbow_mean, shrink_windows=c.shrink_windows,
        )
        keep_alive = (tables, self.wv.vectors, self.syn1neg, self.syn1)  # the struct holds raw pointers

        def train_job(state, index, first, last, alpha_start, alpha_end):
            # one C call per job, the GIL released: the threads train in parallel. Like gensim
            # (per job) and word2vec.c (per 10,000 words), the rate is held for the whole job.
            loss, examples, _ = word2vec_cpu.train_chunk(
                model, tokens, starts, first, last, alpha_start, _job_seed(c.seed, index))
            return loss, examples

        return _Trainer(train_job, keep_alive=keep_alive)

    # -- the batched engines: mini-batches of tensor operations -------------------------

    def _batched_trainer(self, tokens: np.ndarray, starts: np.ndarray, engine: str) -> "_Trainer":
        c = self.config
        device = self.device
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
        batch_size = c.batch_size or DEFAULT_BATCH_SIZE[engine]
        ids = torch.from_numpy(tokens).to(device)
        lengths = np.diff(starts)
        sents = torch.from_numpy(np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)).to(device)
        use_kernel = engine == "triton"

        def train_job(generator, index, first, last, alpha_start, alpha_end):
            lo, hi = int(starts[first]), int(starts[last])

            def lr_at(position: int) -> float:  # position: a token of the job
                return alpha_start + (alpha_end - alpha_start) * position / max(hi - lo, 1)

            return self._train_chunk(ids[lo:hi], sents[lo:hi], W_in, syn1neg, syn1, tables, generator, lr_at,
                                     batch_size, use_kernel)

        def finish():
            if device.type == "cuda":
                torch.cuda.synchronize()
                self.wv.vectors[...] = W_in.cpu().numpy()  # bring the weights home
                if c.negative:
                    self.syn1neg[...] = syn1neg.cpu().numpy()
                if c.hs:
                    self.syn1[...] = syn1.cpu().numpy()

        def start(number: int) -> torch.Generator:
            return torch.Generator(device).manual_seed(c.seed + 7919 * number)

        return _Trainer(train_job, start=start, finish=finish, batch_size=batch_size)

    def _train_chunk(self, ids, sents, W_in, syn1neg, syn1, tables, generator, lr_at, batch_size, use_kernel):
        """Subsample a chunk of tokens, draw its windows and negatives, and train on them in
        mini-batches. Returns (summed loss as a tensor, number of training examples)."""
        c = self.config
        keep = subsample(ids, tables.keep_prob, generator)
        position = keep.nonzero().squeeze(1)  # where each kept token was, for the learning rate
        ids, sents = ids[keep].long(), sents[keep]
        if c.shrink_windows:
            radius = reduced_windows(len(ids), c.window, generator, ids.device)
        else:
            radius = torch.full((len(ids),), c.window, device=ids.device)
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
                loss += self._sg_batch(W_in, syn1neg, syn1, tables, contexts[s:e], centres[s:e],
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

    def _sg_batch(self, W_in, syn1neg, syn1, tables, inputs, targets, negatives, lr, use_kernel):
        """Skip-gram, in word2vec.c's direction: the input vector of each context word
        (``inputs``) predicts its centre word (``targets``)."""
        loss = 0.0
        neu1e = None
        if self.config.hs:  # computed before the NS step touches W_in, applied after it
            v = W_in.index_select(0, inputs)
            neu1e, hs_loss = hierarchical_softmax_step(v, syn1, targets, *tables.huffman, lr)
            loss = hs_loss.sum()
        if negatives is not None:
            step = sgns_step_triton if use_kernel else sgns_step_reference
            loss = loss + step(W_in, syn1neg, inputs, targets, negatives, lr).sum()
        if neu1e is not None:
            W_in.index_add_(0, inputs, neu1e)
        return loss

    def _cbow_batch(self, W_in, syn1neg, syn1, tables, targets, context_ids, slot, n_contexts, negatives, lr):
        """CBOW: the mean (``cbow_mean=1``) or sum of the context vectors predicts the centre
        word; every context vector then receives the whole of ``neu1e`` (the mean) or
        ``neu1e`` divided by the number of context words (the sum), as in gensim.
        ``slot`` (P,) says which of the B examples each context word belongs to."""
        B, D = len(targets), W_in.shape[1]
        h = torch.zeros(B, D, dtype=W_in.dtype, device=W_in.device)
        h.index_add_(0, slot, W_in.index_select(0, context_ids))  # (B, D) the sum of the context vectors
        if self.config.cbow_mean:
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
        if not self.config.cbow_mean:
            neu1e /= n_contexts[:, None].to(h.dtype)
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
        # (files written before workers became an int stored None: the default then applies)
        config = {k: v for k, v in meta["config"].items() if k in known and not (k == "workers" and v is None)}
        model = cls(**config, device=device, progress=progress)
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


class _Trainer:
    """One engine's training of a job: ``trainer(state, job_index, first, last, alpha_start,
    alpha_end) -> (loss, examples)``; ``start(worker)`` makes a thread's state (its random
    generator), ``finish()`` runs once after the last job."""

    def __init__(self, train_job, start=lambda number: None, finish=lambda: None, batch_size=None, keep_alive=None):
        self._train_job, self.start, self.finish = train_job, start, finish
        self.batch_size = batch_size
        self._keep_alive = keep_alive

    def __call__(self, *args):
        return self._train_job(*args)


@dataclass
class _Tables:
    keep_prob: torch.Tensor  # (V,)
    noise: AliasTable | None  # the noise distribution
    huffman: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # codes, points (V, L), lengths (V,)


def _to(table: AliasTable, device) -> AliasTable:
    return AliasTable(*(t.to(device) for t in table))


def _job_seed(seed: int, job: int) -> int:
    """A 64-bit seed for the C engine's generator, different for every job (SplitMix64):
    the random numbers of a job do not depend on which thread runs it."""
    x = (seed * 0x9E3779B97F4A7C15 + (job + 1) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return x ^ (x >> 31)


def _materialize(sentences):
    """Training reads the corpus more than once: a generator would be empty the second time."""
    _check_sentences(sentences)
    return sentences if isinstance(sentences, Sequence) else list(sentences)


def _encode(sentences, key_to_index) -> tuple[np.ndarray, np.ndarray, int]:
    """The corpus as vocabulary indices (out-of-vocabulary words removed, so windows reach
    past them, as in word2vec.c): ``tokens`` (N,) int32 and ``starts`` (S + 1,) int64,
    sentence ``s`` being ``tokens[starts[s]:starts[s + 1]]``; plus the corpus's token count.
    The lookups run in ``map`` and numpy, not in a Python loop: on one epoch of CBOW, a loop
    here took longer than the training."""
    for number, sentence in enumerate(sentences):
        if isinstance(sentence, (str, bytes)):
            _sentence_tokens(sentence, number)  # raises, naming the sentence
        if not hasattr(sentence, "__len__"):
            raise TypeError(f"sentence {number} is a {type(sentence).__name__}; each sentence must be a list of tokens")
    lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
    n_tokens = int(lengths.sum())
    ids = np.fromiter(map(key_to_index.get, itertools.chain.from_iterable(sentences), itertools.repeat(-1)),
                      dtype=np.int64, count=n_tokens)
    known = ids >= 0
    kept = np.bincount(np.repeat(np.arange(len(lengths)), lengths)[known], minlength=len(lengths))
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(kept, out=starts[1:])
    return ids[known].astype(np.int32), starts, n_tokens


def _chunks(starts: np.ndarray, batch_words: int) -> list[tuple[int, int]]:
    """Split the sentences into jobs ``(first, last)`` of about ``batch_words`` tokens: a
    sentence goes to the job in which it starts (so a job exceeds ``batch_words`` by less
    than one sentence)."""
    job_of = starts[:-1] // batch_words  # non-decreasing
    firsts = np.flatnonzero(np.diff(job_of, prepend=-1))
    bounds = np.append(firsts, len(job_of))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _batch_lrs(lr_at, position: torch.Tensor, centre_of_example: torch.Tensor, bounds) -> list[float]:
    """The learning rate of each mini-batch, taken at its first centre word."""
    firsts = centre_of_example[torch.tensor([s for s, _ in bounds], device=centre_of_example.device)]
    return [lr_at(p) for p in position[firsts].tolist()]
