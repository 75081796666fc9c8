"""word2vec's per-pair training loop on the CPU, in C: build, launch, and a Python reference.

``word2vec_cpu.c`` (next to this file) trains one chunk of sentences exactly as word2vec.c
does: subsampling, the reduced window, then one SGD step per training example (per
(context, centre) pair in skip-gram, per centre word in CBOW), each step seeing the updates
of the steps before it. :class:`course_lib.word2vec.Word2Vec` calls it from ``workers``
Python threads at once; ctypes releases the GIL during the call, so the threads run in
parallel and share the weight tables without locks, as word2vec.c's and gensim's do.

**Why C, and why built here.** Sequential SGD is a loop over tens of millions of tiny steps
(two dot products and two saxpys of length D per logistic regression). Batched into
PyTorch operations it loses twice: the steps of a batch all read the weights from before
the batch (a different algorithm, whose quality depends on the corpus), and each PyTorch
call costs microseconds of dispatch, with the GIL held, for a few hundred flops of work.
gensim solves the same problem with Cython. This module compiles one small C file with the
machine's C compiler (``cc``, or ``$CC``) the first time it is needed, like
``torch.utils.cpp_extension.load`` or Triton's own launcher do, and caches the shared
library under ``$COURSE_LIB_CACHE`` (default ``~/.cache/course_lib``), keyed by a hash of the
source, the flags, the compiler and the CPU; a changed source is rebuilt, never reused.
The file has no dependency beyond libc and libm and compiles in about a second.

:func:`train_chunk_reference` is the same algorithm in plain Python, statement for
statement with the same random numbers: on a small corpus the two must agree to float32
rounding (``tests/test_word2vec.py``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("word2vec_cpu.c")
# -fassociative-math (with the two flags it needs) lets gcc vectorise the dot product's sum;
# unlike -ffast-math it does not link crtfastmath.o, which would flush denormals to zero in
# the whole Python process.
CFLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno", "-fassociative-math",
          "-fno-signed-zeros", "-fno-trapping-math", "-std=c11"]
MAX_EXP = 6.0
SIGMOID_TABLE_SIZE = 1000
MASK64 = (1 << 64) - 1


def c_source(*names: str) -> str:
    """The text of the named C functions (or typedefs) of ``word2vec_cpu.c``, each with the
    comment above it, for the book to display the code that runs."""
    lines = SOURCE.read_text(encoding="utf-8").splitlines()
    parts = []
    for name in names:
        start = next((i for i, line in enumerate(lines) if not line.startswith((" ", "/", "*", "#", "}"))
                      and (f" {name}(" in line or f"*{name}(" in line or line.startswith(f"}} {name};"))), None)
        if start is None:
            raise ValueError(f"no function {name!r} in {SOURCE.name}")
        while start > 0 and lines[start - 1].lstrip().startswith(("/*", "*")):  # its comment
            start -= 1
        end = next(i for i in range(start, len(lines)) if lines[i].startswith("}"))
        parts.append("\n".join(lines[start:end + 1]))
    return "\n\n".join(parts)


# ---- the tables the C code reads -------------------------------------------------------


class _Model(ctypes.Structure):
    _fields_ = [
        ("syn0", ctypes.c_void_p), ("syn1neg", ctypes.c_void_p), ("syn1", ctypes.c_void_p),
        ("vocab_size", ctypes.c_int64), ("dim", ctypes.c_int32),
        ("sg", ctypes.c_int32), ("hs", ctypes.c_int32), ("negative", ctypes.c_int32),
        ("window", ctypes.c_int32), ("cbow_mean", ctypes.c_int32), ("shrink_windows", ctypes.c_int32),
        ("keep_int", ctypes.c_void_p), ("noise_prob", ctypes.c_void_p), ("noise_alias", ctypes.c_void_p),
        ("codes", ctypes.c_void_p), ("points", ctypes.c_void_p), ("code_lengths", ctypes.c_void_p),
        ("max_code_length", ctypes.c_int32),
        ("sigmoid_table", ctypes.c_void_p), ("nll_table", ctypes.c_void_p), ("table_size", ctypes.c_int32),
    ]


class _Stats(ctypes.Structure):
    _fields_ = [("loss", ctypes.c_double), ("examples", ctypes.c_int64), ("words", ctypes.c_int64)]


def sigmoid_tables(size: int = SIGMOID_TABLE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """σ(x) and -log σ(x) at the centres of ``size`` equal bins on [-6, 6), float32.

    word2vec.c and gensim read σ from a table of 1000 values too, but index it with
    ``(f + 6) * (1000 / 6 / 2)`` computed in integer arithmetic (83, not 83.33), so they
    read σ at a point up to 0.06 below ``f``; these bins are indexed exactly."""
    x = -MAX_EXP + (np.arange(size) + 0.5) * (2 * MAX_EXP / size)
    return (1 / (1 + np.exp(-x))).astype(np.float32), np.logaddexp(0, -x).astype(np.float32)


@dataclass
class Tables:
    """The read-only inputs of a training run, in the dtypes the C code reads."""

    keep_int: np.ndarray | None  # (V,) uint32: keep a token if keep_int[w] >= a 32-bit random number
    noise_prob: np.ndarray | None  # (V,) uint32: the alias table's thresholds, scaled to 2^32
    noise_alias: np.ndarray | None  # (V,) int32
    codes: np.ndarray | None  # (V, L) uint8
    points: np.ndarray | None  # (V, L) int32
    code_lengths: np.ndarray | None  # (V,) int32
    sigmoid: np.ndarray  # (SIGMOID_TABLE_SIZE,) float32
    nll: np.ndarray  # (SIGMOID_TABLE_SIZE,) float32


def make_tables(keep_prob, noise_prob=None, noise_alias=None, huffman=None) -> Tables:
    """Convert probabilities to the 32-bit thresholds the generator is compared with.

    ``keep_prob`` (V,) or None (no subsampling); ``noise_prob``, ``noise_alias`` an alias
    table (:func:`course_lib.word2vec.make_alias_table`) or None (no negative sampling);
    ``huffman`` the padded ``(codes, points, code_lengths)`` or None (no hierarchical softmax)."""
    scale = float(2**32 - 1)

    def threshold(p):
        return np.round(np.clip(np.asarray(p, dtype=np.float64), 0, 1) * scale).astype(np.uint32)

    sigmoid, nll = sigmoid_tables()
    return Tables(
        keep_int=None if keep_prob is None else threshold(keep_prob),
        noise_prob=None if noise_prob is None else threshold(noise_prob),
        noise_alias=None if noise_alias is None else np.ascontiguousarray(noise_alias, dtype=np.int32),
        codes=None if huffman is None else np.ascontiguousarray(huffman[0], dtype=np.uint8),
        points=None if huffman is None else np.ascontiguousarray(huffman[1], dtype=np.int32),
        code_lengths=None if huffman is None else np.ascontiguousarray(huffman[2], dtype=np.int32),
        sigmoid=sigmoid,
        nll=nll,
    )


# ---- building and loading the library ---------------------------------------------------

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_build_error: str | None = None


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _cpu_signature() -> str:
    """What -march=native depends on: a library built for another CPU may not run here."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), platform.processor())
    except OSError:
        return platform.processor() + platform.machine()


def _cache_dir() -> Path:
    env = os.environ.get("COURSE_LIB_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "course_lib") / "ext"


def build(verbose: bool = False) -> Path:
    """Compile ``word2vec_cpu.c`` unless a library built from the same source, flags,
    compiler and CPU is cached; return its path. Raises ``RuntimeError`` saying why if no
    compiler is found or the compilation fails."""
    if not SOURCE.exists():
        raise RuntimeError(f"{SOURCE} is missing (an installation without the package's .c files)")
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (looked for $CC, cc and gcc); install gcc")
    source = SOURCE.read_bytes()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"the C compiler {cc!r} does not run: {error}") from None
    key = hashlib.sha256(b"\0".join([source, " ".join(CFLAGS).encode(), version.encode(),
                                     _cpu_signature().encode()])).hexdigest()[:16]
    for root in (_cache_dir(), Path(tempfile.gettempdir()) / "course_lib-ext"):
        target = root / f"word2vec_cpu-{key}.so"
        if target.exists():
            return target
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=root, prefix=target.name + ".", suffix=".part")
            os.close(fd)
        except OSError:
            continue  # not writable (a sandbox, a read-only home): try the next place
        try:
            result = subprocess.run([cc, *CFLAGS, str(SOURCE), "-o", tmp, "-lm"],
                                    capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                raise RuntimeError(f"compiling {SOURCE.name} failed:\n{result.stderr[-2000:]}")
            if verbose:
                print(f"built {target}")
            os.replace(tmp, target)  # atomic: a concurrent build of the same key is harmless
            return target
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise RuntimeError(f"no writable directory for the compiled library (tried {_cache_dir()} and the temp dir)")


def library() -> ctypes.CDLL:
    """The compiled library, built on first use (see :func:`build`)."""
    global _library, _build_error
    with _lock:
        if _library is None:
            if _build_error is not None:
                raise RuntimeError(_build_error)
            try:
                lib = ctypes.CDLL(str(build()))
            except (RuntimeError, OSError) as error:
                _build_error = f"word2vec's C training loop is unavailable: {error}"
                raise RuntimeError(_build_error) from None
            lib.w2v_train_chunk.restype = ctypes.c_int
            lib.w2v_train_chunk.argtypes = [
                ctypes.POINTER(_Model), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                ctypes.c_float, ctypes.c_uint64, ctypes.POINTER(_Stats),
            ]
            _library = lib
    return _library


def available() -> bool:
    """True if the library is built or can be built here."""
    try:
        library()
        return True
    except RuntimeError:
        return False


# ---- launcher ---------------------------------------------------------------------------


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


def _check_table(name, a, dtype, shape):
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape or not a.flags.c_contiguous:
        got = f"{type(a).__name__}" if not isinstance(a, np.ndarray) else f"{a.dtype} {a.shape}"
        raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype)} array of shape {shape}, got {got}")


def model_struct(syn0, syn1neg, syn1, tables: Tables, *, sg, hs, negative, window, cbow_mean,
                 shrink_windows=True) -> _Model:
    """Check the tables once and pack them for :func:`train_chunk` (training calls it per run)."""
    V, D = syn0.shape
    _check_table("syn0", syn0, np.float32, (V, D))
    if negative:
        _check_table("syn1neg", syn1neg, np.float32, (V, D))
        _check_table("noise_prob", tables.noise_prob, np.uint32, (V,))
        _check_table("noise_alias", tables.noise_alias, np.int32, (V,))
    if hs:
        _check_table("syn1", syn1, np.float32, (max(V - 1, 1), D))
        _check_table("code_lengths", tables.code_lengths, np.int32, (V,))
        L = tables.codes.shape[1]
        _check_table("codes", tables.codes, np.uint8, (V, L))
        _check_table("points", tables.points, np.int32, (V, L))
    if tables.keep_int is not None:
        _check_table("keep_int", tables.keep_int, np.uint32, (V,))
    if not (window >= 1 and negative >= 0 and (hs or negative)):
        raise ValueError(f"need window >= 1 and hs or negative > 0, got window={window}, hs={hs}, negative={negative}")
    return _Model(
        _ptr(syn0), _ptr(syn1neg) if negative else None, _ptr(syn1) if hs else None, V, D,
        int(sg), int(hs), int(negative), int(window), int(cbow_mean), int(shrink_windows),
        _ptr(tables.keep_int), _ptr(tables.noise_prob) if negative else None,
        _ptr(tables.noise_alias) if negative else None,
        _ptr(tables.codes) if hs else None, _ptr(tables.points) if hs else None,
        _ptr(tables.code_lengths) if hs else None, tables.codes.shape[1] if hs else 0,
        _ptr(tables.sigmoid), _ptr(tables.nll), len(tables.sigmoid),
    )


def train_chunk(model: _Model, tokens: np.ndarray, starts: np.ndarray, first: int, last: int,
                alpha: float, seed: int) -> tuple[float, int, int]:
    """Train in place on sentences ``first`` to ``last - 1`` with learning rate ``alpha``:
    ``tokens[starts[s]:starts[s + 1]]`` (int32 word indices, int64 offsets) is sentence ``s``.
    Returns ``(summed loss, training examples, tokens kept by subsampling)``. The GIL is
    released during the call. ``tokens`` and ``starts`` are trusted (built by Word2Vec)."""
    stats = _Stats()
    status = library().w2v_train_chunk(ctypes.byref(model), tokens.ctypes.data, starts.ctypes.data, first, last,
                                       alpha, seed & MASK64, ctypes.byref(stats))
    if status != 0:
        raise MemoryError("w2v_train_chunk could not allocate its buffers")
    return stats.loss, stats.examples, stats.words


# ---- reference --------------------------------------------------------------------------


def train_chunk_reference(syn0, syn1neg, syn1, tables: Tables, tokens, starts, first, last, alpha, seed, *,
                          sg, hs, negative, window, cbow_mean, shrink_windows=True):
    """The C loop in Python, statement for statement (slow: for tests on small corpora).
    Updates the float32 tables in place; returns ``(loss, examples, words)``."""
    f32 = np.float32
    state = seed & MASK64
    alpha = f32(alpha)

    def next_u32() -> int:  # SplitMix64, the top 32 bits
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return (z ^ (z >> 31)) >> 32

    def below(n: int) -> int:  # uniform in [0, n), from the draw's top bits
        return (next_u32() * n) >> 32

    loss = 0.0

    def logistic(h, out, label, alpha, neu1e):
        nonlocal loss
        f = f32(np.dot(h, out))
        if f >= MAX_EXP:
            sigma, nll = f32(1), float(np.logaddexp(0, -f))
        elif f <= -MAX_EXP:
            sigma, nll = f32(0), float(np.logaddexp(0, -f))
        else:
            b = int((f + f32(MAX_EXP)) * f32(len(tables.sigmoid) / (2 * MAX_EXP)))
            sigma, nll = tables.sigmoid[b], float(tables.nll[b])
        loss += nll if label == 1 else nll + float(f)
        g = f32((f32(label) - sigma) * f32(alpha))
        neu1e += g * out
        out += g * h

    def predict(h, target, alpha, neu1e):
        if hs:
            for b in range(tables.code_lengths[target]):
                logistic(h, syn1[tables.points[target, b]], 1 - int(tables.codes[target, b]), alpha, neu1e)
        if negative:
            draws = []
            for _ in range(negative):
                bucket = below(len(syn0))
                draws.append(bucket if next_u32() < tables.noise_prob[bucket] else int(tables.noise_alias[bucket]))
            logistic(h, syn1neg[target], 1, alpha, neu1e)
            for k in draws:
                if k != target:
                    logistic(h, syn1neg[k], 0, alpha, neu1e)

    examples = words = 0
    for s in range(first, last):
        kept = [int(t) for t in tokens[starts[s]:starts[s + 1]]
                if tables.keep_int is None or tables.keep_int[t] >= next_u32()]
        words += len(kept)
        n = len(kept)
        for i in range(n):
            r = window - below(window) if shrink_windows else window
            lo, hi = max(i - r, 0), min(i + r + 1, n)
            if sg:
                for j in range(lo, hi):
                    if j != i:
                        neu1e = np.zeros(syn0.shape[1], dtype=f32)
                        predict(syn0[kept[j]], kept[i], alpha, neu1e)
                        syn0[kept[j]] += neu1e
                        examples += 1
            elif hi - lo > 1:
                context = [kept[j] for j in range(lo, hi) if j != i]
                h = syn0[context].sum(0, dtype=f32)
                if cbow_mean:
                    h /= f32(len(context))
                neu1e = np.zeros(syn0.shape[1], dtype=f32)
                predict(h, kept[i], alpha, neu1e)
                share = f32(1) if cbow_mean else f32(1 / len(context))
                for w in context:
                    syn0[w] += share * neu1e
                examples += 1
    return loss, examples, words
