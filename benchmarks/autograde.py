"""Autograding throughput: one worker vs one per core, on a class of generated submissions.

``python -m benchmarks.autograde [--submissions 100] [--jobs 1 N]`` builds a temporary course
(a copy of solutions/, exercises/ and nbgrader_config.py) with N submissions of ch01_embeddings
(a rotating mix: correct, one task wrong, the blank release), grades it once per worker count
with the instructor's command (sandbox on, the course's own timeouts), and prints submissions
per minute and the speed-up. CPU only; no GPU needed. Writes nothing in the repository.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from benchmarks.harness import record_result

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "ch01_embeddings"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
WRONG_COSINE = """def cosine_similarity_matrix(A, B, eps=1e-8):
    return (A / A.norm(dim=1, keepdim=True).clamp_min(eps)) @ B.T
"""


def build_course(directory: Path, n: int) -> None:
    from course_lib import nbgrader_tools

    shutil.copytree(ROOT / "solutions", directory / "solutions", ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    shutil.copytree(ROOT / "exercises", directory / "exercises")
    shutil.copy2(ROOT / "nbgrader_config.py", directory / "nbgrader_config.py")
    release = nbformat.read(directory / "exercises" / ASSIGNMENT / NOTEBOOK, as_version=4)
    source = nbformat.read(directory / "solutions" / ASSIGNMENT / NOTEBOOK, as_version=4)
    full = nbgrader_tools.fill_solutions(release, source)
    wrong = copy.deepcopy(full)
    for cell in wrong.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "task3_cosine_similarity_matrix":
            cell.source = WRONG_COSINE
    kinds = [full, full, wrong, release]
    for i in range(n):
        target = directory / "submitted" / f"student{i:03d}" / ASSIGNMENT
        target.mkdir(parents=True)
        nbformat.write(kinds[i % len(kinds)], target / NOTEBOOK)


def grade(course: Path, jobs: int, seed: int) -> float:
    # As on a grading server without a GPU: CPU tensors take course_lib's plain PyTorch path.
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "COURSE_GRADING_SEED")}
    for name in ("gradebook.db", "autograded", "feedback", "grades"):
        path = course / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "course_lib.autograde", ASSIGNMENT, "--course-dir", str(course),
           "--seed", str(seed), "--jobs", str(jobs), "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"grading failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.autograde", description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=100)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, os.cpu_count() or 1],
                        help="worker counts to compare (default: 1 and one per core)")
    parser.add_argument("--seed", type=int, default=20260101)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="autograde-bench-") as tmp:
        course = Path(tmp) / "course"
        build_course(course, args.submissions)
        rows = []
        for jobs in dict.fromkeys(args.jobs):
            seconds = grade(course, jobs, args.seed)
            rows.append((jobs, seconds, args.submissions / seconds * 60))
        base = rows[0][1]
        title = f"autograde {ASSIGNMENT}: {args.submissions} submissions, {os.cpu_count()} cores, sandbox on"
        for i, (jobs, seconds, rate) in enumerate(rows):  # for `make gpu-report`; no-op otherwise
            record_result(title, f"{args.submissions} submissions", f"{jobs} worker(s)", rate, "submissions/min",
                          higher_is_better=True, role="peer" if i == 0 else "ours", extra={"seconds": seconds})
        print(title)
        print(f"{'workers':>8} {'seconds':>9} {'subs/min':>9} {'speed-up':>9}")
        for jobs, seconds, rate in rows:
            print(f"{jobs:>8} {seconds:>9.1f} {rate:>9.1f} {base / seconds:>8.2f}x")
    return 0


def run() -> None:
    main([])


if __name__ == "__main__":
    sys.exit(main())
