"""`make gpu-report` on a machine without a GPU, and its report writer (benchmarks/report.py).

No GPU here: the command must say so and write nothing; the writer is checked on made-up rows
(ratios, bandwidth and FLOP/s against the device's peak, partial tables, test outcomes), and
the runner end to end on a fake benchmark package and a fake gpu test module (a benchmark
killed at its time limit leaves the rows it recorded).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import BENCHMARKS, REPORT_ARGS, harness, report

ROOT = Path(__file__).resolve().parents[1]
H100 = "NVIDIA H100 80GB HBM3"


def test_make_gpu_report_without_a_gpu_says_so_and_writes_nothing():
    before = set((ROOT / "benchmarks" / "reports").glob("*"))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(["make", "-s", "gpu-report", "BENCH=embedding optim"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "no CUDA GPU is visible here" in proc.stdout and "no report was written" in proc.stdout, proc.stdout
    assert set((ROOT / "benchmarks" / "reports").glob("*")) == before


def test_unknown_benchmark_is_named():
    with pytest.raises(SystemExit, match="unknown benchmark nonsense in BENCH; choose from embedding"):
        report.select(["embedding", "nonsense"])


def test_default_selection_and_the_registry():
    chosen = dict(report.select(None))
    assert "autograde" not in chosen  # REPORT_ARGS leaves it out: nothing on the GPU
    assert set(chosen) == {n for n in BENCHMARKS if REPORT_ARGS.get(n, []) is not None}
    assert set(REPORT_ARGS) <= set(BENCHMARKS)
    assert report.select(["autograde"]) == [("autograde", None)]  # named: run()
    for name in BENCHMARKS:  # each registered benchmark is a module with run() (and main() where used)
        tree = ast.parse((ROOT / "benchmarks" / f"{name}.py").read_text(encoding="utf-8"))
        functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "run" in functions, f"benchmarks/{name}.py has no run()"
        if REPORT_ARGS.get(name):
            assert "main" in functions, f"REPORT_ARGS gives {name} arguments; benchmarks/{name}.py has no main(argv)"


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("name", [n for n, a in REPORT_ARGS.items() if a])
def test_report_args_are_accepted_by_the_benchmark(name, monkeypatch):
    """The arguments in REPORT_ARGS still parse (a renamed option would fail on the GPU box)."""
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse(self, args, namespace)  # exits with status 2 on an unknown or malformed option
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    module = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(_Parsed):
        module.main(list(REPORT_ARGS[name]))


def test_measure_and_format_table_record_rows(tmp_path, monkeypatch):
    results = tmp_path / "rows.jsonl"
    monkeypatch.setenv(harness.RESULTS_ENV, str(results))
    monkeypatch.setenv(harness.NAME_ENV, "fake")
    # Without CUDA, time_cuda fails: measure records a failed row instead of stopping.
    t = harness.measure("case A", "ours", lambda: None, 100, flops=10, dtype="bf16")
    assert t.ms is None and t.note.startswith("failed:")
    harness.format_table("title", [t], "ours")
    harness.record_result("cpu", "c", "ours", 2.0, "ms", higher_is_better=False, role="ours")
    rows = report.load_rows(results)
    assert [r["kind"] for r in rows] == ["timing", "table", "result"]
    assert rows[0]["benchmark"] == "fake" and rows[0]["flops"] == 10 and rows[0]["dtype"] == "bf16"
    tables = report.timing_tables(rows)
    assert len(tables) == 1 and not tables[0].partial  # the measured row is in the printed table
    with pytest.raises(ValueError, match="role must be"):
        harness.record_result("s", "c", "i", 1.0, "ms", higher_is_better=False, role="mine")
    monkeypatch.delenv(harness.RESULTS_ENV)
    harness.record("timing", case="x")  # without the variable: nothing written
    assert len(report.load_rows(results)) == 3


def _timing(case, impl, ms, bytes_moved=0, flops=0, dtype="", note=""):
    return {"kind": "timing", "benchmark": "bert", "case": case, "impl": impl, "ms": ms,
            "bytes_moved": bytes_moved, "flops": flops, "dtype": dtype, "note": note}


def test_render_ratios_peaks_partial_tables_and_tests():
    attn = "attention fwd 8x12x512x64 fp16"
    table_rows = [_timing(attn, "course", 0.5, 10**8, 2 * 10**11, "fp16"),
                  _timing(attn, "torch SDPA", 0.25, 10**8, 2 * 10**11, "fp16"),
                  _timing("LN", "course", 1.0, 3_350_000_000),
                  _timing("LN", "torch eager", 2.0, 3_350_000_000),
                  _timing("LN", "torch.compile", None, 3_350_000_000, note="failed: RuntimeError: boom")]
    records = [*table_rows,
               {"kind": "table", "benchmark": "bert", "title": "Attention and LN", "ours": "course",
                "peak_gbps": 3350, "rows": [{k: v for k, v in r.items() if k not in ("kind", "benchmark")}
                                             for r in table_rows]},
               _timing("step", "course", 8.0), _timing("step", "HF", 10.0),  # measured, table never printed
               {"kind": "result", "benchmark": "bert", "section": "CPU step", "case": "small", "impl": "course",
                "value": 30.0, "unit": "ms", "higher_is_better": False, "role": "ours", "extra": {}},
               {"kind": "result", "benchmark": "bert", "section": "CPU step", "case": "small", "impl": "HF eager",
                "value": 40.0, "unit": "ms", "higher_is_better": False, "role": "peer", "extra": {}}]
    tests = report.TestRun(status="finished (exit 1)", command="python -m pytest -m gpu tests", seconds=12,
                           cases=[report.TestCase("tests/test_k.py::test_fwd[fp16]", "passed", 0.5),
                                  report.TestCase("tests/test_k.py::test_bwd", "failed", 0.1,
                                                  "AssertionError: max diff")])
    benches = [report.BenchRun("bert", ["--quick"], status="timed out after 60 s (its rows so far are kept)",
                               seconds=60, limit_s=60, output=["line 1", "line 2"]),
               report.BenchRun("optim", None, status="not run: the time budget was spent")]
    info = {"device": H100, "date": "2026-12-07", "torch": "2.11.0 (requirements.txt pins 2.13.0)"}
    text = report.render(info, tests, benches, records)

    assert text.startswith(f"# GPU report: {H100}, 2026-12-07")
    assert "**partial**" in text
    assert "3,350 GB/s" in text and "989 bf16" in text  # the device's datasheet peaks
    lines = text.splitlines()
    summary = [ln for ln in lines if ln.startswith("| bert | ")]
    # attention: 0.5 ms vs 0.25 ms -> ratio 2.00; 2e11 flops in 0.5 ms = 400 TFLOP/s = 40% of 989.
    assert summary[0].split(" | ")[1:] == [attn, "course", "0.5000", "torch SDPA", "0.2500", "2.00", "6%", "40% |"]
    # LN: 3.35 GB in 1 ms = 3350 GB/s = 100% of peak; the failed torch.compile row is no peer.
    assert summary[1].split(" | ")[1:] == ["LN", "course", "1.0000", "torch eager", "2.0000", "0.50", "100%", "- |"]
    # The unprinted rows are reported as a partial table, with the first implementation as reference.
    assert "**measured before the benchmark stopped (no table printed)** (partial)" in text
    assert summary[2].split(" | ")[1:6] == ["step", "course", "8.0000", "HF", "10.0000"]
    detail = next(ln for ln in lines if ln.startswith("| LN | torch eager |"))
    assert detail.split(" | ")[2:5] == ["2.0000", "0.50", "1,675"]
    assert "| LN | torch.compile | failed: RuntimeError: boom |" in text
    assert "| small | HF eager | 40.0 | - |" in text and "| small | course | 30.0 | 0.75 |" in text
    # Tests: counts, failures first, with their message.
    assert "1 failed, 1 passed." in text
    assert lines.index(next(ln for ln in lines if "test_bwd" in ln)) < lines.index(
        next(ln for ln in lines if "test_fwd" in ln))
    assert "AssertionError: max diff" in text
    assert "### optim: not run: the time budget was spent" in text
    assert "line 2" in text  # the benchmark's output, folded


def test_read_junit_and_verbose_fallback(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(textwrap.dedent("""\
        <?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
        <testcase classname="tests.test_k" name="test_a[fp16]" time="0.5" />
        <testcase classname="tests.test_k.TestB" name="test_b" time="0.1">
          <failure message="boom">tb</failure></testcase>
        <testcase classname="tests.test_k" name="test_c" time="0"><skipped message="needs a CUDA device" /></testcase>
        <testcase classname="" name="tests.test_nb" time="0">
          <error message="collection failure">ModuleNotFoundError: No module named 'nbformat'</error></testcase>
        </testsuite></testsuites>"""))
    cases = report.read_junit(xml)
    assert [(c.nodeid, c.outcome, c.message) for c in cases] == [
        ("tests/test_k.py::test_a[fp16]", "passed", ""),
        ("tests/test_k.py::TestB::test_b", "failed", "boom"),
        ("tests/test_k.py::test_c", "skipped", "needs a CUDA device"),
        ("tests.test_nb", "error", "collection failure"),
    ]
    verbose = ["tests/test_k.py::test_a[a b] PASSED                 [ 50%]", "noise",
               "tests/test_k.py::test_b FAILED                       [100%]"]
    assert [(c.nodeid, c.outcome) for c in report.parse_verbose(verbose)] == [
        ("tests/test_k.py::test_a[a b]", "passed"), ("tests/test_k.py::test_b", "failed")]


def test_report_stem_does_not_overwrite(tmp_path):
    assert report.report_stem(tmp_path, H100, "2026-12-07") == "nvidia-h100-80gb-hbm3-2026-12-07"
    (tmp_path / "nvidia-h100-80gb-hbm3-2026-12-07.md").write_text("")
    assert report.report_stem(tmp_path, H100, "2026-12-07") == "nvidia-h100-80gb-hbm3-2026-12-07-2"


def test_run_report_end_to_end_with_a_timeout(tmp_path, monkeypatch):
    """Tests, a benchmark that finishes and one killed at its limit: the report has all of it."""
    pkg = tmp_path / "fakebench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "quick.py").write_text(textwrap.dedent("""\
        from benchmarks.harness import Timing, format_table, record

        def main(argv):
            assert argv == ["--small"], argv
            rows = [Timing("c", "course", 1.0, 10**9), Timing("c", "torch", 2.0, 10**9)]
            for t in rows:
                record("timing", case=t.case, impl=t.impl, ms=t.ms, bytes_moved=t.bytes_moved)
            print(format_table("quick table", rows, "course"))
            return 0
        """))
    (pkg / "slow.py").write_text(textwrap.dedent("""\
        import json, os, time

        def run():  # a row as harness.record writes it (without importing torch: quick to start)
            with open(os.environ["BENCHMARK_RESULTS"], "a") as f:
                row = dict(kind="timing", benchmark=os.environ["BENCHMARK_NAME"], case="big", impl="course",
                           ms=3.0, bytes_moved=0)
                f.write(json.dumps(row) + "\\n")
            print("slow: first row done", flush=True)
            time.sleep(120)
        """))
    tests = tmp_path / "gputests"
    tests.mkdir()
    (tests / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: fake\n")
    (tests / "test_fake.py").write_text(textwrap.dedent("""\
        import pytest

        @pytest.mark.gpu
        def test_ok():
            pass

        @pytest.mark.gpu
        def test_wrong():
            assert 1 == 2, "planted failure"

        def test_not_gpu():
            pass
        """))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(report, "POLL_S", 0.2)
    monkeypatch.setattr(report, "MIN_SHARE_S", 0)
    monkeypatch.setattr(report, "MIN_START_S", 1)
    benches = [report.BenchRun("fakebench.quick", ["--small"]), report.BenchRun("fakebench.slow", None)]
    info = {"device": "NVIDIA H100 80GB HBM3", "date": "2026-12-07"}
    path = report.run_report(benches, info, tmp_path / "out", budget=15, tests_timeout=60,
                             test_paths=[str(tests)], say=lambda msg: None)
    text = path.read_text(encoding="utf-8")
    assert path.name == "nvidia-h100-80gb-hbm3-2026-12-07.md"
    assert "1 failed, 1 passed." in text and "planted failure" in text
    assert "test_not_gpu" not in text  # deselected: not a gpu test
    assert benches[0].status == "ok" and "**quick table**" in text
    assert "| fakebench.quick | c | course | 1.0000 | torch | 2.0000 | 0.50 | 30% |" in text
    assert benches[1].status.startswith("timed out after"), benches[1].status
    assert "| big | course | 3.0000 |" in text and "slow: first row done" in text
    rows = report.load_rows(path.with_suffix(".jsonl"))
    assert {r["benchmark"] for r in rows} == {"fakebench.quick", "fakebench.slow"}
    assert path.with_suffix(".log").read_text().count("$ ") == 3  # the tests and two benchmarks
    assert json.loads(json.dumps(rows))  # plain JSON throughout


def test_offline_wheels_are_installed_once(tmp_path):
    """A PyTorch-only machine without network: the wheelhouse goes into a target folder, offline."""
    import zipfile

    house = tmp_path / "wheels"
    house.mkdir()
    dist = "fakepkg-1.0.dist-info"
    with zipfile.ZipFile(house / "fakepkg-1.0-py3-none-any.whl", "w") as whl:
        whl.writestr("fakepkg.py", "VALUE = 42\n")
        whl.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
        whl.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{dist}/RECORD", "")
    said = []
    target = tmp_path / "site"
    assert report.install_wheelhouse(house, target, said.append) == str(target)
    assert (target / "fakepkg.py").read_text() == "VALUE = 42\n" and len(said) == 1
    assert report.install_wheelhouse(house, target, said.append) == str(target) and len(said) == 1  # once
    assert report.install_wheelhouse(tmp_path / "none", target, said.append) is None


def test_a_spent_budget_starts_no_benchmark_and_says_so(tmp_path, monkeypatch):
    """Each benchmark still to come keeps MIN_SHARE_S of the budget; with less than MIN_START_S
    left none is started, and the report says which were not run and why."""
    monkeypatch.setattr(report, "MIN_START_S", 5)
    monkeypatch.setattr(report, "MIN_SHARE_S", 5)
    benches = [report.BenchRun("never.started", None), report.BenchRun("never.either", ["--x"])]
    path = report.run_report(benches, {"device": H100, "date": "2026-12-07"}, tmp_path, budget=8,
                             tests_timeout=60, test_paths=[], say=lambda msg: None)
    # The first gets 8 s less the 5 s kept for the second: 3 s < MIN_START_S, so it is skipped;
    # the last gets all that is left, is started, and fails (no such module) without stopping the run.
    assert [b.status for b in benches] == ["not run: the time budget was spent", "failed (exit 1)"]
    assert 5 < benches[1].limit_s <= 8
    text = path.read_text(encoding="utf-8")
    assert "### never.started: not run: the time budget was spent" in text and "**partial**" in text
    assert "skipped (--no-tests)" in text and "No module named 'never'" in text
    log = path.with_suffix(".log").read_text()
    assert log.count("$ ") == 1 and "never.either --main --x" in log  # only the second was launched
