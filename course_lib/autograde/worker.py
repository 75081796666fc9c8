"""A grading worker: one long-lived process per parallel slot, one submission at a time.

Started by the batch (``batch.py``) as ``python -m course_lib.autograde.worker BATCH_DIR SLOT``.
It first moves itself into a private network namespace (loopback only, so kernels it starts
can talk to it and to nothing else) and a private mount namespace (its scratch tmpfs vanishes
with it), then reads one job per line on stdin (``{"student": ...}``) and, for each, writes
``BATCH_DIR/results/<student>/result.json`` (plus the autograded notebook and the feedback
page) and answers ``done <student>`` on stdout. It never writes the course's gradebook: the
batch's parent process is its only writer.

Per submission: intake (``notebook.intake``) -> nbgrader autograde of the rebuilt notebook with
the kernel in the sandbox -> extraction of the definitions -> the independent check in a
fresh sandbox -> a test cell scores its notebook points only if its check passed too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import nbformat

from . import check, feedback, jail
from .extract import extract_definitions
from .notebook import IntakeLimits, KernelSettings, SandboxedKernelManager, SubmissionError, intake, run_autograde


@dataclasses.dataclass
class Settings:
    """Everything a worker needs, written by the batch into ``BATCH_DIR/settings.json``."""

    course_root: str
    assignment: str
    notebook: str
    submitted_dir: str
    release_nb: str  # the released notebook (the template every submission is rebuilt from)
    release_files_dir: str  # the release folder: its other files are copied next to the notebook
    template_db: str  # snapshot of the gradebook to copy for each private nbgrader run
    prepared_dir: str  # check.save_prepared output
    grade_cells: dict  # grade_id -> points, in notebook order
    hidden_cells: list
    notebook_seed_key: str  # hex key; the notebook's hidden tests get a per-student seed derived from it
    sandbox: bool = True
    cell_timeout: int | None = None
    check_time_s: float = check.DEFAULT_CHECK_TIME_S
    kernel_limits: dict = dataclasses.field(default_factory=lambda: dataclasses.asdict(jail.Limits(cpu_s=600)))
    check_limits: dict = dataclasses.field(default_factory=lambda: dataclasses.asdict(jail.Limits(cpu_s=120)))
    intake_limits: dict = dataclasses.field(default_factory=lambda: dataclasses.asdict(IntakeLimits()))
    max_output_bytes: int = 1_000_000
    scratch_mb: int = 2048


def notebook_seed(key_hex: str, student: str) -> str:
    """The seed the notebook's own hidden tests get inside the sandbox: derived from the grading
    seed by a one-way hash, per student. It is not the seed of the independent check, so code
    that reads it learns nothing about the inputs that decide the score."""
    import hashlib
    import hmac

    digest = hmac.new(bytes.fromhex(key_hex), student.encode(), hashlib.sha256).digest()
    return str(int.from_bytes(digest[:4], "little"))  # small: course_lib.grading.rng multiplies it


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def grade_one(settings: Settings, student: str, uid: int, batch_dir: Path, scratch: Path) -> dict:
    started = time.monotonic()
    out_dir = batch_dir / "results" / student
    out_dir.mkdir(parents=True, exist_ok=True)
    work = scratch / f"{student}-{os.getpid()}-{int(time.time() * 1000)}"
    work.mkdir(parents=True)
    result: dict = {
        "student": student, "assignment": settings.assignment, "status": "graded", "messages": [],
        "cells": {}, "score": 0.0, "max_score": float(sum(settings.grade_cells.values())),
        "graded_at": dt.datetime.now().isoformat(timespec="seconds"), "timestamp": None,
    }
    notebook_out = None
    try:
        release_nb = nbformat.read(settings.release_nb, as_version=4)
        submission = Path(settings.submitted_dir) / student / settings.assignment
        try:
            taken = intake(submission, settings.notebook, release_nb, settings.assignment,
                           IntakeLimits(**settings.intake_limits))
        except SubmissionError as err:
            result["status"] = "rejected"
            result["messages"].append(str(err))
            for gid, points in settings.grade_cells.items():
                result["cells"][gid] = {"max": points, "notebook": 0.0, "notebook_passed": False,
                                        "notebook_reason": "not graded", "check": None, "final": 0.0}
            return result
        from .notebook import read_timestamp

        result["timestamp"] = read_timestamp(submission)
        result["messages"].extend(taken.notes)

        # A private course: the gradebook snapshot, the release's extra files, this submission.
        private = work / "course"
        (private / "source" / settings.assignment).mkdir(parents=True)
        release_dir = Path(settings.release_files_dir)
        for p in release_dir.iterdir():
            if p.is_file() and p.suffix != ".ipynb":
                shutil.copy2(p, private / "source" / settings.assignment / p.name)
        sub_dir = private / "submitted" / student / settings.assignment
        sub_dir.mkdir(parents=True)
        nbformat.write(taken.notebook, sub_dir / settings.notebook)
        for rel, host in taken.files:
            target = sub_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(host, target, follow_symlinks=False)
        if result["timestamp"]:
            (sub_dir / "timestamp.txt").write_text(result["timestamp"])
        shutil.copy2(settings.template_db, private / "gradebook.db")

        SandboxedKernelManager.settings = KernelSettings(
            uid=uid, limits=jail.Limits(**settings.kernel_limits),
            env={"COURSE_GRADING_SEED": notebook_seed(settings.notebook_seed_key, student)},
            scratch=str(work / "kernels"), sandbox=settings.sandbox)
        from traitlets.config.loader import PyFileConfigLoader

        base_config = PyFileConfigLoader("nbgrader_config.py", path=settings.course_root).load_config()
        overrides = {"max_output_bytes": settings.max_output_bytes, "raise_on_iopub_timeout": True,
                     "interrupt_on_timeout": True, "shutdown_kernel": "immediate"}
        if settings.cell_timeout:
            overrides["timeout"] = settings.cell_timeout
        t_nb = time.monotonic()
        run = run_autograde(private, base_config, settings.assignment, student, settings.notebook, overrides)
        if not run.ok:  # once more, in a clean copy, in case the machine was at fault
            result["messages"].append(f"the first notebook run failed ({run.error[:200]}); it was run again")
            shutil.rmtree(private / "autograded", ignore_errors=True)
            shutil.copy2(settings.template_db, private / "gradebook.db")
            run = run_autograde(private, base_config, settings.assignment, student, settings.notebook, overrides)
        result["timings"] = {"notebook": round(time.monotonic() - t_nb, 2)}
        notebook_out = run.notebook
        if not run.ok:
            result["messages"].append("the notebook could not be run to the end by the grader"
                                      + (f" ({run.error.splitlines()[0][:200]})" if run.error else ""))
            result["grader_log"] = run.log[-5000:]
        for event in run.kernel_events:
            result["messages"].append(f"during the notebook run, {event}")

        definitions, notes = extract_definitions(taken.code_cells)
        result["messages"].extend(notes)
        prepared = check.load_prepared(settings.prepared_dir)
        t_check = time.monotonic()
        checks = check.run(prepared, definitions, work / "check", check.RunSettings(
            uid=uid, limits=jail.Limits(**settings.check_limits), check_time_s=settings.check_time_s,
            sandbox=settings.sandbox), notes=result["messages"])
        result["timings"]["check"] = round(time.monotonic() - t_check, 2)

        cells_by_id = {}
        if notebook_out is not None:
            for cell in notebook_out.cells:
                gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
                if gid:
                    cells_by_id.setdefault(gid, cell)
        total = 0.0
        for gid, points in settings.grade_cells.items():
            hidden = gid in settings.hidden_cells
            nb_score = run.scores.get(gid, (None, points))[0] if run.ok else 0.0
            passed, reason = feedback.notebook_outcome(cells_by_id.get(gid), hidden)
            if not run.ok and passed:
                passed, reason = False, "the notebook run did not finish"
            chk = checks.get(gid)
            nb_points = float(nb_score or 0.0)
            final = nb_points if chk is None or chk.passed else 0.0
            total += final
            result["cells"][gid] = {
                "max": points, "notebook": nb_points, "notebook_passed": passed and nb_points > 0,
                "notebook_reason": reason, "check": None if chk is None else {"passed": chk.passed, "reason": chk.reason},
                "final": final}
        result["score"] = total
    except Exception:  # noqa: BLE001 - a grader bug must not stop the batch; the instructor sees it
        result["status"] = "error"
        result["messages"].append("the grader failed on this submission; the instructor has the details")
        result["grader_error"] = traceback.format_exc()[-5000:]
        for gid, points in settings.grade_cells.items():
            result["cells"].setdefault(gid, {"max": points, "notebook": 0.0, "notebook_passed": False,
                                             "notebook_reason": "not graded", "check": None, "final": 0.0})
        result["score"] = 0.0
    finally:
        if settings.sandbox:
            jail.clear_uid(uid)  # nothing of this student's keeps running
        result["seconds"] = round(time.monotonic() - started, 2)
        if notebook_out is not None:
            _write_atomic(out_dir / "autograded.ipynb", nbformat.writes(notebook_out).encode())
        page = feedback.render(result, notebook_out, set(settings.hidden_cells))
        _write_atomic(out_dir / "feedback.html", page.encode())
        _write_atomic(out_dir / "result.json", json.dumps(result, indent=1).encode())
        shutil.rmtree(work, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    batch_dir, slot = Path(argv[0]), int(argv[1])
    jail.set_parent_death_signal()
    settings = Settings(**json.loads((batch_dir / "settings.json").read_text(encoding="utf-8")))
    scratch = batch_dir / f"scratch{slot}"
    scratch.mkdir(exist_ok=True)
    uid = jail.lease_uid() if settings.sandbox else os.getuid()
    (batch_dir / f"uid{slot}").write_text(str(uid))  # for the instructor (and the tests) to see
    if settings.sandbox:
        jail.enter_private_network_and_mounts()
        jail._mount("tmpfs", str(scratch), "tmpfs", jail.MS_NOSUID | jail.MS_NODEV,
                    f"size={settings.scratch_mb}m,mode=0755")
    import nbgrader.api  # noqa: F401 - loaded once, before the first submission arrives
    import nbgrader.converters  # noqa: F401
    from .notebook import _installed_modules

    _installed_modules()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        student = json.loads(line)["student"]
        grade_one(settings, student, uid, batch_dir, scratch)
        sys.stdout.write(f"done {student}\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
