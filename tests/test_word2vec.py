"""course_lib.word2vec against gensim: the pieces one by one, the C training loop against
its Python reference, then trained models on corpora of several shapes.

Trainings are kept small (a few seconds each); both libraries run with one worker so that
every number here is reproducible.
"""

import heapq
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.data import analogies_path, read_analogies, read_word_pairs, synthetic_corpus, wordsim353_path
from benchmarks.word2vec import VARIANTS, CorpusShape, planted_corpus
from course_lib.kernels import force_backend, word2vec_cpu
from course_lib.word2vec import (
    KeyedVectors,
    Word2Vec,
    build_huffman_tree,
    build_vocab,
    context_pairs,
    hierarchical_softmax_step,
    keep_probability,
    linear_decay,
    make_alias_table,
    negative_sampling_step,
    noise_distribution,
    pad_huffman,
    reduced_windows,
    sample_negatives,
    subsample,
)
from course_lib.word2vec import _encode  # the corpus as the C loop reads it

gensim_models = pytest.importorskip("gensim.models")


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_corpus(10000, seed=0)


@pytest.fixture(scope="module")
def synthetic_questions(synthetic, tmp_path_factory):
    return synthetic.write_analogies(tmp_path_factory.mktemp("synthetic") / "analogies.txt")


def gensim_vocab(sentences, min_count=5, sample=1e-3, ns_exponent=0.75):
    model = gensim_models.Word2Vec(vector_size=8, min_count=min_count, sample=sample, ns_exponent=ns_exponent)
    model.build_vocab(sentences)
    return model


# ---- vocabulary -----------------------------------------------------------------------------


def test_vocab_counts_and_order_match_gensim(synthetic):
    ours = build_vocab(synthetic.sentences, min_count=5)
    theirs = gensim_vocab(synthetic.sentences)
    assert ours.index_to_key == theirs.wv.index_to_key  # including gensim's order among ties
    assert ours.counts.tolist() == [theirs.wv.get_vecattr(w, "count") for w in ours.index_to_key]
    assert ours.n_tokens == sum(map(len, synthetic.sentences))


def test_min_count_and_ties():
    sentences = [["b", "a", "c", "a"], ["c", "b", "d", "a"]]
    vocab = build_vocab(sentences, min_count=2)
    assert vocab.index_to_key == ["a", "c", "b"]  # a: 3; c and b: 2 each, the later-seen first
    assert vocab.counts.tolist() == [3, 2, 2]
    assert vocab.key_to_index == {"a": 0, "c": 1, "b": 2}
    assert gensim_vocab(sentences, min_count=2).wv.index_to_key == vocab.index_to_key


@pytest.mark.parametrize("corpus", [[], [[]], [[], []]])
def test_empty_corpus(corpus):
    with pytest.raises(ValueError, match="the corpus is empty"):
        Word2Vec(corpus)


def test_no_word_reaches_min_count():
    with pytest.raises(ValueError, match=r"min_count=5.*most frequent word, 'b', occurs 3 times"):
        Word2Vec([["a", "b"], ["b", "c"], ["b"]], min_count=5)


def test_strings_instead_of_token_lists():
    with pytest.raises(TypeError, match="got a single str"):
        Word2Vec("the cat sat on the mat")
    with pytest.raises(TypeError, match="sentence 1 is a str"):
        Word2Vec([["the", "cat"], "the dog"])


# ---- subsampling ------------------------------------------------------------------------------


def test_keep_probability_matches_word2vec_formula_and_gensim(synthetic):
    counts = build_vocab(synthetic.sentences).counts
    keep = keep_probability(counts, 1e-3)
    t = 1e-3 * counts.sum()
    np.testing.assert_allclose(keep, np.minimum((np.sqrt(counts / t) + 1) * t / counts, 1.0))
    theirs = gensim_vocab(synthetic.sentences).wv.expandos["sample_int"] / (2**32 - 1)
    np.testing.assert_allclose(keep, theirs, atol=1e-8)
    assert keep[0] < 0.2 and keep[-1] == 1.0  # "the" mostly dropped, rare words always kept
    assert (keep_probability(counts, 0) == 1).all()


def test_subsample_keeps_the_expected_fraction():
    keep_prob = torch.tensor([0.25, 1.0, 0.6])
    ids = torch.tensor([0, 1, 2]).repeat(20000)
    kept = subsample(ids, keep_prob, torch.Generator().manual_seed(0))
    for word, p in enumerate(keep_prob.tolist()):
        assert abs(kept[ids == word].float().mean().item() - p) < 0.015


# ---- windows and pairs ------------------------------------------------------------------------


def test_reduced_windows_are_uniform_in_1_to_window():
    radius = reduced_windows(50000, 5, torch.Generator().manual_seed(0))
    assert radius.min() == 1 and radius.max() == 5
    frequencies = torch.bincount(radius, minlength=6)[1:].float() / 50000
    assert torch.allclose(frequencies, torch.full((5,), 0.2), atol=0.01)


def test_context_pairs_against_a_loop():
    g = torch.Generator().manual_seed(1)
    sentence_ids = torch.sort(torch.randint(0, 8, (60,), generator=g)).values
    radius = reduced_windows(60, 4, g)
    centre, context = context_pairs(sentence_ids, radius, 4)
    expected = [
        (i, j) for i in range(60) for j in range(60)
        if i != j and abs(i - j) <= radius[i] and sentence_ids[i] == sentence_ids[j]
    ]
    assert list(zip(centre.tolist(), context.tolist())) == expected  # same pairs, word2vec.c's order


def test_context_pairs_edge_cases():
    assert [t.tolist() for t in context_pairs(torch.tensor([0]), torch.tensor([5]), 5)] == [[], []]
    empty = torch.zeros(0, dtype=torch.long)
    assert [t.numel() for t in context_pairs(empty, empty, 3)] == [0, 0]
    # radius 1 everywhere, one sentence: each word sees its two neighbours
    centre, context = context_pairs(torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long), 3)
    assert list(zip(centre.tolist(), context.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)]


# ---- negative sampling ------------------------------------------------------------------------


def test_noise_distribution_matches_gensim_cum_table(synthetic):
    counts = build_vocab(synthetic.sentences).counts
    p = noise_distribution(counts, 0.75)
    cum_table = gensim_vocab(synthetic.sentences).cum_table.astype(np.float64)
    np.testing.assert_allclose(p, np.diff(cum_table, prepend=0) / cum_table[-1], atol=1e-9)
    np.testing.assert_allclose(noise_distribution(counts, 0.0), 1 / len(counts))  # uniform
    np.testing.assert_allclose(noise_distribution(counts, 1.0), counts / counts.sum())  # unigram


def test_alias_table_represents_the_distribution_exactly():
    p = noise_distribution(np.array([1000, 300, 300, 20, 5, 1]), 0.75)
    prob, alias = (t.double().numpy() for t in make_alias_table(p))
    V = len(p)
    implied = prob.copy()
    np.add.at(implied, alias.astype(int), 1 - prob)  # each bucket hands 1 - prob[i] to alias[i]
    np.testing.assert_allclose(implied / V, p, atol=1e-7)
    draws = sample_negatives(make_alias_table(p), (200000,), torch.Generator().manual_seed(0))
    np.testing.assert_allclose(np.bincount(draws.numpy(), minlength=V) / 200000, p, atol=0.004)


# ---- Huffman tree -----------------------------------------------------------------------------


def test_huffman_matches_word2vec_c_on_a_tiny_vocabulary():
    # Worked by hand with word2vec.c's CreateBinaryTree. The second merge compares the leaf
    # of count 3 with the inner node of weight 3 and, on the tie, takes the inner node.
    codes, points = build_huffman_tree([5, 3, 2, 1])
    assert codes == [[0], [1, 1], [1, 0, 1], [1, 0, 0]]
    assert points == [[2], [2, 1], [2, 1, 0], [2, 1, 0]]  # inner node V - 2 = 2 is the root
    assert build_huffman_tree([3, 1]) == ([[1], [0]], [[0], [0]])
    assert build_huffman_tree([7]) == ([[]], [[]])  # one word: no inner node, nothing to learn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_huffman_codes_are_prefix_free_and_optimal(seed):
    rng = np.random.default_rng(seed)
    counts = np.sort(rng.zipf(1.3, size=300).clip(max=10**6))[::-1]
    codes, points = build_huffman_tree(counts)
    strings = sorted("".join(map(str, c)) for c in codes)
    assert all(not b.startswith(a) for a, b in zip(strings, strings[1:]))  # prefix-free
    # Optimal: the weighted path length equals that of any Huffman tree, the sum of the
    # weights of all merged nodes (computed here with a heap).
    heap = [int(c) for c in counts]
    heapq.heapify(heap)
    merged = 0
    while len(heap) > 1:
        total = heapq.heappop(heap) + heapq.heappop(heap)
        merged += total
        heapq.heappush(heap, total)
    assert sum(int(c) * len(code) for c, code in zip(counts, codes)) == merged
    # every path starts at the root and the nodes are inner nodes 0..V-2
    assert all(p[0] == len(counts) - 2 and len(p) == len(c) for p, c in zip(points, codes))
    assert {n for p in points for n in p} == set(range(len(counts) - 1))


# ---- the updates ------------------------------------------------------------------------------


def test_negative_sampling_step_is_sgd_on_its_loss():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(5, 6, generator=g)
    syn1neg = torch.randn(40, 6, generator=g)
    targets = torch.arange(5)
    negatives = torch.arange(5, 20).view(5, 3)  # all distinct: no collision, no shared row
    W = syn1neg.clone().requires_grad_()
    hh = h.clone().requires_grad_()
    loss = -F.logsigmoid((W[targets] * hh).sum(-1)) - F.logsigmoid(-(W[negatives] * hh[:, None]).sum(-1)).sum(-1)
    loss.sum().backward()
    updated = syn1neg.clone()
    neu1e, ours = negative_sampling_step(h, updated, targets, negatives, lr=0.05)
    torch.testing.assert_close(ours, loss.detach())
    torch.testing.assert_close(neu1e, -0.05 * hh.grad)
    torch.testing.assert_close(updated, syn1neg - 0.05 * W.grad)


def test_hierarchical_softmax_is_a_normalised_distribution():
    """P(w | h) = Π σ(±syn1[node]·h) along w's path sums to 1 over the vocabulary."""
    counts = np.array([50, 20, 20, 9, 5, 3, 1])
    V = len(counts)
    codes, points, lengths = pad_huffman(*build_huffman_tree(counts), "cpu")
    g = torch.Generator().manual_seed(0)
    syn1 = torch.randn(V - 1, 4, generator=g)
    h = torch.randn(1, 4, generator=g).repeat(V, 1)
    before = syn1.clone()
    _, loss = hierarchical_softmax_step(h, syn1, torch.arange(V), codes, points, lengths, lr=0.0)
    torch.testing.assert_close(torch.exp(-loss).sum(), torch.tensor(1.0))
    torch.testing.assert_close(syn1, before)  # lr = 0: nothing moves


def test_linear_decay():
    assert linear_decay(0.025, 1e-4, 0.0) == 0.025
    assert math.isclose(linear_decay(0.025, 1e-4, 0.5), (0.025 + 1e-4) / 2)
    assert linear_decay(0.025, 1e-4, 1.0) == 1e-4 and linear_decay(0.025, 1e-4, 1.5) == 1e-4


# ---- the C training loop ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    """A small corpus and every table the C loop reads, for replays against the reference."""
    sentences = synthetic_corpus(40, seed=3).sentences
    vocab = build_vocab(sentences, min_count=1)
    tokens, starts, _ = _encode(sentences, vocab.key_to_index)
    noise = make_alias_table(noise_distribution(vocab.counts))
    huffman = [t.numpy() for t in pad_huffman(*build_huffman_tree(vocab.counts), "cpu")]
    tables = word2vec_cpu.make_tables(keep_probability(vocab.counts, 1e-2), noise.prob.numpy(),
                                      noise.alias.numpy(), huffman)
    rng = np.random.default_rng(0)
    V, D = len(vocab), 13
    weights = [((rng.random((V, D)) - 0.5) / D).astype(np.float32), (rng.random((V, D)) * 0.1).astype(np.float32),
               (rng.random((V - 1, D)) * 0.1).astype(np.float32)]
    return tokens, starts, tables, weights


@pytest.mark.parametrize("kwargs", [
    dict(sg=1, hs=0, negative=5, cbow_mean=1),
    dict(sg=0, hs=0, negative=5, cbow_mean=1),
    dict(sg=1, hs=1, negative=0, cbow_mean=1),
    dict(sg=0, hs=1, negative=0, cbow_mean=1),
    dict(sg=0, hs=1, negative=2, cbow_mean=0),
    dict(sg=1, hs=1, negative=3, cbow_mean=1, shrink_windows=False),
], ids=["sg-ns", "cbow-ns", "sg-hs", "cbow-hs", "cbow-sum-hs-ns", "sg-hs-ns-full-window"])
def test_c_loop_replays_its_python_reference(tiny, kwargs):
    """Same random numbers, same statements: the C loop and the Python reference agree to
    float32 rounding on every table, the loss and the counts."""
    tokens, starts, tables, weights = tiny
    c_weights, py_weights = [w.copy() for w in weights], [w.copy() for w in weights]
    kwargs = dict(window=3, **kwargs)
    model = word2vec_cpu.model_struct(*c_weights, tables, **kwargs)
    got = word2vec_cpu.train_chunk(model, tokens, starts, 3, 37, 0.3, seed=12345)
    expected = word2vec_cpu.train_chunk_reference(*py_weights, tables, tokens, starts, 3, 37, 0.3, 12345, **kwargs)
    assert got[1:] == expected[1:] and got[1] > 100  # training examples, tokens kept
    assert math.isclose(got[0], expected[0], rel_tol=1e-5)
    for name, a, b, before in zip(("syn0", "syn1neg", "syn1"), c_weights, py_weights, weights):
        np.testing.assert_allclose(a, b, atol=2e-6, err_msg=name)
    assert np.abs(c_weights[0] - weights[0]).max() > 0.01  # it did train


def test_c_loop_is_word2vec_sgd_pair_by_pair():
    """One sentence of two words, full window of 1, no subsampling, hierarchical softmax:
    exactly two examples, in word2vec.c's direction (the context's input vector predicts
    the centre), each one step of :func:`hierarchical_softmax_step` on the weights the
    previous step left. The only difference is the sigmoid table (bins of 0.012)."""
    counts = np.array([5, 3, 2])
    huffman = pad_huffman(*build_huffman_tree(counts), "cpu")
    tables = word2vec_cpu.make_tables(None, huffman=[t.numpy() for t in huffman])
    g = torch.Generator().manual_seed(0)
    syn0, syn1 = torch.randn(3, 6, generator=g) * 0.4, torch.randn(2, 6, generator=g) * 0.4
    before = syn0.clone()
    c_syn0, c_syn1 = syn0.numpy().copy(), syn1.numpy().copy()
    model = word2vec_cpu.model_struct(c_syn0, None, c_syn1, tables, sg=1, hs=1, negative=0, window=1,
                                      cbow_mean=1, shrink_windows=False)
    tokens, starts = np.array([2, 0], dtype=np.int32), np.array([0, 2], dtype=np.int64)
    loss, examples, words = word2vec_cpu.train_chunk(model, tokens, starts, 0, 1, 0.5, seed=1)
    assert (examples, words) == (2, 2)
    expected_loss = 0.0
    for centre, context in [(2, 0), (0, 2)]:  # position 0 (centre word 2) first
        neu1e, nll = hierarchical_softmax_step(syn0[[context]], syn1, torch.tensor([centre]), *huffman, lr=0.5)
        syn0[context] += neu1e[0]
        expected_loss += nll.item()
    np.testing.assert_allclose(c_syn0, syn0.numpy(), atol=1e-3)
    np.testing.assert_allclose(c_syn1, syn1.numpy(), atol=1e-3)
    assert (syn0 - before).abs().max() > 0.05  # the steps are 50 times the tolerance
    assert math.isclose(loss, expected_loss, rel_tol=1e-2)


def test_c_source_shows_the_functions_that_run():
    text = word2vec_cpu.c_source("logistic", "w2v_train_chunk")
    assert text.startswith("/* One logistic regression") and "int w2v_train_chunk(" in text
    assert text.rstrip().endswith("}") and "static inline uint32_t below" not in text
    with pytest.raises(ValueError, match="no function 'nonsense'"):
        word2vec_cpu.c_source("nonsense")


def test_sigmoid_tables():
    sigmoid, nll = word2vec_cpu.sigmoid_tables()
    x = np.linspace(-5.99, 5.99, 10001)
    bins = ((x + 6) * (len(sigmoid) / 12)).astype(int)
    assert np.abs(sigmoid[bins] - 1 / (1 + np.exp(-x))).max() < 0.0016  # half a bin times the slope 1/4
    np.testing.assert_allclose(np.exp(-nll), sigmoid, rtol=1e-6)


def test_learning_rate_falls_per_job_over_all_epochs_and_workers(monkeypatch):
    """Each job trains at the rate reached by the words before it, counted over all epochs
    and all workers (gensim per job, word2vec.c per 10,000 words)."""
    calls = []
    real = word2vec_cpu.train_chunk

    def spy(model, tokens, starts, first, last, alpha, seed):
        calls.append((int(starts[first]), alpha, seed))
        return real(model, tokens, starts, first, last, alpha, seed)

    monkeypatch.setattr(word2vec_cpu, "train_chunk", spy)
    sentences = synthetic_corpus(600, seed=5).sentences
    model = Word2Vec(sentences, vector_size=8, epochs=3, workers=2, batch_words=1000, alpha=0.05, progress=False)
    n = len(_encode(sentences, model.wv.key_to_index)[0])  # training words per epoch
    job_starts = sorted({lo for lo, _, _ in calls})  # the same jobs every epoch
    assert len(job_starts) >= 4 and len(calls) == 3 * len(job_starts)
    assert len({seed for *_, seed in calls}) == len(calls)  # every job draws its own random numbers
    expected = [linear_decay(0.05, 1e-4, (epoch * n + lo) / (3 * n)) for epoch in range(3) for lo in job_starts]
    np.testing.assert_allclose(sorted(alpha for _, alpha, _ in calls), sorted(expected), rtol=1e-12)
    assert max(alpha for _, alpha, _ in calls) == 0.05


def test_without_a_c_compiler_training_falls_back_to_torch(monkeypatch):
    monkeypatch.setattr(word2vec_cpu, "_library", None)
    monkeypatch.setattr(word2vec_cpu, "_build_error", None)
    monkeypatch.setenv("CC", "/nonexistent/cc")
    sentences = synthetic_corpus(300, seed=6).sentences
    with pytest.warns(RuntimeWarning, match="C training loop is unavailable.*batched torch engine"):
        model = Word2Vec(sentences, vector_size=8, epochs=1, workers=1, progress=False)
    assert np.isfinite(model.wv.vectors).all()
    with pytest.raises(RuntimeError, match="does not run"):
        word2vec_cpu.library()


def test_defaults_are_gensims():
    """Every hyperparameter a user does not set takes gensim's default (batch_words: None
    means gensim's 10,000 on the CPU)."""
    import inspect

    theirs = inspect.signature(gensim_models.Word2Vec.__init__).parameters
    ours = inspect.signature(Word2Vec.__init__).parameters
    shared = [name for name in ours if name in theirs and name not in ("self", "sentences", "batch_words")]
    assert len(shared) >= 15, shared
    assert {name: ours[name].default for name in shared} == {name: theirs[name].default for name in shared}
    assert theirs["batch_words"].default == 10_000 and ours["batch_words"].default is None


# ---- trained models: quality against gensim on corpora of several shapes ----------------------

# Corpora this project's defaults were never fitted to, each of another shape: vocabulary size,
# frequency skew, sentence length, epochs (benchmarks/word2vec.py trains larger ones). One
# training per (shape, variant, seed, library) at vector_size 32, gensim's defaults otherwise.
SHAPES = {
    "large skewed vocabulary": CorpusShape(n_tokens=150_000, n_bases=150, base_zipf=0.6, n_filler=20_000,
                                           filler_zipf=1.1, fillers=(2, 6), clauses=(1, 2), epochs=5),
    "long sentences": CorpusShape(n_tokens=150_000, n_bases=80, base_zipf=0.3, n_filler=1_000, filler_zipf=0.9,
                                  fillers=(1, 4), clauses=(4, 12), epochs=3),
    "flat, short, 1 epoch": CorpusShape(n_tokens=300_000, n_bases=60, base_zipf=0.0, n_filler=300,
                                        filler_zipf=0.5, fillers=(2, 3), clauses=(1, 1), epochs=1),
    "small, 10 epochs": CorpusShape(n_tokens=60_000, n_bases=40, base_zipf=0.8, n_filler=3_000, filler_zipf=1.2,
                                    fillers=(3, 8), clauses=(1, 3), epochs=10),
    "a few dominant words": CorpusShape(n_tokens=150_000, n_bases=100, n_filler=50, filler_zipf=2.0,
                                        fillers=(4, 10), clauses=(1, 2), epochs=5),
}
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def shaped_corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    corpora = {}
    for number, (name, shape) in enumerate(SHAPES.items()):
        corpus = planted_corpus(shape, seed=100 + number)
        corpora[name] = (corpus.sentences, shape.epochs, corpus.write_analogies(root / f"{number}-q.txt"),
                         corpus.write_word_pairs(root / f"{number}-p.tsv"))
    return corpora


def _scores(library, sentences, epochs, questions, pairs, seed, variant):
    kwargs = dict(progress=False) if library is Word2Vec else {}
    model = library(sentences, vector_size=32, epochs=epochs, workers=1, seed=seed, **VARIANTS[variant], **kwargs)
    return model.wv.evaluate_word_analogies(questions)[0], model.wv.evaluate_word_pairs(pairs)[1][0]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_quality_within_2_points_of_gensim_on_corpora_of_several_shapes(shaped_corpora, variant):
    """Mean over 5 shapes x 2 seeds: analogy accuracy and similarity correlation within 2
    points of gensim's. Per shape (2 seeds, whose noise is about 2 points): within 6."""
    gaps = {}
    for name, corpus in shaped_corpora.items():
        ours = np.array([_scores(Word2Vec, *corpus, seed, variant) for seed in SEEDS])  # (seeds, 2)
        theirs = np.array([_scores(gensim_models.Word2Vec, *corpus, seed, variant) for seed in SEEDS])
        gaps[name] = (ours.mean(0) - theirs.mean(0)).round(4).tolist() + theirs.mean(0).round(3).tolist()
    accuracy_gap, rho_gap = np.mean([g[0] for g in gaps.values()]), np.mean([g[1] for g in gaps.values()])
    report = f"{variant}: (accuracy gap, rho gap, gensim accuracy, gensim rho) per shape: {gaps}"
    assert abs(accuracy_gap) <= 0.02 and abs(rho_gap) <= 0.02, report
    assert all(g[0] >= -0.06 and g[1] >= -0.06 for g in gaps.values()), report
    assert np.mean([g[2] for g in gaps.values()]) > 0.1, report  # not a test of chance level


@pytest.mark.parametrize("sg,hs,negative,floor", [(1, 1, 0, 0.8), (0, 0, 5, 0.6), (0, 1, 0, 0.8), (1, 1, 5, 0.8)])
def test_every_architecture_learns(synthetic, synthetic_questions, sg, hs, negative, floor):
    model = Word2Vec(synthetic.sentences, vector_size=50, sg=sg, hs=hs, negative=negative, workers=1, progress=False)
    accuracy, _ = model.wv.evaluate_word_analogies(synthetic_questions)
    assert accuracy > floor  # chance is about 1 / 400
    assert model.epoch_losses[-1] < model.epoch_losses[0]


@pytest.mark.parametrize("sg,hs,negative,cbow_mean", [(1, 0, 5, 1), (0, 1, 0, 0)])
def test_the_batched_torch_engine_learns(synthetic, synthetic_questions, sg, hs, negative, cbow_mean):
    """The GPU's way of training, here on the CPU: mini-batches of tensor operations."""
    model = Word2Vec(synthetic.sentences, vector_size=50, sg=sg, hs=hs, negative=negative, cbow_mean=cbow_mean,
                     workers=1, engine="torch", progress=False)
    accuracy, _ = model.wv.evaluate_word_analogies(synthetic_questions)
    assert accuracy > 0.6 and model.epoch_losses[-1] < model.epoch_losses[0]


def test_training_is_reproducible_with_one_worker():
    sentences = synthetic_corpus(1000, seed=1).sentences
    a = Word2Vec(sentences, vector_size=16, sg=1, epochs=2, workers=1, seed=3, progress=False)
    b = Word2Vec(sentences, vector_size=16, sg=1, epochs=2, workers=1, seed=3, progress=False)
    np.testing.assert_array_equal(a.wv.vectors, b.wv.vectors)
    c = Word2Vec(sentences, vector_size=16, sg=1, epochs=2, workers=2, seed=3, progress=False)  # Hogwild threads
    assert np.isfinite(c.wv.vectors).all() and c.epoch_losses[-1] < c.epoch_losses[0]


def test_progress_bar_reports_words_per_second(capsys):
    sentences = synthetic_corpus(500, seed=2).sentences
    model = Word2Vec(sentences, vector_size=8, epochs=1, workers=1)
    err = capsys.readouterr().err
    assert "word2vec" in err and "words_s=" in err and "loss=" in err
    assert model.last_words_per_second > 0
    Word2Vec(sentences, vector_size=8, epochs=1, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.interpreter
def test_kernel_path_trains_through_the_interpreter():
    sentences = [["king", "queen", "man", "woman", "crown"][i % 3 : i % 3 + 3] for i in range(30)]
    model = Word2Vec(min_count=1, vector_size=8, epochs=1, sg=1, workers=1, progress=False)
    assert model._engine() == "c"  # auto on the CPU: the C loop, even under the interpreter
    with force_backend("triton"):
        assert model._engine() == "triton"
        model.build_vocab(sentences).train(sentences)
    assert np.isfinite(model.wv.vectors).all() and np.abs(model.syn1neg).sum() > 0


def test_large_batches_diverge_with_a_warning():
    """Summing the updates of 20,000 pairs over a 400-word vocabulary is one giant step:
    the loss explodes, and training says so instead of returning garbage silently."""
    sentences = synthetic_corpus(2000, seed=3).sentences
    with pytest.warns(RuntimeWarning, match="diverged.*lower batch_size"):
        Word2Vec(sentences, vector_size=16, sg=1, epochs=3, alpha=0.5, batch_size=20_000, workers=1,
                 engine="torch", progress=False)


# ---- KeyedVectors against gensim on a shared table --------------------------------------------


@pytest.fixture(scope="module")
def shared_vectors():
    """One table of vectors in both libraries: the words of questions-words.txt and
    wordsim353.tsv (a tenth of them left out, to test the out-of-vocabulary rules) with the
    analogies partly planted, and a few capitalised duplicates at the end."""
    rng = np.random.default_rng(0)
    analogies = read_analogies(analogies_path())
    words = sorted({w for qs in analogies.values() for q in qs for w in q}
                   | {w for a, b, _ in read_word_pairs(wordsim353_path()) for w in (a, b)})
    keep = {"king", "queen", "man", "woman", "paris", "france", "germany", "greece", "good"}
    words = [w for w in words if rng.random() > 0.1 or w in keep]
    index = {w: i for i, w in enumerate(words)}
    D = 32
    vectors = rng.normal(size=(len(words), D))
    for questions in analogies.values():
        offset = rng.normal(size=D) * 1.5
        for a, b, _, _ in questions:
            if a in index and b in index:
                vectors[index[b]] = vectors[index[a]] + offset + 1.0 * rng.normal(size=D)
    keys = words + ["Athens", "Paris", "KING"]
    vectors = np.vstack([vectors, vectors[[index["greece"], index["king"], index["queen"]]] + 0.01]).astype(np.float32)
    ours = KeyedVectors(keys, vectors)
    theirs = gensim_models.KeyedVectors(D)
    theirs.add_vectors(keys, vectors.copy())
    return ours, theirs


@pytest.mark.parametrize(
    "query",
    [
        dict(positive=["king"]),
        dict(positive="france"),
        dict(positive=["king", "woman"], negative=["man"], topn=5),
        dict(positive=["paris", "germany"], negative=["france"], topn=3),
        dict(negative=["good"], topn=4),
        dict(positive=["king"], topn=7, restrict_vocab=300),
    ],
)
def test_most_similar_matches_gensim(shared_vectors, query):
    ours, theirs = shared_vectors
    got, expected = ours.most_similar(**query), theirs.most_similar(**query)
    assert [w for w, _ in got] == [w for w, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-5)


def test_similarity_and_lookup_match_gensim(shared_vectors):
    ours, theirs = shared_vectors
    for a, b in [("king", "queen"), ("paris", "Paris"), ("good", "good")]:
        assert math.isclose(ours.similarity(a, b), float(theirs.similarity(a, b)), abs_tol=1e-6)
    np.testing.assert_array_equal(ours["king"], theirs["king"])
    np.testing.assert_array_equal(ours[["king", "queen"]], theirs[["king", "queen"]])
    assert "king" in ours and "kingdom-of-nowhere" not in ours
    assert ours.key_to_index == theirs.key_to_index and ours.index_to_key == theirs.index_to_key


@pytest.mark.parametrize("restrict_vocab,case_insensitive", [(300000, True), (400, True), (300000, False)])
def test_evaluate_word_analogies_matches_gensim(shared_vectors, restrict_vocab, case_insensitive):
    ours, theirs = shared_vectors
    kwargs = dict(restrict_vocab=restrict_vocab, case_insensitive=case_insensitive)
    score, sections = ours.evaluate_word_analogies(analogies_path(), **kwargs)
    g_score, g_sections = theirs.evaluate_word_analogies(str(analogies_path()), **kwargs)
    assert [s["section"] for s in sections] == [s["section"] for s in g_sections]
    for mine, gensims in zip(sections, g_sections):
        assert mine["correct"] == gensims["correct"], mine["section"]
        assert mine["incorrect"] == gensims["incorrect"], mine["section"]
    assert score == g_score
    if case_insensitive and restrict_vocab > len(ours):
        assert 0.2 < score < 0.95 and len(sections[-1]["correct"]) > 1000  # a non-trivial mix


def test_evaluate_word_pairs_matches_gensim(shared_vectors):
    ours, theirs = shared_vectors
    pearson, spearman, oov = ours.evaluate_word_pairs(wordsim353_path())
    g_pearson, g_spearman, g_oov = theirs.evaluate_word_pairs(str(wordsim353_path()))
    np.testing.assert_allclose(pearson, (g_pearson[0], g_pearson[1]), rtol=1e-6)
    np.testing.assert_allclose(spearman, (g_spearman[0], g_spearman[1]), rtol=1e-6)
    assert math.isclose(oov, g_oov) and 5 < oov < 40


def test_unknown_words_raise_key_error_naming_them(shared_vectors):
    ours, _ = shared_vectors
    with pytest.raises(KeyError, match="'zyzzyva' is not in the vocabulary"):
        ours["zyzzyva"]
    with pytest.raises(KeyError, match="zyzzyva"):
        ours.most_similar(positive=["king", "zyzzyva"])
    with pytest.raises(KeyError, match="zyzzyva"):
        ours.similarity("zyzzyva", "king")
    with pytest.raises(ValueError, match="at least one word"):
        ours.most_similar()


# ---- files ------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    sentences = synthetic_corpus(1000, seed=4).sentences
    model = Word2Vec(sentences, vector_size=12, hs=1, negative=3, epochs=1, workers=1, progress=False)
    path = model.save(tmp_path / "w2v")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((path / "config.json").read_text())["config"]["negative"] == 3
    loaded = Word2Vec.load(path, progress=False)
    assert loaded.wv.index_to_key == model.wv.index_to_key and loaded.config == model.config
    for name in ("syn1neg", "syn1"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    np.testing.assert_array_equal(loaded.wv.vectors, model.wv.vectors)
    np.testing.assert_array_equal(loaded.vocab.counts, model.vocab.counts)
    loaded.train(sentences, epochs=1)  # it can go on training
    assert not np.array_equal(loaded.wv.vectors, model.wv.vectors)

    kv = KeyedVectors.load(model.wv.save(tmp_path / "kv"))
    np.testing.assert_array_equal(kv.vectors, model.wv.vectors)
    assert kv.index_to_key == model.wv.index_to_key
    assert KeyedVectors.load(path).most_similar("king", topn=3) == model.wv.most_similar("king", topn=3)
    with pytest.raises(ValueError, match="KeyedVectors.load"):
        Word2Vec.load(tmp_path / "kv")


# ---- hyperparameters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(vector_size=0), "vector_size"),
        (dict(window=0), "window"),
        (dict(min_count=-1), "min_count"),
        (dict(sg=2), "sg"),
        (dict(hs=3), "hs"),
        (dict(negative=-1), "negative"),
        (dict(hs=0, negative=0), "hs=0 and negative=0"),
        (dict(sample=1.5), "sample"),
        (dict(alpha=0), "alpha"),
        (dict(alpha=0.01, min_alpha=0.1), "min_alpha"),
        (dict(epochs=0), "epochs"),
        (dict(cbow_mean=2), "cbow_mean"),
        (dict(shrink_windows=2), "shrink_windows"),
        (dict(engine="gpu"), "engine must be None or one of"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_words=0), "batch_words"),
        (dict(workers=0), "workers"),
        (dict(ns_exponent=float("nan")), "ns_exponent"),
        (dict(vector_size=2.5), "vector_size"),
    ],
)
def test_bad_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Word2Vec([["a", "b"]], **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        Word2Vec(device="cuda")


def test_train_needs_a_vocabulary_and_gensim_style_attributes():
    model = Word2Vec(window=3, negative=2)
    assert model.window == 3 and model.negative == 2 and model.sg == 0 and model.wv is None
    with pytest.raises(RuntimeError, match="build_vocab"):
        model.train([["a"]])
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        model.nonsense


@pytest.mark.filterwarnings("ignore:An input array is constant")  # 1% of a corpus: few pairs left
def test_benchmark_runs_on_a_tiny_corpus(capsys):
    """benchmarks/word2vec.py is not a test, but it must keep running."""
    from benchmarks.word2vec import main

    argv = ["--parts", "13", "--shapes", "issue-16", "--scale", "0.01", "--repeats", "1", "--threads", "1",
            "--batch-sizes", "512"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1. Four variants" in out and "CBOW, HS" in out and "words/s (median)" in out and "Per variant" in out
    assert "3. Skip-gram with negative sampling" in out and "course_lib torch" in out
