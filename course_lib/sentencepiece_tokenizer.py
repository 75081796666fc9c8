"""Chapter 7: T5's tokenizer, a SentencePiece unigram model with sentinels, trained offline.

T5 tokenizes with **SentencePiece** (Kudo & Richardson, 2018) using the **unigram language
model** (一元语言模型; Kudo, 2018): the vocabulary is a set of pieces with probabilities, and
a text is split into the pieces of highest total log-probability (Viterbi); training starts
from many candidate pieces and repeatedly drops those whose removal costs the corpus
likelihood least. SentencePiece reads raw text (no pre-tokenization): a space becomes the
character "▁" at the start of the next piece, so decoding is exact concatenation.

T5's layout, which this class copies: id 0 ``<pad>`` (also the decoder's start token), 1
``</s>`` (EOS, appended to every sequence), 2 ``<unk>``, no BOS; then the learned pieces; then
100 **sentinels** ``<extra_id_0>`` ... ``<extra_id_99>`` appended at the very end in *reverse*
order, so ``<extra_id_0>`` is the last id (t5-small: 32099) and ``<extra_id_i>`` is
``len(tokenizer) - 1 - i``. A sentinel in the text is one token, never split.

Training uses the ``sentencepiece`` package (pinned in requirements.txt), in memory,
deterministically (one thread, a fixed seed), on the text shipped with Python
(:func:`docstring_documents`). That corpus is lower-cased, so the course's tokenizer is too:
an upper-case letter it never saw becomes ``<unk>``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

SENTINEL_RE = re.compile(r"<extra_id_(\d+)>")
SPECIAL = ("<pad>", "</s>", "<unk>")


class SentencePieceTokenizer:
    """A SentencePiece model plus T5's sentinels. ``encode`` returns ids ending in ``</s>``;
    ``__call__`` pads a batch; ``sentinel_ids[i]`` is the id of ``<extra_id_i>``."""

    pad_token_id, eos_token_id, unk_token_id = 0, 1, 2

    def __init__(self, model_proto: bytes, extra_ids: int = 100):
        import sentencepiece as spm

        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        pieces = [self.sp.id_to_piece(i) for i in range(3)]
        if pieces != list(SPECIAL):
            raise ValueError(f"model_proto must put {list(SPECIAL)} at ids 0, 1, 2 (T5's layout), got {pieces}")
        if not isinstance(extra_ids, int) or extra_ids < 0:
            raise ValueError(f"extra_ids must be an int >= 0, got {extra_ids!r}")
        self.extra_ids = extra_ids
        self.sp_size = self.sp.get_piece_size()

    # -- training --

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 2000, extra_ids: int = 100, *, model_type: str = "unigram",
              character_coverage: float = 1.0, seed: int = 0) -> "SentencePieceTokenizer":
        """Train on ``texts`` (one sentence or document per string). ``vocab_size`` counts
        the three special tokens and the learned pieces, not the ``extra_ids`` sentinels."""
        import sentencepiece as spm

        texts = [t for t in texts if t.strip()]
        if not texts:
            raise ValueError("texts must hold at least one non-empty string")
        model = io.BytesIO()
        spm.set_random_generator_seed(seed)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type=model_type,
                pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=character_coverage, num_threads=1,
                minloglevel=2, hard_vocab_limit=True,
            )
        except RuntimeError as e:  # e.g. a vocab_size larger than the text allows
            raise ValueError(f"sentencepiece could not train with vocab_size={vocab_size}: {e}") from None
        return cls(model.getvalue(), extra_ids)

    def save(self, path: str | Path) -> Path:
        """Write the SentencePiece model (``spiece.model``, as T5 checkpoints name it)."""
        path = Path(path)
        path = path / "spiece.model" if path.is_dir() else path
        path.write_bytes(self.model_proto)
        return path

    @classmethod
    def load(cls, path: str | Path, extra_ids: int = 100) -> "SentencePieceTokenizer":
        path = Path(path)
        return cls((path / "spiece.model" if path.is_dir() else path).read_bytes(), extra_ids)

    # -- the vocabulary --

    def __len__(self) -> int:
        return self.sp_size + self.extra_ids

    @property
    def sentinel_ids(self) -> list[int]:
        """[id of <extra_id_0>, id of <extra_id_1>, ...]: counting down from the last id."""
        return [len(self) - 1 - i for i in range(self.extra_ids)]

    def sentinel_id(self, i: int) -> int:
        if not 0 <= i < self.extra_ids:
            raise ValueError(f"<extra_id_{i}>: this tokenizer has sentinels 0 to {self.extra_ids - 1}")
        return len(self) - 1 - i

    def id_to_piece(self, i: int) -> str:
        if self.sp_size <= i < len(self):
            return f"<extra_id_{len(self) - 1 - i}>"
        if not 0 <= i < self.sp_size:
            raise ValueError(f"token id {i} is outside the vocabulary [0, {len(self)})")
        return self.sp.id_to_piece(i)

    # -- encoding and decoding --

    def tokenize(self, text: str) -> list[str]:
        return [self.id_to_piece(i) for i in self.encode(text, add_eos=False)]

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        """Token ids of ``text``; each ``<extra_id_N>`` becomes its sentinel id."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids: list[int] = []
        pos = 0
        for m in SENTINEL_RE.finditer(text):
            ids += self.sp.encode(text[pos:m.start()]) if text[pos:m.start()].strip() else []
            ids.append(self.sentinel_id(int(m.group(1))))
            pos = m.end()
        if text[pos:].strip():
            ids += self.sp.encode(text[pos:])
        return ids + [self.eos_token_id] if add_eos else ids

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Text from ids; sentinels are written as ``<extra_id_N>``; with
        ``skip_special_tokens`` the pad and EOS ids are dropped (as HF's T5 tokenizer)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        parts, run = [], []
        for i in ids:
            if skip_special_tokens and i in (self.pad_token_id, self.eos_token_id):
                continue
            if i >= self.sp_size:
                parts.append(self.sp.decode(run))
                parts.append(self.id_to_piece(i))
                run = []
            else:
                if not 0 <= i:
                    raise ValueError(f"token id {i} is outside the vocabulary [0, {len(self)})")
                run.append(i)
        parts.append(self.sp.decode(run))
        return " ".join(p for p in parts if p)

    def __call__(self, texts: Sequence[str], *, add_eos: bool = True, max_length: int | None = None
                 ) -> dict[str, torch.Tensor]:
        """A right-padded batch: ``input_ids`` (B, T) and ``attention_mask`` (B, T);
        ``max_length`` truncates (keeping the EOS last)."""
        rows = []
        for text in texts:
            ids = self.encode(text, add_eos)
            if max_length is not None and len(ids) > max_length:
                ids = ids[: max_length - 1] + ids[-1:] if add_eos else ids[:max_length]
            rows.append(ids)
        T = max(map(len, rows), default=0)
        input_ids = torch.full((len(rows), T), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        for b, ids in enumerate(rows):
            input_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[b, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}


def docstring_documents(sentences_per_document: int = 4, max_sentences: int | None = None) -> list[str]:
    """The standard library's docstrings (:func:`course_lib.data.stdlib_docstrings_corpus`)
    as plain text: consecutive sentences joined into documents, each sentence ending in
    " ." (the corpus keeps words only; the full stops let BART's sentence permutation
    and the tokenizer see sentence ends)."""
    from .data import stdlib_docstrings_corpus

    sentences = [" ".join(s) + " ." for s in stdlib_docstrings_corpus(max_sentences)]
    n = sentences_per_document
    return [" ".join(sentences[i: i + n]) for i in range(0, len(sentences), n)]


_TRAINED: dict[tuple, SentencePieceTokenizer] = {}


def t5_tokenizer(vocab_size: int = 2000, extra_ids: int = 100) -> SentencePieceTokenizer:
    """A unigram tokenizer trained on :func:`docstring_documents` (about a second, after the
    corpus is parsed or read from its cache; kept for the process)."""
    key = (vocab_size, extra_ids)
    if key not in _TRAINED:
        _TRAINED[key] = SentencePieceTokenizer.train(docstring_documents(1), vocab_size, extra_ids)
    return _TRAINED[key]


__all__ = ["SentencePieceTokenizer", "docstring_documents", "t5_tokenizer"]
