"""Plain data across the sandbox boundary: tensors by name in a safetensors file, the rest JSON.

Used on both sides: by the grader, and by the runner inside the sandbox, which gets a copy of
this file (so it imports only the standard library and torch, never ``course_lib``). Nothing is
pickled. :func:`decode` accepts only what :func:`encode` writes and raises ``ValueError`` on
anything else; the only objects it builds are tensors (from safetensors), dtypes, tuples,
lists, dicts, sets (of numbers and strings), numbers, strings, booleans, ``None`` and
``torch.Generator``s (a CPU generator travels as its exact state, a uint8 tensor).
"""

from __future__ import annotations

import math
from typing import Any

import torch

_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128)}


def encode(value: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """JSON-able description of ``value``; its tensors go into ``tensors`` under new names."""
    if type(value) is torch.Tensor:  # exactly: no subclasses
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"$tensor": key}
    if isinstance(value, torch.dtype):
        return {"$dtype": str(value).removeprefix("torch.")}
    if type(value) is tuple:
        return {"$tuple": [encode(v, tensors, prefix) for v in value]}
    if type(value) is list:
        return [encode(v, tensors, prefix) for v in value]
    if type(value) in (set, frozenset):
        items = list(value)
        if not all(type(v) in (int, str, bool) for v in items):
            raise TypeError("only sets of ints and strings can cross the sandbox boundary")
        return {"$set": sorted(items, key=lambda v: (type(v).__name__, v))}
    if type(value) is torch.Generator:
        if value.device.type != "cpu":
            raise TypeError("only CPU generators can cross the sandbox boundary")
        return {"$generator": encode(value.get_state(), tensors, prefix)}
    if type(value) is dict and all(type(k) is str and not k.startswith("$") for k in value):
        return {k: encode(v, tensors, prefix) for k, v in value.items()}
    if type(value) is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if value is None or type(value) in (bool, int, str):
        return value
    raise TypeError(f"cannot send a {type(value).__name__} across the sandbox boundary")


def decode(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode`. Raises ``ValueError`` on anything malformed."""
    if isinstance(data, dict):
        if set(data) == {"$tensor"}:
            key = data["$tensor"]
            if type(key) is not str or key not in tensors:
                raise ValueError(f"refers to a tensor {key!r} that was not sent")
            return tensors[key]
        if set(data) == {"$dtype"}:
            if data["$dtype"] not in _DTYPES:
                raise ValueError(f"unknown dtype {data['$dtype']!r}")
            return _DTYPES[data["$dtype"]]
        if set(data) == {"$tuple"}:
            if type(data["$tuple"]) is not list:
                raise ValueError("malformed tuple")
            return tuple(decode(v, tensors) for v in data["$tuple"])
        if set(data) == {"$set"}:
            items = data["$set"]
            if type(items) is not list or not all(type(v) in (int, str, bool) for v in items):
                raise ValueError("malformed set")
            return set(items)
        if set(data) == {"$generator"}:
            state = decode(data["$generator"], tensors)
            if type(state) is not torch.Tensor or state.dtype != torch.uint8 or state.dim() != 1:
                raise ValueError("malformed generator state")
            generator = torch.Generator()
            try:
                generator.set_state(state.clone())
            except RuntimeError as err:
                raise ValueError(f"malformed generator state: {err}") from None
            return generator
        if set(data) == {"$float"}:
            if data["$float"] not in ("inf", "-inf", "nan"):
                raise ValueError("malformed float")
            return float(data["$float"])
        if any(k.startswith("$") for k in data):
            raise ValueError(f"unknown marker in {sorted(data)}")
        return {k: decode(v, tensors) for k, v in data.items()}
    if isinstance(data, list):
        return [decode(v, tensors) for v in data]
    if data is None or type(data) in (bool, int, float, str):
        return data
    raise ValueError(f"unexpected {type(data).__name__}")
