"""Shared timing and reporting for the benchmarks.

``time_cuda`` times a function with CUDA events; ``measure`` turns that into a
``Timing`` row (recording a failure instead of stopping the whole run), and
``format_table`` prints rows as time, ratio against this project and bandwidth.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
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

WARMUP, REPEATS = 10, 50
# Bigger than any current L2 cache (50 MB on H100, 60 MB on H200).
L2_FLUSH_BYTES = 256 * 2**20


def peak_bandwidth_gbps(device_name: str) -> float | None:
    """The device's peak memory bandwidth, or None when it is not in the table."""
    return next((peak for key, peak in PEAK_BANDWIDTH_GBPS if key in device_name), None)


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


@dataclass
class Timing:
    case: str  # what was measured, e.g. "GPT-2 50257x768, 8x1024, fp32"
    impl: str  # who computed it, e.g. "torch eager"
    ms: float | None  # None when the implementation failed on this case
    bytes_moved: int  # the byte model of the benchmark, the same for every implementation
    note: str = ""  # why it failed


def measure(case: str, impl: str, fn: Callable[[], object], bytes_moved: int) -> Timing:
    """Time one implementation on one case; an error becomes a row instead of ending the run."""
    try:
        return Timing(case, impl, time_cuda(fn), bytes_moved)
    except Exception as error:  # e.g. torch.compile failing on an unusual setup
        return Timing(case, impl, None, bytes_moved, note=f"failed: {type(error).__name__}: {error}"[:120])


def format_table(title: str, timings: list[Timing], ours: str, peak_gbps: float | None = None) -> str:
    """A text table with one row per (case, implementation).

    ratio = ``ours``'s time / this row's time, so below 1 means ours is faster. GB/s is
    the benchmark's byte model divided by the time, and % of peak compares it with the
    device's datasheet bandwidth when that is known."""
    ours_ms = {t.case: t.ms for t in timings if t.impl == ours}
    header = ["case", "implementation", "time (ms)", f"ratio ({ours} / this)", "GB/s"]
    if peak_gbps is not None:
        header.append(f"% of {peak_gbps:.0f} GB/s peak")
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
