"""The notebook side of grading: read a submission, rebuild it, run nbgrader on it in a sandbox.

**Intake.** A submission is untrusted text. :func:`intake` reads it with size limits, refuses
what is not a notebook of this assignment with a message the student can act on, and
*rebuilds* it from the released notebook: every instruction and test cell comes from the
release, the notebook metadata (kernelspec included) too; from the submission only the sources
of the solution cells (matched by ``grade_id``, first occurrence) and the cells the student
added (without nbgrader metadata, outputs dropped) are kept. Extra files are staged only if
they are regular files within the limits; links and oversized files are skipped with a note.

**Execution.** nbgrader's own ``autograde`` then runs on the rebuilt notebook in a private copy
of the course (a copy of the gradebook, the submission and nothing else), with its defences
(checksummed cells restored, missing cells re-added, kernelspec overwritten, per-cell timeout,
output limits) and two changes:

* :class:`SandboxedKernelManager` starts the kernel inside the jail (``jail.py``), sharing only
  the worker's private network namespace so that the kernel and its client talk over loopback;
* :class:`SandboxedExecute` survives kernels that stop answering: a cell that runs past the
  timeout and ignores the interrupt, or kills its kernel (``os._exit``, a segfault, a memory or
  CPU limit), gets an error output and 0 points, the kernel is replaced, the cells that ran
  before (except test cells) are replayed silently, and execution goes on with the next cell.
  Processes a cell leaves running are killed when it ends (the jail ignores SIGCHLD, so they
  are reaped at once and do not hold the process limit). A cell that prints
  more than ``max_output_bytes`` is interrupted and its output cut.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from traitlets import Float, Integer, default

from nbgrader.preprocessors import Execute

from . import jail

MB = 1024 * 1024


class SubmissionError(Exception):
    """The submission cannot be graded; the message is for the student."""


@dataclasses.dataclass
class IntakeLimits:
    notebook_mb: float = 20.0
    file_mb: float = 20.0
    total_mb: float = 50.0
    max_files: int = 200
    max_cells: int = 2000
    max_cell_chars: int = 1_000_000


@dataclasses.dataclass
class Intake:
    notebook: NotebookNode  # rebuilt from the release
    files: list[tuple[str, Path]]  # (relative path, host path) of accepted extra files
    notes: list[str]  # what the student should know (skipped files, missing cells, ...)
    code_cells: list[tuple[str, str]]  # (label, source) of solution and student-added code cells


def _nbg(cell: dict) -> dict:
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    nbg = meta.get("nbgrader") if isinstance(meta, dict) else None
    return nbg if isinstance(nbg, dict) else {}


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    if isinstance(src, list):
        src = "".join(s for s in src if isinstance(s, str))
    return src if isinstance(src, str) else ""


def _human(n: int) -> str:
    return f"{n / MB:.1f} MB" if n < 1024 * MB else f"{n / (1024 * MB):.1f} GB"


def intake(submission_dir: Path, notebook_name: str, release_nb: NotebookNode, assignment: str,
           limits: IntakeLimits | None = None) -> Intake:
    limits = limits or IntakeLimits()
    notes: list[str] = []
    if not submission_dir.is_dir() or submission_dir.is_symlink():
        raise SubmissionError(f"no submission folder for {assignment}")
    nb_path = submission_dir / notebook_name
    if not nb_path.exists() and not nb_path.is_symlink():
        found = sorted(p.name for p in submission_dir.glob("*.ipynb"))
        hint = f"; found {', '.join(found)} instead (rename it, or submit the {assignment} notebook)" if found else ""
        raise SubmissionError(f"the notebook {notebook_name} is missing from the submission{hint}")
    st = os.lstat(nb_path)
    if not stat.S_ISREG(st.st_mode):
        raise SubmissionError(f"{notebook_name} is not a regular file (a link or a folder?)")
    if st.st_size > limits.notebook_mb * MB:
        raise SubmissionError(f"{notebook_name} is {_human(st.st_size)}, over the {limits.notebook_mb:g} MB limit "
                              "(clear large outputs before submitting)")
    raw = nb_path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SubmissionError(f"{notebook_name} is not UTF-8 text (byte {err.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SubmissionError(f"{notebook_name} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                              "was it saved completely?") from None
    except RecursionError:
        raise SubmissionError(f"{notebook_name} is nested too deeply to be a notebook") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise SubmissionError(f"{notebook_name} is JSON but not a Jupyter notebook (no list of cells)")
    cells = data["cells"]
    if len(cells) > limits.max_cells:
        raise SubmissionError(f"{notebook_name} has {len(cells)} cells, over the limit of {limits.max_cells}")
    notebook, code_cells = _rebuild(cells, release_nb, assignment, notebook_name, limits, notes)
    files = _stage_files(submission_dir, notebook_name, limits, notes)
    return Intake(notebook, files, notes, code_cells)


def _rebuild(cells: list, release_nb: NotebookNode, assignment: str, notebook_name: str,
             limits: IntakeLimits, notes: list[str]) -> tuple[NotebookNode, list[tuple[str, str]]]:
    """The release with the student's answers and own cells; and, in notebook order, the code
    the independent check may read: every cell the student could edit (solution cells, the
    release's unlocked plain cells, the student's own cells), never test or locked cells.

    Each release cell has a key: its grade_id, or for a plain cell its cell id. A submitted cell
    takes the place of the release cell with the same key (solution and plain cells keep the
    student's text; instruction and test cells the release's), first occurrence only; a plain
    cell whose text equals a release plain cell's also takes its place. Every other submitted
    cell is the student's own: kept after the release cell that preceded it, as an ordinary
    cell, without nbgrader metadata or outputs."""
    def key(cell) -> str | None:
        gid = _nbg(cell).get("grade_id")
        if isinstance(gid, str):
            return gid
        cid = cell.get("id")
        return f"id:{cid}" if isinstance(cid, str) else None

    release_keys = [key(c) for c in release_nb.cells]
    known = {k for k in release_keys if k}
    editable = {k for c, k in zip(release_nb.cells, release_keys)
                if k and (_nbg(c).get("solution") or not _nbg(c))}
    plain_by_source = {c.source: k for c, k in zip(release_nb.cells, release_keys) if k and not _nbg(c)}
    solution_ids = [_nbg(c)["grade_id"] for c in release_nb.cells if _nbg(c).get("solution")]
    taken: dict[str, str] = {}  # release key -> submitted source
    extras: dict[str | None, list[NotebookNode]] = {}
    anchor: str | None = None
    recognised = 0
    for cell in cells:
        if not isinstance(cell, dict):
            continue
        source = _source(cell)
        if len(source) > limits.max_cell_chars:
            notes.append(f"a cell of {len(source)} characters was dropped (limit {limits.max_cell_chars})")
            continue
        k = key(cell)
        nbg_meta = _nbg(cell)
        if k is None or k not in known or (k.startswith("id:") and nbg_meta):
            k = plain_by_source.get(source) if not nbg_meta else None
        if k is not None and k not in taken:
            taken[k] = source
            anchor = k
            recognised += not k.startswith("id:")
            continue
        ctype = cell.get("cell_type")
        if ctype == "code":
            new = nbformat.v4.new_code_cell(source)
        elif ctype == "markdown":
            new = nbformat.v4.new_markdown_cell(source)
        else:
            continue
        if nbg_meta:
            notes.append("a copy of a graded cell (or a cell with made-up grading metadata) was kept as an "
                         "ordinary, ungraded cell")
        extras.setdefault(anchor, []).append(new)
    if recognised == 0:
        raise SubmissionError(
            f"{notebook_name} does not look like the {assignment} notebook: none of its graded cells "
            f"({', '.join(solution_ids[:3])}, ...) are in it. Did you submit another assignment's notebook?")
    rebuilt = nbformat.v4.new_notebook(metadata=json.loads(json.dumps(release_nb.metadata)))
    rebuilt.nbformat, rebuilt.nbformat_minor = release_nb.nbformat, release_nb.nbformat_minor
    code_cells: list[tuple[str, str]] = []

    def add_extras(anchor_key: str | None) -> None:
        for extra in extras.get(anchor_key, []):
            rebuilt.cells.append(extra)
            if extra.cell_type == "code":
                code_cells.append((f"your cell after {(anchor_key or 'the start').removeprefix('id:')}", extra.source))

    add_extras(None)
    for cell, k in zip(release_nb.cells, release_keys):
        new = nbformat.from_dict(json.loads(json.dumps(cell)))
        if k in editable:
            if k in taken:
                new.source = taken[k]
            elif k in solution_ids:
                notes.append(f"the solution cell {k} is missing from your notebook: graded as unanswered")
            if new.cell_type == "code":
                code_cells.append((k.removeprefix("id:"), new.source))
        if new.cell_type == "code":
            new.outputs, new.execution_count = [], None
        rebuilt.cells.append(new)
        if k:
            add_extras(k)
    for i, cell in enumerate(rebuilt.cells):  # fresh, unique cell ids
        cell["id"] = f"cell-{i}"
    return rebuilt, code_cells


_SHADOWED: set[str] | None = None


def _installed_modules() -> set[str]:
    """Top-level names of the installed packages (torch, numpy, course_lib, ...): a submitted file
    or folder with one of these names would replace, for the notebook's own tests, the code they
    import. The standard library is not included (a student's ``test.py`` is theirs to import)."""
    global _SHADOWED
    if _SHADOWED is None:
        import importlib.metadata

        _SHADOWED = set(importlib.metadata.packages_distributions()) | {"course_lib"}
    return _SHADOWED


def _stage_files(submission_dir: Path, notebook_name: str, limits: IntakeLimits, notes: list[str]) -> list[tuple[str, Path]]:
    accepted, total = [], 0
    installed = _installed_modules()
    for dirpath, dirnames, filenames in os.walk(submission_dir, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in (".ipynb_checkpoints", "__pycache__"))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = str(path.relative_to(submission_dir))
            if rel in (notebook_name, "timestamp.txt"):
                continue
            top = Path(rel).parts[0]
            if top.split(".")[0] in installed and (len(Path(rel).parts) > 1 or top.endswith((".py", ".so", ".pyc"))):
                notes.append(f"{rel} was skipped: it would replace the installed module {top.split('.')[0]!r} "
                             "that the tests import")
                continue
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                notes.append(f"{rel} was skipped: not a regular file (links are not followed)")
                continue
            if len(accepted) >= limits.max_files:
                notes.append(f"{rel} was skipped: more than {limits.max_files} files")
                continue
            if st.st_size > limits.file_mb * MB:
                notes.append(f"{rel} was skipped: {_human(st.st_size)} is over the {limits.file_mb:g} MB limit per file")
                continue
            if total + st.st_size > limits.total_mb * MB:
                notes.append(f"{rel} was skipped: the files together would exceed {limits.total_mb:g} MB")
                continue
            total += st.st_size
            accepted.append((rel, path))
    return accepted


def read_timestamp(submission_dir: Path) -> str | None:
    path = submission_dir / "timestamp.txt"
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > 200:
        return None
    text = path.read_text(errors="replace").strip()
    return text if re.fullmatch(r"[0-9T:.+\- ]{8,40}", text) else None


# ---- the kernel in the sandbox --------------------------------------------------------------


@dataclasses.dataclass
class KernelSettings:
    uid: int = jail.SANDBOX_UID_BASE
    limits: jail.Limits = dataclasses.field(default_factory=lambda: jail.Limits(cpu_s=600))
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # added to jail.base_env()
    scratch: str = "/tmp"  # where per-launch files (spec, log, connection copy) go
    sandbox: bool = True


class SandboxedKernelManager(AsyncKernelManager):
    """Starts ``ipykernel`` inside the jail, whatever the notebook's kernelspec says."""

    settings: KernelSettings = KernelSettings()  # set by the worker before each submission
    launches = 0
    max_message_bytes = 64 * MB  # a bigger message from the kernel drops the connection

    def client(self, **kwargs: Any):
        kc = super().client(**kwargs)
        import zmq

        kc.context.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)  # default for its sockets
        return kc

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        s = type(self).settings
        if s.sandbox:
            jail.clear_uid(s.uid)  # what a previous kernel of this slot left behind
        type(self).launches += 1
        launch_dir = Path(s.scratch) / f"kernel{type(self).launches}"
        launch_dir.mkdir(parents=True)
        cwd = Path((self._launch_args or {}).get("cwd") or ".")
        stage = launch_dir / "stage"
        stage.mkdir()
        for entry in cwd.iterdir():  # the submission's files, without the notebook being graded
            if entry.suffix != ".ipynb" and entry.is_file() and not entry.is_symlink():
                shutil.copy2(entry, stage / entry.name)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, stage / entry.name, symlinks=True)
        conn = launch_dir / "connection.json"
        shutil.copy2(self.connection_file, conn)
        if s.sandbox:
            os.chown(conn, s.uid, s.uid)
        os.chmod(conn, 0o400)
        extra = list(extra_arguments or [])
        if s.sandbox:
            argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "/run/kernel/connection.json", *extra]
            binds = [[str(conn), "/run/kernel/connection.json", False]]
        else:
            argv = [sys.executable, "-m", "ipykernel_launcher", "-f", str(conn), *extra]
            binds = []
            (launch_dir / "scratch").mkdir()
        spec = jail.JailSpec(
            argv=argv, env={**jail.base_env(), **s.env}, log_path=str(launch_dir / "kernel.log"),
            stage_dir=str(stage), ro_paths=jail.python_paths() + [jail.course_lib_path()], binds=binds,
            uid=s.uid, new_net=False, limits=s.limits, sandbox=s.sandbox, parent_pid=os.getpid(),
            scratch_dir=str(launch_dir / "scratch") if not s.sandbox else None)
        return jail.launcher_argv(jail.write_spec(spec, launch_dir / "jail.json"))


def _error_output(ename: str, evalue: str) -> NotebookNode:
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


class SandboxedExecute(Execute):
    """nbgrader's Execute, with the kernel in the sandbox and recovery from dead or deaf kernels."""

    interrupt_grace = Float(3.0, help="seconds a kernel has to answer an interrupt before it is killed").tag(config=True)
    max_restarts = Integer(10, help="kernels replaced per notebook before the remaining cells are given up").tag(config=True)
    max_output_bytes = Integer(1_000_000, help="output kept per cell; a cell printing more is interrupted").tag(config=True)

    def __init__(self, **kw: Any):
        kw.setdefault("kernel_manager_class", SandboxedKernelManager)
        super().__init__(**kw)

    @default("kernel_manager_class")
    def _sandboxed_km(self):
        return SandboxedKernelManager

    @default("iopub_timeout")
    def _iopub(self):
        return int(self.interrupt_grace)

    def preprocess(self, nb, resources=None, km=None):
        self._ran: list[int] = []
        self._restarts = 0
        self._gave_up = False
        self._out_bytes = 0
        self._cut = False
        self.kernel_events: list[str] = []
        return super().preprocess(nb, resources, km)

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        size = len(content.get("text", "")) if isinstance(content.get("text"), str) else 0
        for value in (content.get("data") or {}).values():
            size += len(value) if isinstance(value, str) else len(json.dumps(value))
        size += sum(len(x) for x in content.get("traceback", []) if isinstance(x, str))
        self._out_bytes += size
        if self._out_bytes > self.max_output_bytes:
            if not self._cut:
                self._cut = True
                outs.append(nbformat.v4.new_output(
                    "stream", name="stdout",
                    text=f"\n[the grader cut this cell's output at {self.max_output_bytes} bytes and interrupted it]\n"))
                asyncio.ensure_future(self.km.interrupt_kernel())
            return None
        return super().output(outs, msg, display_id, cell_index)

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if cell.cell_type != "code" or not cell.source.strip():
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        if self._gave_up:
            cell.outputs = [_error_output("NotRun", "not run: the kernel stopped answering earlier in the notebook")]
            return cell
        self._out_bytes, self._cut = 0, False
        try:
            cell = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        except (CellTimeoutError, DeadKernelError, TimeoutError) as err:
            alive = await self._kernel_alive()
            reason = ("the cell ran past the time limit and did not stop when interrupted" if alive
                      else "the kernel died (it exited, crashed, or hit a memory or CPU limit)")
            self.kernel_events.append(f"cell {cell_index}: {reason}")
            cell.outputs = list(cell.get("outputs", []))[-20:] + [_error_output(type(err).__name__, reason)]
            await self._replace_kernel()
            return cell
        self._ran.append(cell_index)
        if self._stop_strays():
            self.kernel_events.append(f"cell {cell_index}: processes it left running were stopped")
        return cell

    def _stop_strays(self) -> int:
        """Kill the processes a cell forked and left running (a fork bomb would otherwise hold the
        process limit for the rest of the notebook); how many there were."""
        settings = SandboxedKernelManager.settings
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        if settings.sandbox and process is not None:
            return jail.stop_strays(settings.uid, process.pid)
        return 0

    execute_cell = run_sync(async_execute_cell)  # nbclient binds the sync wrapper to its own method

    async def _kernel_alive(self) -> bool:
        try:
            return bool(await self.km.is_alive())
        except Exception:  # noqa: BLE001
            return False

    async def _replace_kernel(self) -> None:
        """A fresh kernel with the state of the cells that ran before (re-run silently)."""
        while not self._gave_up:
            if self._restarts >= self.max_restarts:
                self._gave_up = True
                break
            self._restarts += 1
            try:
                await self.km.restart_kernel(now=True)
                await self.kc.wait_for_ready(timeout=self.startup_timeout)
                for index in self._ran:
                    if self.nb.cells[index].get("metadata", {}).get("nbgrader", {}).get("grade"):
                        continue  # test cells define nothing later cells need; they are not re-run
                    msg_id = self.kc.execute(self.nb.cells[index].source, silent=True, store_history=False)
                    reply = await self._wait_reply(msg_id, self._get_timeout(self.nb.cells[index]))
                    if reply is None:
                        raise TimeoutError(f"replaying cell {index} did not finish")
                return
            except Exception as err:  # noqa: BLE001 - try again with a new kernel, up to max_restarts
                self.kernel_events.append(f"kernel restart {self._restarts} failed: {type(err).__name__}: {err}")
        try:
            await self.km.shutdown_kernel(now=True)
        except Exception:  # noqa: BLE001
            pass

    async def _wait_reply(self, msg_id: str, timeout: int | None) -> dict | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or 600)
        while loop.time() < deadline:
            try:
                msg = await self.kc.shell_channel.get_msg(timeout=max(0.1, min(1.0, deadline - loop.time())))
            except Exception:  # noqa: BLE001 - queue.Empty: check the kernel and wait on
                if not await self._kernel_alive():
                    return None
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return msg
        return None


# ---- nbgrader autograde on one submission, in a private course copy -----------------------


@dataclasses.dataclass
class NotebookRun:
    ok: bool
    scores: dict[str, tuple[float | None, float]]  # grade_id -> (auto_score, max_score)
    notebook: NotebookNode | None  # the autograded notebook
    log: str
    error: str = ""
    kernel_events: list[str] = dataclasses.field(default_factory=list)


def run_autograde(private_root: Path, base_config, assignment: str, student: str, notebook_name: str,
                  execute_overrides: dict[str, Any] | None = None) -> NotebookRun:
    """``nbgrader autograde`` for one student in ``private_root`` (a course copy laid out as
    source/, submitted/, autograded/ and gradebook.db). Never raises for the student's doing."""
    import copy
    import io

    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.api import Gradebook
    from nbgrader.converters import Autograde
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput,
                                        SaveAutoGrades)

    config = copy.deepcopy(base_config)
    config.CourseDirectory.root = str(private_root)
    config.CourseDirectory.db_url = f"sqlite:///{private_root / 'gradebook.db'}"
    config.CourseDirectory.source_directory = "source"
    config.CourseDirectory.submitted_directory = "submitted"
    config.CourseDirectory.autograded_directory = "autograded"
    config.CourseDirectory.assignment_id = assignment
    config.CourseDirectory.student_id = student
    config.Autograde.autograde_preprocessors = [
        SandboxedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
        AssignLatePenalties, CheckCellMetadata]
    for key, value in (execute_overrides or {}).items():
        setattr(config.SandboxedExecute, key, value)

    log_buffer = io.StringIO()
    handler = logging.StreamHandler(log_buffer)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    events: list[str] = []
    original = SandboxedExecute.preprocess

    def preprocess(self, nb, resources=None, km=None):  # keep the kernel events for feedback
        try:
            return original(self, nb, resources, km)
        finally:
            events.extend(getattr(self, "kernel_events", []))

    SandboxedExecute.preprocess = preprocess
    error = ""
    try:
        coursedir = CourseDirectory(config=config)
        app = Autograde(coursedir=coursedir, config=config)
        app.force = True
        app.create_student = True
        app.log.addHandler(handler)
        try:
            app.start()
        except BaseException as err:  # noqa: BLE001 - nbgrader reports failures by raising
            error = f"{type(err).__name__}: {err}"
        finally:
            app.log.removeHandler(handler)
    finally:
        SandboxedExecute.preprocess = original

    scores: dict[str, tuple[float | None, float]] = {}
    notebook = None
    nb_id = Path(notebook_name).stem
    out_path = private_root / "autograded" / student / assignment / notebook_name
    if out_path.is_file():
        try:
            notebook = nbformat.read(out_path, as_version=4)
        except Exception as err:  # noqa: BLE001
            error = error or f"could not read the autograded notebook: {err}"
    try:
        with Gradebook(config.CourseDirectory.db_url, course_id=config.CourseDirectory.course_id) as gb:
            sub_nb = gb.find_submission_notebook(nb_id, assignment, student)
            for grade in sub_nb.grades:
                auto = None if grade.auto_score is None else float(grade.auto_score)
                scores[grade.name] = (auto, float(grade.max_score))
    except Exception as err:  # noqa: BLE001
        error = error or f"no grades recorded: {type(err).__name__}: {err}"
    ok = not error and notebook is not None and bool(scores)
    log = log_buffer.getvalue()
    if error:  # nbgrader's own exception only says "see the traceback above": name the real one
        causes = [line.strip() for line in log.splitlines()
                  if re.match(r"^\s*[\w.]+(Error|Exception|Exit|Interrupt)\b", line) and "NbGraderException" not in line]
        if causes:
            error = causes[-1][:300]
    return NotebookRun(ok, scores, notebook, log[-20000:], error, events)
