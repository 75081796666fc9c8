"""Test-suite set-up.

Without a GPU, Triton kernels run through Triton's interpreter: TRITON_INTERPRET=1
must be in the environment before anything defines a ``@triton.jit`` function, so it
is set here, before course_lib is imported (notebook kernels started by nbval and
nbgrader inherit it). With a GPU the kernels run natively and the ``gpu`` tests run.
"""

import os
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Subprocesses find this environment's tools (nbgrader runs `alembic` by name) even when
# pytest was started as .venv/bin/python without activating the environment.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
# Notebook kernels and subprocesses must not pick up a student's or instructor's seed.
os.environ.pop("COURSE_GRADING_SEED", None)

from course_lib.kernels.backend import interpreter_active  # noqa: E402


def pytest_collection_modifyitems(config, items):
    no_gpu = pytest.mark.skip(reason="needs a CUDA device")
    no_interp = pytest.mark.skip(
        reason="runs Triton on CPU tensors only under TRITON_INTERPRET=1 (on a GPU machine: TRITON_INTERPRET=1 pytest -m interpreter)"
    )
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "interpreter" in item.keywords and not interpreter_active():
            item.add_marker(no_interp)


@pytest.fixture(scope="module")
def one_thread_torch_backend():
    """For a module of tiny models (``pytestmark = pytest.mark.usefixtures(...)``): the plain
    PyTorch paths (as torchrun workers and graders run them, without the interpreter), on one
    thread (tiny matmuls: no OpenMP wake-ups, and no contention with the other test worker)."""
    from course_lib.kernels import backend

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with backend.force_backend("torch"):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def backend_state_is_restored(request):
    """A module must leave the kernel backend as it found it: the suite runs test files in
    any order across workers, so a forced backend or a COURSE_LIB_BACKEND set by one module
    (e.g. at import time) would silently change what later modules test."""
    from course_lib.kernels import backend

    before = (backend._forced, os.environ.get("COURSE_LIB_BACKEND"))
    yield
    after = (backend._forced, os.environ.get("COURSE_LIB_BACKEND"))
    assert after == before, f"{request.module.__name__} left the backend (forced, $COURSE_LIB_BACKEND) {before} -> {after}"
