"""Word vectors with gensim's ``KeyedVectors`` interface (a subset): lookup, cosine
similarity, 3CosAdd analogies, the two standard evaluations, and files.

Kept apart from :mod:`course_lib.word2vec` as gensim keeps ``gensim.models.keyedvectors``
apart from its models: the vectors outlive the model that trained them, and nothing here
depends on how they were trained. ``course_lib.word2vec.KeyedVectors`` is this class.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["KeyedVectors"]

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
