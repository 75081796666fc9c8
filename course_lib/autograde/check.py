"""The independent check, outside the sandbox: inputs, references, running, comparing.

:func:`prepare` runs once per batch: it draws every check's cases (hidden ones from the grading
seed), computes the expected outcome of each with the spec's ``course_lib`` reference, and
writes the job folder the sandbox will see (inputs only) and the expected outcomes (which the
sandbox never sees).

:func:`run` runs once per submission: it starts ``runner.py`` in a fresh sandbox on the
student's extracted definitions, watches its progress (a check that runs past its time limit
is killed, marked failed, and the runner is started again for the checks after it), then reads
the results as plain data and compares them with :mod:`course_lib.grading`. A check passes only
if every one of its cases matches. Feedback for hidden checks names the case number and the
kind of mismatch, never the inputs or the values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from course_lib import grading

from . import jail, wire
from .spec import AssignmentSpec, Check, load_spec

HERE = Path(__file__).resolve().parent
PROGRESS_MAX_BYTES = 16 * 1024 * 1024
RESULT_FILE_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_CHECK_TIME_S = 30.0
OUT_MB = 512  # the tmpfs the runner writes its results to
LOAD_TIME_S = 60.0


@dataclasses.dataclass
class CheckResult:
    cell: str
    function: str
    points: float
    hidden: bool
    passed: bool
    reason: str  # for the student; for hidden checks, no inputs or values

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Prepared:
    """One batch's checks: where the sandbox inputs are and what each case should give."""

    spec: AssignmentSpec
    job_dir: Path  # job.json template + inputs.safetensors (what the sandbox sees)
    expected: list[list[tuple[str, Any]]]  # per check, per case: ("value", v) or ("raises", name)


# ---- preparing ----------------------------------------------------------------------------


def _clone(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.clone()
    if isinstance(v, tuple):
        return tuple(_clone(x) for x in v)
    if isinstance(v, list):
        return [_clone(x) for x in v]
    if isinstance(v, dict):
        return {k: _clone(x) for k, x in v.items()}
    if isinstance(v, (set, frozenset)):
        return set(v)
    if isinstance(v, torch.Generator):
        copy = torch.Generator(device=v.device)
        copy.set_state(v.get_state())
        return copy
    return v


def prepare(spec: AssignmentSpec, seed: int, job_dir: str | os.PathLike) -> Prepared:
    """Draw the cases, compute the references, write ``job_dir`` (inputs only)."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    checks_json, expected = [], []
    for index, check in enumerate(spec.checks):
        cases = check.make_cases(seed, spec.assignment)
        if not cases:
            raise ValueError(f"check {check.cell!r} has no cases")
        encoded, outcomes = [], []
        for i, c in enumerate(cases):
            prefix = f"c{index}.{i}"
            encoded.append({"args": wire.encode(tuple(c.args), tensors, prefix)["$tuple"],
                            "kwargs": wire.encode(dict(c.kwargs), tensors, prefix)})
            try:
                value = check.reference(*_clone(tuple(c.args)), **_clone(dict(c.kwargs)))
            except Exception as err:  # noqa: BLE001 - the reference refusing the input is the expected outcome
                outcomes.append(("raises", type(err).__name__))
            else:
                outcomes.append(("value", _clone(value)))
        checks_json.append({"index": index, "cell": check.cell, "function": check.function, "cases": encoded})
        expected.append(outcomes)
    (job_dir / "inputs.safetensors").write_bytes(st_save(tensors) if tensors else st_save({"_": torch.zeros(0)}))
    (job_dir / "checks.json").write_text(json.dumps(checks_json), encoding="utf-8")
    shutil.copy2(HERE / "runner.py", job_dir / "runner.py")
    shutil.copy2(HERE / "wire.py", job_dir / "wire.py")
    for p in job_dir.iterdir():
        os.chmod(p, 0o644)
    os.chmod(job_dir, 0o755)
    return Prepared(spec, job_dir, expected)


def save_prepared(prepared: Prepared, directory: str | os.PathLike) -> None:
    """Write what a worker needs to judge results (check metadata, expected outcomes) to a
    folder the sandbox never sees."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    outcomes = [[[kind, wire.encode(v, tensors, f"e{k}.{i}") if kind == "value" else v]
                 for i, (kind, v) in enumerate(per_check)] for k, per_check in enumerate(prepared.expected)]
    spec = prepared.spec
    custom = [c.cell for c in spec.checks if c.compare is not None]
    if custom and not spec.source_path:
        raise ValueError(f"checks {custom} have their own compare functions, which the workers reload from the "
                         "spec file: load the spec with load_spec()")
    meta = {
        "assignment": spec.assignment, "notebook": spec.notebook, "preamble": spec.preamble,
        "course_lib_visible": spec.course_lib_visible, "unchecked_cells": list(spec.unchecked_cells),
        "job_dir": str(prepared.job_dir), "outcomes": outcomes,
        "spec_file": spec.source_path if custom else "",
        "spec_sha256": _sha256(spec.source_path) if custom else "",
        "checks": [{"cell": c.cell, "function": c.function, "points": c.points, "hidden": c.hidden,
                    "rtol": c.rtol, "atol": c.atol, "time_limit_s": c.time_limit_s,
                    "tolerances": _tolerances_to_json(c.tolerances), "custom_compare": c.compare is not None}
                   for c in spec.checks],
    }
    (directory / "expected.safetensors").write_bytes(st_save(tensors) if tensors else st_save({"_": torch.zeros(0)}))
    (directory / "expected.json").write_text(json.dumps(meta), encoding="utf-8")


def load_prepared(directory: str | os.PathLike) -> Prepared:
    directory = Path(directory)
    meta = json.loads((directory / "expected.json").read_text(encoding="utf-8"))
    tensors = st_load((directory / "expected.safetensors").read_bytes())
    checks = [Check(c["cell"], c["function"], c["points"], reference=None, cases=[], hidden=c["hidden"],
                    rtol=c["rtol"], atol=c["atol"], time_limit_s=c["time_limit_s"],
                    tolerances=_tolerances_from_json(c.get("tolerances"))) for c in meta["checks"]]
    if any(c.get("custom_compare") for c in meta["checks"]):
        # The compare functions are code: reload them from the instructor's spec file, the very
        # file the references were computed from.
        if _sha256(meta["spec_file"]) != meta["spec_sha256"]:
            raise RuntimeError(f"{meta['spec_file']} changed while the batch was running: grade again")
        source = load_spec(meta["spec_file"], meta["assignment"])
        for c, saved in zip(checks, meta["checks"]):
            if saved.get("custom_compare"):
                (original,) = source.check_for(c.cell)
                c.compare = original.compare
    spec = AssignmentSpec(notebook=meta["notebook"], checks=checks, preamble=meta["preamble"],
                          course_lib_visible=meta["course_lib_visible"],
                          unchecked_cells=tuple(meta["unchecked_cells"]), assignment=meta["assignment"])
    expected = [[(kind, wire.decode(v, tensors) if kind == "value" else v) for kind, v in per_check]
                for per_check in meta["outcomes"]]
    return Prepared(spec, Path(meta["job_dir"]), expected)


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _tolerances_to_json(tolerances: dict | None) -> dict | None:
    if tolerances is None:
        return None
    return {str(dtype).removeprefix("torch."): [float(r), float(a)] for dtype, (r, a) in tolerances.items()}


def _tolerances_from_json(data: dict | None) -> dict | None:
    if data is None:
        return None
    return {getattr(torch, name): (r, a) for name, (r, a) in data.items()}


# ---- comparing ----------------------------------------------------------------------------


class Mismatch(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind, self.detail = kind, detail


def compare_result(got: Any, expected: Any, label: str, check: Check) -> None:
    """Raise :class:`Mismatch` unless ``got`` (the student's result, as plain data) answers like
    ``expected`` (the reference's): the check's own ``compare`` where it has one, else
    :func:`_compare`."""
    if check.compare is None:
        _compare(got, expected, label, check)
        return
    try:
        check.compare(got, expected)
    except grading.GradingError as err:
        raise Mismatch("values", f"{label}: {err}") from None
    except Exception as err:  # noqa: BLE001 - a compare tripping over a malformed answer: the answer is wrong
        raise Mismatch("type", f"{label}: the result could not be checked ({type(err).__name__}: {str(err)[:200]})") from None


def _compare(got: Any, expected: Any, label: str, check: Check) -> None:
    if isinstance(expected, torch.Tensor):
        if type(got) is not torch.Tensor:
            raise Mismatch("type", f"{label}: expected a torch.Tensor, got {_typename(got)}")
        if tuple(got.shape) != tuple(expected.shape):
            raise Mismatch("shape", f"{label}: wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}")
        if got.dtype != expected.dtype:
            raise Mismatch("dtype", f"{label}: wrong dtype: expected {expected.dtype}, got {got.dtype}")
        if got.is_floating_point() and bool((~torch.isfinite(got) & torch.isfinite(expected)).any()):
            raise Mismatch("nonfinite", f"{label}: non-finite values (nan or inf) where finite ones were expected")
        rtol, atol = (check.tolerances or {}).get(expected.dtype, (check.rtol, check.atol))
        try:
            grading.check_tensor(got, expected, label, rtol=rtol, atol=atol)
        except grading.GradingError as err:
            raise Mismatch("values", str(err)) from None
        return
    if isinstance(expected, tuple):
        if type(got) is not tuple:
            raise Mismatch("type", f"{label}: expected a tuple of {len(expected)} results, got {_typename(got)}")
        if len(got) != len(expected):
            raise Mismatch("structure", f"{label}: expected a tuple of {len(expected)} results, got {len(got)}")
        for j, (g, e) in enumerate(zip(got, expected)):
            _compare(g, e, f"{label}, result {j}", check)
        return
    if isinstance(expected, list):
        if type(got) is not list or len(got) != len(expected):
            raise Mismatch("structure", f"{label}: expected a list of {len(expected)} items")
        for j, (g, e) in enumerate(zip(got, expected)):
            _compare(g, e, f"{label}, item {j}", check)
        return
    if isinstance(expected, dict):
        if type(got) is not dict or set(got) != set(expected):
            raise Mismatch("structure", f"{label}: expected a dict with keys {sorted(expected)}")
        for key in expected:
            _compare(got[key], expected[key], f"{label}[{key!r}]", check)
        return
    if isinstance(expected, (bool, int, set)) or expected is None or isinstance(expected, str):
        if type(got) is not type(expected) or got != expected:
            raise Mismatch("values", f"{label}: expected {expected!r}, got {got!r}")
        return
    if isinstance(expected, (int, float)):
        if type(got) not in (int, float):
            raise Mismatch("type", f"{label}: expected a number, got {_typename(got)}")
        try:
            grading.check_scalar(got, float(expected), label)
        except grading.GradingError as err:
            raise Mismatch("values", str(err)) from None
        return
    raise Mismatch("type", f"{label}: cannot compare a {type(expected).__name__}")


def _typename(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"$unsendable"}:
        return value["$unsendable"]
    return type(value).__name__


HIDDEN_WORDING = {
    "type": "returned the wrong type of result",
    "structure": "returned the wrong number of results",
    "shape": "wrong shape",
    "dtype": "wrong dtype",
    "nonfinite": "non-finite values (nan or inf)",
    "values": "wrong values",
}


# ---- reading what came out of the sandbox -------------------------------------------------


def safe_read(path: Path, max_bytes: int) -> bytes | None:
    """A regular file's bytes, never following a link (the sandbox wrote the folder)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks) if total <= max_bytes else None
    finally:
        os.close(fd)


def _events(out_dir: Path) -> list[dict]:
    raw = safe_read(out_dir / "progress.jsonl", PROGRESS_MAX_BYTES) or b""
    events = []
    for line in raw.split(b"\n"):
        try:
            ev = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(ev, dict) and isinstance(ev.get("event"), str):
            events.append(ev)
    return events


class _Tail:
    """The progress file's new complete lines since the last call (never following a link)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial = path, 0, b""

    def new_events(self) -> list[dict]:
        if self.offset > PROGRESS_MAX_BYTES:
            return []
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return []
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return []
            os.lseek(fd, self.offset, os.SEEK_SET)
            chunk = os.read(fd, 1 << 20)
        finally:
            os.close(fd)
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        events = []
        for line in lines:
            try:
                ev = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(ev, dict) and isinstance(ev.get("event"), str):
                events.append(ev)
        return events


def _index(v: Any, n: int) -> int | None:
    return v if type(v) is int and 0 <= v < n else None


# ---- running ------------------------------------------------------------------------------


@dataclasses.dataclass
class RunSettings:
    uid: int = jail.SANDBOX_UID_BASE  # the worker's leased uid
    limits: jail.Limits = dataclasses.field(default_factory=lambda: jail.Limits(cpu_s=120))
    check_time_s: float = DEFAULT_CHECK_TIME_S
    sandbox: bool = True


def run(prepared: Prepared, definitions: list[tuple[str, str]], workdir: str | os.PathLike,
        settings: RunSettings, notes: list[str] | None = None) -> dict[str, CheckResult]:
    """Check one student's definitions ((label, statement) pairs from ``extract``); returns
    {test cell grade_id: CheckResult}. Statements that raised when loaded go to ``notes``."""
    spec = prepared.spec
    workdir = Path(workdir)
    all_checks = json.loads((prepared.job_dir / "checks.json").read_text(encoding="utf-8"))
    results: dict[str, CheckResult] = {}
    remaining = list(range(len(spec.checks)))
    attempt = 0
    while remaining:
        attempt += 1
        job_dir = workdir / f"job{attempt}"
        out_dir = workdir / f"out{attempt}"
        job_dir.mkdir(parents=True)
        out_dir.mkdir(parents=True)
        for name in ("inputs.safetensors", "runner.py", "wire.py"):
            os.link(prepared.job_dir / name, job_dir / name) if _same_fs(prepared.job_dir, job_dir) else \
                shutil.copy2(prepared.job_dir / name, job_dir / name)
        job = {"preamble": spec.preamble, "definitions": definitions, "checks": [all_checks[i] for i in remaining]}
        (job_dir / "job.json").write_text(json.dumps(job), encoding="utf-8")
        os.chmod(job_dir / "job.json", 0o644)
        os.chmod(job_dir, 0o755)
        mounted = settings.sandbox and jail.private_tmpfs(out_dir, OUT_MB, settings.uid)  # its own quota
        if settings.sandbox and not mounted:
            os.chown(out_dir, settings.uid, settings.uid)
        os.chmod(out_dir, 0o700)
        try:
            code, killed_for = _run_runner(spec, job_dir, out_dir, workdir / f"log{attempt}", settings, remaining)
            if attempt == 1 and notes is not None:
                for ev in _events(out_dir):
                    n = _index(ev.get("statement"), len(definitions)) if ev["event"] == "skipped" else None
                    if n is not None:
                        notes.append(f"the checker skipped your statement at {definitions[n][0]}: it raised "
                                     f"{str(ev.get('error', 'an error'))[:80]} when run on its own")
            finished_here = _collect(prepared, remaining, out_dir, code, killed_for, settings, results)
        finally:
            if mounted:
                jail.unmount(out_dir)
        remaining = [i for i in remaining if spec.checks[i].cell not in results]
        if not finished_here and remaining:  # nothing more can be learned by running again
            for i in remaining:
                results[spec.checks[i].cell] = _fail(spec.checks[i], "the check could not run: " + jail.describe_exit(code))
            break
    return {c.cell: results[c.cell] for c in spec.checks}


def _same_fs(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


def _fail(check: Check, reason: str) -> CheckResult:
    return CheckResult(check.cell, check.function, check.points, check.hidden, False, reason)


def _run_runner(spec: AssignmentSpec, job_dir: Path, out_dir: Path, log_path: Path, settings: RunSettings,
                remaining: list[int]) -> tuple[int | None, str | None]:
    ro = jail.python_paths() + ([jail.course_lib_path()] if spec.course_lib_visible else [])
    if settings.sandbox:
        argv = [sys.executable, "-I", "/job/runner.py", "/job", "/out"]
        binds = [[str(job_dir), "/job", False], [str(out_dir), "/out", True]]
    else:
        argv = [sys.executable, "-I", str(job_dir / "runner.py"), str(job_dir), str(out_dir)]
        binds = []
    env = jail.base_env()
    spec_file = jail.write_spec(jail.JailSpec(
        argv=argv, env=env, log_path=str(log_path), ro_paths=ro, binds=binds, uid=settings.uid,
        new_net=True, loopback=False, limits=settings.limits, sandbox=settings.sandbox, parent_pid=os.getpid(),
        scratch_dir=str(job_dir.parent / (job_dir.name + "-scratch")) if not settings.sandbox else None,
    ), job_dir.parent / (job_dir.name + ".jail.json"))
    if not settings.sandbox:
        (job_dir.parent / (job_dir.name + "-scratch")).mkdir()
    else:
        jail.clear_uid(settings.uid)  # a crashed earlier jail of this slot may still be exiting
    proc = subprocess.Popen(jail.launcher_argv(spec_file), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    limits = [spec.checks[i].time_limit_s or settings.check_time_s for i in remaining]
    # Progress lines move the per-check watchdog, but the student's code can write them too:
    # the whole run also has a total budget that no line can extend.
    total_budget = LOAD_TIME_S + sum(limits) + 5.0 * (len(limits) + 1)
    started = time.monotonic()
    phase_start, phase, killed_for = started, "load", None
    tail = _Tail(out_dir / "progress.jsonl")
    while proc.poll() is None:
        time.sleep(0.05)
        for ev in tail.new_events():
            if ev["event"] in ("loaded", "start", "done"):
                phase_start = time.monotonic()
                phase = ("check", _index(ev.get("check"), len(remaining))) if ev["event"] == "start" else "between"
        now = time.monotonic()
        if phase == "load":
            budget = LOAD_TIME_S
        elif phase == "between":
            budget = 5.0
        else:
            budget = limits[phase[1]] if phase[1] is not None else 5.0
        if now - phase_start > budget or now - started > total_budget:
            killed_for = f"ran past its time limit of {budget:g} s"
            _killpg(proc)
            break
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        _killpg(proc)
        code = proc.wait()
    return code, killed_for


def _killpg(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _collect(prepared: Prepared, remaining: list[int], out_dir: Path, code: int | None, killed_for: str | None,
             settings: RunSettings, results: dict[str, CheckResult]) -> bool:
    """Turn one runner's output into results; True if at least one check was settled."""
    spec = prepared.spec
    events = _events(out_dir)
    n = len(remaining)
    outcome = "killed: " + killed_for if killed_for else jail.describe_exit(code, settings.limits)
    if not any(ev["event"] in ("loaded", "load_error") for ev in events):
        for i in remaining:
            results[spec.checks[i].cell] = _fail(spec.checks[i], f"your definitions could not be loaded ({outcome})")
        return True
    load_error = next((ev for ev in events if ev["event"] == "load_error"), None)
    if load_error is not None:
        err = str(load_error.get("error", "an error"))[:100]
        for i in remaining:
            results[spec.checks[i].cell] = _fail(spec.checks[i], f"loading your solution cells raised {err}")
        return True
    per_check: dict[int, dict[int, dict]] = {}
    started, done = set(), set()
    for ev in events:
        k = _index(ev.get("check"), n)
        if k is None:
            continue
        if ev["event"] == "start":
            started.add(k)
        elif ev["event"] == "done":
            done.add(k)
        elif ev["event"] == "result":
            i = ev.get("case")
            if type(i) is int and 0 <= i < len(prepared.expected[remaining[k]]):
                per_check.setdefault(k, {}).setdefault(i, ev)  # the first word on a case counts
    settled = False
    for k, index in enumerate(remaining):
        check = spec.checks[index]
        expected = prepared.expected[index]
        cases = per_check.get(k, {})
        if len(cases) == len(expected):
            results[check.cell] = _judge(check, expected, cases, out_dir, k)
            settled = True
        elif k in started:
            # The runner stopped in this check: it hung, crashed or hit a limit here.
            results[check.cell] = _fail(check, f"{check.function} did not finish (case {len(cases) + 1} of "
                                               f"{len(expected)}): {outcome}")
            settled = True
            break  # the checks after it run again in a fresh sandbox
    return settled


def _judge(check: Check, expected: list[tuple[str, Any]], cases: dict[int, dict], out_dir: Path, k: int) -> CheckResult:
    n = len(expected)
    for i, (kind, want) in enumerate(expected):
        ev = cases.get(i, {})
        where = f"hidden case {i + 1} of {n}" if check.hidden else f"{check.function} (case {i + 1} of {n})"
        status = ev.get("status")
        if status == "missing":
            return _fail(check, f"no function named {check.function} is defined in your solution cells")
        if kind == "raises":
            raised = ev.get("exc") if status == "raised" else None
            if isinstance(raised, list) and want in raised[:50]:
                continue
            if status == "raised":
                got = str(raised[0])[:80] if isinstance(raised, list) and raised else "an exception"
                return _fail(check, f"{where}: expected {want}, but {got} was raised")
            return _fail(check, f"{where}: expected {want} to be raised, but the function returned normally")
        if status == "raised":
            exc = ev.get("exc")
            name = str(exc[0])[:80] if isinstance(exc, list) and exc else "an exception"
            message = "" if check.hidden else f": {str(ev.get('message', ''))[:200]}"
            return _fail(check, f"{where}: raised {name}{message}")
        if status == "unsendable":
            return _fail(check, f"{where}: returned a {str(ev.get('type', '?'))[:80]}, which is not a plain tensor result")
        if status != "returned":
            return _fail(check, f"{where}: no result")
        tensors: dict[str, torch.Tensor] = {}
        raw = safe_read(out_dir / f"r{k}_{i}.safetensors", RESULT_FILE_MAX_BYTES)
        if raw is not None:
            try:
                tensors = st_load(raw)
            except Exception:  # noqa: BLE001 - a malformed file is a wrong answer
                return _fail(check, f"{where}: the result could not be read back")
        try:
            got = wire.decode(ev.get("value"), tensors)
        except (ValueError, RecursionError):
            return _fail(check, f"{where}: the result could not be read back")
        try:
            compare_result(got, want, where, check)
        except Mismatch as m:
            return _fail(check, f"{where}: {HIDDEN_WORDING.get(m.kind, 'wrong result')}" if check.hidden else m.detail)
    return CheckResult(check.cell, check.function, check.points, check.hidden, True, "passed")
