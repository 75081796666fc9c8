"""Shared timing and reporting for the benchmarks.

``time_cuda`` times a function with CUDA events; ``measure`` turns that into a
``Timing`` row (recording a failure instead of stopping the whole run), and
``format_table`` prints rows as time, ratio against this project and bandwidth.

Machine-readable results: when ``$BENCHMARK_RESULTS`` names a file (``make gpu-report``
sets it, see ``benchmarks/report.py``), every ``measure`` row, every ``format_table``
table and every ``record_result`` row is appended to it as one JSON line the moment it
exists, so a benchmark stopped half-way still leaves the rows it measured. Without the
variable nothing is written and the benchmarks print exactly what they always printed.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

# Peak HBM bandwidth in GB/s from the vendors' datasheets, matched as a substring of
# torch.cuda.get_device_name(); the first match wins, so specific names come first.
PEAK_BANDWIDTH_GBPS = (
    ("H200", 4800),
    ("H100 PCIe", 2000),
    ("H100 NVL", 3900),
    ("H100", 3350),  # the SXM part, named "NVIDIA H100 80GB HBM3"
    ("A100-SXM4-80GB", 2039),
    ("A100 80GB PCIe", 1935),
    ("A100", 1555),  # the 40 GB parts
)

# Dense (no sparsity) peak tensor-core throughput in TFLOP/s from the vendors' datasheets,
# per dtype ("fp32" is the plain CUDA-core rate; "tf32" what fp32 matmuls get with TF32 on).
# Matched like PEAK_BANDWIDTH_GBPS. The H200 has the H100 SXM's compute at more bandwidth.
PEAK_TFLOPS = (
    ("H200 NVL", {"fp32": 60, "tf32": 418, "bf16": 836, "fp16": 836}),
    ("H200", {"fp32": 67, "tf32": 495, "bf16": 989, "fp16": 989}),
    ("H100 PCIe", {"fp32": 51, "tf32": 378, "bf16": 756, "fp16": 756}),
    ("H100 NVL", {"fp32": 60, "tf32": 418, "bf16": 836, "fp16": 836}),
    ("H100", {"fp32": 67, "tf32": 495, "bf16": 989, "fp16": 989}),
    ("A100", {"fp32": 19.5, "tf32": 156, "bf16": 312, "fp16": 312}),
)

RESULTS_ENV = "BENCHMARK_RESULTS"  # a JSON-lines file that rows are appended to (report.py)
NAME_ENV = "BENCHMARK_NAME"  # which benchmark is running, stored with each row

WARMUP, REPEATS = 10, 50
# Bigger than any current L2 cache (50 MB on H100, 60 MB on H200).
L2_FLUSH_BYTES = 256 * 2**20


def peak_bandwidth_gbps(device_name: str) -> float | None:
    """The device's peak memory bandwidth, or None when it is not in the table."""
    return next((peak for key, peak in PEAK_BANDWIDTH_GBPS if key in device_name), None)


def peak_tflops(device_name: str, dtype: str) -> float | None:
    """The device's dense peak TFLOP/s for ``dtype`` ("fp32", "tf32", "bf16", "fp16"), or None."""
    table = next((peaks for key, peaks in PEAK_TFLOPS if key in device_name), {})
    return table.get(dtype)


def record(kind: str, **fields) -> None:
    """Append one row to ``$BENCHMARK_RESULTS`` (no-op when it is unset), flushed at once."""
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    row = {"kind": kind, "benchmark": os.environ.get(NAME_ENV, ""), "time": time.time(), **fields}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")


def record_result(section: str, case: str, impl: str, value: float | None, unit: str, *,
                  higher_is_better: bool, role: str, extra: dict | None = None) -> None:
    """A result that is not a CUDA timing (a CPU wall-clock time, words/s, submissions/min).

    ``role`` is "ours" (course_lib), "peer" (what ours is compared with: the ratio in the
    report is ours / peer within the same section and case) or "other"."""
    if role not in ("ours", "peer", "other"):
        raise ValueError(f"role must be 'ours', 'peer' or 'other', got {role!r}")
    record("result", section=section, case=case, impl=impl, value=value, unit=unit,
           higher_is_better=higher_is_better, role=role, extra=extra or {})


def time_cuda(fn: Callable[[], object], *, warmup: int = WARMUP, repeats: int = REPEATS) -> float:
    """Median time of ``fn()`` in milliseconds, measured with CUDA events.

    The warm-up runs absorb compilation and autotuning; the median ignores the odd
    run that an unrelated hiccup slowed down. Before each run a large buffer is
    overwritten so that the inputs are evicted from L2: a real model streams its
    tensors from memory, it does not find them hot in the cache."""
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for start, end in zip(starts, ends):
        flush.zero_()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()  # elapsed_time needs both events to have completed
    return statistics.median(start.elapsed_time(end) for start, end in zip(starts, ends))


def time_autocast_step(step: Callable[[], object], dtype: torch.dtype = torch.bfloat16) -> float | None:
    """CUDA time (ms) of one training step under autocast, or None: a row with no time (an
    out-of-memory, an unsupported shape) instead of a crash of the whole benchmark."""
    try:
        with torch.autocast("cuda", dtype=dtype):
            return time_cuda(step, warmup=3, repeats=10)
    except Exception:  # noqa: BLE001 - a row with no time instead of a crash
        return None


def model_benchmark_main(prog: str, doc: str, run_cpu: Callable[[int, int, bool], str],
                         run_gpu: Callable[[], str], argv: list[str] | None = None) -> int:
    """The command line of a model benchmark (``python -m benchmarks.bert``, ``.t5``):
    ``run_cpu(threads, repeats, quick)`` always, then ``run_gpu()`` when a CUDA GPU is there
    and the Triton interpreter is not on (it would time the interpreter)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per case on the CPU (median)")
    parser.add_argument("--quick", action="store_true", help="CPU: only the small config")
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU part even when a GPU is present")
    args = parser.parse_args(argv)
    print(run_cpu(args.threads, args.repeats, args.quick))
    if torch.cuda.is_available() and not args.cpu_only:
        from course_lib.kernels.backend import interpreter_active

        if interpreter_active():
            print(f"{prog}: TRITON_INTERPRET=1 is set; the GPU part would run in the interpreter; skipped.")
            return 1
        print()
        print(run_gpu())
    return 0


@dataclass
class Timing:
    case: str  # what was measured, e.g. "GPT-2 50257x768, 8x1024, fp32"
    impl: str  # who computed it, e.g. "torch eager"
    ms: float | None  # None when the implementation failed on this case
    bytes_moved: int  # the byte model of the benchmark, the same for every implementation
    note: str = ""  # why it failed
    flops: int = 0  # the flop model (0: not a compute-bound case), the same for every implementation
    dtype: str = ""  # "fp32", "tf32", "bf16" or "fp16": which peak TFLOP/s the flops compare with


def measure(case: str, impl: str, fn: Callable[[], object], bytes_moved: int, *,
            flops: int = 0, dtype: str = "") -> Timing:
    """Time one implementation on one case; an error becomes a row instead of ending the run.
    The row is also recorded for the report (``record``) as soon as it is measured."""
    try:
        timing = Timing(case, impl, time_cuda(fn), bytes_moved, flops=flops, dtype=dtype)
    except Exception as error:  # e.g. torch.compile failing on an unusual setup
        note = f"failed: {type(error).__name__}: {error}"[:120]
        timing = Timing(case, impl, None, bytes_moved, note=note, flops=flops, dtype=dtype)
    record("timing", **asdict(timing))
    return timing


def format_table(title: str, timings: list[Timing], ours: str, peak_gbps: float | None = None) -> str:
    """A text table with one row per (case, implementation).

    ratio = ``ours``'s time / this row's time, so below 1 means ours is faster. GB/s is
    the benchmark's byte model divided by the time, and % of peak compares it with the
    device's datasheet bandwidth when that is known; TFLOP/s appears when a row has a flop
    model. The table is also recorded for the report (``record``)."""
    record("table", title=title, ours=ours, peak_gbps=peak_gbps, rows=[asdict(t) for t in timings])
    ours_ms = {t.case: t.ms for t in timings if t.impl == ours}
    with_flops = any(t.flops for t in timings)
    header = ["case", "implementation", "time (ms)", f"ratio ({ours} / this)", "GB/s"]
    if peak_gbps is not None:
        header.append(f"% of {peak_gbps:.0f} GB/s peak")
    if with_flops:
        header.append("TFLOP/s")
    rows = []
    for t in timings:
        if t.ms is None:
            rows.append([t.case, t.impl, t.note])
            continue
        base = ours_ms.get(t.case)
        ratio = "-" if t.impl == ours or base is None else f"{base / t.ms:.2f}"
        gbps = t.bytes_moved / (t.ms * 1e-3) / 1e9
        row = [t.case, t.impl, f"{t.ms:.4f}", ratio, f"{gbps:.0f}"]
        if peak_gbps is not None:
            row.append(f"{100 * gbps / peak_gbps:.0f}%")
        if with_flops:
            row.append(f"{t.flops / (t.ms * 1e-3) / 1e12:.1f}" if t.flops else "-")
        rows.append(row)

    # A failed row's note runs past the numeric columns instead of widening them.
    table = [header, *rows]
    full = [r for r in table if len(r) == len(header)]
    widths = [max(len(r[i]) for r in (table if i < 2 else full)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # Text columns (case, implementation) align left, numbers right.
        aligned = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(aligned).rstrip()

    explanation = f"lower time is better; ratio < 1 means {ours} is faster, > 1 that it is slower"
    return "\n".join([title, explanation, line(header), *(line(r) for r in rows)])
