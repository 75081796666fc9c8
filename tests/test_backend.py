"""The backend decision: one place, forceable, and loud when a forced backend cannot run."""

import pytest
import torch

from course_lib.kernels import backend
from course_lib.kernels.backend import check_tensor, force_backend, use_triton


def test_cpu_tensors_use_triton_only_under_the_interpreter(monkeypatch):
    x = torch.zeros(3)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert use_triton(x)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not use_triton(x)


def test_force_backend_context_nests_and_restores(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = torch.zeros(3)
    with force_backend("torch"):
        assert not use_triton(x)
        with force_backend("triton"):
            assert use_triton(x)
        assert not use_triton(x)
    assert use_triton(x)


def test_environment_variable_forces_a_backend(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("COURSE_LIB_BACKEND", "torch")
    assert not use_triton(torch.zeros(1))
    monkeypatch.setenv("COURSE_LIB_BACKEND", "cuda")
    with pytest.raises(ValueError, match="COURSE_LIB_BACKEND must be one of"):
        use_triton(torch.zeros(1))


def test_forcing_triton_where_it_cannot_run_says_why(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with force_backend("triton"), pytest.raises(RuntimeError, match=r"embedding: the Triton backend was forced.*TRITON_INTERPRET=1"):
        use_triton(torch.zeros(1), op="embedding")
    with pytest.raises(ValueError, match="backend must be one of"):
        with force_backend("gpu"):
            pass


def test_describe(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend.describe(torch.zeros(1)) == "requested=auto, chosen=triton (interpreter)"
    with force_backend("torch"):
        assert backend.describe(torch.zeros(1)) == "requested=torch, chosen=torch"


def test_check_tensor_messages():
    with pytest.raises(TypeError, match="weight must be a torch.Tensor, got list"):
        check_tensor("weight", [1.0])
    with pytest.raises(ValueError, match=r"weight must have 2 dimensions, got shape \(3,\)"):
        check_tensor("weight", torch.zeros(3), dim=2)
    with pytest.raises(TypeError, match=r"ids must have dtype in \(int32, int64\), got float32"):
        check_tensor("ids", torch.zeros(3), dtypes=backend.INDEX_DTYPES)
    with pytest.raises(ValueError, match="ids is on cpu but must be on meta"):
        check_tensor("ids", torch.zeros(3), device=torch.device("meta"))
