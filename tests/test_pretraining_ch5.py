"""Chapter 5's objectives in course_lib.pretraining: static masking, FULL-/DOC-SENTENCES
packing, sentence-order pairs, SpanBERT span masking and the span boundary objective.
Statistics are measured with seeded generators on enough samples that a wrong rule (token-
level instead of span-level replacement, clipped instead of truncated lengths, a wrong
budget) lies many standard errors away."""

import math
import random

import pytest
import torch

from course_lib import pretraining as pt

IGNORE = pt.IGNORE_INDEX


# ---- static vs dynamic masking ------------------------------------------------------------


def test_static_masking_has_dupe_factor_fixed_copies():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (64, 32), generator=g)
    kwargs = dict(vocab_size=100, mask_token_id=4, special_token_ids=[0, 1, 2, 3, 4])
    inputs, labels = pt.static_masking(ids, dupe_factor=10, generator=g, **kwargs)
    assert inputs.shape == labels.shape == (10, 64, 32)
    chosen = labels != IGNORE
    assert abs(chosen.float().mean().item() - 0.15) < 0.01
    assert all(not torch.equal(chosen[0], chosen[k]) for k in range(1, 10))  # 10 different masks
    for epoch in (3, 13, 23, 33):  # 40 epochs: each mask seen 4 times
        assert torch.equal(pt.static_epoch((inputs, labels), epoch)[0], inputs[3])
    with pytest.raises(ValueError, match="dupe_factor"):
        pt.static_masking(ids, dupe_factor=0, **kwargs)


# ---- packing -----------------------------------------------------------------------------


def documents(seed=0, n_docs=6):
    rng = random.Random(seed)
    docs, t = [], 10
    for _ in range(n_docs):
        doc = []
        for _ in range(rng.randint(1, 6)):
            length = rng.randint(1, 9)
            doc.append(list(range(t, t + length)))
            t += length
        docs.append(doc)
    return docs


@pytest.mark.parametrize("cross", [True, False])
def test_packing_keeps_every_token_in_order(cross):
    docs = documents()
    blocks = pt.pack_sentences(docs, 16, cross_documents=cross, doc_separator=2)
    assert all(1 <= len(b) <= 16 for b in blocks)
    flat = [t for b in blocks for t in b if t != 2]
    assert flat == [t for d in docs for s in d for t in s]
    sentence_of = {t: (d, k) for d, doc in enumerate(docs) for k, s in enumerate(doc) for t in s}
    for b in blocks:
        sentences = [sentence_of[t] for t in b if t != 2]
        # full sentences only: a block starts and ends at sentence boundaries
        assert b[0] == docs[sentences[0][0]][sentences[0][1]][0]
        assert b[-1] == docs[sentences[-1][0]][sentences[-1][1]][-1]
        doc_ids = {d for d, _ in sentences}
        if not cross:
            assert len(doc_ids) == 1 and 2 not in b  # DOC-SENTENCES never crosses documents
        else:
            assert b.count(2) == len(doc_ids) - 1  # one separator per document boundary
    if cross:
        assert any(b.count(2) for b in blocks)  # FULL-SENTENCES does cross
        assert len(blocks) < len(pt.pack_sentences(docs, 16, cross_documents=False))


def test_packing_splits_a_sentence_longer_than_an_input():
    blocks = pt.pack_sentences([[[1, 2, 3, 4, 5, 6, 7]], [[8]]], 3, doc_separator=0)
    assert blocks == [[1, 2, 3], [4, 5, 6], [7, 0, 8]]
    enc = pt.encode_blocks(blocks, bos_id=100, eos_id=101, pad_id=102, max_length=6)
    assert enc["input_ids"][0].tolist() == [100, 1, 2, 3, 101, 102]
    with pytest.raises(ValueError, match="max_length=4"):
        pt.encode_blocks(blocks, bos_id=100, eos_id=101, pad_id=102, max_length=4)


# ---- sentence-order prediction ------------------------------------------------------------


def test_sop_pairs_are_consecutive_segments_in_or_out_of_order():
    docs = documents(seed=1, n_docs=400)
    examples = pt.create_sop_examples(docs, 24, random.Random(0))
    swapped = sum(e.is_swapped for e in examples)
    n = len(examples)
    assert abs(swapped / n - 0.5) < 4 * math.sqrt(0.25 / n)
    streams = [[t for s in d for t in s] for d in docs]
    where = {t: (d, i) for d, stream in enumerate(streams) for i, t in enumerate(stream)}
    adjacent = 0
    for e in examples:
        assert e.tokens_a and e.tokens_b and len(e.tokens_a) + len(e.tokens_b) <= 24
        first, second = (e.tokens_b, e.tokens_a) if e.is_swapped else (e.tokens_a, e.tokens_b)
        d1, i1 = where[first[-1]]
        d2, i2 = where[second[0]]
        assert d1 == d2, "both segments come from one document"
        for seg in (first, second):  # each segment is a contiguous stretch of the document
            assert [where[t][1] for t in seg] == list(range(where[seg[0]][1], where[seg[0]][1] + len(seg)))
        # in document order the second segment follows the first (truncation may cut tokens between)
        assert i2 > i1
        adjacent += i2 == i1 + 1
    assert adjacent > 0.8 * n


# ---- SpanBERT -----------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "mean"), [("truncate", 3.797), ("clip", 4.463)])
def test_span_lengths_are_geometric(mode, mean):
    probs = pt.span_length_distribution(0.2, 10, mode)
    assert abs(probs.sum().item() - 1) < 1e-12
    lengths = torch.multinomial(probs, 40_000, replacement=True, generator=torch.Generator().manual_seed(0)) + 1
    sd = math.sqrt(((torch.arange(1, 11) - mean) ** 2 * probs).sum().item() / 40_000)
    assert abs(lengths.double().mean().item() - mean) < 4 * sd
    assert lengths.max() == 10 and lengths.min() == 1
    ratio = (lengths == 2).sum() / (lengths == 1).sum()
    assert abs(ratio.item() - 0.8) < 0.05  # geometric: P(l+1) / P(l) = 1 - p


def word_sequence(rng, n_words, special=(0, 2)):
    """<s> words </s> with words of 1-3 tokens; returns ids and word starts."""
    ids, starts = [special[0]], [True]
    t = 10
    for _ in range(n_words):
        for k in range(rng.randint(1, 3)):
            ids.append(t)
            starts.append(k == 0)
            t += 1
    ids.append(special[1])
    starts.append(True)
    return ids, starts


def test_span_mask_budget_whole_words_and_span_level_replacement():
    rng = random.Random(0)
    g = torch.Generator().manual_seed(0)
    kinds = {"mask": 0, "random": 0, "same": 0}
    spans_total = 0
    for _ in range(300):
        ids, starts = word_sequence(rng, 60)
        out = pt.span_mask(ids, starts, mask_token_id=1, vocab_size=10_000, special_token_ids=[0, 1, 2], generator=g)
        masked = [i for i, lab in enumerate(out.labels) if lab != IGNORE]
        n = len(ids) - 2
        assert len(masked) == math.ceil(0.15 * n)  # the 15% budget, exactly
        assert out.labels[0] == out.labels[-1] == IGNORE  # specials are never masked
        for i in masked:
            assert out.labels[i] == ids[i]
        # whole words: a masked word is masked entirely, except where the budget ran out
        word = []
        for i in range(1, len(ids) - 1):
            if starts[i] and word:
                flags = [out.labels[j] != IGNORE for j in word]
                if any(flags) and not all(flags):
                    assert flags[: flags.index(False)] == [True] * flags.index(False)  # cut at the end only
                    assert max(j for j in word if out.labels[j] != IGNORE) == masked[-1] or word[0] in masked
                word = []
            word.append(i)
        for first, last in out.spans:
            span = [out.input_ids[i] for i in range(first, last + 1) if out.labels[i] != IGNORE]
            orig = [ids[i] for i in range(first, last + 1) if out.labels[i] != IGNORE]
            spans_total += 1
            if all(t == 1 for t in span):
                kinds["mask"] += 1
            elif span == orig:
                kinds["same"] += 1
            else:
                kinds["random"] += 1
                assert all(t != o and t != 1 for t, o in zip(span, orig))  # the whole span is replaced
    for k, expected in (("mask", 0.8), ("random", 0.1), ("same", 0.1)):
        share = kinds[k] / spans_total
        assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / spans_total), (k, share)


def test_span_mask_mean_span_length_in_words_is_near_3_8_on_long_sequences():
    rng = random.Random(1)
    g = torch.Generator().manual_seed(1)
    words_per_span = []
    for _ in range(40):
        ids, starts = word_sequence(rng, 400)
        word_index = []
        w = -1
        for s in starts:
            w += s
            word_index.append(w)
        out = pt.span_mask(ids, starts, mask_token_id=1, vocab_size=1000, special_token_ids=[0, 1, 2], generator=g)
        words_per_span += [word_index[e] - word_index[s] + 1 for s, e in out.spans[:-1]]  # the last is cut by the budget
    mean = sum(words_per_span) / len(words_per_span)
    # Spans can run into earlier ones (which shortens them a little); clipping would give ~4.5.
    assert 3.2 < mean < 3.9, mean  # measured 3.45; clipped lengths give 4.24


def test_span_boundary_head_predicts_from_the_boundaries():
    torch.manual_seed(0)
    labels = torch.full((2, 12), IGNORE)
    labels[0, 3:6] = torch.tensor([7, 8, 9])
    labels[1, 0:2] = torch.tensor([5, 6])  # touches the start: no left boundary, skipped
    labels[1, 8:10] = torch.tensor([3, 4])
    targets = pt.span_boundary_targets([[(3, 5)], [(0, 1), (8, 9)]], labels, max_span_length=10)
    assert targets["row"].tolist() == [0, 0, 0, 1, 1]
    assert targets["left"].tolist() == [2, 2, 2, 7, 7] and targets["right"].tolist() == [6, 6, 6, 10, 10]
    assert targets["offset"].tolist() == [0, 1, 2, 0, 1] and targets["target"].tolist() == [7, 8, 9, 3, 4]
    table = torch.nn.Embedding(20, 16)
    head = pt.SpanBoundaryHead(16, table, max_span_length=10)
    hidden = torch.randn(2, 12, 16, requires_grad=True)
    logits, loss = head(hidden, targets)
    assert logits.shape == (5, 20)
    loss.backward()
    touched = hidden.grad.abs().sum(-1) > 0  # only the boundary states carry gradient
    assert touched.nonzero().tolist() == [[0, 2], [0, 6], [1, 7], [1, 10]]
    assert table.weight.grad is not None  # the output table is the input table
