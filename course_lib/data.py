"""Offline corpora and evaluation sets for every chapter of the course.

Nothing in this module touches the network unless you call :func:`download`
yourself.  Four kinds of text are available:

1. **Data shipped inside the gensim wheel** (``gensim/test/test_data``):

   * the Lee news corpus -- :func:`lee_corpus` (300 background documents,
     50 test documents);
   * Mikolov's word-analogy questions -- :func:`analogies_path` and
     :func:`read_analogies` (14 sections, 19,544 questions);
   * two word-similarity sets -- :func:`wordsim353_path` (353 pairs) and
     :func:`simlex999_path` (999 pairs), both read by :func:`read_word_pairs`.

2. **The docstrings of Python's standard library** --
   :func:`stdlib_docstrings_corpus`, a real English corpus of about 20k
   sentences and 250k tokens that every machine with Python already has.

3. **A seeded synthetic corpus with planted structure** --
   :func:`synthetic_corpus`.  Its analogy answers and similarity scores are
   known exactly, so a word2vec implementation can be checked against it in a
   few seconds.

4. **Any file on the web, cached and checksummed** -- :func:`download`
   (opt-in, standard library only).

Every corpus is a ``list[list[str]]``: a list of sentences (or documents), each
a list of lower-case tokens (produced by :func:`simple_tokenize`, except in the
synthetic corpus, whose words are generated directly).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import math
import os
import random
import re
import sys
import sysconfig
import tempfile
import tokenize
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DownloadError",
    "SyntheticCorpus",
    "analogies_path",
    "corpus_stats",
    "default_cache_dir",
    "download",
    "gensim_test_data_dir",
    "lee_corpus",
    "read_analogies",
    "read_word_pairs",
    "simlex999_path",
    "simple_tokenize",
    "stdlib_docstrings_corpus",
    "synthetic_corpus",
    "wordsim353_path",
]

Analogies = dict[str, list[tuple[str, str, str, str]]]
WordPairs = list[tuple[str, str, float]]


# ---------------------------------------------------------------------------
# Tokenization and statistics
# ---------------------------------------------------------------------------

# A word is a run of letters or digits (any script; the underscore is *not* a
# word character here), optionally joined to further runs by single apostrophes:
# "don't", "o'clock" and "python's" stay whole, while a quote such as 'hello'
# loses its apostrophes.
_WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def simple_tokenize(text: str) -> list[str]:
    """Split ``text`` into lower-case word tokens.

    A token is a maximal run of letters and digits, possibly containing
    apostrophes *inside* it (``"don't"``, ``"python's"``).  Everything else --
    punctuation, whitespace, underscores, quotes around a word -- separates
    tokens and is dropped.  The typographic apostrophe ``’`` counts as ``'``.

    >>> simple_tokenize("The King's 2 sons don't use snake_case -- 'really'!")
    ['the', "king's", '2', 'sons', "don't", 'use', 'snake', 'case', 'really']
    """
    return _WORD_RE.findall(text.lower().replace("\u2019", "'"))


def corpus_stats(sentences: Iterable[list[str]]) -> dict[str, int]:
    """Return ``{"n_sentences", "n_tokens", "vocab_size"}`` for a corpus.

    ``sentences`` may be any iterable of token lists; it is consumed once.
    """
    counts: Counter[str] = Counter()
    n_sentences = 0
    for sentence in sentences:
        n_sentences += 1
        counts.update(sentence)
    return {
        "n_sentences": n_sentences,
        "n_tokens": sum(counts.values()),
        "vocab_size": len(counts),
    }


# ---------------------------------------------------------------------------
# Data shipped with gensim
# ---------------------------------------------------------------------------


def gensim_test_data_dir() -> Path:
    """Return the ``test/test_data`` directory inside the installed gensim.

    gensim is located without being imported (importing it takes a second).
    Raises :class:`ModuleNotFoundError` if gensim is not installed and
    :class:`FileNotFoundError` if the installed copy lacks its test data.
    """
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "course_lib.data needs gensim for the Lee corpus and the analogy and "
            "word-similarity sets, but it is not installed (pip install gensim)",
            name="gensim",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data"
    if not path.is_dir():
        raise FileNotFoundError(f"gensim is installed but has no test data directory: {path}")
    return path


def _gensim_file(name: str) -> Path:
    path = gensim_test_data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is missing from gensim's test data: {path}")
    return path


def analogies_path() -> Path:
    """Path of Mikolov's ``questions-words.txt`` (read it with :func:`read_analogies`)."""
    return _gensim_file("questions-words.txt")


def wordsim353_path() -> Path:
    """Path of ``wordsim353.tsv`` (read it with :func:`read_word_pairs`)."""
    return _gensim_file("wordsim353.tsv")


def simlex999_path() -> Path:
    """Path of ``simlex999.txt`` (read it with :func:`read_word_pairs`)."""
    return _gensim_file("simlex999.txt")


_LEE_FILES = {"background": "lee_background.cor", "test": "lee.cor"}


def _read_text(path: Path) -> str:
    """Read a text file as UTF-8, falling back to Latin-1 for legacy files.

    (``lee.cor`` contains a single Latin-1 pound sign.)
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def lee_corpus(which: str = "background") -> list[list[str]]:
    """The Lee news corpus, one tokenized document per line of the file.

    ``which="background"`` gives the 300 documents of ``lee_background.cor``
    (about 60k tokens, 7.4k distinct), ``which="test"`` the 50 documents of ``lee.cor``.
    Tokens come from :func:`simple_tokenize` (lower-cased).
    """
    if which not in _LEE_FILES:
        raise ValueError(f"which must be one of {sorted(_LEE_FILES)}, got {which!r}")
    text = _read_text(_gensim_file(_LEE_FILES[which]))
    return [simple_tokenize(line) for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------------
# Readers for evaluation sets
# ---------------------------------------------------------------------------


def read_analogies(path: str | os.PathLike) -> Analogies:
    """Read an analogy file in the format of Mikolov's ``questions-words.txt``.

    A line ``: name`` opens a section; every other non-blank line holds four
    words ``a b c d`` meaning "a is to b as c is to d".  Returns an
    insertion-ordered ``{section: [(a, b, c, d), ...]}`` with every word
    lower-cased.  A question before the first section, an empty section name or
    a line without exactly four words raises :class:`ValueError` naming the
    file and line number.
    """
    path = Path(path)
    sections: Analogies = {}
    current: list[tuple[str, str, str, str]] | None = None
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(":"):
            name = line[1:].strip()
            if not name:
                raise ValueError(f"{path}:{lineno}: empty section name")
            current = sections.setdefault(name, [])
            continue
        words = line.lower().split()
        if len(words) != 4:
            raise ValueError(f"{path}:{lineno}: expected 4 words, got {len(words)}: {line!r}")
        if current is None:
            raise ValueError(f"{path}:{lineno}: question before the first ': section' line")
        current.append((words[0], words[1], words[2], words[3]))
    return sections


def read_word_pairs(path: str | os.PathLike) -> WordPairs:
    """Read a word-similarity file: ``[(word1, word2, score), ...]``.

    Handles the wordsim353 and SimLex-999 files shipped with gensim and the
    original SimLex-999 release:

    * blank lines and lines starting with ``#`` are skipped;
    * fields are separated by tabs (or, if a line has no tab, by whitespace);
    * the score is the third field, except that a header line whose third field
      is not a number (the first data line of the original SimLex-999 file) is
      skipped, and if it names a ``SimLex999`` column that column is the score.

    Words are lower-cased.  A line with fewer than three fields or a
    non-numeric score raises :class:`ValueError` naming the file and line.
    """
    path = Path(path)
    pairs: WordPairs = []
    score_col = 2
    seen_data = False
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split()
        if len(fields) <= score_col:
            raise ValueError(
                f"{path}:{lineno}: expected 'word1<TAB>word2<TAB>score', got {line!r}"
            )
        try:
            score = float(fields[score_col])
        except ValueError:
            if not seen_data and len(fields) >= 3:  # header line
                seen_data = True
                names = [f.lower() for f in fields]
                if "simlex999" in names:
                    score_col = names.index("simlex999")
                continue
            raise ValueError(
                f"{path}:{lineno}: score {fields[score_col]!r} is not a number in {line!r}"
            ) from None
        if not math.isfinite(score):
            raise ValueError(f"{path}:{lineno}: score is not finite in {line!r}")
        seen_data = True
        pairs.append((fields[0].lower(), fields[1].lower(), score))
    return pairs


# ---------------------------------------------------------------------------
# Cache directory
# ---------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$COURSE_LIB_CACHE`` if set, else ``~/.cache/course_lib`` (not created here)."""
    env = os.environ.get("COURSE_LIB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "course_lib"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------
# The standard library's docstrings as a corpus
# ---------------------------------------------------------------------------

_STDLIB_SKIP_DIRS = frozenset({"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__"})
_STDLIB_CACHE_VERSION = 1  # bump when the extraction below changes
_stdlib_memo: dict[str, list[list[str]]] = {}

# A sentence ends at ., ! or ? followed by whitespace.  Abbreviations such as
# "e.g. foo" split too early; for a word2vec corpus that does not matter.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+")
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _STDLIB_SKIP_DIRS)
        files.extend(Path(dirpath) / name for name in filenames if name.endswith(".py"))
    return sorted(files)


def _docstring_sentences(doc: str) -> list[list[str]]:
    """Split one cleaned docstring into tokenized sentences.

    Paragraphs (separated by blank lines) that contain an interactive example
    (a line starting with ``>>>``) are dropped: they are code, not English.
    The lines of the other paragraphs are joined and split at sentence ends.
    """
    sentences = []
    for paragraph in re.split(r"\n\s*\n", doc):
        lines = [line.strip() for line in paragraph.splitlines()]
        if any(line.startswith(">>>") for line in lines):
            continue
        for sentence in _SENTENCE_END_RE.split(" ".join(lines)):
            tokens = simple_tokenize(sentence)
            if tokens:
                sentences.append(tokens)
    return sentences


def _file_sentences(path: Path) -> list[list[str]]:
    try:
        with tokenize.open(path) as f:  # honours "# -*- coding: ... -*-"
            tree = ast.parse(f.read(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
        return []
    nodes = [n for n in ast.walk(tree) if isinstance(n, _DOC_NODES)]
    nodes.sort(key=lambda n: getattr(n, "lineno", 0))  # source order
    sentences = []
    for node in nodes:
        doc = ast.get_docstring(node, clean=True)
        if doc:
            sentences.extend(_docstring_sentences(doc))
    return sentences


def _stdlib_cache_key(files: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(f"v{_STDLIB_CACHE_VERSION} {sys.version}\n".encode())
    for path in files:
        st = path.stat()
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _all_stdlib_sentences(cache: bool) -> list[list[str]]:
    files = _stdlib_files()
    if not cache:
        return [s for path in files for s in _file_sentences(path)]
    key = _stdlib_cache_key(files)
    if key in _stdlib_memo:
        return _stdlib_memo[key]
    disk = default_cache_dir() / f"stdlib_docstrings-{key}.json"
    sentences = None
    try:
        sentences = json.loads(disk.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    if not isinstance(sentences, list):
        sentences = [s for path in files for s in _file_sentences(path)]
        try:
            _atomic_write_bytes(disk, json.dumps(sentences, separators=(",", ":")).encode())
        except OSError:
            pass  # a read-only home directory only costs the next process a re-parse
    _stdlib_memo[key] = sentences
    return sentences


def stdlib_docstrings_corpus(
    max_sentences: int | None = None, min_tokens: int = 3, cache: bool = True
) -> list[list[str]]:
    """A real English corpus: the docstrings of Python's standard library.

    Every ``.py`` file under ``sysconfig.get_paths()["stdlib"]`` is parsed with
    :mod:`ast`, in sorted path order, skipping the directories ``test``,
    ``tests``, ``idlelib`` and ``site-packages`` and any file that fails to
    parse.  The docstrings of modules, classes and functions are collected in
    source order, paragraphs holding ``>>>`` examples are dropped, the rest is
    split into sentences at ``.``, ``!`` or ``?`` and tokenized with
    :func:`simple_tokenize`.  Sentences with fewer than ``min_tokens`` tokens are
    dropped, and the first ``max_sentences`` of the rest are returned.

    On CPython 3.11.7 (674 files, ``min_tokens=3``) this yields about 19,900
    sentences, 254,000 tokens and a vocabulary of 9,600 words.  The text is
    technical but plain English, e.g. "decide whether a particular byte
    ordinal needs to be quoted".

    Parsing takes about two seconds, so with ``cache=True`` the result is kept in
    memory for the process and stored as JSON under :func:`default_cache_dir`,
    keyed by the Python version and the size and modification time of every
    file; ``cache=False`` always re-parses and writes nothing.  The returned
    lists are fresh copies: mutating them does not affect the cache.
    """
    if max_sentences is not None and max_sentences < 0:
        raise ValueError(f"max_sentences must be >= 0 or None, got {max_sentences}")
    corpus = []
    for sentence in _all_stdlib_sentences(cache):
        if max_sentences is not None and len(corpus) >= max_sentences:
            break
        if len(sentence) >= min_tokens:
            corpus.append(list(sentence))
    return corpus


# ---------------------------------------------------------------------------
# A synthetic corpus with planted structure
# ---------------------------------------------------------------------------
#
# Every "concept word" is described by a few attributes (gender, number,
# status, ...).  Each attribute value owns a small set of *marker words*, and
# each concept also owns a few *identity words* (its meaning that is shared by
# both members of a pair, e.g. "stage" and "film" for actor/actress).

_MARKERS: dict[str, tuple[str, ...]] = {
    # gender
    "male": ("he", "his", "him", "himself", "mr"),
    "female": ("she", "her", "hers", "herself", "mrs"),
    # grammatical number
    "singular": ("a", "one", "this", "every", "single"),
    "plural": ("many", "several", "these", "two", "some"),
    # social status
    "royal": ("throne", "crown", "palace", "reign", "royal"),
    "common": ("street", "market", "village", "work", "ordinary"),
    # kind of place
    "country": ("nation", "border", "government", "territory", "economy"),
    "city": ("city", "downtown", "mayor", "streets", "suburbs"),
    # broad category
    "person": ("person", "someone", "life", "name", "friend"),
    "animal": ("animal", "pet", "fur", "wild", "tail"),
    "thing": ("object", "thing", "made", "use", "new"),
    "place": ("place", "map", "travel", "visit", "located"),
}

# (male, female, identity words, status or None) -- singular people.
_PEOPLE: tuple[tuple[str, str, tuple[str, ...], str | None], ...] = (
    ("king", "queen", ("adult", "grown", "mature"), "royal"),
    ("man", "woman", ("adult", "grown", "mature"), "common"),
    ("prince", "princess", ("young", "little", "youth"), "royal"),
    ("boy", "girl", ("young", "little", "youth"), "common"),
    ("emperor", "empress", ("empire", "conquest", "legion"), "royal"),
    ("duke", "duchess", ("duchy", "estate", "noble"), "royal"),
    ("actor", "actress", ("stage", "film", "role"), None),
    ("waiter", "waitress", ("restaurant", "tray", "menu"), None),
    ("host", "hostess", ("party", "guests", "welcome"), None),
    ("hero", "heroine", ("brave", "rescue", "courage"), None),
    ("father", "mother", ("parent", "family", "raised"), None),
    ("brother", "sister", ("sibling", "family", "twin"), None),
    ("son", "daughter", ("born", "family", "child"), None),
    ("uncle", "aunt", ("relative", "family", "cousin"), None),
    ("nephew", "niece", ("relative", "family", "godchild"), None),
    ("husband", "wife", ("married", "wedding", "spouse"), None),
    ("grandfather", "grandmother", ("elderly", "family", "grandchild"), None),
)

# singular -> plural for the people above that also appear in the plural.
_PEOPLE_PLURALS = {
    "king": "kings", "queen": "queens", "man": "men", "woman": "women",
    "prince": "princes", "princess": "princesses", "boy": "boys", "girl": "girls",
}

# (singular, plural, category, identity words) -- animals and things.
_NOUNS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("cat", "cats", "animal", ("purr", "whiskers", "meow")),
    ("dog", "dogs", "animal", ("bark", "leash", "puppy")),
    ("horse", "horses", "animal", ("saddle", "gallop", "stable")),
    ("bird", "birds", "animal", ("wing", "nest", "feather")),
    ("mouse", "mice", "animal", ("cheese", "squeak", "hole")),
    ("cow", "cows", "animal", ("milk", "moo", "pasture")),
    ("car", "cars", "thing", ("engine", "drive", "road")),
    ("house", "houses", "thing", ("roof", "door", "rooms")),
    ("book", "books", "thing", ("page", "read", "author")),
    ("tree", "trees", "thing", ("leaf", "forest", "branch")),
    ("apple", "apples", "thing", ("fruit", "pie", "orchard")),
    ("chair", "chairs", "thing", ("sit", "seat", "table")),
)

# (country, capital, identity words).
_COUNTRIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("france", "paris", ("french", "seine", "baguette")),
    ("germany", "berlin", ("german", "spree", "bratwurst")),
    ("italy", "rome", ("italian", "tiber", "pasta")),
    ("spain", "madrid", ("spanish", "flamenco", "paella")),
    ("japan", "tokyo", ("japanese", "sushi", "samurai")),
    ("china", "beijing", ("chinese", "mandarin", "dynasty")),
    ("russia", "moscow", ("russian", "kremlin", "vodka")),
    ("egypt", "cairo", ("egyptian", "nile", "pharaoh")),
    ("greece", "athens", ("greek", "aegean", "olive")),
    ("england", "london", ("english", "thames", "tea")),
    ("portugal", "lisbon", ("portuguese", "tagus", "fado")),
    ("canada", "ottawa", ("canadian", "maple", "hockey")),
    ("peru", "lima", ("peruvian", "andes", "inca")),
    ("kenya", "nairobi", ("kenyan", "safari", "savanna")),
)

# Frequent words that carry no planted information; drawn from a Zipf law.
_FILLER = tuple(
    """the of and to in was that for on with as at by from it an be or is which
    you we not but have had were been has would there what so if about out up
    into than then could when who also its only other after first over our
    more most such any very just where while because through before between
    both each few how much own same too under again once here why all well
    down off during until against above below since without within along
    around among upon however therefore often usually perhaps really quite
    almost always never sometimes today yesterday tomorrow now soon later
    early late long short high low old big small great good bad right left
    next last best better ever even still yet already enough rather though
    whether either neither nor""".split()
)


def _concept_table() -> dict[str, dict[str, object]]:
    """Every concept word -> its attributes and the marker/identity sets.

    The value has ``"attributes"`` (attribute name -> value, e.g.
    ``{"category": "person", "gender": "male", ...}``) and ``"slots"``: the
    word sets from which one context word each is drawn per sentence (the
    identity set appears twice, so it gets two draws).
    """
    table: dict[str, dict[str, object]] = {}

    def add(word: str, identity: tuple[str, ...], **attributes: str) -> None:
        slots = [_MARKERS[v] for v in attributes.values()] + [identity, identity]
        table[word] = {"attributes": dict(attributes), "slots": slots}

    for male, female, identity, status in _PEOPLE:
        for word, gender in ((male, "male"), (female, "female")):
            extra = {"status": status} if status else {}
            add(word, identity, category="person", gender=gender, number="singular", **extra)
            if word in _PEOPLE_PLURALS:
                add(_PEOPLE_PLURALS[word], identity, category="person", gender=gender,
                    number="plural", **extra)
    for singular, plural, category, identity in _NOUNS:
        add(singular, identity, category=category, number="singular")
        add(plural, identity, category=category, number="plural")
    for country, capital, identity in _COUNTRIES:
        add(country, identity, category="place", kind="country")
        add(capital, identity, category="place", kind="city")
    return table


def _planted_analogies() -> Analogies:
    people = [(m, f) for m, f, _, _ in _PEOPLE]
    people += [(_PEOPLE_PLURALS[m], _PEOPLE_PLURALS[f]) for m, f in people if m in _PEOPLE_PLURALS]
    royalty = [("man", "king"), ("woman", "queen"), ("boy", "prince"), ("girl", "princess")]
    royalty += [(_PEOPLE_PLURALS[a], _PEOPLE_PLURALS[b]) for a, b in royalty]
    plural = [(s, p) for s, p, _, _ in _NOUNS] + list(_PEOPLE_PLURALS.items())
    capital = [(country, city) for country, city, _ in _COUNTRIES]

    def questions(pairs):
        return [(a, b, c, d) for a, b in pairs for c, d in pairs if (a, b) != (c, d)]

    return {
        "gender": questions(people),
        "royalty": questions(royalty),
        "plural": questions(plural),
        "capital": questions(capital),
    }


def _context_profile(slots: list[tuple[str, ...]]) -> dict[str, float]:
    """Expected number of times each context word is drawn per sentence."""
    profile: dict[str, float] = {}
    for words in slots:
        for w in words:
            profile[w] = profile.get(w, 0.0) + 1.0 / len(words)
    return profile


def _cosine(p: dict[str, float], q: dict[str, float]) -> float:
    dot = sum(v * q.get(k, 0.0) for k, v in p.items())
    return dot / math.sqrt(sum(v * v for v in p.values()) * sum(v * v for v in q.values()))


def _planted_word_pairs(table: dict[str, dict[str, object]], seed: int, n_pairs: int = 300) -> WordPairs:
    """All related pairs of the analogy sets plus a random sample of other pairs,
    scored 0-10 by the cosine similarity of their planted context profiles."""
    words = sorted(table)
    related = set()
    for questions in _planted_analogies().values():
        for a, b, _, _ in questions:
            related.add(tuple(sorted((a, b))))
    pairs = sorted(related)
    rng = random.Random(f"synthetic-word-pairs-{seed}")
    others = [(a, b) for i, a in enumerate(words) for b in words[i + 1:] if (a, b) not in related]
    pairs += rng.sample(others, max(0, min(len(others), n_pairs - len(pairs))))
    rng.shuffle(pairs)
    profiles = {w: _context_profile(table[w]["slots"]) for w in words}
    return [(a, b, round(10.0 * _cosine(profiles[a], profiles[b]), 2)) for a, b in pairs]


@dataclass
class SyntheticCorpus:
    """The output of :func:`synthetic_corpus`.

    Attributes:
        sentences: the tokenized sentences.
        analogies: ``{section: [(a, b, c, d), ...]}`` -- the planted analogies
            (sections ``gender``, ``royalty``, ``plural``, ``capital``).
        word_pairs: ``[(w1, w2, score), ...]`` with planted similarity scores
            in ``[0, 10]`` (cosine similarity of the two words' planted
            context distributions, times 10).
        attributes: each concept word's planted attributes, e.g.
            ``attributes["queen"] == {"category": "person", "gender": "female",
            "number": "singular", "status": "royal"}``.
        seed: the seed that generated the sentences.
    """

    sentences: list[list[str]]
    analogies: Analogies
    word_pairs: WordPairs
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    seed: int = 0

    def write_analogies(self, path: str | os.PathLike) -> Path:
        """Write :attr:`analogies` in the ``questions-words.txt`` format."""
        lines = []
        for section, questions in self.analogies.items():
            lines.append(f": {section}")
            lines.extend(" ".join(q) for q in questions)
        path = Path(path)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def write_word_pairs(self, path: str | os.PathLike) -> Path:
        """Write :attr:`word_pairs` in the ``wordsim353.tsv`` format."""
        lines = ["# Synthetic word pairs (course_lib.data.synthetic_corpus)",
                 "# Word 1\tWord 2\tPlanted similarity (0-10)"]
        lines.extend(f"{a}\t{b}\t{s:.2f}" for a, b, s in self.word_pairs)
        path = Path(path)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


def synthetic_corpus(n_sentences: int = 20000, seed: int = 0) -> SyntheticCorpus:
    """A seeded corpus in which word analogies are planted by construction.

    **Concept words.**  About 90 words carry meaning: people (king/queen,
    man/woman, actor/actress, uncle/aunt, ... and plurals such as kings/queens),
    animals and things (cat/cats, mouse/mice, book/books, ...) and places
    (france/paris, japan/tokyo, ...).  Each has a few *attributes*:

    * ``category``: person, animal, thing or place;
    * ``gender``: male or female (people only);
    * ``number``: singular or plural (people, animals, things);
    * ``status``: royal or common (king, queen, prince, ... versus man, woman,
      boy, ...);
    * ``kind``: country or city (places);

    and an *identity* that both members of a pair share (adult for king and man,
    stage/film/role for actor and actress, french/seine/baguette for france and
    paris, ...).

    **Context words.**  Each attribute value owns five *marker words*: ``he his
    him himself mr`` for male, ``she her hers herself mrs`` for female,
    ``throne crown palace reign royal`` for royal, ``many several these two
    some`` for plural, ``city downtown mayor streets suburbs`` for city, and so
    on.  Each identity owns three words.

    **Sentences.**  A sentence is built around one concept word ``w`` drawn
    uniformly: one marker word is drawn for each of ``w``'s attributes, two
    identity words are drawn, two to four *filler* words are drawn from a Zipf
    law over 139 frequent words (the, of, and, ...) that carry no information,
    and the lot is shuffled.  The first sentence about ``queen`` for seed 0 is
    ``['above', 'someone', 'mature', 'single', 'the', 'is', 'queen', 'more',
    'mrs', 'grown', 'throne']``.  Sentences have 7 to 11 tokens, so with
    ``window=5`` nearly every context word lies in the window of ``w``.

    **Why the analogies hold.**  The context distributions of king and queen
    differ *only* in the gender markers, exactly as those of man and woman, or
    actor and actress, do.  Skip-gram approximately factorises the matrix of
    pointwise mutual information between words and contexts, so the vector
    offset ``queen - king`` is (nearly) the same as ``woman - man``: both
    encode "swap male markers for female markers".  Likewise ``kings - king``
    encodes the number markers, ``king - man`` the status markers and
    ``paris - france`` the kind markers.  The nearest word to
    ``queen - king + man`` is therefore ``woman``.

    **Planted similarity.**  ``word_pairs`` scores a pair by the cosine
    similarity of the two words' expected context-word counts (filler
    excluded), times 10: ``king``/``queen`` share five of their six draws and
    score 9.06, ``father``/``uncle`` 5.4, ``cat``/``dog`` 2.31 and
    ``cat``/``paris``, which share nothing, 0.

    The result is a deterministic function of ``(n_sentences, seed)``; 20,000
    sentences take about 0.1 s.  gensim's word2vec (skip-gram,
    ``vector_size=50``, ``window=5``, 5 epochs, one worker) trains on them in
    about a second and solves about 98% of the planted analogies (gender,
    royalty and capital all but perfectly, plural about 96%); with 5,000
    sentences it still solves about 85%.
    """
    if n_sentences < 0:
        raise ValueError(f"n_sentences must be >= 0, got {n_sentences}")
    table = _concept_table()
    concepts = sorted(table)
    slots = [table[w]["slots"] for w in concepts]
    rng = random.Random(seed)
    filler_cum = []
    total = 0.0
    for rank in range(len(_FILLER)):
        total += 1.0 / (rank + 1)
        filler_cum.append(total)

    sentences = []
    for _ in range(n_sentences):
        i = rng.randrange(len(concepts))
        sentence = [concepts[i]]
        sentence.extend(rng.choice(words) for words in slots[i])
        sentence.extend(rng.choices(_FILLER, cum_weights=filler_cum, k=rng.randint(2, 4)))
        rng.shuffle(sentence)
        sentences.append(sentence)

    return SyntheticCorpus(
        sentences=sentences,
        analogies=_planted_analogies(),
        word_pairs=_planted_word_pairs(table, seed),
        attributes={w: dict(table[w]["attributes"]) for w in concepts},
        seed=seed,
    )


# ---------------------------------------------------------------------------
# Downloading (opt-in)
# ---------------------------------------------------------------------------


class DownloadError(OSError):
    """A download failed: HTTP/network error or a SHA-256 mismatch."""


_CHUNK = 1 << 16


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download(
    url: str,
    sha256: str,
    filename: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` once into a cache directory and return the local path.

    Args:
        url: the address (anything :func:`urllib.request.urlopen` accepts).
        sha256: the expected SHA-256 of the file, 64 hex digits.
        filename: name in the cache; defaults to the last part of the URL path.
        cache_dir: defaults to :func:`default_cache_dir`
            (``$COURSE_LIB_CACHE`` or ``~/.cache/course_lib``).
        timeout: seconds to wait for the server at each step.

    If the cached file exists and has the expected digest it is returned
    without touching the network.  Otherwise the file is streamed into a
    temporary file in the cache directory (with a tqdm progress bar for files
    over 1 MiB), its digest is checked, and only then is it renamed into place,
    so an interrupted or corrupt download never leaves a file under the final
    name.  A stale cached file with the wrong digest is replaced.

    Raises :class:`DownloadError` (an :class:`OSError`) on an HTTP or network
    error and on a digest mismatch (naming the expected and the actual digest;
    nothing is left in the cache).  Nothing in ``course_lib`` calls this
    function by default.
    """
    expected = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    if filename is None:
        filename = urllib.parse.unquote(Path(urllib.parse.urlsplit(url).path).name)
        if not filename:
            raise ValueError(f"cannot derive a file name from {url!r}; pass filename=")
    if Path(filename).name != filename or filename in (".", ".."):
        raise ValueError(f"filename must be a plain file name, got {filename!r}")
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = directory / filename

    if target.is_file():
        if _sha256_of(target) == expected:
            return target
        target.unlink()  # stale or corrupted: fetch it again

    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=filename + ".", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                with _progress(total, filename) as bar:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        out.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as e:
            raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise DownloadError(f"download of {url} failed: {reason}") from e
        got = h.hexdigest()
        if got != expected:
            raise DownloadError(
                f"SHA-256 mismatch for {url}: expected {expected}, got {got}; "
                "the downloaded file was deleted"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int) -> None:
        pass


def _progress(total: int | None, name: str):
    """A tqdm bar for downloads of more than 1 MiB (or of unknown size)."""
    if total is not None and total <= 1 << 20:
        return _NoProgress()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False)
