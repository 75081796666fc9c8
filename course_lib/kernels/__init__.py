"""Triton kernels, one file per operation (Liger-Kernel's ``ops/`` layout).

Each file holds the ``@triton.jit`` kernels, their launchers, a plain-PyTorch
reference and one ``torch.autograd.Function`` that dispatches through
:mod:`course_lib.kernels.backend`. This package imports nothing else from
``course_lib``.
"""

from .backend import force_backend, interpreter_active, use_triton

__all__ = ["force_backend", "interpreter_active", "use_triton"]
