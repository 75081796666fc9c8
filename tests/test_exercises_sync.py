"""The committed exercises/ is exactly what nbgrader makes from solutions/.

Every assignment is released again into a temporary directory through the code path that
`make exercises` uses (``course_lib.nbgrader_tools.regenerate_exercises``) and compared with
the committed copy: the same files, notebooks equal as JSON documents (every cell, every
metadata field, checksums included), other files equal byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from course_lib import nbgrader_tools

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / nbgrader_tools.SOURCE_DIR
EXERCISES = ROOT / nbgrader_tools.RELEASE_DIR
FIX = "exercises/ is out of date with solutions/: run `make exercises` and commit the result"


def _files(base: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(base)): p
        for p in sorted(base.rglob("*"))
        if p.is_file() and ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts
    }


def _first_difference(a: dict, b: dict) -> str:
    """Where two notebook documents first differ, for the failure message."""
    for key in sorted(set(a) | set(b)):
        if key == "cells":
            continue
        if a.get(key) != b.get(key):
            return f"top-level {key!r}: committed {a.get(key)!r} != regenerated {b.get(key)!r}"
    ca, cb = a.get("cells", []), b.get("cells", [])
    for i, (x, y) in enumerate(zip(ca, cb)):
        if x != y:
            grade_id = y.get("metadata", {}).get("nbgrader", {}).get("grade_id", "?")
            fields = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
            return f"cell {i} (grade_id {grade_id!r}) differs in {fields}"
    return f"cell count: committed {len(ca)} != regenerated {len(cb)}"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release")
    nbgrader_tools.regenerate_exercises(release_dir=out)
    return out


def test_every_assignment_has_a_release_and_vice_versa():
    sources = nbgrader_tools.list_assignments(SOLUTIONS)
    releases = nbgrader_tools.list_assignments(EXERCISES)
    assert sources, f"no assignments under {SOLUTIONS}"
    missing = sorted(set(sources) - set(releases))
    stale = sorted(set(releases) - set(sources))
    assert not missing, f"solutions/ has no release in exercises/ for {missing}; {FIX}"
    assert not stale, f"exercises/ has {stale} with no source in solutions/; delete them or add the sources"


def test_committed_release_matches_nbgrader_output(regenerated: Path):
    committed, fresh = _files(EXERCISES), _files(regenerated)
    assert sorted(committed) == sorted(fresh), (
        f"{FIX}\nonly in the committed exercises/: {sorted(set(committed) - set(fresh))}\n"
        f"only in nbgrader's output: {sorted(set(fresh) - set(committed))}"
    )
    problems = []
    for rel, path in committed.items():
        if rel.endswith(".ipynb"):
            a = json.loads(path.read_text(encoding="utf-8"))
            b = json.loads(fresh[rel].read_text(encoding="utf-8"))
            if a != b:
                problems.append(f"{rel}: {_first_difference(a, b)}")
        elif path.read_bytes() != fresh[rel].read_bytes():
            problems.append(f"{rel}: contents differ")
    assert not problems, FIX + "\n" + "\n".join(problems)


def test_release_has_no_solutions_or_hidden_tests():
    """What nbgrader's ClearSolutions / ClearHiddenTests promise, checked on the committed files."""
    for path in sorted(EXERCISES.rglob("*.ipynb")):
        text = path.read_text(encoding="utf-8")
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in text, f"{path.relative_to(ROOT)} contains {marker!r}; {FIX}"
