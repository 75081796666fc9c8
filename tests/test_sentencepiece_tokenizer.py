"""course_lib.sentencepiece_tokenizer: T5's unigram SentencePiece tokenizer with sentinels.

The reference is Hugging Face's ``T5Tokenizer`` built (with HF's own ``T5Converter``) from the
same pieces and scores: the same ids for every text, the sentinels at the same ids (T5's
layout: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, pieces, then ``<extra_id_99>`` ... ``<extra_id_0>``,
so ``<extra_id_0>`` is the last id).
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
from transformers.convert_slow_tokenizer import T5Converter  # noqa: E402

from course_lib.sentencepiece_tokenizer import SentencePieceTokenizer, docstring_documents  # noqa: E402


@pytest.fixture(scope="module")
def docs():
    return docstring_documents(1)


@pytest.fixture(scope="module")
def tok(docs):
    return SentencePieceTokenizer.train(docs[:3000], vocab_size=800)


def test_t5_layout_and_sentinels(tok):
    assert [tok.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert len(tok) == 900
    assert tok.sentinel_ids[:2] == [899, 898] and tok.sentinel_ids[-1] == 800
    assert tok.id_to_piece(899) == "<extra_id_0>" and tok.id_to_piece(800) == "<extra_id_99>"
    ids = tok.encode("the list <extra_id_3> of items")
    assert tok.sentinel_id(3) in ids and ids[-1] == tok.eos_token_id
    with pytest.raises(ValueError, match="sentinels 0 to 99"):
        tok.sentinel_id(100)


def test_ids_equal_hf_t5_tokenizer(tok, docs):
    vocab = [(tok.sp.id_to_piece(i), tok.sp.get_score(i)) for i in range(tok.sp_size)]
    hf = transformers.T5Tokenizer(**T5Converter.convert_from_spm(vocab=vocab, extra_ids=100))
    assert len(hf) == len(tok)
    assert hf.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == [899, 800]
    texts = docs[3000:3300] + ["return the number of items <extra_id_0> in the list . <extra_id_7> zebra"]
    for text in texts:
        assert tok.encode(text) == hf(text).input_ids, text


def test_decode_round_trip_and_batch(tok, docs):
    for text in docs[:50]:
        assert tok.decode(tok.encode(text)) == text
    text = "the value <extra_id_0> is returned <extra_id_1>"
    assert tok.decode(tok.encode(text), skip_special_tokens=False).startswith("the value <extra_id_0> is returned")
    batch = tok(["a list", "the number of items in the list"], max_length=4)
    assert batch["input_ids"].shape == (2, 4) and batch["input_ids"][1, -1] == tok.eos_token_id
    assert batch["attention_mask"][0].tolist() == [1] * len(tok.encode("a list")) + [0] * (4 - len(tok.encode("a list")))


def test_save_load_and_bad_input(tok, tmp_path):
    again = SentencePieceTokenizer.load(tok.save(tmp_path))
    assert again.encode("the list of items") == tok.encode("the list of items")
    with pytest.raises(ValueError, match="at least one non-empty string"):
        SentencePieceTokenizer.train(["", "  "])
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(torch.tensor([1]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.id_to_piece(900)
