"""The instructor's command line (``make grade ASSIGNMENT=...`` runs it)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import batch, check
from .batch import GradingError, Options

SEED_ENV = "COURSE_GRADING_SEED"


def _course_root(arg: str | None) -> Path:
    if arg:
        return Path(arg).resolve()
    cwd = Path.cwd()
    if (cwd / "nbgrader_config.py").is_file():
        return cwd
    from course_lib.nbgrader_tools import course_root

    return course_root()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m course_lib.autograde",
        description="Grade every submission of an assignment (nbgrader layout submitted/<student>/<assignment>/): "
                    "sandboxed notebook run + independent re-check of each graded function; writes gradebook.db, "
                    "autograded/, feedback/<student>/<assignment>/*.html and grades/<assignment>.csv.")
    p.add_argument("assignment", help="assignment folder name, e.g. ch01_embeddings")
    p.add_argument("--seed", type=int, help=f"secret grading seed for hidden inputs (default: ${SEED_ENV}); "
                                            "use a new one every grading round")
    p.add_argument("--student", action="append", dest="students", metavar="ID",
                   help="grade only this student (repeatable)")
    p.add_argument("-j", "--jobs", type=int, default=0, help="parallel workers (default: one per core)")
    p.add_argument("--force", action="store_true", help="regrade students already recorded for this assignment")
    p.add_argument("--course-dir", help="course root (default: the current directory if it has nbgrader_config.py)")
    p.add_argument("--csv", help="where to write the grades (default: <course>/grades/<assignment>.csv)")
    p.add_argument("--cell-timeout", type=int, help="seconds per notebook cell (default: Execute.timeout of nbgrader_config.py)")
    p.add_argument("--check-timeout", type=float, default=check.DEFAULT_CHECK_TIME_S,
                   help="seconds for all cases of one independent check (default: %(default)s)")
    p.add_argument("--memory-mb", type=int, default=3072, help="address-space limit of sandboxed processes (default: %(default)s)")
    p.add_argument("--kernel-cpu", type=int, default=600, help="CPU seconds for a whole notebook run (default: %(default)s)")
    p.add_argument("--submission-timeout", type=float, default=1800.0,
                   help="wall-clock seconds for one submission, everything included (default: %(default)s)")
    p.add_argument("--no-sandbox", action="store_true",
                   help="UNSAFE: run student code without namespaces or the unprivileged user (limits still apply)")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    seed = args.seed
    if seed is None:
        raw = os.environ.get(SEED_ENV, "").strip()
        if not raw:
            print(f"error: give the secret grading seed with --seed N or ${SEED_ENV} (a new integer for every "
                  f"grading round; e.g. {batch.new_seed()})", file=sys.stderr)
            return 2
        try:
            seed = int(raw)
        except ValueError:
            print(f"error: ${SEED_ENV} must be an integer, got {raw!r}", file=sys.stderr)
            return 2
    options = Options(
        assignment=args.assignment, course_root=_course_root(args.course_dir), seed=seed, students=args.students,
        jobs=args.jobs, force=args.force, sandbox=not args.no_sandbox, csv_path=Path(args.csv) if args.csv else None,
        cell_timeout=args.cell_timeout, check_time_s=args.check_timeout, memory_mb=args.memory_mb,
        kernel_cpu_s=args.kernel_cpu, submission_timeout_s=args.submission_timeout, quiet=args.quiet)
    try:
        summary = batch.grade(options)
    except (GradingError, FileNotFoundError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"done: {len(summary.graded)} graded, {len(summary.skipped)} already graded, "
              f"{summary.seconds:.0f} s")
    return 0
