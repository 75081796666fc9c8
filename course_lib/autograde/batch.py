"""Grade a class: parallel workers, one gradebook writer, resumable.

The parent process (this module) is the only writer of the course's ``gradebook.db``. It starts
one :mod:`worker <course_lib.autograde.worker>` process per slot (default: one per core), hands
them students one at a time, and as soon as a worker reports a submission done it copies the
autograded notebook and feedback page into place (``autograded/<s>/<a>/``, ``feedback/<s>/<a>/``)
and records the scores and a ledger row in **one** SQLite transaction. A submission whose worker
crashes or runs past the per-submission deadline is recorded as 0 with the reason, and the
worker is replaced. Workers die with the parent (``PR_SET_PDEATHSIG``), so killing the grader
stops everything; grades already committed stay, and running the same command again grades only
the students without a ledger row for this assignment (``--force`` regrades everyone).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
import hashlib
import io
import json
import os
import queue
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable


from . import check, jail
from .spec import load_spec, spec_path
from .worker import Settings

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
LEDGER = "course_autograde_ledger"


class GradingError(RuntimeError):
    """A problem with the course set-up (not with a submission): the batch does not start."""


@dataclasses.dataclass
class Options:
    assignment: str
    course_root: Path
    seed: int
    students: list[str] | None = None
    jobs: int = 0  # 0: one per core
    force: bool = False
    sandbox: bool = True
    csv_path: Path | None = None
    cell_timeout: int | None = None
    check_time_s: float = check.DEFAULT_CHECK_TIME_S
    memory_mb: int = 3072
    kernel_cpu_s: int = 600
    submission_timeout_s: float = 1800.0
    quiet: bool = False


@dataclasses.dataclass
class Summary:
    graded: list[str]
    skipped: list[str]
    invalid: list[str]
    csv_path: Path
    seconds: float
    scores: dict[str, float]


# ---- the course -----------------------------------------------------------------------------


def _config(course_root: Path):
    from traitlets.config.loader import PyFileConfigLoader

    if not (course_root / "nbgrader_config.py").is_file():
        raise GradingError(f"no nbgrader_config.py in {course_root}: run the grader from the course root "
                           "or pass --course-dir")
    return PyFileConfigLoader("nbgrader_config.py", path=str(course_root)).load_config()


def _dirs(config, course_root: Path) -> dict[str, Path]:
    cd = config.CourseDirectory
    get = lambda key, default: cd[key] if key in cd else default  # noqa: E731
    return {
        "source": course_root / get("source_directory", "source"),
        "release": course_root / get("release_directory", "release"),
        "submitted": course_root / get("submitted_directory", "submitted"),
        "autograded": course_root / get("autograded_directory", "autograded"),
        "feedback": course_root / get("feedback_directory", "feedback"),
    }


def _db_url(config, course_root: Path) -> str:
    cd = config.CourseDirectory
    return cd["db_url"] if "db_url" in cd else f"sqlite:///{course_root / 'gradebook.db'}"


def _db_path(db_url: str) -> Path:
    if not db_url.startswith("sqlite:///"):
        raise GradingError(f"the grader needs an SQLite gradebook, got {db_url}")
    return Path(db_url[len("sqlite:///"):])


def ensure_assignment_in_gradebook(options: Options, config, dirs: dict[str, Path]) -> None:
    """nbgrader's autograde needs the assignment's cells in the gradebook; record them if missing
    (``generate_assignment`` into a throwaway release folder, so exercises/ is not touched)."""
    from nbgrader.api import Gradebook, MissingEntry

    db_url = _db_url(config, options.course_root)
    course_id = config.CourseDirectory["course_id"] if "course_id" in config.CourseDirectory else ""
    with Gradebook(db_url, course_id=course_id) as gb:
        try:
            gb.find_assignment(options.assignment)
            return
        except MissingEntry:
            pass
    with tempfile.TemporaryDirectory(prefix="release-") as tmp:
        cmd = [sys.executable, "-m", "nbgrader", "generate_assignment", options.assignment, "--force",
               f"--CourseDirectory.root={options.course_root}", f"--CourseDirectory.release_directory={tmp}"]
        proc = subprocess.run(cmd, cwd=options.course_root, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise GradingError(f"nbgrader generate_assignment {options.assignment} failed:\n{proc.stdout}\n{proc.stderr}")


def gradebook_cells(config, course_root: Path, assignment: str, notebook_id: str) -> dict[str, float]:
    """{grade_id: points} of the notebook's autograded test cells, in notebook order."""
    from nbgrader.api import Gradebook

    db_url = _db_url(config, course_root)
    course_id = config.CourseDirectory["course_id"] if "course_id" in config.CourseDirectory else ""
    with Gradebook(db_url, course_id=course_id) as gb:
        nb = gb.find_notebook(notebook_id, assignment)
        order = {c.name: i for i, c in enumerate(nb.source_cells)}
        cells = [(c.name, float(c.max_score)) for c in nb.grade_cells if c.cell_type == "code"]
    return dict(sorted(cells, key=lambda kv: order.get(kv[0], 1 << 30)))


# ---- the ledger (in gradebook.db) -----------------------------------------------------------


def seed_fingerprint(seed: int, assignment: str) -> str:
    return hashlib.sha256(f"course-autograde:{assignment}:{seed}".encode()).hexdigest()[:16]


def _ledger_sql(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db, timeout=60)
    con.execute(f"CREATE TABLE IF NOT EXISTS {LEDGER} (assignment TEXT NOT NULL, student TEXT NOT NULL, "
                "seed_fingerprint TEXT, status TEXT, score REAL, max_score REAL, graded_at TEXT, "
                "summary TEXT, PRIMARY KEY (assignment, student))")
    con.commit()
    return con


def ledger_rows(db: Path, assignment: str) -> dict[str, dict]:
    if not db.exists():
        return {}
    con = _ledger_sql(db)
    try:
        rows = con.execute(f"SELECT student, seed_fingerprint, status, score, max_score, graded_at, summary "
                           f"FROM {LEDGER} WHERE assignment = ?", (assignment,)).fetchall()
    finally:
        con.close()
    return {r[0]: {"seed_fingerprint": r[1], "status": r[2], "score": r[3], "max_score": r[4],
                   "graded_at": r[5], "summary": json.loads(r[6] or "{}")} for r in rows}


def record(config, course_root: Path, assignment: str, notebook_id: str, result: dict, fingerprint: str) -> None:
    """Write one student's grades and ledger row to the gradebook, committed together."""
    from nbgrader.api import Gradebook
    from sqlalchemy import text

    import warnings

    db_url = _db_url(config, course_root)
    course_id = config.CourseDirectory["course_id"] if "course_id" in config.CourseDirectory else ""
    student = result["student"]
    with warnings.catch_warnings(), Gradebook(db_url, course_id=course_id) as gb:
        warnings.simplefilter("ignore")  # nbgrader's ORM warns about autoflush under SQLAlchemy 2
        gb.update_or_create_student(student)
        kwargs = {}
        if result.get("timestamp"):
            try:
                from nbgrader.utils import parse_utc

                kwargs["timestamp"] = parse_utc(result["timestamp"])
            except Exception:  # noqa: BLE001 - an unreadable timestamp is ignored
                pass
        gb.update_or_create_submission(assignment, student, **kwargs)  # creates the grade rows
        sub_nb = gb.find_submission_notebook(notebook_id, assignment, student)
        cells = result.get("cells", {})
        for grade in sub_nb.grades:
            info = cells.get(grade.name)
            if info is None:  # a manually graded cell: left to the instructor
                grade.auto_score = None
                grade.needs_manual_grade = True
                continue
            grade.auto_score = float(info["final"])
            grade.needs_manual_grade = grade.manual_score is not None
        for comment in sub_nb.comments:
            comment.auto_comment = None
        summary = {k: result.get(k) for k in ("status", "messages", "seconds", "timings")}
        summary["cells"] = {g: {"final": c["final"], "notebook": c["notebook"],
                                "check": c["check"]["passed"] if c.get("check") else None} for g, c in cells.items()}
        gb.db.execute(text(f"CREATE TABLE IF NOT EXISTS {LEDGER} (assignment TEXT NOT NULL, student TEXT NOT NULL, "
                           "seed_fingerprint TEXT, status TEXT, score REAL, max_score REAL, graded_at TEXT, "
                           "summary TEXT, PRIMARY KEY (assignment, student))"))
        gb.db.execute(text(f"INSERT OR REPLACE INTO {LEDGER} VALUES (:a, :s, :f, :st, :sc, :mx, :at, :su)"),
                      {"a": assignment, "s": student, "f": fingerprint, "st": result["status"],
                       "sc": float(result["score"]), "mx": float(result["max_score"]),
                       "at": result.get("graded_at"), "su": json.dumps(summary)})
        gb.db.commit()  # grades and ledger row: one transaction


def _cell(text: str) -> str:
    """Spreadsheet-safe: a cell starting with = + - @ would be read as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_csv(db: Path, assignment: str, grade_cells: dict[str, float], path: Path) -> Path:
    rows = ledger_rows(db, assignment)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["student", "assignment", "score", "max_score", "status", *grade_cells, "graded_at", "messages"])
    for student in sorted(rows):
        r = rows[student]
        cells = r["summary"].get("cells", {})
        writer.writerow([student, assignment, f"{r['score']:g}", f"{r['max_score']:g}", r["status"],
                         *[f"{cells.get(g, {}).get('final', 0):g}" for g in grade_cells], r["graded_at"],
                         _cell(" | ".join(r["summary"].get("messages") or [])[:2000])])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---- the batch ------------------------------------------------------------------------------


def _preexec_worker(grader: int) -> None:
    jail.set_parent_death_signal()
    if os.getppid() != grader:  # the grader died before the signal was set: nobody wants this worker
        os._exit(1)
    os.setsid()


class _Slot:
    """One worker process; restarted after a crash or a deadline."""

    def __init__(self, batch_dir: Path, index: int, log: Path):
        self.batch_dir, self.index, self.log_path = batch_dir, index, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.pop("COURSE_GRADING_SEED", None)  # the seed stays with the parent
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "course_lib.autograde.worker", str(self.batch_dir), str(self.index)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
            preexec_fn=functools.partial(_preexec_worker, os.getpid()), cwd=self.batch_dir)
        log.close()

    def kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            self.proc = None

    def grade(self, student: str, deadline_s: float) -> str | None:
        """None when the worker reported the student done, else the reason it did not."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc and self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write((json.dumps({"student": student}) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.kill()
            return "the grading worker stopped before it could start"
        answer: queue.Queue = queue.Queue()
        reader = threading.Thread(target=lambda: answer.put(self.proc.stdout.readline()), daemon=True)
        reader.start()
        try:
            line = answer.get(timeout=deadline_s)
        except queue.Empty:
            self.kill()
            return f"grading took longer than the {deadline_s:g} s allowed per submission"
        if line.decode(errors="replace").strip() != f"done {student}":
            code = self.proc.poll() if self.proc else None
            self.kill()
            return f"the grading worker crashed ({jail.describe_exit(code if code is None or code >= 0 else 128 - code)})"
        return None


def _failed_result(student: str, assignment: str, grade_cells: dict[str, float], reason: str) -> dict:
    return {"student": student, "assignment": assignment, "status": "error", "messages": [reason],
            "score": 0.0, "max_score": float(sum(grade_cells.values())),
            "graded_at": dt.datetime.now().isoformat(timespec="seconds"), "timestamp": None,
            "cells": {g: {"max": p, "notebook": 0.0, "notebook_passed": False, "notebook_reason": "not graded",
                          "check": None, "final": 0.0} for g, p in grade_cells.items()}}


def _clean_stale_batches() -> None:
    for d in Path(tempfile.gettempdir()).glob("course-autograde-*"):
        m = re.match(r"course-autograde-(\d+)-", d.name)
        if not m:
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass


def grade(options: Options, progress: Callable[[str], None] | None = None) -> Summary:
    started = time.monotonic()
    say = progress or (lambda msg: None if options.quiet else print(msg, flush=True))
    root = options.course_root.resolve()
    options.course_root = root
    config = _config(root)
    dirs = _dirs(config, root)
    spec = load_spec(spec_path(root, options.assignment, dirs["source"].name), options.assignment)
    notebook_id = Path(spec.notebook).stem
    release_nb_path = dirs["release"] / options.assignment / spec.notebook
    if not release_nb_path.is_file():
        raise GradingError(f"no released notebook at {release_nb_path}: run `make exercises` first")
    if not dirs["submitted"].is_dir():
        raise GradingError(f"no submissions folder {dirs['submitted']} (nbgrader's layout: submitted/<student>/<assignment>/)")
    ensure_assignment_in_gradebook(options, config, dirs)
    grade_cells = gradebook_cells(config, root, options.assignment, notebook_id)
    spec.validate_against(grade_cells)
    if options.sandbox:
        try:
            jail.probe()
        except jail.SandboxUnavailable as err:
            raise GradingError(str(err)) from None

    db = _db_path(_db_url(config, root))
    fingerprint = seed_fingerprint(options.seed, options.assignment)
    done = ledger_rows(db, options.assignment)
    names = sorted(p.name for p in dirs["submitted"].iterdir()  # as nbgrader: who submitted this assignment
                   if p.is_dir() and not p.is_symlink() and (p / options.assignment).is_dir())
    invalid = [n for n in names if not STUDENT_ID.match(n)]
    for n in invalid:
        say(f"skipping {n!r}: not a valid student id")
    names = [n for n in names if STUDENT_ID.match(n)]
    if options.students:
        unknown = sorted(set(options.students) - set(names))
        if unknown:
            raise GradingError(f"no submissions for {unknown} in {dirs['submitted']}")
        names = [n for n in names if n in set(options.students)]
    other_seed = sorted(s for s, r in done.items() if r["seed_fingerprint"] != fingerprint and s in names)
    if other_seed and not options.force:
        raise GradingError(f"{len(other_seed)} submission(s) of {options.assignment} were graded with another seed "
                           f"({', '.join(other_seed[:5])}...): pass the same seed to resume, or --force to regrade all")
    skipped = [n for n in names if n in done and not options.force]
    todo = [n for n in names if n not in skipped]
    if skipped:
        say(f"{len(skipped)} already graded (ledger); grading the other {len(todo)} (use --force to regrade)")

    _clean_stale_batches()
    batch_dir = Path(tempfile.mkdtemp(prefix=f"course-autograde-{os.getpid()}-"))
    os.chmod(batch_dir, 0o711)
    graded: list[str] = []
    scores: dict[str, float] = {}
    try:
        template = batch_dir / "template.db"
        src = sqlite3.connect(db)
        dst = sqlite3.connect(template)
        src.backup(dst)
        src.close()
        dst.close()
        settings = Settings(
            course_root=str(root), assignment=options.assignment, notebook=spec.notebook,
            submitted_dir=str(dirs["submitted"]), release_nb=str(release_nb_path),
            release_files_dir=str(release_nb_path.parent), template_db=str(template),
            prepared_dir=str(batch_dir / "expected"), grade_cells=grade_cells,
            hidden_cells=[c.cell for c in spec.checks if c.hidden],
            notebook_seed_key=hashlib.sha256(f"notebook-seed:{options.assignment}:{options.seed}".encode()).hexdigest(),
            sandbox=options.sandbox, cell_timeout=options.cell_timeout, check_time_s=options.check_time_s,
            kernel_limits=dataclasses.asdict(jail.Limits(cpu_s=options.kernel_cpu_s, memory_mb=options.memory_mb, nproc=32)),
            check_limits=dataclasses.asdict(jail.Limits(cpu_s=max(60, int(options.check_time_s * len(spec.checks))),
                                                        memory_mb=options.memory_mb, nproc=16)),
        )
        (batch_dir / "settings.json").write_text(json.dumps(dataclasses.asdict(settings)), encoding="utf-8")
        jobs = options.jobs or os.cpu_count() or 1
        jobs = max(1, min(jobs, len(todo))) if todo else 1
        slots = [_Slot(batch_dir, i, batch_dir / f"worker{i}.log") for i in range(jobs)]
        for slot in slots:  # they load their libraries while the checks are prepared
            if todo:
                slot.start()
        prepared = check.prepare(spec, options.seed, batch_dir / "job")
        check.save_prepared(prepared, batch_dir / "expected")
        os.chmod(batch_dir / "expected", 0o700)
        say(f"grading {len(todo)} submission(s) of {options.assignment} with {jobs} worker(s)"
            + ("" if options.sandbox else " WITHOUT the sandbox (--no-sandbox)"))
        log_path = (options.csv_path or root / "grades" / f"{options.assignment}.csv").with_suffix(".log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        work: queue.Queue = queue.Queue()
        for n in todo:
            work.put(n)
        finished: queue.Queue = queue.Queue()

        def run_slot(slot: _Slot) -> None:
            try:
                while True:
                    try:
                        student = work.get_nowait()
                    except queue.Empty:
                        return
                    reason = slot.grade(student, options.submission_timeout_s)
                    finished.put((student, reason))
            finally:
                slot.kill()

        threads = [threading.Thread(target=run_slot, args=(s,), daemon=True) for s in slots]
        for t in threads:
            t.start()
        for count in range(1, len(todo) + 1):
            student, reason = finished.get()
            out = batch_dir / "results" / student
            result = None
            if reason is None:
                try:
                    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    reason = "the grading worker left no result"
            if result is None:
                result = _failed_result(student, options.assignment, grade_cells, reason)
            _install(dirs, options.assignment, spec.notebook, student, out)
            if not (out / "feedback.html").exists():
                from . import feedback

                page = feedback.render(result, None, set(settings.hidden_cells))
                _install_bytes(dirs["feedback"] / student / options.assignment / f"{notebook_id}.html", page.encode())
            record(config, root, options.assignment, notebook_id, result, fingerprint)
            _log(log_path, result)
            graded.append(student)
            scores[student] = float(result["score"])
            say(f"[{count}/{len(todo)}] {student}: {result['score']:g}/{result['max_score']:g} ({result['status']}"
                f", {result.get('seconds', 0):.0f} s)")
        for t in threads:
            t.join()
    finally:
        if not os.environ.get("COURSE_AUTOGRADE_KEEP"):  # set it to debug the grader itself
            shutil.rmtree(batch_dir, ignore_errors=True)
    csv_path = options.csv_path or root / "grades" / f"{options.assignment}.csv"
    export_csv(db, options.assignment, grade_cells, csv_path)
    say(f"grades: {csv_path}")
    return Summary(graded, skipped, invalid, csv_path, time.monotonic() - started, scores)


def _log(path: Path, result: dict) -> None:
    """The instructor's log of the batch: one block per submission, grader errors included."""
    lines = [f"{result.get('graded_at')} {result['student']}: {result['score']:g}/{result['max_score']:g} "
             f"{result['status']} ({result.get('seconds', 0)} s)"]
    lines += [f"    note: {m}" for m in result.get("messages", [])]
    for key in ("grader_error", "grader_log"):
        if result.get(key):
            lines += ["    " + line for line in str(result[key]).splitlines()[-60:]]
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _install_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _install(dirs: dict[str, Path], assignment: str, notebook: str, student: str, out: Path) -> None:
    stem = Path(notebook).stem
    if (out / "autograded.ipynb").is_file():
        _install_bytes(dirs["autograded"] / student / assignment / notebook, (out / "autograded.ipynb").read_bytes())
    if (out / "feedback.html").is_file():
        _install_bytes(dirs["feedback"] / student / assignment / f"{stem}.html", (out / "feedback.html").read_bytes())


def new_seed() -> int:
    return secrets.randbelow(1 << 62)
