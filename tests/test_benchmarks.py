"""The benchmark runner on a machine without a GPU, and its table formatting."""

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import Timing, format_table, peak_bandwidth_gbps

ROOT = Path(__file__).resolve().parents[1]


def run_benchmarks(*args):
    # Hide any GPU, so that this test sees the CPU behaviour on every machine.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "benchmarks", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_list():
    result = run_benchmarks("--list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("embedding")


def test_without_gpu_says_so_and_exits_0():
    result = run_benchmarks("embedding")
    assert result.returncode == 0, result.stderr
    assert "timing needs a CUDA GPU" in result.stdout


def test_unknown_benchmark():
    result = run_benchmarks("nonsense")
    assert result.returncode == 2
    assert "unknown benchmark nonsense" in result.stderr


def test_table_ratio_and_bandwidth():
    timings = [
        Timing("case A", "ours", 2.0, bytes_moved=3_350_000_000),
        Timing("case A", "peer", 1.0, bytes_moved=3_350_000_000),
        Timing("case A", "broken", None, bytes_moved=1, note="failed: RuntimeError: boom"),
    ]
    lines = format_table("title", timings, "ours", peak_gbps=3350).splitlines()
    assert lines[0] == "title"
    assert "lower time is better" in lines[1] and "ratio < 1 means ours is faster" in lines[1]
    assert lines[2].split()[:4] == ["case", "implementation", "time", "(ms)"]
    # ours: 3.35 GB in 2 ms is 1675 GB/s, half the peak; the ratio is ours / peer = 2.
    assert lines[3].split() == ["case", "A", "ours", "2.0000", "-", "1675", "50%"]
    assert lines[4].split() == ["case", "A", "peer", "1.0000", "2.00", "3350", "100%"]
    assert lines[5].split()[2:] == ["broken", "failed:", "RuntimeError:", "boom"]


def test_table_without_known_peak():
    table = format_table("t", [Timing("c", "ours", 1.0, bytes_moved=10**9)], "ours")
    assert "peak" not in table
    assert table.splitlines()[-1].split() == ["c", "ours", "1.0000", "-", "1000"]


def test_peak_bandwidth_lookup():
    assert peak_bandwidth_gbps("NVIDIA H100 80GB HBM3") == 3350
    assert peak_bandwidth_gbps("NVIDIA H100 PCIe") == 2000
    assert peak_bandwidth_gbps("NVIDIA H200") == 4800
    assert peak_bandwidth_gbps("Some Future GPU") is None


def test_model_benchmark_command_line(capsys, monkeypatch):
    """The model benchmarks' shared command line: the CPU part with the parsed options, the
    GPU part only where CUDA is there and not with --cpu-only."""
    import torch

    from benchmarks.harness import model_benchmark_main

    calls = []
    run_cpu = lambda threads, repeats, quick: calls.append(("cpu", threads, repeats, quick)) or "cpu table"
    run_gpu = lambda: calls.append(("gpu",)) or "gpu table"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert model_benchmark_main("prog", "doc", run_cpu, run_gpu, ["--threads", "3", "--repeats", "2", "--quick"]) == 0
    assert calls == [("cpu", 3, 2, True)] and "cpu table" in capsys.readouterr().out
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    calls.clear()
    assert model_benchmark_main("prog", "doc", run_cpu, run_gpu, ["--cpu-only"]) == 0
    assert calls == [("cpu", 2, 5, False)]
