"""The sandboxed grader on every chapter's exercise (Chapter 1 has its own adversarial class).

For each of Chapters 2-4, one temporary course (a copy of solutions/, exercises/ and
nbgrader_config.py) gets two submissions, graded with the instructor's command
``python -m course_lib.autograde``:

* ``full``  the release with the source's solutions filled in: full marks;
* ``cheat`` the round trip's ``partial`` submission (``test_nbgrader_chapters.py``: tasks 1-3
  right, task 4 with a mistake of the source notes, the rest untouched) whose wrong cell also
  disarms the notebook's tests: it replaces ``course_lib.grading``'s checks and the notebook's
  ``expect`` with no-ops and installs an AST transformer that deletes every ``assert``. Plain
  nbgrader would give task 4 its points (its tests all "pass"); the independent check, which
  runs the student's functions alone on fresh inputs, fails it, so the grade is exactly the
  honest work's: the points of tasks 1-3.

The tests read the CSV export and each student's feedback page.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib import nbgrader_tools
from course_lib.autograde.spec import SPEC_FILENAME
from tests import nbgrader_roundtrip as rt
from tests.test_nbgrader_chapters import CHAPTERS

ROOT = Path(__file__).resolve().parent.parent
SEED = 31337
pytestmark = pytest.mark.slow

DISARM = '''

import ast as _ast

import course_lib.grading as _grading


def _always_passes(*args, **kwargs):
    return None


_grading.check_tensor = _grading.check_scalar = _grading.check_type = _always_passes
expect = _always_passes


class _NoAsserts(_ast.NodeTransformer):
    def visit_Assert(self, node):
        return _ast.Pass()


get_ipython().ast_transformers.append(_NoAsserts())
'''
ASSIGNMENTS = [a for a in CHAPTERS if (ROOT / "solutions" / a / SPEC_FILENAME).is_file()]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = rt.sandbox_course(tmp_path_factory)
    for assignment in ASSIGNMENTS:
        chapter = CHAPTERS[assignment]
        release = nbformat.read(rt.release_nb_path(assignment), as_version=4)
        full = nbgrader_tools.fill_solutions(release, nbformat.read(rt.source_nb_path(assignment), as_version=4))
        rt.submit(course, assignment, "full", full)
        cheat = rt.partial_submission(release, full, chapter.right_ids, chapter.wrong_id, chapter.wrong_source + DISARM)
        rt.submit(course, assignment, "cheat", cheat)
        proc = subprocess.run([sys.executable, "-m", "course_lib.autograde", assignment, "--course-dir", str(course),
                               "--seed", str(SEED), "--jobs", "2"],
                              env=rt.grading_env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return course


def _csv(course: Path, assignment: str) -> dict[str, dict[str, str]]:
    return {r["student"]: r for r in csv.DictReader((course / "grades" / f"{assignment}.csv").open())}


def _statuses(page: str, grade_id: str) -> tuple[str, str]:
    """(notebook test, independent check) of one test cell's row on a feedback page."""
    match = re.search(rf"<tr><td>{re.escape(grade_id)}</td>(.*?)</tr>", page, re.S)
    assert match, f"no feedback row for {grade_id}"
    _, notebook, check = re.findall(r"<td>(.*?)</td>", match.group(1), re.S)
    return notebook, check


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_the_solution_gets_full_marks(graded, assignment):
    row = _csv(graded, assignment)["full"]
    assert float(row["score"]) == float(row["max_score"]) == CHAPTERS[assignment].total_points, row


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_a_disarmed_notebook_gets_exactly_its_honest_work(graded, assignment):
    chapter = CHAPTERS[assignment]
    source = nbformat.read(rt.source_nb_path(assignment), as_version=4)
    row = _csv(graded, assignment)["cheat"]
    assert float(row["score"]) == chapter.right_points, row
    for gid, points in rt.grade_points(source).items():
        right = any(gid.startswith(task + "_") for task in chapter.right_ids)
        assert float(row[gid]) == (points if right else 0.0), (gid, row)
    page = (graded / "feedback" / "cheat" / assignment / f"{assignment}.html").read_text(encoding="utf-8")
    wrong_cells = [gid for gid in rt.grade_points(source) if gid.startswith(chapter.wrong_id + "_")]
    assert len(wrong_cells) == 2
    for gid in wrong_cells:
        # The disarmed notebook test passed; the independent check is what failed the task.
        notebook, check = _statuses(page, gid)
        assert ">passed<" in notebook, (gid, notebook)
        assert ">passed<" not in check and "case" in check, (gid, check)
