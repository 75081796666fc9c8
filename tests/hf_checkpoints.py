"""Tiny random Hugging Face checkpoints, the raw material of the parity tests
(``test_bert.py``, ``test_roberta.py``, ``test_albert.py``, ``test_gpt2.py``, ``test_t5.py``,
``test_bart.py``, ``test_generation.py``).

Each test file says which HF class and config it wants; this module builds the model with
weights that depend only on a name, saves it with ``save_pretrained`` once per test module, and
hands out the model and its directory. HF starts every bias at 0 and every norm at weight 1,
bias 0: with those a dropped bias or a norm applied in the wrong place changes no output, so
``random_hf_model`` moves them off their initial values."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable

import torch


def random_hf_model(model_class, config, seed_name: str, *, norms: Iterable[str] = (),
                    biases: bool = True, scale: float = 0.1, extra: Callable | None = None):
    """``model_class(config)`` in eval mode, its weights seeded by ``seed_name`` (crc32: stable
    across runs and processes, unlike ``hash()``). Every parameter whose name ends in ``bias``
    (when ``biases``) or contains one of ``norms`` gets ``scale * N(0, 1)`` added. ``extra(model)``
    runs afterwards under ``no_grad``, for a file's own changes (an untied head, a scaled table)."""
    torch.manual_seed(zlib.crc32(seed_name.encode()))
    model = model_class(config)
    norms = tuple(norms)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if (biases and name.endswith("bias")) or any(part in name for part in norms):
                p.add_(scale * torch.randn_like(p))
        if extra is not None:
            extra(model)
    return model.eval()


def checkpoint_cache(tmp_path_factory, build: Callable):
    """For a module-scoped fixture: ``get(*key) -> (model, directory)`` where ``model =
    build(*key)`` was saved with ``save_pretrained``; each key is built and saved once."""
    cache: dict[tuple, tuple] = {}

    def get(*key):
        if key not in cache:
            model = build(*key)
            path = tmp_path_factory.mktemp("-".join(map(str, key)).replace("/", "-"))
            model.save_pretrained(path)
            cache[key] = (model, path)
        return cache[key]

    return get


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b|, in float64: the parity tests' one measure."""
    return (a.detach().double() - b.detach().double()).abs().max().item()


def assert_outputs_match(got: dict, want: dict, label: str, atol: float) -> dict[str, float]:
    """Each tensor of ``want`` (HF's) against ``got``'s under the same key: the same shape and a
    max abs difference <= ``atol``. Prints every difference (``pytest -s`` shows them) and
    returns them by key."""
    diffs = {}
    for key in want:
        assert got[key].shape == want[key].shape, \
            f"{label} {key}: shape {tuple(got[key].shape)}, HF's is {tuple(want[key].shape)}"
        diffs[key] = d = max_diff(got[key], want[key])
        print(f"{label} {key:24s} max|diff| = {d:.2e}")
        assert d <= atol, f"{label} {key}: max abs difference {d:.2e} > {atol}"
    return diffs
