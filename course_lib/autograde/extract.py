"""The student's definitions, read from the notebook's text (never from a kernel that ran it).

The independent check must not inherit anything a notebook's cells *did* when they ran:
patched modules, replaced builtins, AST transformers, cached answers. So it gets source text
only: from the student's solution cells and the code cells the student added, in notebook
order, only the top-level statements that *define* something:

* ``import`` / ``from ... import``;
* ``def``, ``async def``, ``class`` (with their decorators);
* assignments whose targets are plain names (constants, lambdas, ``one_hot = my_one_hot``),
  unless the value calls something the student defined: definitions, not computations with
  the student's own functions (a demo line ``sims = cosine_similarity_matrix(W, W)`` is dropped).

Everything else at top level (calls, loops, ``if``/``try``/``with`` blocks, prints, attribute or
item assignments such as ``torch.allclose = ...``) is dropped. IPython syntax (``%magic``,
``!shell``) is first turned into Python by IPython's own transformer, then dropped as calls. A
cell that does not parse contributes nothing and is reported.
"""

from __future__ import annotations

import ast
from typing import Iterable

KEPT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _names_only(target: ast.expr) -> bool:
    if isinstance(target, ast.Name):
        return True
    if isinstance(target, (ast.Tuple, ast.List)):
        return all(_names_only(t) for t in target.elts)
    return False


def _keep(node: ast.stmt) -> bool:
    if isinstance(node, KEPT):
        return True
    if isinstance(node, ast.Assign):
        return all(_names_only(t) for t in node.targets)
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name)
    return False


def _to_python(source: str) -> str:
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # pragma: no cover - IPython comes with nbgrader
        return source
    try:
        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - fall back to the raw text; ast reports the problem
        return source


def _defined_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def _calls_any(value: ast.AST | None, names: set[str]) -> bool:
    if value is None:
        return False
    for call in ast.walk(value):
        if isinstance(call, ast.Call):
            if any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(call.func)):
                return True
    return False


def extract_definitions(cells: Iterable[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """``cells``: (label, source) pairs in notebook order. Returns the kept top-level statements
    as (label, Python source) pairs, in order, and notes for the student about cells that could
    not be read. The checker runs each statement on its own: one that raises is skipped."""
    parsed, notes = [], []
    for label, source in cells:
        if not source.strip():
            continue
        try:
            tree = ast.parse(_to_python(source))
        except SyntaxError as err:
            notes.append(f"{label}: syntax error on line {err.lineno}: {err.msg}; none of its definitions could be used")
            continue
        except (ValueError, RecursionError, MemoryError) as err:
            notes.append(f"{label}: could not be read ({type(err).__name__})")
            continue
        parsed.extend((label, node) for node in tree.body if _keep(node))
    student_names: set[str] = set()
    for _, node in parsed:
        student_names |= _defined_names(node)
    statements = []
    for label, node in parsed:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and _calls_any(node.value, student_names):
            continue
        try:
            statements.append((f"{label}, line {node.lineno}", ast.unparse(node)))
        except (ValueError, RecursionError):
            notes.append(f"{label}, line {node.lineno}: could not be read")
    return statements, notes
