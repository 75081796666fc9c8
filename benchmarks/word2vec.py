"""word2vec training: course_lib against gensim, same corpus, same hyperparameters, one run.

``python -m benchmarks.word2vec`` (CPU or GPU; ``--help`` for the options). Three parts:

1. **Four variants on corpora of other shapes**: skip-gram and CBOW, each with negative
   sampling and with hierarchical softmax, on corpora with planted analogies whose shape
   (vocabulary size, frequency skew, sentence length, epochs) this project never tuned to
   (:func:`planted_corpus`, shapes :data:`BENCH_SHAPES`); vector_size 64 and gensim's
   defaults for everything else. Each training runs ``--repeats`` times with seeds 1, 2,
   ..., gensim and course_lib interleaved; the table gives the median words/s with the
   range over the repeats, the ratio of the medians, and the mean analogy accuracy
   (3CosAdd) and similarity correlation (Spearman) over the repeats.
2. **Real text**, the standard library's docstrings (about 250k tokens, the largest corpus
   available offline): skip-gram, negative sampling, 100 dimensions, 5 epochs. The
   analogy and wordsim353 test sets cover little of this vocabulary (their coverage is
   printed), so the table adds a measure that needs no test set: the overlap of each
   word's 10 nearest neighbours with gensim's (seed 1), over the 300 most frequent words
   after the first 50, next to the overlap of gensim with itself under another seed, the
   level that seed noise alone allows.
3. **Accuracy against mini-batch size** for course_lib's batched torch engine (the GPU's
   way of training, see :mod:`course_lib.word2vec`), next to its per-example C engine
   and gensim, on the first shape: why mini-batches are not word2vec's algorithm.

Words/s counts every corpus token read (what gensim's ``train()`` reports as raw words),
divided by the training time (the vocabulary is built outside the timer). The machine's
other load is not under our control: hence the interleaving and the ranges; the CPU time
of all threads divided by the wall-clock time (2.0: both cores busy throughout) is given
for the median run. CPU: ``--threads`` threads for both (gensim ``workers``, course_lib
``workers``). With a GPU, course_lib also trains on it (the fused Triton SGNS kernel for
skip-gram with negative sampling, the batched torch engine for the others).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import record_result
from course_lib.data import SyntheticCorpus, analogies_path, stdlib_docstrings_corpus, wordsim353_path
from course_lib.word2vec import Word2Vec

OURS, PEER = "course_lib", "gensim"
VARIANTS = {
    "skip-gram, NS": dict(sg=1, hs=0, negative=5),
    "CBOW, NS": dict(sg=0, hs=0, negative=5),
    "skip-gram, HS": dict(sg=1, hs=1, negative=0),
    "CBOW, HS": dict(sg=0, hs=1, negative=0),
}


# ---- corpora of other shapes ------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusShape:
    """The knobs of :func:`planted_corpus`, and how many epochs to train on it."""

    n_tokens: int = 300_000
    n_bases: int = 200  # concept families, four concept words each
    base_zipf: float = 0.5  # skew of the families' frequencies (0: uniform)
    n_filler: int = 2_000  # filler words, which carry no information ...
    filler_zipf: float = 1.0  # ... drawn from a Zipf law with this exponent
    fillers: tuple[int, int] = (2, 5)  # filler words per clause, fewest and most
    clauses: tuple[int, int] = (1, 2)  # clauses per sentence, fewest and most
    n_markers: int = 5  # marker words per attribute value
    n_identity: int = 3  # identity words per family
    epochs: int = 5


# Benchmark shapes (tests/test_word2vec.py trains smaller ones of its own). "issue-16" is
# the shape of the corpus on which issue 16 measured the gap: ~840k tokens, 3 epochs.
BENCH_SHAPES = {
    "issue-16": CorpusShape(n_tokens=840_000, n_bases=300, n_filler=5_000, clauses=(1, 3), epochs=3),
    "skewed, long sentences": CorpusShape(n_tokens=500_000, n_bases=500, base_zipf=1.0, n_filler=30_000,
                                          filler_zipf=1.2, fillers=(2, 6), clauses=(3, 10), epochs=5),
    "flat, short, 1 epoch": CorpusShape(n_tokens=800_000, n_bases=100, base_zipf=0.0, n_filler=400,
                                        filler_zipf=0.6, fillers=(2, 3), clauses=(1, 1), epochs=1),
}


def planted_corpus(shape: CorpusShape, seed: int = 0) -> SyntheticCorpus:
    """A corpus with planted analogies, of a chosen shape, unlike
    :func:`course_lib.data.synthetic_corpus`, whose shape is fixed.

    Family ``b`` has four concept words ``b{b}ms``, ``b{b}fs``, ``b{b}mp``, ``b{b}fp``
    (gender m/f, number s/p). A *clause* is one concept word, one marker word of its gender
    (``gm0``, ``gm1``, ... or ``gf0``, ...), one of its number (``ns0``, ... or ``np0``, ...),
    two of its family's identity words and some filler words, shuffled; a sentence is one
    or more clauses, so long sentences put unrelated words inside the window. Then
    ``b3fs - b3ms + b7ms ≈ b7fs`` by construction (sections ``gender`` and ``number``, 1,000
    questions each between random families; those with a word under ``min_count`` are
    skipped by the evaluation). Word pairs (400, half within a family) are scored by the
    cosine similarity of the two words' planted context profiles, times 10."""
    s, rng = shape, np.random.default_rng(seed)
    B, K, I = s.n_bases, s.n_markers, s.n_identity
    concepts = [f"b{b}{g}{n}" for b in range(B) for g in "mf" for n in "sp"]  # index 4b + 2g + n
    markers = [f"{a}{k}" for a in ("gm", "gf", "ns", "np") for k in range(K)]
    identity = [f"i{b}x{k}" for b in range(B) for k in range(I)]
    words = np.array(concepts + markers + identity + [f"f{k}" for k in range(s.n_filler)])
    m0, i0 = len(concepts), len(concepts) + len(markers)
    f0 = i0 + len(identity)

    def zipf(n: int, exponent: float) -> np.ndarray:
        weights = 1.0 / np.arange(1, n + 1) ** exponent
        return weights / weights.sum()

    n_clauses = math.ceil(s.n_tokens / (5 + sum(s.fillers) / 2))
    base = rng.permutation(B)[rng.choice(B, n_clauses, p=zipf(B, s.base_zipf))]
    g, n = rng.integers(0, 2, n_clauses), rng.integers(0, 2, n_clauses)
    first = rng.integers(0, I, n_clauses)
    second = (first + rng.integers(1, I, n_clauses)) % I  # two different identity words
    n_fill = rng.integers(s.fillers[0], s.fillers[1] + 1, n_clauses)
    fixed = np.stack([4 * base + 2 * g + n, m0 + g * K + rng.integers(0, K, n_clauses),
                      m0 + (2 + n) * K + rng.integers(0, K, n_clauses), i0 + base * I + first,
                      i0 + base * I + second], axis=1)  # (clauses, 5)
    fill = f0 + rng.choice(s.n_filler, int(n_fill.sum()), p=zipf(s.n_filler, s.filler_zipf))
    clause_of = np.concatenate([np.repeat(np.arange(n_clauses), 5), np.repeat(np.arange(n_clauses), n_fill)])
    ids = np.concatenate([fixed.reshape(-1), fill])
    ids = ids[np.lexsort((rng.random(len(ids)), clause_of))]  # grouped by clause, shuffled within
    per_sentence = rng.integers(s.clauses[0], s.clauses[1] + 1, n_clauses)  # more than enough
    last_clause = np.cumsum(per_sentence)
    last_clause = np.append(last_clause[last_clause < n_clauses], n_clauses) - 1
    ends = np.cumsum(5 + n_fill)[last_clause]
    tokens = words[ids].tolist()
    sentences = [tokens[a:b] for a, b in zip([0, *ends[:-1].tolist()], ends.tolist())]

    pairs = rng.integers(0, B, (1000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    other = rng.integers(0, 2, len(pairs))  # the attribute held fixed

    def w(b, gender, number) -> str:
        return concepts[4 * b + 2 * gender + number]

    analogies = {
        "gender": [(w(a, 0, x), w(a, 1, x), w(c, 0, x), w(c, 1, x)) for (a, c), x in zip(pairs, other)],
        "number": [(w(a, x, 0), w(a, x, 1), w(c, x, 0), w(c, x, 1)) for (a, c), x in zip(pairs, other)],
    }
    # context profiles: 1/K on each marker of both attribute values, 2/I on each identity word
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < min(400, 4 * B * (4 * B - 1) // 2):
        a = int(rng.integers(0, 4 * B))
        b = a - a % 4 + int(rng.integers(0, 4)) if len(chosen) % 2 else int(rng.integers(0, 4 * B))
        if a != b:
            chosen.add((min(a, b), max(a, b)))
    scored = []
    for a, b in sorted(chosen):
        dot = ((a >> 1) % 2 == (b >> 1) % 2) / K + (a % 2 == b % 2) / K + (a // 4 == b // 4) * 4 / I
        scored.append((concepts[a], concepts[b], round(10 * dot / (2 / K + 4 / I), 2)))
    return SyntheticCorpus(sentences=sentences, analogies=analogies, word_pairs=scored, seed=seed)


# ---- training, timed ------------------------------------------------------------------------


def train_gensim(sentences, params: dict, workers: int, seed: int = 1):
    from gensim.models import Word2Vec as GensimWord2Vec

    model = GensimWord2Vec(workers=workers, seed=seed, **params)
    model.build_vocab(sentences)
    start, cpu = time.perf_counter(), time.process_time()
    model.train(sentences, total_examples=model.corpus_count, epochs=model.epochs)
    return model.wv, (time.perf_counter() - start, time.process_time() - cpu)


def train_ours(sentences, params: dict, workers: int, device: str = "cpu", seed: int = 1, **extra):
    model = Word2Vec(workers=workers, seed=seed, device=device, progress=False, **params, **extra)
    model.build_vocab(sentences)
    start, cpu = time.perf_counter(), time.process_time()
    model.train(sentences)
    if device != "cpu":
        torch.cuda.synchronize()
    return model.wv, (time.perf_counter() - start, time.process_time() - cpu)


# ---- quality measures -----------------------------------------------------------------------


def analogy_accuracy(wv, path) -> tuple[float, int]:
    score, sections = wv.evaluate_word_analogies(str(path))
    return score, len(sections[-1]["correct"]) + len(sections[-1]["incorrect"])


def pair_spearman(wv, path) -> tuple[float, float]:
    _, spearman, oov = wv.evaluate_word_pairs(str(path))
    return float(spearman[0]), float(oov)


def neighbour_overlap(wv, reference, words: list[str], topn: int = 10) -> float:
    """Mean fraction of each word's ``topn`` nearest neighbours that both models share."""

    def neighbours(kv, word):
        return {w for w, _ in kv.most_similar(positive=[word], topn=topn)}

    return float(np.mean([len(neighbours(wv, w) & neighbours(reference, w)) / topn for w in words]))


def _align(header: list[str], body: list[list[str]], left: int) -> list[str]:
    """Columns: the first ``left`` left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
            for row in [header, *body]]


# ---- the three parts --------------------------------------------------------------------------


def shapes_part(args, devices, workdir: Path) -> str:
    """Part 1: the four variants on each shape, repeated and interleaved."""
    header = ["corpus", "variant", "implementation", "words/s (median)", "range", "ratio", "CPU s / s",
              "analogies", "gap", "similarity rho", "gap"]
    body = []
    summary: dict[tuple[str, str], list[tuple[float, float, float]]] = {}  # (variant, impl): (ratio, gaps)
    for shape_name in args.shapes:
        shape = BENCH_SHAPES[shape_name]
        if args.scale != 1:
            shape = CorpusShape(**{**shape.__dict__, "n_tokens": max(2000, int(shape.n_tokens * args.scale))})
        corpus = planted_corpus(shape, seed=7)
        questions = corpus.write_analogies(workdir / f"{shape_name}-analogies.txt")
        pairs = corpus.write_word_pairs(workdir / f"{shape_name}-pairs.tsv")
        tokens = sum(map(len, corpus.sentences))
        for variant, arch in VARIANTS.items():
            params = dict(vector_size=64, epochs=shape.epochs, **arch)
            impls = {PEER: lambda seed: train_gensim(corpus.sentences, params, args.threads, seed)}
            for device in devices:
                impls[f"{OURS} ({device})"] = lambda seed, d=device: train_ours(
                    corpus.sentences, params, args.threads, d, seed)
            runs: dict[str, list] = {name: [] for name in impls}
            for seed in range(1, args.repeats + 1):  # interleaved: the load hits both alike
                for name, train in impls.items():
                    wv, (seconds, cpu) = train(seed)
                    runs[name].append((tokens * shape.epochs / seconds, cpu / seconds,
                                       analogy_accuracy(wv, questions)[0], pair_spearman(wv, pairs)[0]))
            peer = runs[PEER]
            for name, rows in runs.items():
                speeds = [r[0] for r in rows]
                median = statistics.median(speeds)
                busy = rows[speeds.index(sorted(speeds)[len(speeds) // 2])][1]
                accuracy, rho = np.mean([r[2] for r in rows]), np.mean([r[3] for r in rows])
                mine = name != PEER
                for device in devices if not mine else [name[name.index("(") + 1:-1]]:
                    # the GPU report: one section per device of course_lib, gensim (CPU) the peer in each
                    record_result(f"word2vec training, course_lib on {device} vs gensim ({args.threads} CPU threads)",
                                  f"{shape_name} / {variant}", name, median, "words/s", higher_is_better=True,
                                  role="ours" if mine else "peer",
                                  extra={"analogies": round(float(accuracy), 4), "rho": round(float(rho), 4)})
                if mine:
                    summary.setdefault((variant, name), []).append((
                        median / statistics.median(r[0] for r in peer),
                        accuracy - np.mean([r[2] for r in peer]), rho - np.mean([r[3] for r in peer])))
                body.append([
                    f"{shape_name} ({tokens // 1000}k tok x {shape.epochs})", variant, name, f"{median:,.0f}",
                    f"{min(speeds) / 1000:,.0f}k-{max(speeds) / 1000:,.0f}k",
                    f"{median / statistics.median(r[0] for r in peer):.2f}" if mine else "-", f"{busy:.2f}",
                    f"{accuracy:.3f}", f"{100 * (accuracy - np.mean([r[2] for r in peer])):+.1f}" if mine else "-",
                    f"{rho:.3f}", f"{100 * (rho - np.mean([r[3] for r in peer])):+.1f}" if mine else "-",
                ])
    note = (f"vector_size=64, gensim's defaults otherwise (window 5, min_count 5, sample 1e-3, negative 5 or hs); "
            f"{args.repeats} runs each with seeds 1..{args.repeats}, interleaved; {args.threads} threads; "
            "ratio = median words/s over gensim's; gap = mean accuracy or rho minus gensim's, in points")
    per_variant = [[variant, name, f"{min(r[0] for r in rows):.2f}-{max(r[0] for r in rows):.2f}",
                    f"{100 * np.mean([r[1] for r in rows]):+.1f}", f"{100 * np.mean([r[2] for r in rows]):+.1f}"]
                   for (variant, name), rows in summary.items()]
    totals = _align(["variant", "implementation", "ratio over the shapes", "analogy gap (mean)", "rho gap (mean)"],
                    per_variant, 2)
    return "\n".join(["1. Four variants, corpora of other shapes: speed and quality", note, *_align(header, body, 3),
                      "", f"Per variant, over the {len(args.shapes)} shapes:", *totals])


def real_text(args, devices) -> str:
    """Part 2: the standard library's docstrings."""
    sentences = stdlib_docstrings_corpus()
    tokens = sum(map(len, sentences))
    params = dict(vector_size=100, window=5, min_count=5, sg=1, hs=0, negative=5, sample=1e-3, epochs=5)
    impls = {PEER: lambda: train_gensim(sentences, params, args.threads)}
    for device in devices:
        impls[f"{OURS} ({device})"] = lambda d=device: train_ours(sentences, params, args.threads, d)
    best: dict[str, tuple] = {}
    for _ in range(args.repeats):
        for name, train in impls.items():
            wv, times = train()
            if name not in best or times[0] < best[name][1][0]:
                best[name] = (wv, times)
    gensim_seed2, _ = train_gensim(sentences, params, args.threads, seed=2)
    reference = best[PEER][0]
    probe = reference.index_to_key[50:350]
    header = ["implementation", "words/s (best)", "ratio", "CPU s / s", "top-10 overlap with gensim", "analogies",
              "wordsim353 rho"]
    body = []
    for name, (wv, times) in [*best.items(), (f"{PEER} (seed 2)", (gensim_seed2, (None, None)))]:
        accuracy, n_questions = analogy_accuracy(wv, analogies_path())
        spearman, oov = pair_spearman(wv, wordsim353_path())
        speed = None if times[0] is None else tokens * params["epochs"] / times[0]
        peer_speed = tokens * params["epochs"] / best[PEER][1][0]
        body.append([
            name, "-" if speed is None else f"{speed:,.0f}",
            "-" if speed is None or name == PEER else f"{speed / peer_speed:.2f}",
            "-" if times[0] is None else f"{times[1] / times[0]:.2f}",
            "-" if name == PEER else f"{neighbour_overlap(wv, reference, probe):.3f}",
            f"{accuracy:.3f} (n={n_questions})", f"{spearman:.3f} ({100 - oov:.0f}% covered)",
        ])
    note = (f"{len(sentences):,} sentences, {tokens:,} tokens; skip-gram, negative=5, vector_size=100, "
            f"window=5, min_count=5, 5 epochs; best of {args.repeats}; {args.threads} threads")
    return "\n".join(["2. Real text (stdlib docstrings): speed and quality", note, *_align(header, body, 1)])


def batch_sweep(args, workdir: Path) -> str:
    """Part 3: the batched torch engine against mini-batch size, on the first shape."""
    shape = BENCH_SHAPES[args.shapes[0]]
    if args.scale != 1:
        shape = CorpusShape(**{**shape.__dict__, "n_tokens": max(2000, int(shape.n_tokens * args.scale))})
    corpus = planted_corpus(shape, seed=7)
    questions = corpus.write_analogies(workdir / "sweep-analogies.txt")
    tokens = sum(map(len, corpus.sentences))
    lines = [
        f"3. Skip-gram with negative sampling on {args.shapes[0]!r}: accuracy against mini-batch size",
        "(the batched torch engine: the examples of a mini-batch all see the same weights; 1 thread, seeds 1, 2)",
        f"{'engine':>16}  {'batch_size':>10}  {'analogies':>15}  {'words/s':>10}",
    ]
    params = dict(vector_size=64, epochs=shape.epochs, **VARIANTS["skip-gram, NS"])
    runs = [(PEER, None, lambda seed: train_gensim(corpus.sentences, params, 1, seed)),
            (f"{OURS} c", 1, lambda seed: train_ours(corpus.sentences, params, 1, "cpu", seed, engine="c"))]
    runs += [(f"{OURS} torch", b, lambda seed, b=b: train_ours(corpus.sentences, params, 1, "cpu", seed,
                                                                engine="torch", batch_size=b))
             for b in args.batch_sizes]
    for name, batch_size, train in runs:
        accuracies, speeds = [], []
        for seed in (1, 2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a diverged run warns; the table shows it
                wv, (seconds, _) = train(seed)
                diverged = not np.isfinite(wv.vectors).all()
            accuracies.append(float("nan") if diverged else analogy_accuracy(wv, questions)[0])
            speeds.append(tokens * shape.epochs / seconds)
        shown = " ".join("diverged" if np.isnan(a) else f"{a:.3f}" for a in accuracies)
        size = "-" if batch_size is None else f"{batch_size}"
        lines.append(f"{name:>16}  {size:>10}  {shown:>15}  {np.mean(speeds):>10,.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.word2vec", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for both libraries (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each training, interleaved (default 3)")
    parser.add_argument("--shapes", nargs="*", default=list(BENCH_SHAPES), choices=list(BENCH_SHAPES),
                        help="corpus shapes for parts 1 and 3 (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the corpora's token counts (default 1)")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[64, 1024, 16384],
                        help="mini-batch sizes for part 3 (none: skip it)")
    parser.add_argument("--parts", default="123", help="which parts to run, e.g. 13 (default 123)")
    args = parser.parse_args(argv)
    try:
        import gensim  # noqa: F401
    except ImportError:
        print("benchmarks.word2vec: gensim is not installed; nothing to compare against.")
        return 1
    if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") not in ("0", ""):
        print("benchmarks.word2vec: unset TRITON_INTERPRET to time the Triton kernel on the GPU.")
        return 1

    torch.set_num_threads(args.threads)  # course_lib trains with its own worker threads; this is for the rest
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gpu = f", GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    print(f"word2vec, course_lib vs gensim; CPU: {os.cpu_count()} cores{gpu}; torch {torch.__version__}\n")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if "1" in args.parts and args.shapes:
            print(shapes_part(args, devices, workdir), end="\n\n", flush=True)
        if "2" in args.parts:
            print(real_text(args, devices), end="\n\n", flush=True)
        if "3" in args.parts and args.batch_sizes and args.shapes:
            print(batch_sweep(args, workdir), flush=True)
    return 0


def run() -> None:
    """Entry point for ``python -m benchmarks word2vec``."""
    main([])


if __name__ == "__main__":
    sys.exit(main())
