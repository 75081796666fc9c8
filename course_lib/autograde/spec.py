"""What the instructor writes next to each graded notebook: which functions the independent
check calls, on which inputs, against which ``course_lib`` reference.

The spec lives at ``solutions/<assignment>/grading_spec.py`` (instructor-only: nbgrader's release
ignores it, see ``CourseDirectory.ignore`` in ``nbgrader_config.py``) and defines ``SPEC``, an
:class:`AssignmentSpec`. One :class:`Check` backs each autograded test cell of the notebook
(same ``grade_id``, same points)::

    SPEC = AssignmentSpec(
        notebook="ch01_embeddings.ipynb",
        preamble="import torch\\nimport torch.nn.functional as F\\n",
        checks=[
            Check("task1_one_hot_visible_tests", "one_hot", points=1, reference=ref.one_hot,
                  cases=[case(torch.tensor([2, 0, 2]), 4), case(torch.tensor([0, 4]), 4)]),
            Check("task1_one_hot_hidden_tests", "one_hot", points=1, reference=ref.one_hot,
                  cases=hidden_one_hot, hidden=True),   # hidden_one_hot(rng) -> list of cases
            ...
        ],
    )

The spec is loaded and run by the grader, outside the sandbox: the reference results never
enter it. Cases of a ``hidden`` check come from a function of a ``torch.Generator`` seeded from
the instructor's grading seed, and feedback never shows their inputs or values. A case whose
reference raises (an out-of-vocabulary id, say) expects the student's function to raise an
exception of the same class. A case's arguments may be tensors, numbers, strings, ``None``,
dtypes, tuples, lists, dicts, sets and ``torch.Generator``s (sent with their exact state).

Results are compared with :mod:`course_lib.grading` (exact type, dtype, shape, finite, within
tolerance; ``int`` results exactly), or by the check's own ``compare`` where several answers are
right (any optimal Huffman code, a tie between neighbours).

Values that cross into the sandbox and back are plain data: tensors in a safetensors file,
everything else JSON (``course_lib.autograde.wire``); nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

SPEC_FILENAME = "grading_spec.py"


@dataclasses.dataclass
class Case:
    """One call: ``function(*args, **kwargs)``."""

    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)


def case(*args: Any, **kwargs: Any) -> Case:
    return Case(tuple(args), dict(kwargs))


@dataclasses.dataclass
class Check:
    """The independent check behind one autograded test cell."""

    cell: str  # the nbgrader grade_id of the test cell
    function: str  # the student's function it calls
    points: float  # must equal the cell's points in the notebook
    reference: Callable[..., Any]  # the course_lib answer, run outside the sandbox
    cases: Sequence[Case] | Callable[[torch.Generator], Sequence[Case]]
    hidden: bool = False  # inputs drawn from the grading seed; never shown in feedback
    rtol: float | None = None  # None: course_lib.grading's per-dtype defaults
    atol: float | None = None
    # Per-dtype (rtol, atol) for tensor results, e.g. {torch.float32: (1e-4, 1e-5)}; wins over rtol/atol.
    tolerances: dict[torch.dtype, tuple[float, float]] | None = None
    # compare(got, want) replaces the default comparison where an answer is not unique (a Huffman
    # code, a tie): ``want`` is what ``reference`` returned, ``got`` the student's result as plain
    # data (check its types). Raises course_lib.grading.GradingError when ``got`` is wrong. Runs
    # outside the sandbox; must be a module-level function of the spec file (workers reload it).
    compare: Callable[[Any, Any], None] | None = None
    time_limit_s: float | None = None  # wall clock for all cases of this check (None: the grader's default)

    def make_cases(self, seed: int, assignment: str) -> list[Case]:
        if callable(self.cases):
            return list(self.cases(check_generator(seed, assignment, self.cell)))
        return list(self.cases)


@dataclasses.dataclass
class AssignmentSpec:
    notebook: str  # the graded notebook's file name, e.g. "ch01_embeddings.ipynb"
    checks: list[Check]
    # Run before the student's definitions in the independent check (the notebook's imports).
    preamble: str = "import torch\n"
    # Whether the student's code may import course_lib in the independent check. Off by default:
    # the reference implementations are what the exercise asks the student to write.
    course_lib_visible: bool = False
    # Autograded cells the notebook alone scores (say, a plot that only runs). Listed explicitly,
    # so that forgetting a check for a new test cell is an error, not a free point.
    unchecked_cells: tuple[str, ...] = ()
    assignment: str = ""  # filled in by load_spec from the folder name
    source_path: str = ""  # filled in by load_spec: where the grader's workers reload ``compare`` functions

    def check_for(self, cell: str) -> list[Check]:
        return [c for c in self.checks if c.cell == cell]

    def validate_against(self, grade_cells: dict[str, float]) -> None:
        """``grade_cells``: {grade_id: points} of the notebook's autograded test cells."""
        problems = []
        covered = {c.cell for c in self.checks} | set(self.unchecked_cells)
        for cell, points in grade_cells.items():
            if cell not in covered:
                problems.append(f"test cell {cell!r} ({points:g} points) has no check in the spec")
        for check in self.checks:
            if check.cell not in grade_cells:
                problems.append(f"the spec checks {check.cell!r}, which is not an autograded test cell of {self.notebook}")
            elif not math.isclose(float(check.points), float(grade_cells[check.cell])):
                problems.append(f"{check.cell!r}: the spec says {check.points:g} points, the notebook {grade_cells[check.cell]:g}")
        seen = set()
        for check in self.checks:
            if check.cell in seen:
                problems.append(f"two checks for {check.cell!r}")
            seen.add(check.cell)
        if problems:
            raise ValueError(f"grading spec for {self.assignment or self.notebook} does not match the notebook:\n  "
                             + "\n  ".join(problems))


def task_checks(task: str, function: str, reference: Callable[..., Any], visible: Sequence[Case],
                hidden: Callable[[torch.Generator], Sequence[Case]], points: tuple[float, float],
                hidden_options: dict | None = None, **options: Any) -> list[Check]:
    """The two checks of one task, as the course's notebooks lay a task out: the test cells
    ``<task>_visible_tests`` (the visible cases) and ``<task>_hidden_tests`` (cases drawn by
    ``hidden`` from the seed), worth ``points = (visible, hidden)``. ``options`` (``compare``,
    ``tolerances``, ...) go to both checks; ``hidden_options``, when given, to the hidden one."""
    return [Check(f"{task}_visible_tests", function, points[0], reference, visible, **options),
            Check(f"{task}_hidden_tests", function, points[1], reference, hidden, hidden=True,
                  **(options if hidden_options is None else hidden_options))]


def check_generator(seed: int, assignment: str, cell: str) -> torch.Generator:
    """The generator of one hidden check: a hash of the secret seed, the assignment and the
    cell, so that checks draw independent inputs and nothing else shares them."""
    digest = hashlib.sha256(f"{seed}:{assignment}:{cell}:independent-check".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def spec_path(course_root: str | Path, assignment: str, source_dir: str = "solutions") -> Path:
    return Path(course_root) / source_dir / assignment / SPEC_FILENAME


def load_spec(path: str | Path, assignment: str = "") -> AssignmentSpec:
    """Import the instructor's spec file and return its ``SPEC``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no grading spec at {path}: write one (see course_lib/autograde/spec.py) so that the "
            "grader can check each graded function outside the student's kernel")
    name = f"_grading_spec_{assignment or path.parent.name}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    no_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in solutions/
    try:
        module_spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
        sys.dont_write_bytecode = no_bytecode
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, AssignmentSpec):
        raise TypeError(f"{path} must define SPEC = AssignmentSpec(...)")
    spec.assignment = assignment or path.parent.name
    spec.source_path = str(path.resolve())
    return spec
