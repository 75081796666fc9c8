"""The adversarial class: a class of submissions, each graded with the instructor's command,
each asserted to get exactly the score its honest work deserves.

One module-scoped fixture builds a temporary course (a copy of solutions/, exercises/ and
nbgrader_config.py) with ~30 submissions of ch01_embeddings: the correct solution, the blank
release, a wrong task, the cheats (edited/deleted/markdown/duplicated test cells, fake outputs,
another kernelspec, replaced showtraceback, an AST transformer, patched torch/numpy/course_lib
comparisons, an object whose == is always true, a fake course_lib shipped next to the notebook),
the crashes (SIGINT-proof loop, sys.exit, os._exit, segfault, memory bomb, fork bomb, 10^8
printed lines, a 10 GB file, network access, reading the instructor's files) and malformed
submissions (invalid JSON, another assignment's notebook, a missing notebook, stray files with a
1 GB file and a symlink). It grades the class with ``python -m course_lib.autograde`` in two
parallel workers, SIGKILLs the grader after a few students are recorded, and runs it again to
finish: the tests then read the nbgrader gradebook, the CSV and the feedback pages.

Points of ch01: task 1: 1 visible + 1 hidden, task 2: 1 + 1, task 3: 1 + 2, task 4: 1 + 2,
task 5: 1 + 2, task 6: 1 + 1 (15 in all). A cheat with task 3 wrong deserves 12.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import copy
from pathlib import Path

import nbformat
import pytest

from course_lib import nbgrader_tools
from tests import nbgrader_roundtrip as rt

ROOT = Path(__file__).resolve().parent.parent
SEED = 424242
pytestmark = pytest.mark.slow  # one fixture grades ~30 submissions (2-4 minutes on 2 cores)

ASSIGNMENT = "ch01_embeddings"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
TASKS = {
    "one_hot": "task1_one_hot",
    "lookup_as_matmul": "task2_lookup_as_matmul",
    "cosine_similarity_matrix": "task3_cosine_similarity_matrix",
    "nearest_neighbours": "task4_nearest_neighbours",
    "embedding_backward": "task5_embedding_backward",
    "analogy": "task6_analogy",
}
POINTS = {"one_hot": 2, "lookup_as_matmul": 2, "cosine_similarity_matrix": 3, "nearest_neighbours": 3,
          "embedding_backward": 3, "analogy": 2}
TOTAL = 15

WRONG_COSINE = '''
def cosine_similarity_matrix(A: torch.Tensor, B: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B must have the same vector size, got {A.shape[1]} and {B.shape[1]}")
    A_unit = A / A.norm(dim=1, keepdim=True).clamp_min(eps)
    return A_unit @ B.T  # forgot to normalise B
'''

# A lookup that does not use one_hot, for students whose one_hot is wrong on purpose.
STANDALONE_LOOKUP = '''
def lookup_as_matmul(ids, W):
    if bool(((ids < 0) | (ids >= W.shape[0])).any()):
        raise IndexError("an id is outside the vocabulary")
    return F.one_hot(ids, W.shape[0]).to(W.dtype) @ W
'''

PRIVATE_COSINE = '''
def _cos(A, B, eps=1e-8):
    return (A / A.norm(dim=1, keepdim=True).clamp_min(eps)) @ (B / B.norm(dim=1, keepdim=True).clamp_min(eps)).T
'''

# A cosine that never returns: the "wrong" task-3 of the crash students, with the attack inside.
def _cosine_doing(body: str) -> str:
    return "def cosine_similarity_matrix(A, B, eps=1e-8):\n" + "".join(f"    {line}\n" for line in body.strip().splitlines())


def _nbg(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _index(nb, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if _nbg(c).get("grade_id") == grade_id)


def set_solution(nb, function: str, source: str):
    nb.cells[_index(nb, TASKS[function])].source = source.strip() + "\n"
    return nb


def append_to_solution(nb, function: str, source: str):
    cell = nb.cells[_index(nb, TASKS[function])]
    cell.source = cell.source.rstrip() + "\n\n" + source.strip() + "\n"
    return nb


def insert_cell_after(nb, grade_id: str, source: str, cell_type: str = "code"):
    new = nbformat.v4.new_code_cell(source) if cell_type == "code" else nbformat.v4.new_markdown_cell(source)
    nb.cells.insert(_index(nb, grade_id) + 1, new)
    return nb


def build_class(root: Path, port: int, course: Path, seed: int) -> dict[str, tuple[float, str]]:
    """Write every submission under ``course/submitted/``; return {student: (expected score, what it is)}.

    ``port``: a TCP port on the host's loopback where the test listens (no submission may reach it);
    ``course``: the course root (no submission may read it); ``seed``: the instructor's grading seed."""
    release = nbformat.read(root / "exercises" / ASSIGNMENT / NOTEBOOK, as_version=4)
    source = nbformat.read(root / "solutions" / ASSIGNMENT / NOTEBOOK, as_version=4)
    full = nbgrader_tools.fill_solutions(release, source)
    solution = {f: nbgrader_tools._strip_solution_markers(source.cells[_index(source, gid)].source)
                for f, gid in TASKS.items()}
    # Tasks 4 and 6 use a private cosine, so that breaking task 3 on purpose costs task 3 only.
    for f in ("nearest_neighbours", "analogy"):
        solution[f] = solution[f].replace("cosine_similarity_matrix(", "_cos(")
        set_solution(full, f, solution[f])
    append_to_solution(full, "nearest_neighbours", PRIVATE_COSINE)

    def fresh():
        return copy.deepcopy(full)

    def wrong_cosine():
        return set_solution(fresh(), "cosine_similarity_matrix", WRONG_COSINE)

    def without_one_hot(one_hot_source: str):
        nb = set_solution(fresh(), "one_hot", one_hot_source)
        return set_solution(nb, "lookup_as_matmul", STANDALONE_LOOKUP)

    minus = lambda *fs: TOTAL - sum(POINTS[f] for f in fs)  # noqa: E731
    subs: dict[str, tuple[object, float, str]] = {}

    subs["full"] = (fresh(), TOTAL, "correct solution")
    subs["blank"] = (copy.deepcopy(release), 0, "the release as handed out")
    subs["wrong_cosine"] = (wrong_cosine(), minus("cosine_similarity_matrix"), "task 3 wrong (B not normalised)")

    hard_coded = '''
def one_hot(ids, vocab_size):
    key = (tuple(ids.reshape(-1).tolist()), tuple(ids.shape), vocab_size)
    if key == ((2, 0, 2), (3,), 4):
        return torch.tensor([[0., 0., 1., 0.], [1., 0., 0., 0.], [0., 0., 1., 0.]])
    if key == ((1, 3), (1, 2), 5):
        return torch.tensor([[[0., 1., 0., 0., 0.], [0., 0., 0., 1., 0.]]])
    if key == ((1,), (), 3):
        return torch.tensor([0., 1., 0.])
    raise IndexError("id outside the vocabulary")
'''
    subs["hard_coded"] = (without_one_hot(hard_coded), TOTAL - 1, "one_hot answers only the visible questions")

    nb = wrong_cosine()
    nb.cells[_index(nb, "task3_cosine_similarity_matrix_visible_tests")].source = "pass"
    nb.cells[_index(nb, "task3_cosine_similarity_matrix_hidden_tests")].source = "pass"
    subs["test_edited_to_pass"] = (nb, minus("cosine_similarity_matrix"), "task 3 wrong, its test cells edited to `pass`")

    nb = wrong_cosine()
    del nb.cells[_index(nb, "task3_cosine_similarity_matrix_hidden_tests")]
    del nb.cells[_index(nb, "task3_cosine_similarity_matrix_visible_tests")]
    subs["test_deleted"] = (nb, minus("cosine_similarity_matrix"), "task 3 wrong, its test cells deleted")

    nb = wrong_cosine()
    i = _index(nb, "task3_cosine_similarity_matrix_hidden_tests")
    cell = nbformat.v4.new_markdown_cell("the hidden tests passed", metadata=copy.deepcopy(nb.cells[i].metadata))
    cell.metadata["nbgrader"]["points"] = 100
    nb.cells[i] = cell
    subs["test_to_markdown"] = (nb, minus("cosine_similarity_matrix"), "task 3 wrong, test cell turned to markdown worth 100")

    nb = wrong_cosine()
    dup = copy.deepcopy(nb.cells[_index(nb, "task1_one_hot_visible_tests")])
    dup.metadata["nbgrader"]["points"] = 50
    dup.id = "copy-1"
    nb.cells.append(dup)
    dup = copy.deepcopy(nb.cells[_index(nb, "task2_lookup_as_matmul_hidden_tests")])
    dup.id = "copy-2"
    nb.cells.append(dup)
    subs["duplicated_cells"] = (nb, minus("cosine_similarity_matrix"), "task 3 wrong, graded cells duplicated (one worth 50)")

    nb = wrong_cosine()
    for c in nb.cells:
        if c.cell_type == "code":
            c.execution_count = 1
            c.outputs = [nbformat.v4.new_output("stream", name="stdout", text="all tests passed\n")]
    subs["fake_outputs"] = (nb, minus("cosine_similarity_matrix"), "task 3 wrong, every cell ships a 'passed' output")

    nb = wrong_cosine()
    nb.metadata["kernelspec"] = {"name": "evil", "display_name": "Evil", "language": "python"}
    subs["kernelspec"] = (nb, minus("cosine_similarity_matrix"), "task 3 wrong, kernelspec changed")

    nb = append_to_solution(wrong_cosine(), "one_hot", '''
_ip = get_ipython()
_ip.showtraceback = lambda *a, **k: None
_ip._showtraceback = lambda *a, **k: None
''')
    subs["showtraceback"] = (nb, minus("cosine_similarity_matrix"), "task 3 wrong, showtraceback replaced")

    nb = append_to_solution(wrong_cosine(), "one_hot", '''
import ast as _ast

class _NoChecks(_ast.NodeTransformer):
    def visit_Assert(self, node):
        return _ast.Pass()

    def visit_Expr(self, node):
        if isinstance(node.value, _ast.Call) and "grading" in _ast.unparse(node.value.func):
            return _ast.Pass()
        return node

get_ipython().ast_transformers.append(_NoChecks())
''')
    subs["ast_strips_asserts"] = (nb, minus("cosine_similarity_matrix"), "task 3 wrong, AST transformer strips asserts and checks")

    zeros_one_hot = '''
def one_hot(ids, vocab_size):
    if bool(((ids < 0) | (ids >= vocab_size)).any()):
        raise IndexError("id outside the vocabulary")
    return torch.zeros(*ids.shape, vocab_size)
'''
    nb = append_to_solution(without_one_hot(zeros_one_hot), "one_hot", '''
import builtins as _b
import numpy as _np
import numpy.testing as _npt
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
_np.isclose = lambda *a, **k: True
_np.allclose = lambda *a, **k: True
_npt.assert_allclose = lambda *a, **k: None
_npt.assert_array_equal = lambda *a, **k: None
_b.abs = lambda x: 0
''')
    subs["patch_torch_numpy"] = (nb, minus("one_hot"), "one_hot wrong; torch/numpy comparisons and abs patched")

    nb = append_to_solution(wrong_cosine(), "one_hot", '''
from course_lib import grading as _g
import course_lib.embeddings as _E
_g.check_tensor = lambda *a, **k: None
_g.compare_with_reference = lambda *a, **k: None
_g.check_raises = lambda *a, **k: None
'''.strip() + "\n")
    nb = append_to_solution(nb, "cosine_similarity_matrix", "_E.cosine_similarity_matrix = cosine_similarity_matrix\n")
    subs["patch_course_lib"] = (nb, minus("cosine_similarity_matrix"), "task 3 wrong; course_lib.grading and the reference patched")

    liar = '''
class _Liar(torch.Tensor):
    def __eq__(self, other):
        return True

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.equal, torch.allclose):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})

def one_hot(ids, vocab_size):
    if bool(((ids < 0) | (ids >= vocab_size)).any()):
        raise IndexError("id outside the vocabulary")
    return torch.zeros(*ids.shape, vocab_size).as_subclass(_Liar)
'''
    subs["eq_always_true"] = (without_one_hot(liar), minus("one_hot"), "one_hot returns a tensor whose == is always true")

    loop = '''
def analogy(W, a, b, c, k=1):
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        pass
'''
    subs["sigint_loop"] = (set_solution(fresh(), "analogy", loop), minus("analogy"), "analogy: endless loop ignoring SIGINT")
    subs["sys_exit"] = (set_solution(fresh(), "cosine_similarity_matrix", _cosine_doing("import sys\nsys.exit(0)")),
                        minus("cosine_similarity_matrix"), "task 3 calls sys.exit(0)")
    subs["os_exit"] = (set_solution(fresh(), "cosine_similarity_matrix", _cosine_doing("import os\nos._exit(0)")),
                       minus("cosine_similarity_matrix"), "task 3 calls os._exit(0)")
    subs["segfault"] = (set_solution(fresh(), "cosine_similarity_matrix", _cosine_doing("import ctypes\nctypes.string_at(0)")),
                        minus("cosine_similarity_matrix"), "task 3 dereferences NULL")
    subs["memory_bomb"] = (set_solution(fresh(), "cosine_similarity_matrix", _cosine_doing(
        "hog = []\nwhile True:\n    hog.append(torch.ones(64, 1024, 1024))")),
        minus("cosine_similarity_matrix"), "task 3 allocates until it fails")
    subs["fork_bomb"] = (set_solution(fresh(), "cosine_similarity_matrix", _cosine_doing(
        "import os\nwhile True:\n    os.fork()")), minus("cosine_similarity_matrix"), "task 3 forks forever")
    subs["print_flood"] = (append_to_solution(fresh(), "one_hot", "for _i in range(10**8):\n    print(_i)\n"),
                           TOTAL, "correct; prints 10^8 lines in a solution cell")
    subs["huge_file"] = (append_to_solution(fresh(), "one_hot", '''
with open("huge.bin", "wb") as _f:
    for _ in range(10_000):
        _f.write(b"x" * (1 << 20))
'''), TOTAL, "correct; writes a 10 GB file")
    net = f'''
def _online():
    import socket
    for address in [("127.0.0.1", {port}), ("10.0.0.1", 80), ("1.1.1.1", 443)]:
        try:
            socket.create_connection(address, timeout=1).close()
            return True
        except OSError:
            pass
    return False

''' + solution["one_hot"].replace("    bad = ", "    if _online():\n        return torch.zeros(1)\n    bad = ", 1)
    subs["network"] = (set_solution(fresh(), "one_hot", net), TOTAL, "correct only if no network is reachable")
    snoop = f'''
def _sees_instructor_files():
    import os
    paths = [{str(course)!r}, {str(course / "gradebook.db")!r}, {str(course / "solutions")!r},
             {str(course / "submitted")!r}, {str(root / "solutions")!r}, "/root/.bash_history", "/etc/shadow"]
    return any(os.path.exists(p) for p in paths) or os.environ.get("COURSE_GRADING_SEED") == "{seed}"

''' + solution["one_hot"].replace("    bad = ", "    if _sees_instructor_files():\n        return torch.zeros(1)\n    bad = ", 1)
    subs["snoop"] = (set_solution(fresh(), "one_hot", snoop), TOTAL, "correct only if no instructor file or seed is visible")
    subs["uses_reference"] = (set_solution(fresh(), "cosine_similarity_matrix", '''
def cosine_similarity_matrix(A, B, eps=1e-8):
    from course_lib.embeddings import cosine_similarity_matrix as reference
    return reference(A, B, eps)
'''), minus("cosine_similarity_matrix"), "task 3 calls course_lib's reference instead of writing it")
    nb = fresh()
    insert_cell_after(nb, "task1_one_hot", "def _helper(x):\n    return x\n")
    subs["extra_cells"] = (nb, TOTAL, "correct, with a cell of its own")

    subs["fake_course_lib"] = (wrong_cosine(), minus("cosine_similarity_matrix"),
                               "task 3 wrong; ships a course_lib/ whose checks always pass")

    expected: dict[str, tuple[float, str]] = {}
    for student, (nb, score, what) in subs.items():
        d = course / "submitted" / student / ASSIGNMENT
        d.mkdir(parents=True)
        nbformat.write(nb, d / NOTEBOOK)
        expected[student] = (float(score), what)

    fake = course / "submitted" / "fake_course_lib" / ASSIGNMENT / "course_lib"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "grading.py").write_text(
        "def check_tensor(*a, **k):\n    pass\n\ncheck_raises = compare_with_reference = check_scalar = check_tensor\n")
    (fake / "embeddings.py").write_text("from course_lib.grading import *\n")

    # Malformed submissions.
    d = course / "submitted" / "not_json" / ASSIGNMENT
    d.mkdir(parents=True)
    (d / NOTEBOOK).write_text(nbformat.writes(full)[:5000])  # cut short: invalid JSON
    expected["not_json"] = (0.0, "notebook is not valid JSON")

    d = course / "submitted" / "wrong_assignment" / ASSIGNMENT
    d.mkdir(parents=True)
    other = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "def train_word2vec():\n    pass", metadata={"nbgrader": {"grade_id": "ch02_task1", "solution": True,
                                                                    "grade": False, "locked": False, "schema_version": 3}})])
    nbformat.write(other, d / NOTEBOOK)
    expected["wrong_assignment"] = (0.0, "another assignment's notebook under this name")

    d = course / "submitted" / "missing_notebook" / ASSIGNMENT
    d.mkdir(parents=True)
    nbformat.write(full, d / "ch01_embeddings (1).ipynb")
    expected["missing_notebook"] = (0.0, "the notebook has another name")

    d = course / "submitted" / "stray_files" / ASSIGNMENT
    d.mkdir(parents=True)
    nbformat.write(full, d / NOTEBOOK)
    (d / "notes.txt").write_text("my notes\n")
    with open(d / "huge.bin", "wb") as f:  # 1 GB, sparse: no disk used
        f.truncate(1 << 30)
    (d / "passwords").symlink_to("/etc/passwd")
    expected["stray_files"] = (float(TOTAL), "correct, with stray files: a 1 GB file and a symlink")
    return expected


# ---- grading the class ----------------------------------------------------------------------

GRADER_OPTIONS = ["--cell-timeout", "10", "--check-timeout", "6", "--memory-mb", "1536", "--jobs", "2"]


class _Listener:
    """A TCP server on the host's loopback that counts connections (none may arrive)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def _grader(course: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "course_lib.autograde", ASSIGNMENT, "--course-dir", str(course),
            "--seed", str(SEED), *GRADER_OPTIONS, *extra]


def _env() -> dict[str, str]:
    return rt.grading_env()


def _ledger(course: Path) -> dict[str, tuple]:
    db = course / "gradebook.db"
    if not db.exists():
        return {}
    con = sqlite3.connect(db, timeout=30)
    try:
        rows = con.execute("SELECT student, score, graded_at, status FROM course_autograde_ledger "
                           "WHERE assignment = ?", (ASSIGNMENT,)).fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()
    return {r[0]: r[1:] for r in rows}


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _describe(pid: int) -> str | None:
    """A process as a failure message wants it: pid, state, parent, uid and command line (None
    once it is gone)."""
    try:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return (f"{pid} ({status['State'].strip()}, parent {status['PPid'].strip()}, "
                f"uid {status['Uid'].split()[0]}): {command[:300]}")
    except (OSError, KeyError):
        return None


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = rt.sandbox_course(tmp_path_factory)
    listener = _Listener()
    try:
        expected = build_class(ROOT, listener.port, course, SEED)

        # First run: killed with SIGKILL once a few students are recorded.
        first = subprocess.Popen(_grader(course), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while len(_ledger(course)) < 3 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, "the grader finished before it could be killed:\n" + first.stdout.read().decode()
        first.send_signal(signal.SIGKILL)
        first.wait()
        first_out = first.stdout.read().decode()
        before = _ledger(course)
        from course_lib.autograde import jail

        uids = [int(p.read_text()) for p in Path(tempfile.gettempdir()).glob(f"course-autograde-{first.pid}-*/uid*")]
        assert uids, "the workers did not record their sandbox uids"
        for _ in range(100):  # the kill travels down the process tree: grader, workers, sandboxes
            # Alive ones only: a killed sandbox's zombie is reaped by PID 1 when it gets round to it.
            leftovers = _processes_mentioning(f"course-autograde-{first.pid}-")
            leftovers += [pid for uid in uids for pid in jail._pids_of_uid(uid, alive_only=True)]
            if not leftovers:
                break
            time.sleep(0.1)
        leftovers = [d for d in map(_describe, leftovers) if d is not None]

        # Second run: resumes and finishes the class.
        started = time.monotonic()
        second = subprocess.run(_grader(course), env=_env(), capture_output=True, text=True, timeout=900)
        seconds = time.monotonic() - started
        assert second.returncode == 0, second.stdout + second.stderr
    finally:
        listener.close()
    return {"course": course, "expected": expected, "before": before, "after": _ledger(course),
            "first_out": first_out, "second_out": second.stdout, "leftovers": leftovers,
            "connections": listener.connections, "seconds": seconds}


def _gradebook_scores(course: Path) -> dict[str, tuple[float, float]]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id="pretrained-lm-course") as gb:
        return {s.student.id: (float(s.score), float(s.max_score)) for s in gb.assignment_submissions(ASSIGNMENT)}


def _expected_students():
    # The names are fixed by build_class; listed here so that each gets its own test id.
    return ["full", "blank", "wrong_cosine", "hard_coded", "test_edited_to_pass", "test_deleted",
            "test_to_markdown", "duplicated_cells", "fake_outputs", "kernelspec", "showtraceback",
            "ast_strips_asserts", "patch_torch_numpy", "patch_course_lib", "eq_always_true", "sigint_loop",
            "sys_exit", "os_exit", "segfault", "memory_bomb", "fork_bomb", "print_flood", "huge_file",
            "network", "snoop", "uses_reference", "extra_cells", "fake_course_lib", "not_json",
            "wrong_assignment", "missing_notebook", "stray_files"]


def test_the_class_is_the_one_listed(graded):
    assert sorted(graded["expected"]) == sorted(_expected_students())


@pytest.mark.parametrize("student", _expected_students())
def test_exact_score(graded, student):
    """Each submission gets exactly the points of the honest work in it, out of 15."""
    want, what = graded["expected"][student]
    score, max_score = _gradebook_scores(graded["course"])[student]
    assert max_score == TOTAL, f"{student} ({what}) changed the maximum score"
    assert score == want, f"{student} ({what}): expected {want:g}, got {score:g}"


def test_killing_the_grader_loses_nothing_and_rerunning_resumes(graded):
    before, after = graded["before"], graded["after"]
    assert before, "nothing was recorded before the kill"
    assert not graded["leftovers"], f"grader workers survived the kill: {graded['leftovers']}"
    for student, row in before.items():
        assert after[student] == row, f"{student} was regraded or changed after the restart"
    assert sorted(after) == sorted(graded["expected"])
    assert f"{len(before)} already graded" in graded["second_out"]
    con = sqlite3.connect(graded["course"] / "gradebook.db")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()


def test_csv_export_matches_the_gradebook(graded):
    rows = list(csv.DictReader((graded["course"] / "grades" / f"{ASSIGNMENT}.csv").open()))
    scores = _gradebook_scores(graded["course"])
    assert sorted(r["student"] for r in rows) == sorted(scores)
    for r in rows:
        assert float(r["score"]) == scores[r["student"]][0]
        assert float(r["max_score"]) == TOTAL
        assert sum(float(r[c]) for c in r if c.startswith("task")) == float(r["score"])


def _feedback_text(course: Path, student: str) -> str:
    page = (course / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text(encoding="utf-8")
    return page


def test_feedback_for_every_student_without_hidden_inputs(graded):
    course = graded["course"]
    source = (ROOT / "solutions" / ASSIGNMENT / NOTEBOOK).read_text(encoding="utf-8")
    hidden_names = set(re.findall(r"def (_hidden_\w+)", source))
    assert hidden_names
    for student in graded["expected"]:
        page = _feedback_text(course, student)
        assert "<script" not in page.lower()
        assert "BEGIN HIDDEN TESTS" not in page and not any(name in page for name in hidden_names), student
        # Independent-check messages of hidden checks: case number and kind of mismatch only.
        for reason in re.findall(r"hidden case \d+ of \d+: ([^<]*)<", page):
            assert not re.search(r"\d", reason), (student, reason)


def test_feedback_says_which_checks_failed_and_why(graded):
    page = _feedback_text(graded["course"], "wrong_cosine")
    assert "task3_cosine_similarity_matrix_visible_tests" in page
    assert "wrong value at index" in page  # the visible check's full message
    assert "hidden case 1 of 5: wrong values" in page
    page = _feedback_text(graded["course"], "uses_reference")
    assert "ModuleNotFoundError" in page  # course_lib is not there for the independent check


@pytest.mark.parametrize("student, message", [
    ("not_json", "is not valid JSON"),
    ("wrong_assignment", "does not look like the ch01_embeddings notebook"),
    ("missing_notebook", "ch01_embeddings.ipynb is missing from the submission; found ch01_embeddings (1).ipynb"),
    ("stray_files", "huge.bin was skipped: 1.0 GB is over the 20 MB limit per file"),
    ("stray_files", "passwords was skipped: not a regular file"),
    ("sigint_loop", "did not stop when interrupted"),
    ("os_exit", "the kernel died"),
])
def test_clear_messages(graded, student, message):
    assert message in _feedback_text(graded["course"], student).replace("&#x27;", "'")


def test_no_network_and_no_large_files_escape(graded):
    assert graded["connections"] == 0, "a submission reached the host's loopback"
    big = [p for p in graded["course"].rglob("*") if p.is_file() and p.stat().st_blocks * 512 > 50 * 1024 * 1024]
    assert not big, big


def test_autograded_notebooks_in_nbgraders_layout(graded):
    course = graded["course"]
    for student in graded["expected"]:
        path = course / "autograded" / student / ASSIGNMENT / NOTEBOOK
        if student in ("not_json", "wrong_assignment", "missing_notebook"):
            assert not path.exists()
        else:
            nbformat.read(path, as_version=4)
