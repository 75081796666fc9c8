"""course_lib.span_corruption: T5's span corruption and BART's noising functions.

T5's reference is the ``t5`` library's ``preprocessors.random_spans_noise_mask`` and
``noise_span_to_unique_sentinel`` (TensorFlow). Its counts are checked against the formulas
written out here independently, its sentinels against a literal port of T5's
``vocab_size - cumsum(first noise tokens)``, its layout (non-noise first, noise last,
alternating) and its randomness (every split of the counts equally likely) by sampling.
"""

import math
from collections import Counter

import pytest
import torch

from course_lib import span_corruption as sc


def t5_counts(length, density=0.15, mean=3.0):
    """T5's ``random_spans_noise_mask`` counts, as its TensorFlow code computes them."""
    length = max(length, 2)
    num_noise = int(round(length * density))  # tf.round: half to even
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(int(round(num_noise / mean)), 1)
    return num_noise, num_spans


def runs(mask):
    """[(is_noise, run length), ...] of a bool mask."""
    out = []
    for m in mask.tolist():
        if out and out[-1][0] == m:
            out[-1][1] += 1
        else:
            out.append([m, 1])
    return [tuple(r) for r in out]


def t5_noise_span_to_unique_sentinel(tokens, noise_mask, vocab_size):
    """A line-by-line port of T5's ``noise_span_to_unique_sentinel``."""
    prev_token_is_noise = torch.cat([torch.zeros(1, dtype=torch.bool), noise_mask[:-1]])
    first_noise_tokens = noise_mask & ~prev_token_is_noise
    subsequent_noise_tokens = noise_mask & prev_token_is_noise
    sentinel = (vocab_size - 1) + 1 - torch.cumsum(first_noise_tokens.long(), 0)
    tokens = torch.where(first_noise_tokens, sentinel, tokens)
    return tokens[~subsequent_noise_tokens]


@pytest.mark.parametrize("length", [1, 2, 3, 7, 10, 19, 20, 33, 100, 114, 512, 568, 1000])
def test_noise_mask_counts_and_layout_are_t5s(length):
    g = torch.Generator().manual_seed(length)
    num_noise, num_spans = t5_counts(length)
    assert sc.span_counts(length) == (num_noise, num_spans)
    for _ in range(20):
        mask = sc.random_spans_noise_mask(length, generator=g)
        assert mask.shape == (length,) and mask.dtype == torch.bool
        if length < 2:  # T5 computes the mask for length 2 and cuts it back
            assert not mask.any()
            continue
        assert int(mask.sum()) == num_noise
        r = runs(mask)
        assert r[0][0] is False and r[-1][0] is True  # starts with non-noise, ends with noise
        assert sum(1 for is_noise, _ in r if is_noise) == num_spans  # alternating: exactly k noise spans


def test_noise_mask_density_and_mean_span_length_on_average():
    g = torch.Generator().manual_seed(0)
    masks = torch.stack([sc.random_spans_noise_mask(200, generator=g) for _ in range(200)])
    assert masks.float().mean().item() == pytest.approx(30 / 200)  # exactly round(0.15 * 200) each time
    lengths = [n for m in masks for is_noise, n in runs(m) if is_noise]
    assert sum(lengths) / len(lengths) == pytest.approx(30 / 10)  # round(30 / 3) = 10 spans of mean 3
    assert max(lengths) > 3 and min(lengths) == 1  # random lengths, not all 3


def test_every_split_is_equally_likely():
    """length 40: 6 noise tokens in 2 spans, so the first noise span has 1..5 tokens, each
    with probability 1/5 (T5 shuffles a 0/1 vector of cut points)."""
    g = torch.Generator().manual_seed(1)
    n = 2000
    first = Counter(runs(sc.random_spans_noise_mask(40, generator=g))[1][1] for _ in range(n))
    assert sorted(first) == [1, 2, 3, 4, 5]
    chi2 = sum((c - n / 5) ** 2 / (n / 5) for c in first.values())
    assert chi2 < 18.5  # chi-square, 4 degrees of freedom: p < 0.001 if it fails


def test_noise_mask_is_seeded_and_validates():
    a = sc.random_spans_noise_mask(50, generator=torch.Generator().manual_seed(3))
    b = sc.random_spans_noise_mask(50, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="length must be an int >= 0"):
        sc.random_spans_noise_mask(-1)
    with pytest.raises(ValueError, match="noise_density must lie in"):
        sc.random_spans_noise_mask(10, noise_density=1.5)
    with pytest.raises(ValueError, match="mean_noise_span_length must be >= 1"):
        sc.random_spans_noise_mask(10, mean_noise_span_length=0.5)
    with pytest.raises(ValueError, match="non-noise tokens to separate"):
        sc.random_spans_noise_mask(10, noise_density=0.9, mean_noise_span_length=1.0)


def test_pretraining_lengths_are_t5s():
    # T5 pretraining: 568 raw tokens give inputs of 512 and targets of 114 (random_spans_helper).
    assert sc.span_corruption_lengths(568) == (512, 114)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(3, 1000, (568,), generator=g)
    inputs, targets = sc.span_corruption(tokens, list(range(1099, 999, -1)), eos_token_id=1, generator=g)
    assert (len(inputs), len(targets)) == (512, 114)


def test_sentinels_match_t5s_reference_and_count_down_from_the_vocabulary_end():
    V = 500
    sentinel_ids = [V - 1 - i for i in range(100)]  # <extra_id_0> = V - 1, <extra_id_1> = V - 2, ...
    g = torch.Generator().manual_seed(4)
    for length in (5, 17, 64, 211):
        tokens = torch.randint(2, V - 100, (length,), generator=g)
        mask = sc.random_spans_noise_mask(length, generator=g)
        inputs = sc.noise_span_to_unique_sentinel(tokens, mask, sentinel_ids)
        targets = sc.nonnoise_span_to_unique_sentinel(tokens, mask, sentinel_ids)
        assert torch.equal(inputs, t5_noise_span_to_unique_sentinel(tokens, mask, V))
        assert torch.equal(targets, t5_noise_span_to_unique_sentinel(tokens, ~mask, V))
        k = sc.span_counts(length)[1]
        assert inputs[inputs >= V - 100].tolist() == sentinel_ids[:k]
        assert len(inputs) == length - int(mask.sum()) + k


def test_paper_figure_2_and_the_inverse_rebuilds_the_text():
    words = "Thank you for inviting me to your party last week .".split()
    vocab = {w: i + 2 for i, w in enumerate(words)}
    tokens = torch.tensor([vocab[w] for w in words])
    mask = torch.tensor([w in ("for", "inviting", "last") for w in words])
    sentinels = [100, 99, 98]
    inputs, targets = sc.span_corruption(tokens, sentinels, eos_token_id=1, noise_mask=mask)
    name = {**{i: w for w, i in vocab.items()}, 100: "<X>", 99: "<Y>", 98: "<Z>", 1: "</s>"}
    assert " ".join(name[i] for i in inputs.tolist()) == "Thank you <X> me to your party <Y> week . </s>"
    assert " ".join(name[i] for i in targets.tolist()) == "<X> for inviting <Y> last <Z> </s>"
    assert torch.equal(sc.undo_span_corruption(inputs, targets, sentinels, eos_token_id=1), tokens)
    g = torch.Generator().manual_seed(5)
    for length in (2, 9, 50, 333):
        t = torch.randint(2, 90, (length,), generator=g)
        i, o = sc.span_corruption(t, list(range(200, 100, -1)), eos_token_id=1, generator=g)
        assert torch.equal(sc.undo_span_corruption(i, o, list(range(200, 100, -1)), eos_token_id=1), t)


def test_span_corruption_bad_input():
    with pytest.raises(ValueError, match="tokens must be a 1-D integer tensor"):
        sc.span_corruption(torch.zeros(2, 3, dtype=torch.long), [9])
    with pytest.raises(ValueError, match="noise_mask must be a bool tensor"):
        sc.span_corruption(torch.arange(5), [9], noise_mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="2 spans need 2 sentinels, only 1"):
        sc.noise_span_to_unique_sentinel(torch.arange(5), torch.tensor([1, 0, 0, 1, 0]).bool(), [9])


# ---- BART -------------------------------------------------------------------------------------


def test_infill_spans_replaces_each_span_by_one_mask():
    t = torch.arange(10, 20)
    M = 0
    # span (2, 3) -> one mask; (7, 0) inserts a mask before token 7; (9, 1) masks the last token
    out = sc.infill_spans(t, [2, 7, 9], [3, 0, 1], M)
    assert out.tolist() == [10, 11, M, 15, 16, M, 17, 18, M]
    assert sc.infill_spans(t, [10], [0], M).tolist() == t.tolist() + [M]  # an insertion at the very end
    with pytest.raises(ValueError, match="does not fit in 10 tokens"):
        sc.infill_spans(t, [8], [3], M)


@pytest.mark.parametrize("n", [1, 7, 40, 301])
def test_text_infilling_masks_the_ratio_and_keeps_the_rest_in_order(n):
    g = torch.Generator().manual_seed(n)
    M = -7
    t = torch.arange(n)
    for _ in range(10):
        out = sc.text_infilling(t, M, mask_ratio=0.3, generator=g)
        kept = out[out != M]
        assert torch.equal(kept, t[torch.isin(t, kept)])  # a subsequence, in order
        removed = n - len(kept)
        assert removed <= math.ceil(0.3 * n)  # overlapping spans may swallow each other
        assert (out == M).sum() >= 1 or n == 0
    assert torch.equal(sc.text_infilling(t, M, mask_ratio=0.0, generator=g), t)


def test_text_infilling_span_lengths_are_poisson():
    """With few, non-overlapping spans (ratio 0.02 of 3000 tokens) the masked runs have
    Poisson(3) lengths; their mean is about 3 (the last span is cut to fit)."""
    g = torch.Generator().manual_seed(6)
    t = torch.arange(1, 3001)
    lengths = []
    for _ in range(30):
        out = sc.text_infilling(t, 0, mask_ratio=0.02, generator=g).tolist()
        kept = [x for x in out if x != 0]
        gaps = [b - a - 1 for a, b in zip([0] + kept, kept + [3001]) if b - a > 1]
        lengths += gaps
    assert 2.3 < sum(lengths) / len(lengths) < 3.8


def test_other_bart_noises():
    g = torch.Generator().manual_seed(7)
    t = torch.tensor([5, 6, 3, 7, 8, 9, 3, 10, 3, 11, 12, 3])  # 3 = "."
    perm = sc.sentence_permutation(t, 3, generator=g)
    sentences = lambda x: sorted(tuple(s) for s in _split(x.tolist(), 3))  # noqa: E731
    assert sentences(perm) == sentences(t) and len(perm) == len(t)
    rot = sc.document_rotation(t, generator=g)
    assert any(torch.equal(rot, torch.roll(t, -s)) for s in range(len(t)))
    deleted = sc.token_deletion(torch.arange(100), 0.15, generator=g)
    assert len(deleted) == 85 and torch.equal(deleted, deleted.sort().values)
    masked = sc.token_masking(torch.arange(1, 101), 0, 0.15, generator=g)
    assert int((masked == 0).sum()) == 15
    noisy = sc.bart_noise(t, 0, full_stop_ids=3, generator=g)
    assert set(noisy.tolist()) - {0} <= set(t.tolist())


def _split(ids, stop):
    out, cur = [], []
    for i in ids:
        cur.append(i)
        if i == stop:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


def test_collate_pads_inputs_and_ignores_padded_labels():
    batch = sc.collate_seq2seq([([4, 5, 6], [7, 1]), ([8], [9, 10, 1])], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[4, 5, 6], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[7, 1, -100], [9, 10, 1]]
    with pytest.raises(ValueError, match="at least one"):
        sc.collate_seq2seq([], 0)
