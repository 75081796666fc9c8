"""Per-student feedback: one self-contained HTML page (no scripts, everything escaped).

It lists every graded test cell with its points, the notebook test's outcome, the independent
check's outcome and the score, then shows the notebook as graded. Hidden test cells appear
only as "hidden tests: passed / failed (ExceptionName)": neither their source nor their
output (which could show hidden inputs) is included, and the independent check's messages
for hidden checks name only the case number and the kind of mismatch.
"""

from __future__ import annotations

import html
import re
from typing import Any

from nbformat.notebooknode import NotebookNode

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TEXT_LIMIT = 5000

CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: .35rem .5rem; text-align: left; vertical-align: top; font-size: .92rem; }
th { background: #f2f2f2; }
.ok { color: #176117; } .bad { color: #a31515; } .muted { color: #666; }
pre { background: #f7f7f7; padding: .5rem; overflow-x: auto; white-space: pre-wrap; font-size: .85rem; }
.md { white-space: pre-wrap; border-left: 3px solid #ddd; padding-left: .6rem; margin: .8rem 0; }
.out { border-left: 3px solid #9bc; padding-left: .4rem; }
.err { border-left: 3px solid #d66; padding-left: .4rem; }
.hidden { border-left: 3px solid #b9b; padding-left: .4rem; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    text = ANSI.sub("", text)
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters cut)"


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:g}"


def _status(ok: bool | None, text: str) -> str:
    if ok is None:
        return f'<span class="muted">{_e(text)}</span>'
    return f'<span class="{"ok" if ok else "bad"}">{_e(text)}</span>'


def render(result: dict, notebook: NotebookNode | None, hidden_cells: set[str]) -> str:
    student, assignment = result.get("student", "?"), result.get("assignment", "?")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{_e(assignment)}: feedback for {_e(student)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(assignment)}: feedback for {_e(student)}</h1>",
        f"<p><strong>Score: {_fmt(result.get('score'))} / {_fmt(result.get('max_score'))}</strong>"
        f" <span class='muted'>(graded {_e(result.get('graded_at', ''))})</span></p>",
    ]
    if result.get("messages"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(m)}</li>" for m in result["messages"]) + "</ul>")
    parts.append(
        "<p class='muted'>A test's points count only if the test passed in your notebook <em>and</em> the "
        "grader's independent check of the same function passed: your functions are run again, on their own, "
        "in a fresh process. Hidden tests and checks use inputs you have not seen; their feedback says which "
        "case failed and how, not the inputs.</p>")
    parts.append("<table><tr><th>Test cell</th><th>Points</th><th>Notebook test</th>"
                 "<th>Independent check</th></tr>")
    for gid, cell in result.get("cells", {}).items():
        nb_ok = cell.get("notebook_passed")
        check = cell.get("check")
        check_html = _status(None, "not checked separately") if check is None else _status(
            check["passed"], "passed" if check["passed"] else check["reason"])
        parts.append(
            f"<tr><td>{_e(gid)}</td><td>{_fmt(cell.get('final'))} / {_fmt(cell.get('max'))}</td>"
            f"<td>{_status(nb_ok, 'passed' if nb_ok else cell.get('notebook_reason') or 'failed')}</td>"
            f"<td>{check_html}</td></tr>")
    parts.append("</table>")
    if notebook is not None:
        parts.append("<h2>Your notebook, as graded</h2>")
        for cell in notebook.cells:
            parts.append(_cell_html(cell, hidden_cells, result.get("cells", {})))
    parts.append("</body></html>")
    return "\n".join(parts)


def _cell_html(cell: NotebookNode, hidden_cells: set[str], graded: dict) -> str:
    nbg = cell.get("metadata", {}).get("nbgrader", {})
    gid = nbg.get("grade_id")
    source = cell.get("source", "")
    if gid in hidden_cells or "BEGIN HIDDEN TESTS" in source:
        info = graded.get(gid, {})
        ok = info.get("notebook_passed")
        text = "hidden tests: " + ("passed" if ok else f"failed ({info.get('notebook_reason') or 'error'})")
        return f"<div class='hidden'>{_status(bool(ok), text)}</div>"
    if cell.cell_type == "markdown":
        return f"<div class='md'>{_e(_clip(source))}</div>"
    if cell.cell_type != "code":
        return ""
    label = f"<div class='muted'>{_e(gid)}</div>" if gid else ""
    out = [label, f"<pre>{_e(_clip(source))}</pre>"]
    for output in cell.get("outputs", [])[:50]:
        kind = output.get("output_type")
        if kind == "stream":
            out.append(f"<div class='out'><pre>{_e(_clip(output.get('text', '')))}</pre></div>")
        elif kind == "error":
            tb = "\n".join(output.get("traceback", [])[-30:]) or f"{output.get('ename')}: {output.get('evalue')}"
            out.append(f"<div class='err'><pre>{_e(_clip(tb))}</pre></div>")
        elif kind in ("execute_result", "display_data"):
            data = output.get("data", {})
            if "text/plain" in data:
                out.append(f"<div class='out'><pre>{_e(_clip(str(data['text/plain'])))}</pre></div>")
            else:
                out.append("<div class='out muted'>[figure or rich output not shown]</div>")
    return "\n".join(out)


def notebook_outcome(cell: NotebookNode | None, hidden: bool) -> tuple[bool, str]:
    """(passed, reason) of one autograded test cell, as nbgrader judged it; for hidden cells the
    reason is only the exception's name."""
    if cell is None:
        return False, "the cell was not run"
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            ename = str(output.get("ename", "Error"))[:100]
            if hidden:
                return False, ename
            evalue = ANSI.sub("", str(output.get("evalue", "")))
            return False, f"{ename}: {evalue}"[:300]
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            return False, "the cell wrote to stderr"
    return True, ""
