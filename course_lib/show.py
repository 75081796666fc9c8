"""Show ``course_lib``'s own source in the book, so the code a reader sees is the
code that ran and was tested (never a pasted copy that can drift)."""

from __future__ import annotations

import inspect
import textwrap


def source(obj) -> str:
    """The source text of a module, class or function, dedented.

    A ``@triton.jit`` kernel is an object wrapping the Python function (``.fn``); its
    source is that function's, decorator included."""
    obj = getattr(obj, "fn", obj)
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (TypeError, OSError) as err:
        raise TypeError(f"cannot show the source of {obj!r}: {err}") from None


def show_source(*objs):
    """Display the source of each object as a highlighted Python block
    (``IPython.display.Code``), with a comment naming the file it comes from."""
    from IPython.display import Code

    parts = []
    for obj in objs:
        obj = getattr(obj, "fn", obj)  # a @triton.jit kernel: name the function it wraps
        module = inspect.getmodule(obj)
        where = module.__name__ if module else "?"
        name = getattr(obj, "__qualname__", where)
        header = f"# {where}" if inspect.ismodule(obj) else f"# {where}.{name}"
        parts.append(header + "\n" + source(obj).rstrip())
    return Code("\n\n\n".join(parts), language="python")
