"""The autograder's parts, one at a time (fast): the sandbox, the plain-data boundary, the
extraction of definitions, the intake of submissions, the comparison and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib import nbgrader_tools
from course_lib.autograde import check, jail, wire
from course_lib.autograde.extract import extract_definitions
from course_lib.autograde.notebook import SubmissionError, intake
from course_lib.autograde.spec import AssignmentSpec, Check, case, check_generator, load_spec

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "ch01_embeddings"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root (CI runs as root)")


# ---- the sandbox ----------------------------------------------------------------------------

PROBE = r"""
import json, os, socket
seen = {}
def attempt(name, fn):
    try:
        seen[name] = fn()
    except BaseException as err:
        seen[name] = "refused: " + type(err).__name__
attempt("uid", os.getuid)
attempt("pid", os.getpid)
attempt("root", lambda: sorted(os.listdir("/")))
attempt("course", lambda: os.listdir(COURSE))
attempt("home", lambda: sorted(os.listdir("/root")))
attempt("secret", lambda: open(SECRET).read())
attempt("env", lambda: sorted(os.environ))
attempt("connect", lambda: socket.create_connection(("127.0.0.1", 9), timeout=1) and "connected")
attempt("write_usr", lambda: open("/usr/x", "w") and "written")
attempt("write_home", lambda: open("ok.txt", "w").write("ok"))
attempt("big_file", lambda: open("big", "wb").write(b"x" * (80 << 20)))
attempt("mount", lambda: __import__("ctypes").CDLL(None).umount2(b"/usr", 2))
attempt("processes", lambda: [os.fork() for _ in range(100)] and "forked 100")
if os.getpid() == 1:
    print(json.dumps(seen))
"""


@pytest.fixture
def uid():
    leased = jail.lease_uid()
    yield leased
    jail.release_uid(leased)


@needs_root
def test_the_jail_sees_only_what_it_is_given(tmp_path, uid):
    secret = tmp_path / "secret.txt"
    secret.write_text("the grading seed")
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "probe.py").write_text(PROBE.replace("COURSE", repr(str(ROOT))).replace("SECRET", repr(str(secret))))
    (stage / "link").symlink_to(secret)
    spec = jail.JailSpec(argv=[sys.executable, "-I", "probe.py"], env={**jail.base_env(), "SHOWN": "1"},
                         log_path=str(tmp_path / "log"), stage_dir=str(stage), ro_paths=jail.python_paths(),
                         uid=uid, limits=jail.Limits(cpu_s=20, memory_mb=512, file_mb=16, nproc=16))
    proc = subprocess.run(jail.launcher_argv(jail.write_spec(spec, tmp_path / "spec.json")), capture_output=True,
                          text=True, timeout=60, env={**os.environ, "SECRET_OF_THE_INSTRUCTOR": "x"})
    assert proc.returncode == 0, proc.stderr + (tmp_path / "log").read_text()
    seen = json.loads((tmp_path / "log").read_text().strip().splitlines()[-1])
    assert seen["uid"] == uid and seen["pid"] == 1
    # The course root exists only as the path to the virtualenv (when the venv lies inside it).
    assert seen["course"] in ([".venv"], []) or str(seen["course"]).startswith("refused"), seen["course"]
    assert seen["secret"].startswith("refused")
    assert seen["home"] == [".pyenv"] or not any(n.startswith(".bash") for n in seen["home"])
    assert "SECRET_OF_THE_INSTRUCTOR" not in seen["env"] and "SHOWN" in seen["env"]
    assert seen["connect"].startswith("refused")
    assert seen["write_usr"].startswith("refused") and seen["write_home"] == 2
    assert seen["big_file"].startswith("refused")  # RLIMIT_FSIZE
    assert seen["mount"] == -1  # no capabilities left
    assert seen["processes"].startswith("refused")  # RLIMIT_NPROC
    assert "link" not in seen["root"]


@needs_root
def test_a_killed_launcher_takes_the_jail_with_it(tmp_path, uid):
    spec = jail.JailSpec(argv=[sys.executable, "-I", "-c", "import os, time\nos.fork()\ntime.sleep(600)"],
                         env=jail.base_env(), log_path=str(tmp_path / "log"), ro_paths=jail.python_paths(),
                         uid=uid)
    proc = subprocess.Popen(jail.launcher_argv(jail.write_spec(spec, tmp_path / "spec.json")))
    for _ in range(100):
        if len(jail._pids_of_uid(spec.uid)) >= 2:
            break
        import time

        time.sleep(0.1)
    assert len(jail._pids_of_uid(spec.uid)) >= 2
    proc.kill()
    proc.wait()
    assert jail.clear_uid(spec.uid, timeout=10)
    assert jail._pids_of_uid(spec.uid) == []


def test_parent_gone_sees_the_lifeline_end():
    r, w = os.pipe()
    try:
        assert not jail.parent_gone(r)
        os.close(w)
        assert jail.parent_gone(r)
    finally:
        os.close(r)


@needs_root
def test_a_launcher_killed_while_it_builds_the_jail_leaves_nothing(tmp_path, uid):
    """SIGKILL at moments spread over the jail's set-up (namespaces, mounts, the uid change,
    when the death signal is briefly cleared): no process of the sandbox uid outlives it, with
    nobody cleaning up after it."""
    import time

    spec = jail.JailSpec(argv=[sys.executable, "-I", "-c", "import time\ntime.sleep(600)"],
                         env=jail.base_env(), log_path=str(tmp_path / "log"), ro_paths=jail.python_paths(),
                         uid=uid)
    argv = jail.launcher_argv(jail.write_spec(spec, tmp_path / "spec.json"))
    survivors = []
    for i in range(20):
        proc = subprocess.Popen(argv)
        time.sleep(0.25 * i / 20)  # from before the fork to well after the exec
        proc.kill()
        proc.wait()
        for _ in range(50):  # exited: a zombie counts as gone (PID 1 reaps orphans when it will)
            left = jail._pids_of_uid(spec.uid, alive_only=True)
            if not left:
                break
            time.sleep(0.1)
        else:
            survivors.append((i, left))
    jail.clear_uid(spec.uid, timeout=30)
    assert not survivors, f"(kill moment, live pids of the sandbox uid 5 s later): {survivors}"


@needs_root
def test_uid_leases_are_exclusive(uid):
    other = jail.lease_uid()
    try:
        assert other != uid
        code = ("from course_lib.autograde import jail\n"
                "print(jail.lease_uid())")
        theirs = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        assert theirs not in (uid, other)
    finally:
        jail.release_uid(other)


def test_no_sandbox_requires_root_or_says_so(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(jail.SandboxUnavailable, match="--no-sandbox"):
        jail.probe()


# ---- the plain-data boundary --------------------------------------------------------------


def test_wire_round_trip_and_refusals():
    value = (torch.arange(6).reshape(2, 3), [1, 2.5, None, True, "s", float("inf")], {"k": torch.float64})
    tensors: dict = {}
    data = json.loads(json.dumps(wire.encode(value, tensors, "p")))
    back = wire.decode(data, tensors)
    assert torch.equal(back[0], value[0]) and back[1][:5] == value[1][:5] and back[1][5] == float("inf")
    assert back[2] == {"k": torch.float64}

    class Sub(torch.Tensor):
        pass

    with pytest.raises(TypeError):
        wire.encode(torch.zeros(2).as_subclass(Sub), {}, "p")  # subclasses do not cross
    with pytest.raises(TypeError):
        wire.encode(object(), {}, "p")
    for bad in ({"$tensor": "missing"}, {"$pickle": "x"}, {"$dtype": "object"}, {"$float": "1e308"}):
        with pytest.raises(ValueError):
            wire.decode(bad, {})


def test_wire_carries_sets_and_generators_exactly():
    g = torch.Generator().manual_seed(11)
    torch.rand(5, generator=g)  # a generator part-way through its stream
    tensors: dict = {}
    data = json.loads(json.dumps(wire.encode((g, {"##a", "b"}, frozenset({3, 1})), tensors, "p")))
    back_g, words, ids = wire.decode(data, tensors)
    assert words == {"##a", "b"} and ids == {1, 3}
    assert torch.equal(torch.rand(4, generator=back_g), torch.rand(4, generator=g))  # the same draws follow
    with pytest.raises(TypeError):
        wire.encode({(1, 2)}, {}, "p")  # only sets of plain values
    for bad in ({"$set": [[1]]}, {"$set": "ab"}, {"$generator": {"$tensor": "s"}}):
        with pytest.raises(ValueError):
            wire.decode(bad, {"s": torch.zeros(3, dtype=torch.uint8)})


def test_safe_read_refuses_links_and_oversized(tmp_path):
    (tmp_path / "target").write_text("secret")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    os.mkfifo(tmp_path / "fifo")
    assert check.safe_read(tmp_path / "target", 100) == b"secret"
    assert check.safe_read(tmp_path / "link", 100) is None
    assert check.safe_read(tmp_path / "fifo", 100) is None
    assert check.safe_read(tmp_path / "target", 3) is None


# ---- comparing ------------------------------------------------------------------------------


def _judge(expected, event, tensors=None, hidden=False, tmp_path=None):
    c = Check("cell", "f", 1, reference=None, cases=[], hidden=hidden)
    out = tmp_path
    if tensors:
        from safetensors.torch import save

        (out / "r0_0.safetensors").write_bytes(save(tensors))
    return check._judge(c, [expected], {0: event}, out, 0)


def test_judge_validates_type_dtype_shape_and_finiteness(tmp_path):
    want = ("value", torch.tensor([1.0, 2.0]))
    ok = _judge(want, {"status": "returned", "value": {"$tensor": "t"}}, {"t": torch.tensor([1.0, 2.0])}, tmp_path=tmp_path)
    assert ok.passed
    assert "float64" in _judge(want, {"status": "returned", "value": {"$tensor": "t"}},
                               {"t": torch.tensor([1.0, 2.0], dtype=torch.float64)}, tmp_path=tmp_path).reason
    assert "shape" in _judge(want, {"status": "returned", "value": {"$tensor": "t"}}, {"t": torch.tensor([1.0])},
                             tmp_path=tmp_path).reason
    assert "non-finite" in _judge(want, {"status": "returned", "value": {"$tensor": "t"}},
                                  {"t": torch.tensor([1.0, float("nan")])}, tmp_path=tmp_path).reason
    assert "not a plain tensor" in _judge(want, {"status": "unsendable", "type": "Liar"}, tmp_path=tmp_path).reason
    assert "expected a torch.Tensor, got list" in _judge(want, {"status": "returned", "value": [1.0, 2.0]},
                                                         tmp_path=tmp_path).reason
    hidden = _judge(want, {"status": "returned", "value": {"$tensor": "t"}}, {"t": torch.tensor([1.0, 3.0])},
                    hidden=True, tmp_path=tmp_path)
    assert hidden.reason == "hidden case 1 of 1: wrong values"  # no values, no inputs
    raised = _judge(("raises", "IndexError"), {"status": "raised", "exc": ["IndexError", "LookupError"]}, tmp_path=tmp_path)
    assert raised.passed
    assert "returned normally" in _judge(("raises", "IndexError"), {"status": "returned", "value": None},
                                         tmp_path=tmp_path).reason


def test_ints_compare_exactly_and_tolerances_go_by_dtype():
    c = Check("cell", "f", 1, reference=None, cases=[])
    check.compare_result(109_482_240, 109_482_240, "count", c)
    for wrong in (109_482_241, 109_482_240.0, True):
        with pytest.raises(check.Mismatch):
            check.compare_result(wrong, 109_482_240, "count", c)  # no tolerance, no float, no bool
    loose = Check("cell", "f", 1, reference=None, cases=[], tolerances={torch.float32: (1e-3, 0.0)})
    got, want = torch.tensor([1.0005]), torch.tensor([1.0])
    check.compare_result(got, want, "x", loose)
    with pytest.raises(check.Mismatch):
        check.compare_result(got, want, "x", c)  # the default float32 tolerance is tighter
    with pytest.raises(check.Mismatch):
        check.compare_result(got.double(), want.double(), "x", loose)  # float64 keeps its default


def _prefix_free(got, want):
    from course_lib.grading import GradingError

    if type(got) is not list or len(got) != want:
        raise GradingError(f"expected {want} codes")
    codes = ["".join(map(str, c)) for c in got]
    if any(a != b and b.startswith(a) for a in codes for b in codes):
        raise GradingError("not prefix-free")


def test_a_custom_compare_survives_the_trip_to_the_workers(tmp_path):
    spec_file = tmp_path / "solutions" / "a1" / "grading_spec.py"
    spec_file.parent.mkdir(parents=True)
    spec_file.write_text(
        "from course_lib.autograde.spec import AssignmentSpec, Check, case\n"
        "from tests.test_autograde_units import _prefix_free\n"
        "SPEC = AssignmentSpec('a1.ipynb', [Check('c1', 'codes', 1, lambda n: n, [case(3)], compare=_prefix_free)])\n")
    spec = load_spec(spec_file, "a1")
    prepared = check.prepare(spec, 0, tmp_path / "job")
    check.save_prepared(prepared, tmp_path / "expected")
    loaded = check.load_prepared(tmp_path / "expected")
    (c,) = loaded.spec.checks
    assert c.compare is _prefix_free or c.compare.__name__ == "_prefix_free"
    check.compare_result([[0], [1, 0], [1, 1]], 3, "codes", c)
    with pytest.raises(check.Mismatch, match="not prefix-free"):
        check.compare_result([[0], [0, 1], [1]], 3, "codes", c)
    with pytest.raises(check.Mismatch):
        check.compare_result({"not": "a list"}, 3, "codes", c)
    spec_file.write_text(spec_file.read_text() + "# edited mid-batch\n")
    with pytest.raises(RuntimeError, match="changed"):
        check.load_prepared(tmp_path / "expected")
    spec.source_path = ""
    with pytest.raises(ValueError, match="load_spec"):
        check.save_prepared(prepared, tmp_path / "expected2")


# ---- extraction ---------------------------------------------------------------------------


def test_extraction_keeps_definitions_only():
    cells = [
        ("task1", "import torch\nX = 3\nA, B = 1, 2\n\ndef f(x):\n    return x + X\n\nprint(f(1))\n"
                  "torch.allclose = lambda *a, **k: True\nget_ipython().ast_transformers.append(None)\n"
                  "for i in range(3):\n    pass\n%timeit f(1)\ny = f(2)\nclass C:\n    pass\nz = C()\n"
                  "w = torch.zeros(2)\n"),
        ("task2", "def g(:\n"),
    ]
    statements, notes = extract_definitions(cells)
    code = "\n".join(s for _, s in statements)
    assert "def f" in code and "X = 3" in code and "class C" in code and "w = torch.zeros(2)" in code
    for dropped in ("print", "allclose", "ast_transformers", "for i", "timeit", "y = f(2)", "z = C()"):
        assert dropped not in code, dropped
    assert notes and "task2" in notes[0] and "syntax error" in notes[0]


# ---- intake -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def notebooks():
    release = nbformat.read(ROOT / "exercises" / ASSIGNMENT / NOTEBOOK, as_version=4)
    source = nbformat.read(ROOT / "solutions" / ASSIGNMENT / NOTEBOOK, as_version=4)
    return release, nbgrader_tools.fill_solutions(release, source)


def _submit(tmp_path, nb=None, text=None):
    d = tmp_path / "sub"
    d.mkdir(exist_ok=True)
    (d / NOTEBOOK).write_text(text if text is not None else nbformat.writes(nb))
    return d


def test_intake_rebuilds_from_the_release(tmp_path, notebooks):
    release, full = notebooks
    nb = json.loads(nbformat.writes(full))
    tests = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade")]
    tests[0]["source"] = "pass"  # an edited test cell
    nb["cells"].remove(tests[1])  # a deleted test cell
    nb["metadata"]["kernelspec"]["name"] = "evil"
    nb["cells"].append({"cell_type": "code", "metadata": {}, "source": "print('mine')", "outputs": [], "execution_count": 3})
    taken = intake(_submit(tmp_path, text=json.dumps(nb)), NOTEBOOK, release, ASSIGNMENT)
    rebuilt = taken.notebook
    assert rebuilt.metadata["kernelspec"] == release.metadata["kernelspec"]
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in rebuilt.cells}
    released = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in release.cells}
    for gid in (tests[0]["metadata"]["nbgrader"]["grade_id"], tests[1]["metadata"]["nbgrader"]["grade_id"]):
        assert by_id[gid].source == released[gid].source
    assert rebuilt.cells[-1].source == "print('mine')" and rebuilt.cells[-1].outputs == []
    assert any(label.startswith("your cell") for label, _ in taken.code_cells)
    assert any(label == "task1_one_hot" for label, _ in taken.code_cells)


@pytest.mark.parametrize("text, message", [
    ('{"cells": [', "not valid JSON"),
    ("[1, 2]", "not a Jupyter notebook"),
    (nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])), "does not look like"),
])
def test_intake_refuses_with_a_clear_message(tmp_path, notebooks, text, message):
    with pytest.raises(SubmissionError, match=message):
        intake(_submit(tmp_path, text=text), NOTEBOOK, notebooks[0], ASSIGNMENT)


def test_intake_missing_notebook_names_what_was_found(tmp_path, notebooks):
    d = tmp_path / "sub"
    d.mkdir()
    (d / "Untitled.ipynb").write_text("{}")
    with pytest.raises(SubmissionError, match="found Untitled.ipynb"):
        intake(d, NOTEBOOK, notebooks[0], ASSIGNMENT)


# ---- the spec ------------------------------------------------------------------------------


def test_spec_validation_names_every_mismatch():
    spec = AssignmentSpec(notebook="nb.ipynb", checks=[
        Check("a", "f", 1, reference=abs, cases=[case(1)]),
        Check("b", "f", 2, reference=abs, cases=[case(1)]),
    ])
    with pytest.raises(ValueError) as err:
        spec.validate_against({"a": 2.0, "c": 1.0})
    text = str(err.value)
    assert "'c' (1 points) has no check" in text and "'b'" in text and "spec says 1 points, the notebook 2" in text


def test_hidden_generators_depend_on_seed_assignment_and_cell():
    draws = {(s, a, c): torch.randint(0, 1 << 30, (4,), generator=check_generator(s, a, c)).tolist()
             for s in (1, 2) for a in ("x", "y") for c in ("p", "q")}
    assert len({tuple(v) for v in draws.values()}) == len(draws)


# ---- the command line ----------------------------------------------------------------------


def test_the_grader_wants_a_seed(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COURSE_GRADING_SEED"}
    proc = subprocess.run([sys.executable, "-m", "course_lib.autograde", ASSIGNMENT, "--course-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "--seed" in proc.stderr


def test_the_grader_refuses_a_course_without_config(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "course_lib.autograde", ASSIGNMENT, "--course-dir", str(tmp_path),
                           "--seed", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "nbgrader_config.py" in proc.stderr
