"""course_lib.grading: the checks exercise tests call must pass right answers,
fail wrong ones, and say what differed."""

import pytest
import torch

from course_lib import grading
from course_lib.grading import GradingError, check_raises, check_scalar, check_tensor, compare_with_reference


def test_check_tensor_passes_close_values():
    e = torch.tensor([1.0, 2.0, 3.0])
    check_tensor(e + 1e-7, e)
    check_tensor(torch.tensor([1, 2]), torch.tensor([1, 2]))
    check_tensor(torch.empty(0, 3), torch.empty(0, 3))


@pytest.mark.parametrize(
    "got, match",
    [
        (None, r"expected a Tensor or Parameter, got NoneType \(did you forget to return\?\)"),
        ([1.0, 2.0, 3.0], "got list"),
        (torch.zeros(3, 1), r"wrong shape: expected \(3,\), got \(3, 1\)"),
        (torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), "wrong dtype: expected torch.float32, got torch.float64"),
        (torch.tensor([1.0, 2.5, 3.0]), r"wrong value at index \(1,\): expected 2, got 2.5 \(1 of 3 elements differ"),
        (torch.tensor([1.0, float("nan"), 3.0]), r"non-finite value nan at index \(1,\)"),
    ],
)
def test_check_tensor_messages(got, match):
    with pytest.raises(GradingError, match=match):
        check_tensor(got, torch.tensor([1.0, 2.0, 3.0]), "f")


def test_check_tensor_names_the_multi_dimensional_index():
    e = torch.zeros(2, 3, dtype=torch.long)
    g = e.clone()
    g[1, 2] = 7
    with pytest.raises(GradingError, match=r"f: wrong value at index \(1, 2\): expected 0, got 7"):
        check_tensor(g, e, "f")


def test_check_tensor_refuses_subclasses_that_fake_equality():
    class Liar(torch.Tensor):
        def __eq__(self, other):
            return True

    fake = torch.zeros(3).as_subclass(Liar)
    with pytest.raises(GradingError, match="got Liar"):
        check_tensor(fake, torch.ones(3))


def test_check_tensor_dtype_tolerances():
    e = torch.tensor([1.0], dtype=torch.bfloat16)
    check_tensor(torch.tensor([1.0078125], dtype=torch.bfloat16), e)  # one bf16 ulp
    with pytest.raises(GradingError):
        check_tensor(torch.tensor([1.0 + 1e-5]), torch.tensor([1.0]), rtol=0, atol=1e-6)


def test_check_scalar():
    check_scalar(0.1 + 0.2, 0.3)
    check_scalar(torch.tensor(2.0), 2.0)
    with pytest.raises(GradingError, match="expected a number, got str"):
        check_scalar("0.3", 0.3)
    with pytest.raises(GradingError, match="expected 1, got 2"):
        check_scalar(2.0, 1.0, "x")


def test_check_raises():
    check_raises(lambda: [][1], IndexError)
    with pytest.raises(GradingError, match="expected IndexError for an unknown id, but nothing was raised"):
        check_raises(lambda: None, IndexError, why="for an unknown id")
    with pytest.raises(GradingError, match="but got ValueError: boom"):
        check_raises(lambda: (_ for _ in ()).throw(ValueError("boom")), IndexError)


def test_compare_with_reference_names_the_case_and_protects_inputs():
    def ref(x):
        return x * 2

    def student_inplace(x):
        x.mul_(2)
        return x

    cases = [(torch.ones(2),), ((torch.arange(3.0),), {})]
    compare_with_reference(student_inplace, ref, cases)
    with pytest.raises(GradingError, match=r"wrong \(case 2 of 2\)"):
        compare_with_reference(lambda x: x * 2 + (x > 1), ref, cases, name="wrong")
    with pytest.raises(GradingError, match="result 1"):
        compare_with_reference(lambda x: (x, x), lambda x: (x, x + 1), cases[:1])


def test_seed_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(grading.SEED_ENV, raising=False)
    assert grading.grading_seed() == grading.DEFAULT_SEED
    a = torch.rand(3, generator=grading.rng(0))
    monkeypatch.setenv(grading.SEED_ENV, "123")
    assert grading.grading_seed() == 123
    b = torch.rand(3, generator=grading.rng(0))
    assert not torch.equal(a, b)
    assert torch.equal(b, torch.rand(3, generator=grading.rng(0)))
    assert not torch.equal(b, torch.rand(3, generator=grading.rng(1)))  # streams differ
    monkeypatch.setenv(grading.SEED_ENV, "abc")
    with pytest.raises(ValueError, match="must be an integer"):
        grading.grading_seed()
