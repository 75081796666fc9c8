"""The one place that decides whether an operation runs as a Triton kernel or as
its plain-PyTorch reference.

Rules, in order:

1. A forced backend wins: ``force_backend("torch")`` / ``force_backend("triton")``
   (a context manager), or the environment variable ``COURSE_LIB_BACKEND`` set to
   ``torch`` or ``triton`` (``auto``, the default, applies the rules below).
2. Under ``TRITON_INTERPRET=1`` Triton's interpreter runs the kernels on CPU
   tensors, so CI machines without a GPU execute every kernel's real code.
3. Otherwise CUDA tensors go to Triton and CPU tensors to the reference.

Forcing ``triton`` where it cannot run (CPU tensors without the interpreter, or
no Triton installed) raises an error that says so, instead of silently falling
back.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

BACKENDS = ("auto", "triton", "torch")
_forced: str | None = None

try:  # Triton is a hard requirement on Linux, but keep the reference usable without it.
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only where triton is absent
    HAS_TRITON = False


def interpreter_active() -> bool:
    """True when Triton kernels are being run by the CPU interpreter.

    Triton reads ``TRITON_INTERPRET`` when a ``@triton.jit`` function is *defined*,
    so it must be set before ``course_lib`` is imported."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def requested_backend() -> str:
    """The backend asked for: the innermost ``force_backend``, else ``COURSE_LIB_BACKEND``."""
    name = _forced or os.environ.get("COURSE_LIB_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"COURSE_LIB_BACKEND must be one of {BACKENDS}, got {name!r}")
    return name


@contextlib.contextmanager
def force_backend(name: str) -> Iterator[None]:
    """Run the enclosed code with every kernel on one backend.

    >>> with force_backend("torch"):
    ...     y = embedding(ids, weight)      # the PyTorch reference, whatever the device
    """
    global _forced
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous


def _triton_can_run(tensors: tuple[torch.Tensor, ...]) -> tuple[bool, str]:
    if not HAS_TRITON:
        return False, "triton is not installed"
    devices = {t.device.type for t in tensors}
    if interpreter_active():
        return True, ""
    if devices == {"cuda"}:
        return True, ""
    return False, (
        f"tensors are on {sorted(devices)}; Triton kernels need CUDA tensors, "
        "or TRITON_INTERPRET=1 (set before importing course_lib) to run on the CPU"
    )


def use_triton(*tensors: torch.Tensor, op: str = "kernel") -> bool:
    """Decide the backend for one call of ``op`` on ``tensors``."""
    name = requested_backend()
    if name == "torch":
        return False
    ok, why = _triton_can_run(tensors)
    if name == "triton" and not ok:
        raise RuntimeError(f"{op}: the Triton backend was forced but cannot run: {why}")
    return ok


def describe(*tensors: torch.Tensor) -> str:
    """A one-line description of what ``use_triton`` would pick, for the book and logs."""
    name = requested_backend()
    ok, why = _triton_can_run(tensors) if tensors else (HAS_TRITON and interpreter_active(), "")
    chosen = "torch" if name == "torch" else ("triton" if ok else "torch")
    mode = " (interpreter)" if chosen == "triton" and interpreter_active() else ""
    return f"requested={name}, chosen={chosen}{mode}" + (f" [{why}]" if why and name != "torch" else "")


# ---- input checks shared by every kernel file --------------------------------------------
# Kernels must fail with a sentence that names the argument, what was expected and what
# came, before anything is launched: an error from inside a kernel names none of these.


def check_tensor(
    name: str,
    t: object,
    *,
    dim: int | tuple[int, ...] | None = None,
    dtypes: tuple[torch.dtype, ...] | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dim is not None:
        dims = (dim,) if isinstance(dim, int) else dim
        if t.dim() not in dims:
            raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({allowed}), got {str(t.dtype).replace('torch.', '')}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but must be on {device} (the same device as the other inputs)")
    return t


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)
