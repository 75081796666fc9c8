"""``make gpu-report``: the ``gpu`` tests and every benchmark on this machine's CUDA GPU, as one
Markdown report, ``benchmarks/reports/<device>-<date>.md``.

    make gpu-report                              # everything, within BUDGET seconds (default 540)
    make gpu-report BENCH="embedding optim"      # the tests, then only these benchmarks
    python3 -m benchmarks.report [--bench NAME ...] [--budget S] [--no-tests]   # the same, no make

Steps, each in its own process so that one crash or hang costs only its own rows:

1. ``pytest -m gpu tests/`` (what ``make test-gpu`` selects) with a JUnit XML file: every gpu
   test with its outcome goes into the report; a test module that cannot be imported here (a
   package missing on a PyTorch-only machine) is listed as a collection error, not fatal.
2. Each benchmark of ``benchmarks.BENCHMARKS`` (``REPORT_ARGS`` says how), under a share of
   what is left of the budget (each later benchmark keeps at least ``MIN_SHARE_S``). Its rows
   reach ``<stem>.jsonl`` as they are measured (``harness.record``) and the report is rewritten
   every few seconds, so a run stopped by a time limit still leaves a report of what it measured.

Next to the ``.md``: ``<stem>.jsonl`` (every row, machine-readable), ``<stem>.log`` (all the
output) and ``<stem>.junit.xml``. On a machine with PyTorch but without this course's other
packages and no network, wheels in ``.cache/wheels`` (``make gpu-wheels`` fetches them on a
machine with network) are installed into ``.cache/gpu-site`` first.

The report writer (``render``) is a pure function of what the steps left; tests/test_gpu_report.py
checks it on the CPU, with made-up rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT_DIR = ROOT / "benchmarks" / "reports"
WHEELHOUSE = ROOT / ".cache" / "wheels"
SITE = ROOT / ".cache" / "gpu-site"
DEFAULT_BUDGET_S = 540  # a device command may run 10 minutes; leave room for start-up and copying
DEFAULT_TESTS_S = 240
MIN_SHARE_S = 45  # what each benchmark still to come keeps of the budget
MIN_START_S = 20  # a benchmark is not started with less than this left
POLL_S = 5.0  # how often the report is rewritten while a step runs
OUTPUT_TAIL_LINES = 150  # of each step's output, in the report


# ---- what the steps leave ---------------------------------------------------------------------


@dataclasses.dataclass
class TestCase:
    nodeid: str
    outcome: str  # passed, failed, error, skipped
    seconds: float = 0.0
    message: str = ""


@dataclasses.dataclass
class TestRun:
    status: str = "not run"  # not run, running, finished (exit N), timed out after N s
    command: str = ""
    seconds: float = 0.0
    cases: list[TestCase] = dataclasses.field(default_factory=list)
    output: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class BenchRun:
    name: str
    argv: list[str] | None  # main(argv), or None for run()
    status: str = "not run"  # not run, running, ok, failed (exit N), timed out after N s, skipped: ...
    seconds: float = 0.0
    limit_s: float = 0.0
    output: list[str] = dataclasses.field(default_factory=list)


# ---- reading the records ----------------------------------------------------------------------


def load_rows(path: Path) -> list[dict]:
    """The JSON lines of ``harness.record``; a line cut short by a kill is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_junit(path: Path) -> list[TestCase]:
    """Test cases of a pytest JUnit XML file (collection errors included, as outcome "error")."""
    root = ET.parse(path).getroot()
    cases = []
    for tc in root.iter("testcase"):
        classname, name = tc.get("classname", ""), tc.get("name", "")
        if classname:
            parts = classname.split(".")  # tests.test_x.TestY -> tests/test_x.py::TestY
            path_parts, rest = [], []
            for i, part in enumerate(parts):
                path_parts.append(part)
                if part.startswith("test_"):
                    rest = parts[i + 1:]
                    break
            nodeid = "/".join(path_parts) + ".py::" + "::".join([*rest, name])
        else:
            nodeid = name
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = tc.find(tag)
            if child is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (child.get("message") or (child.text or "")).strip()
                break
        cases.append(TestCase(nodeid, outcome, float(tc.get("time", 0) or 0), message))
    return cases


_VERBOSE_LINE = re.compile(r"^(\S+::\S.*?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")


def parse_verbose(lines: list[str]) -> list[TestCase]:
    """Outcomes from ``pytest -v`` output: what is known when the run was stopped before it
    could write its XML file."""
    cases = []
    for line in lines:
        m = _VERBOSE_LINE.match(line)
        if m:
            outcome = {"PASSED": "passed", "FAILED": "failed", "ERROR": "error", "SKIPPED": "skipped",
                       "XFAIL": "skipped", "XPASS": "passed"}[m.group(2)]
            cases.append(TestCase(m.group(1), outcome))
    return cases


# ---- the tables -------------------------------------------------------------------------------


@dataclasses.dataclass
class TimingTable:
    title: str
    ours: str
    rows: list[dict]
    partial: bool = False  # rows measured before the benchmark printed this table (it stopped)


def timing_tables(records: list[dict]) -> list[TimingTable]:
    """The tables a benchmark printed (``format_table``), then the rows it measured but had not
    yet printed when it stopped, grouped by case with each case's first implementation as the
    reference (the benchmarks measure course_lib's first)."""
    leftover = [r for r in records if r.get("kind") == "timing"]
    tables = []
    for t in (r for r in records if r.get("kind") == "table"):
        for row in t.get("rows", []):
            key = (row.get("case"), row.get("impl"), row.get("ms"))
            for i, r in enumerate(leftover):
                if (r.get("case"), r.get("impl"), r.get("ms")) == key:
                    del leftover[i]
                    break
        tables.append(TimingTable(t.get("title", ""), t.get("ours", ""), t.get("rows", [])))
    if leftover:
        first: dict[str, str] = {}
        for r in leftover:
            first.setdefault(r.get("case"), r.get("impl"))
        # One partial table per reference implementation (usually one).
        for ours in dict.fromkeys(first.values()):
            rows = [r for r in leftover if first[r.get("case")] == ours]
            tables.append(TimingTable("measured before the benchmark stopped (no table printed)", ours, rows, True))
    return tables


def _fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]], right_from: int = 2, text: tuple[int, ...] = ()) -> list[str]:
    """Columns before ``right_from`` and those in ``text`` align left, the others (numbers) right."""
    align = ["---" if i < right_from or i in text else "---:" for i in range(len(header))]
    return ["| " + " | ".join(map(_cell, header)) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(map(_cell, r)) + " |" for r in rows)]


def _rates(row: dict, peak_gbps: float | None, device: str) -> tuple[str, str, str, str]:
    """GB/s, % of peak bandwidth, TFLOP/s, % of peak TFLOP/s of one timing row."""
    from .harness import peak_tflops

    ms = row.get("ms")
    if not ms:
        return "-", "-", "-", "-"
    gbps = (row.get("bytes_moved") or 0) / (ms * 1e-3) / 1e9
    bw = f"{gbps:,.0f}" if row.get("bytes_moved") else "-"
    bw_pct = f"{100 * gbps / peak_gbps:.0f}%" if peak_gbps and row.get("bytes_moved") else "-"
    flops = row.get("flops") or 0
    if not flops:
        return bw, bw_pct, "-", "-"
    tflops = flops / (ms * 1e-3) / 1e12
    peak = peak_tflops(device, row.get("dtype", "")) if device else None
    return bw, bw_pct, f"{tflops:,.1f}", f"{100 * tflops / peak:.0f}%" if peak else "-"


def render_timing_table(table: TimingTable, peak_gbps: float | None, device: str) -> list[str]:
    ours_ms = {r.get("case"): r.get("ms") for r in table.rows if r.get("impl") == table.ours}
    body = []
    for r in table.rows:
        if r.get("ms") is None:
            body.append([r.get("case"), r.get("impl"), r.get("note") or "failed", "-", "-", "-", "-", "-"])
            continue
        base = ours_ms.get(r.get("case"))
        ratio = "-" if r.get("impl") == table.ours or not base else f"{base / r['ms']:.2f}"
        body.append([r.get("case"), r.get("impl"), f"{r['ms']:.4f}", ratio, *_rates(r, peak_gbps, device)])
    header = ["case", "implementation", "time (ms)", f"ratio ({table.ours} / this)", "GB/s", "% of peak GB/s",
              "TFLOP/s", "% of peak TFLOP/s"]
    note = (f"ratio = {table.ours}'s time / this row's time: below 1, {table.ours} is faster. "
            "Peaks are the datasheet's (dense).")
    return [f"**{table.title}**" + (" (partial)" if table.partial else ""), "", note, "",
            *_md_table(header, body)]


def summary_rows(tables: list[TimingTable], peak_gbps: float | None, device: str) -> list[list[str]]:
    """One row per case: course_lib against its fastest peer."""
    out = []
    for table in tables:
        cases: dict[str, list[dict]] = {}
        for r in table.rows:
            cases.setdefault(r.get("case"), []).append(r)
        for case, rows in cases.items():
            ours = next((r for r in rows if r.get("impl") == table.ours), None)
            peers = [r for r in rows if r.get("impl") != table.ours and r.get("ms")]
            if ours is None or not peers:
                continue
            best = min(peers, key=lambda r: r["ms"])
            if not ours.get("ms"):
                out.append([case, table.ours, ours.get("note") or "failed", best["impl"], f"{best['ms']:.4f}",
                            "-", "-", "-"])
                continue
            _, bw_pct, _, fl_pct = _rates(ours, peak_gbps, device)
            out.append([case, table.ours, f"{ours['ms']:.4f}", best["impl"], f"{best['ms']:.4f}",
                        f"{ours['ms'] / best['ms']:.2f}", bw_pct, fl_pct])
    return out


def render_results(records: list[dict]) -> list[str]:
    """``record_result`` rows, one table per section, each row against the section's peer."""
    sections: dict[str, list[dict]] = {}
    for r in records:
        if r.get("kind") == "result":
            sections.setdefault(r.get("section", ""), []).append(r)
    lines: list[str] = []
    for title, rows in sections.items():
        extras = list(dict.fromkeys(k for r in rows for k in r.get("extra", {})))
        peers = {}
        for r in rows:
            if r.get("role") == "peer":
                peers.setdefault(r.get("case"), r)
        body = []
        for r in rows:
            peer = peers.get(r.get("case"))
            value, pv = r.get("value"), peer and peer.get("value")
            ratio = "-" if r is peer or value is None or not pv else f"{value / pv:.2f}"
            shown = "-" if value is None else (f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}")
            body.append([r.get("case"), r.get("impl"), shown, ratio,
                         *(_extra(r.get("extra", {}).get(k)) for k in extras)])
        unit = rows[0].get("unit", "")
        better = "higher" if rows[0].get("higher_is_better") else "lower"
        lines += [f"**{title}**", "", f"{unit}: {better} is better; ratio = this / the peer "
                  f"({', '.join(dict.fromkeys(p.get('impl') for p in peers.values())) or 'none'}).", "",
                  *_md_table(["case", "implementation", unit, "ratio (this / peer)", *extras], body), ""]
    return lines


def _extra(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


# ---- the report -------------------------------------------------------------------------------


def render(info: dict, tests: TestRun, benches: list[BenchRun], records: list[dict]) -> str:
    """The whole report as Markdown, from what the steps left so far."""
    from .harness import PEAK_TFLOPS, peak_bandwidth_gbps

    device = info.get("device", "")
    peak_gbps = peak_bandwidth_gbps(device) if device else None
    peaks = next((p for key, p in PEAK_TFLOPS if key in device), {})
    by_bench: dict[str, list[dict]] = {}
    for r in records:
        by_bench.setdefault(r.get("benchmark", ""), []).append(r)

    done = [b for b in benches if b.status == "ok"]
    complete = tests.status.startswith("finished") and len(done) == len(benches)
    lines = [f"# GPU report: {device or 'unknown device'}, {info.get('date', '')}", ""]
    lines.append("Written by `make gpu-report` (`benchmarks/report.py`); "
                 + ("complete." if complete else "**partial**: see the status of each step below."))
    lines.append("")
    peak_text = ", ".join(f"{v:g} {k}" for k, v in peaks.items())
    facts = [
        ("device", info.get("device_details", device)),
        ("peak (datasheet)", f"{_fmt(peak_gbps)} GB/s; TFLOP/s dense: {peak_text or 'not in the table'}"),
        ("driver / CUDA (torch)", f"{info.get('driver', '?')} / {info.get('cuda', '?')}"),
        *((k, info[k]) for k in ("torch", "triton", "python", "packages", "commit", "host", "command", "started",
                                 "took", "budget") if k in info),
    ]
    lines += _md_table(["", ""], [[k, v] for k, v in facts], right_from=9)
    lines.append("")

    tables_by_bench = {b.name: timing_tables(by_bench.get(b.name, [])) for b in benches}
    summary = [[b.name, *row] for b in benches for row in summary_rows(tables_by_bench[b.name], peak_gbps, device)]
    lines += ["## Summary: course_lib against its fastest peer", ""]
    if summary:
        lines += ["ratio = course time / the fastest peer's time in the same case (below 1: course is faster);",
                  "% of peak: course's achieved bandwidth (the benchmark's byte model) or FLOP/s against the "
                  "datasheet.", ""]
        lines += _md_table(["benchmark", "case", "course", "time (ms)", "fastest peer", "peer (ms)", "ratio",
                            "% of peak GB/s", "% of peak TFLOP/s"], summary, right_from=3, text=(4,))
    else:
        lines.append("No CUDA timings yet.")
    lines.append("")

    lines += ["## Tests: `pytest -m gpu`", "", f"Status: {tests.status}"
              + (f" in {tests.seconds:.0f} s" if tests.seconds else "") + ".", ""]
    if tests.command:
        lines += [f"Command: `{tests.command}`", ""]
    if tests.cases:
        counts: dict[str, int] = {}
        for c in tests.cases:
            counts[c.outcome] = counts.get(c.outcome, 0) + 1
        lines += [", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ".", ""]
        order = {"failed": 0, "error": 1, "passed": 2, "skipped": 3}
        rows = [[c.nodeid, c.outcome, f"{c.seconds:.2f}" if c.seconds else "-", c.message.splitlines()[0][:160]
                 if c.message else ""] for c in sorted(tests.cases, key=lambda c: order.get(c.outcome, 4))]
        lines += _md_table(["test", "outcome", "s", "message"], rows, right_from=2, text=(3,))
        lines.append("")

    lines += ["## Benchmarks", ""]
    lines += _md_table(["benchmark", "how", "status", "s", "limit s"], [
        [b.name, "run()" if b.argv is None else f"main({b.argv})", b.status, f"{b.seconds:.0f}" if b.seconds else "-",
         f"{b.limit_s:.0f}" if b.limit_s else "-"] for b in benches], right_from=3)
    lines.append("")
    for b in benches:
        lines += [f"### {b.name}: {b.status}", ""]
        for table in tables_by_bench[b.name]:
            lines += [*render_timing_table(table, peak_gbps, device), ""]
        lines += render_results(by_bench.get(b.name, []))
        if b.output:
            tail = b.output[-OUTPUT_TAIL_LINES:]
            cut = f", last {len(tail)} of {len(b.output)} lines" if len(tail) < len(b.output) else ""
            lines += [f"<details><summary>output{cut}</summary>", "", "```text", *tail, "```", "", "</details>", ""]
    if tests.output and not tests.status.startswith("finished (exit 0)"):
        tail = tests.output[-OUTPUT_TAIL_LINES:]
        lines += ["## Test output (tail)", "", "```text", *tail, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---- running the steps ------------------------------------------------------------------------


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def report_stem(directory: Path, device: str, date: str) -> str:
    """``<device>-<date>``, or with -2, -3, ... when a report of that name exists."""
    stem, n = f"{slug(device)}-{date}", 1
    while (directory / f"{stem if n == 1 else f'{stem}-{n}'}.md").exists():
        n += 1
    return stem if n == 1 else f"{stem}-{n}"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pins() -> dict[str, str]:
    pins = {}
    req = ROOT / "requirements.txt"
    if req.is_file():
        for line in req.read_text(encoding="utf-8").splitlines():
            m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
            if m:
                pins[m.group(1).lower()] = m.group(2)
    return pins


def machine_info(command: str) -> dict:
    import torch

    pins = _pins()

    def versioned(name: str, have: str | None) -> str:
        pin = pins.get(name)
        if have is None:
            return "not installed"
        return have if pin is None or have.split("+")[0] == pin else f"{have} (requirements.txt pins {pin})"

    props = torch.cuda.get_device_properties(0)
    info = {
        "device": torch.cuda.get_device_name(0),
        "device_details": f"{torch.cuda.get_device_name(0)} (sm_{props.major}{props.minor}, "
                          f"{props.multi_processor_count} SMs, {props.total_memory / 2**30:.1f} GiB)",
        "cuda": torch.version.cuda,
        "torch": versioned("torch", torch.__version__),
        "python": platform.python_version(),
        "date": dt.date.today().isoformat(),
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "host": f"{os.cpu_count()} CPU cores, {platform.machine()}",
    }
    try:
        import triton

        info["triton"] = versioned("triton", triton.__version__)
    except ImportError:
        info["triton"] = "not installed"
    info["packages"] = ", ".join(f"{d} {versioned(d, _version(d))}" for d in ("transformers", "gensim", "numpy"))
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else "?"
    except (OSError, subprocess.TimeoutExpired):
        info["driver"] = "?"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=20)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=20)
        if head.returncode == 0:
            info["commit"] = head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")
        else:
            info["commit"] = "unknown (not a git checkout)"
    except (OSError, subprocess.TimeoutExpired):
        info["commit"] = "unknown (no git)"
    return info


def install_wheelhouse(wheelhouse: Path, target: Path, say) -> str | None:
    """Wheels for a machine with PyTorch and no network: installed once into ``target``
    (with --no-index, so nothing is fetched). Returns the directory to put on the path."""
    wheels = sorted(wheelhouse.glob("*.whl")) if wheelhouse.is_dir() else []
    if not wheels:
        return None
    stamp = target / ".installed"
    names = "\n".join(w.name for w in wheels)
    if not (stamp.is_file() and stamp.read_text() == names):
        say(f"gpu-report: installing {len(wheels)} wheel(s) from {wheelhouse} into {target}")
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                               "--no-compile", "--disable-pip-version-check", "--upgrade", "--target", str(target),
                               *map(str, wheels)], capture_output=True, text=True)
        if proc.returncode != 0:
            say(f"gpu-report: installing the wheels failed (going on without them):\n{proc.stderr[-2000:]}")
            return None
        stamp.write_text(names)
    return str(target)


class _Step:
    """A child process whose output goes, line by line, to the log file and to ``lines``."""

    def __init__(self, cmd: list[str], env: dict, log, lines: list[str]):
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True)
        self.lines = lines

        def pump():
            for line in self.proc.stdout:
                line = line.rstrip("\n")
                lines.append(line)
                log.write(line + "\n")
                log.flush()

        self.reader = threading.Thread(target=pump, daemon=True)
        self.reader.start()

    def wait(self, limit_s: float, tick) -> tuple[int | None, float]:
        """Wait up to ``limit_s`` (calling ``tick`` every POLL_S); kill the process group after
        it. Returns (exit code or None when killed, seconds)."""
        start = time.monotonic()
        while True:
            left = limit_s - (time.monotonic() - start)
            try:
                rc = self.proc.wait(timeout=max(0.1, min(POLL_S, left)))
                self.reader.join(timeout=5)
                return rc, time.monotonic() - start
            except subprocess.TimeoutExpired:
                if left <= 0:
                    break
                tick()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        self.reader.join(timeout=5)
        return None, time.monotonic() - start


def pytest_command(junit: Path, paths: list[str], timeout_per_test: int = 180) -> list[str]:
    """``pytest -m gpu`` with the project's options, less the plugins this Python lacks."""
    import tomllib

    addopts = ""
    pyproject = ROOT / "pyproject.toml"
    if pyproject.is_file():
        addopts = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("pytest", {}).get(
            "ini_options", {}).get("addopts", "")
    opts = shlex.split(addopts)
    if importlib.util.find_spec("nbval") is None:
        opts = [o for o in opts if not o.startswith("--nbval")]
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", *paths, "-v", "-o", f"addopts={shlex.join(opts)}",
           f"--junitxml={junit}", "--continue-on-collection-errors", "-p", "no:randomly"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd.append(f"--timeout={timeout_per_test}")
    return cmd


def child_env(results: Path, name: str, extra_path: str | None) -> dict:
    from .harness import NAME_ENV, RESULTS_ENV

    env = {**os.environ, RESULTS_ENV: str(results), NAME_ENV: name, "PYTHONUNBUFFERED": "1"}
    inherited = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    path = [str(ROOT)] + ([extra_path] if extra_path else []) + inherited
    env["PYTHONPATH"] = os.pathsep.join(path)
    return env


def run_child(module: str, argv: list[str] | None) -> int:
    """In the benchmark's own process: ``main(argv)`` or ``run()``."""
    mod = importlib.import_module(module if "." in module else f"benchmarks.{module}")
    if argv is None:
        mod.run()
        return 0
    return int(mod.main(argv) or 0)


def select(names: list[str] | None) -> list[tuple[str, list[str] | None]]:
    """(name, argv) of the benchmarks to run: those named, or every one REPORT_ARGS does not exclude."""
    from . import BENCHMARKS, REPORT_ARGS

    if names:
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            raise SystemExit(f"gpu-report: unknown benchmark {', '.join(unknown)} in BENCH; "
                             f"choose from {', '.join(BENCHMARKS)}")
        chosen = list(dict.fromkeys(names))
    else:
        chosen = [n for n in BENCHMARKS if not (n in REPORT_ARGS and REPORT_ARGS[n] is None)]
    return [(n, REPORT_ARGS.get(n)) for n in chosen]


def run_report(benches: list[BenchRun], info: dict, out_dir: Path, *, budget: float, tests_timeout: float,
               test_paths: list[str] | None = None, extra_path: str | None = None, say=print) -> Path:
    """Run the tests (unless ``test_paths`` is empty) and the benchmarks, rewriting the report as
    they go; returns the report's path. ``info`` is ``machine_info()``'s (any dict will do)."""
    started = time.monotonic()
    test_paths = ["tests"] if test_paths is None else test_paths
    info = {**info, "budget": f"{budget:.0f} s"}
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = report_stem(out_dir, info.get("device", "device"), info.get("date", dt.date.today().isoformat()))
    paths = {k: out_dir / f"{stem}{k}" for k in (".md", ".jsonl", ".log", ".junit.xml")}
    paths[".jsonl"].write_text("", encoding="utf-8")
    tests = TestRun()
    left = lambda: budget - (time.monotonic() - started)  # noqa: E731

    def write() -> None:
        running = tests.status == "running" or any(b.status in ("running", "not run") for b in benches)
        info["took"] = f"{time.monotonic() - started:.0f} s" + (" so far" if running else "")
        text = render(info, tests, benches, load_rows(paths[".jsonl"]))
        tmp = paths[".md"].with_name(paths[".md"].name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(paths[".md"])

    say(f"gpu-report: {info.get('device_details', info.get('device'))}; writing {paths['.md']}")
    write()
    with open(paths[".log"], "w", encoding="utf-8") as log:
        if not test_paths:
            tests.status = "skipped (--no-tests)"
        else:
            cmd = pytest_command(paths[".junit.xml"], test_paths)
            tests.command = shlex.join(["python", *cmd[1:]]).replace(str(paths[".junit.xml"]), f"{stem}.junit.xml")
            tests.status = "running"
            say(f"gpu-report: the gpu tests: {tests.command}")
            log.write(f"$ {shlex.join(cmd)}\n")
            write()
            limit = max(30.0, min(tests_timeout, left() - MIN_SHARE_S * len(benches)))
            step = _Step(cmd, child_env(paths[".jsonl"], "tests", extra_path), log, tests.output)
            rc, tests.seconds = step.wait(limit, write)
            tests.status = f"finished (exit {rc})" if rc is not None else f"timed out after {limit:.0f} s"
            if rc is not None and paths[".junit.xml"].is_file():
                tests.cases = read_junit(paths[".junit.xml"])
            else:
                tests.cases = parse_verbose(tests.output)
            write()
        for i, bench in enumerate(benches):
            later = len(benches) - i - 1
            bench.limit_s = left() - MIN_SHARE_S * later
            if bench.limit_s < MIN_START_S:
                bench.status, bench.limit_s = "not run: the time budget was spent", 0
                write()
                continue
            how = ["--run"] if bench.argv is None else ["--main", *bench.argv]
            cmd = [sys.executable, "-m", "benchmarks.report", "--child", bench.name, *how]
            say(f"gpu-report: benchmark {bench.name} (up to {bench.limit_s:.0f} s)")
            log.write(f"\n$ {shlex.join(cmd)}\n")
            bench.status = "running"
            write()
            step = _Step(cmd, child_env(paths[".jsonl"], bench.name, extra_path), log, bench.output)
            rc, bench.seconds = step.wait(bench.limit_s, write)
            bench.status = ("ok" if rc == 0 else f"failed (exit {rc})") if rc is not None else \
                f"timed out after {bench.limit_s:.0f} s (its rows so far are kept)"
            write()
    say(f"gpu-report: done in {time.monotonic() - started:.0f} s: {paths['.md']}")
    return paths[".md"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", nargs="*", metavar="NAME", help="benchmarks to run (default: all of the report's)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                        help="seconds for everything (default %(default)s)")
    parser.add_argument("--tests-timeout", type=float, default=DEFAULT_TESTS_S,
                        help="seconds for the gpu tests at most (default %(default)s)")
    parser.add_argument("--no-tests", action="store_true", help="skip the gpu tests")
    parser.add_argument("--output-dir", type=Path, default=REPORT_DIR, help="where the report goes")
    parser.add_argument("--wheelhouse", type=Path, default=WHEELHOUSE, help="offline wheels to install first")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # inside one benchmark's process: NAME --run | NAME --main ARGS...
        module, how = args.child[0], args.child[1:]
        return run_child(module, None if how[:1] == ["--run"] else how[1:])

    benches = [BenchRun(name, bench_argv) for name, bench_argv in select(args.bench)]
    try:
        import torch
    except ImportError:
        print("gpu-report: PyTorch is not importable by this Python "
              f"({sys.executable}); run `make venv` first, or use a Python that has it.")
        return 1
    if not torch.cuda.is_available():
        print("gpu-report: no CUDA GPU is visible here (torch.cuda.is_available() is False), so nothing was "
              "measured and no report was written. Run `make gpu-report` on a machine with a CUDA GPU.")
        return 1
    if os.environ.get("TRITON_INTERPRET", "0") not in ("0", ""):
        print("gpu-report: TRITON_INTERPRET is set, so the kernels would run in the CPU interpreter; unset it.")
        return 1
    extra_path = install_wheelhouse(args.wheelhouse, SITE, print)
    if extra_path:
        sys.path.insert(0, extra_path)
    command = "make gpu-report" + (f' BENCH="{" ".join(args.bench)}"' if args.bench else "")
    run_report(benches, machine_info(command), args.output_dir, budget=args.budget, tests_timeout=args.tests_timeout,
               test_paths=[] if args.no_tests else None, extra_path=extra_path,
               say=lambda msg: print(msg, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
