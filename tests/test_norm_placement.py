"""course_lib.norm_placement and course_lib.text_to_text: the small experiments of Chapter 7's page.

Cheap structural checks (the page itself runs the full experiments): pre-LN and post-LN differ
only in where the norm sits, the unigram baseline is the entropy of the next-token frequencies,
a failed run is recognised, and the toy text-to-text tasks have the right answers."""

import math

import pytest
import torch

from course_lib import norm_placement as npl
from course_lib import text_to_text as tt
from course_lib.kernels import backend


def test_pre_and_post_ln_differ_only_in_the_norm_placement():
    pre = npl.TinyLM(10, d_model=16, n_layer=2, n_head=2, norm_first=True)
    post = npl.TinyLM(10, d_model=16, n_layer=2, n_head=2, norm_first=False)
    assert all(layer.norm_first for layer in pre.blocks.layers) and not any(l.norm_first for l in post.blocks.layers)
    assert isinstance(pre.ln_f, torch.nn.LayerNorm) and isinstance(post.ln_f, torch.nn.Identity)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(pre) - n(post) == 2 * 16  # the final LayerNorm's weight and bias
    # causal: changing a later token leaves earlier logits unchanged
    ids = torch.randint(0, 10, (2, 7))
    other = ids.clone()
    other[:, 5] = (other[:, 5] + 1) % 10
    with torch.no_grad():
        assert torch.allclose(pre(ids)[:, :5], pre(other)[:, :5], atol=1e-6)


def test_unigram_baseline_and_failure_detection():
    corpus = npl.markov_corpus(vocab_size=8, n_sequences=40, length=10, seed=1)
    assert corpus.shape == (40, 10) and int(corpus.max()) < 8
    counts = torch.bincount(corpus[:, 1:].reshape(-1), minlength=8).double()
    p = counts / counts.sum()
    want = -sum(float(q * math.log(q)) for q in p if q > 0)
    assert npl.unigram_entropy(corpus) == pytest.approx(want)
    run = npl.train(corpus, norm_first=True, lr=3e-3, steps=5, batch_size=4, d_model=16, n_layer=1, n_head=2)
    assert len(run.losses) == 5 and run.baseline == pytest.approx(want)
    stuck = npl.Run(False, 1.0, 0, [2.5] * 10, baseline=2.0)
    learned = npl.Run(True, 1.0, 0, [2.5] * 5 + [1.0] * 5, baseline=2.0)
    assert stuck.failed and not learned.failed and npl.Run(True, 1.0, 0, [2.0, float("nan")], 2.0).failed


def test_toy_tasks_and_tiny_t5_round_trip():
    pairs = tt.toy_examples(9, seed=3)
    for source, target in pairs:
        task, words = source.split(": ")
        words = words.split()
        want = {"reverse": " ".join(words[::-1]), "sort": " ".join(sorted(words)), "count": tt.NUMBERS[len(words)]}
        assert target == want[task]
    vocab = tt.toy_vocab()
    assert vocab.decode(vocab.encode(pairs[0][0])) == pairs[0][0]
    with backend.force_backend("torch"):
        model, losses = tt.train_text_to_text(pairs, vocab, steps=3, batch_size=4)
        scores = tt.exact_match(model, pairs, vocab, max_new_tokens=4)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert set(scores) == {"reverse", "sort", "count"} and all(0 <= v <= 1 for v in scores.values())
