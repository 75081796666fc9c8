"""Hugging Face checkpoint directories, read and written by every model of the course.

A checkpoint directory, as ``transformers``' ``save_pretrained`` writes it, holds

* ``config.json``: the hyper-parameters, with ``model_type`` ("bert", "roberta", "gpt2", ...)
  and ``architectures`` (the class that saved it, e.g. ``["BertForPreTraining"]``);
* the weights: ``model.safetensors``, or for large models several shards listed in
  ``model.safetensors.index.json`` (``{"weight_map": {key: shard file}}``), or in old
  checkpoints ``pytorch_model.bin`` (a pickle: read with ``weights_only=True``, so no code
  in it runs).

Because every model file names its modules exactly as Hugging Face does, loading is a
key-by-key copy. What differs between models is small and lives in each model file: its
``model_type``, its config class, the prefix of its body (``bert.``, ``roberta.``,
``transformer.``, ...), which keys are tied to others (an LM head that *is* the embedding
table), and a few historical key spellings (:meth:`PreTrainedModel._rename_key`).

Whatever does not fit is reported at once, in one message: tensors whose shape differs
(always an error: the config does not describe these weights), and keys missing from the
checkpoint or not used by the model (a warning, or with ``strict=True`` an error; a missing
task head is normal when fine-tuning from a pretrained body).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SHARDED_INDEX_NAME = "model.safetensors.index.json"
PICKLE_NAME = "pytorch_model.bin"


# ---- configs ----------------------------------------------------------------------------


class ConfigMixin:
    """``from_dict`` / ``from_json`` / ``to_dict`` for a model's dataclass config.

    The dataclass's field names are Hugging Face's, so ``config.json`` maps onto it
    directly; keys the dataclass does not have (``architectures``, ``torch_dtype``, ...)
    are ignored. ``model_type`` is a class attribute, written into ``to_dict()``."""

    model_type: ClassVar[str] = ""

    @classmethod
    def _prepare(cls, d: dict) -> dict:
        """Adjust a raw config dict before the dataclass sees it (a model's own quirks)."""
        return d

    @classmethod
    def from_dict(cls, d: dict, **overrides):
        d = cls._prepare({**d, **overrides})
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_json(cls, path: str | os.PathLike, **overrides):
        """Read ``config.json`` (or a checkpoint directory holding one)."""
        path = Path(path)
        path = path / CONFIG_NAME if path.is_dir() else path
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")), **overrides)

    def to_dict(self) -> dict:
        return {"model_type": self.model_type, **asdict(self)}


def read_config(path: str | os.PathLike, model_types: tuple[str, ...], loader: str) -> dict:
    """``config.json`` of the checkpoint directory ``path``, after checking that it holds a
    model of one of ``model_types`` (so that a GPT-2 directory is never silently read as
    BERT weights)."""
    path = Path(path)
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint directory: {config_file} does not exist")
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{config_file} must hold a JSON object, got {type(raw).__name__}")
    model_type = raw.get("model_type")
    if model_type is not None and model_type not in model_types:
        raise ValueError(
            f"{path} holds a checkpoint of model_type {model_type!r} (architectures "
            f"{raw.get('architectures')}); {loader} loads model_type {' or '.join(map(repr, model_types))}"
        )
    return raw


# ---- weights ----------------------------------------------------------------------------


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint directory ``path``, by its Hugging Face key, on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)

    def load(file: Path) -> dict[str, torch.Tensor]:
        try:
            return load_file(str(file))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{file} is not a readable safetensors file: {e}") from None

    if (path / WEIGHTS_NAME).is_file():
        return load(path / WEIGHTS_NAME)
    if (path / SHARDED_INDEX_NAME).is_file():  # sharded: a map key -> shard file
        index = json.loads((path / SHARDED_INDEX_NAME).read_text(encoding="utf-8"))
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise ValueError(f"{path / SHARDED_INDEX_NAME} has no 'weight_map' object")
        state = {}
        for shard in sorted(set(weight_map.values())):
            if not (path / shard).is_file():
                raise FileNotFoundError(f"{path / SHARDED_INDEX_NAME} lists the shard {shard}, which does not exist")
            state.update(load(path / shard))
        absent = sorted(set(weight_map) - set(state))
        if absent:
            raise ValueError(f"the index maps {len(absent)} key(s) to shards that do not hold them: {absent[:5]}")
        return state
    if (path / PICKLE_NAME).is_file():
        return torch.load(path / PICKLE_NAME, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path} has no {WEIGHTS_NAME}, {SHARDED_INDEX_NAME} or {PICKLE_NAME}")


# ---- the base class ---------------------------------------------------------------------


class PreTrainedModel(nn.Module):
    """HF-format loading and saving for a model whose parameter names are Hugging Face's.

    A model file sets ``config_class`` (a :class:`ConfigMixin` dataclass),
    ``base_model_prefix`` (the attribute holding the body in models with a head:
    ``"bert"`` for ``BertForPreTraining.bert``), and ``_tied_keys``, pairs (key, the key it
    repeats) of parameters that are one tensor under two names. It implements
    ``init_weights`` and, where some weights are shared, ``tie_weights``."""

    config_class: ClassVar[type] = ConfigMixin
    base_model_prefix: ClassVar[str] = ""
    _tied_keys: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, config):
        super().__init__()
        self.config = config

    def tie_weights(self):
        """Point every tied parameter back at its source (a no-op without tied weights)."""

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # shared (tied) parameters count once

    # -- loading --

    @classmethod
    def _rename_key(cls, key: str) -> str | None:
        """A checkpoint key in this model's spelling, or None to drop it (a buffer that old
        checkpoints saved, such as ``position_ids``). The default keeps every key."""
        return key

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, strict: bool = False, **config_overrides):
        """Load a Hugging Face-format directory (``config.json`` and the weights, see
        :func:`read_weights`). Nothing is downloaded.

        A checkpoint of another ``model_type``, or a tensor whose shape differs from the
        model's, raises an error naming it. Missing and unexpected keys are listed in a
        warning (``strict=True``: an error) and kept in ``model.loading_info``; a head
        missing from the checkpoint keeps its fresh initialisation."""
        raw = read_config(path, (cls.config_class.model_type,), cls.__name__)
        model = cls(cls.config_class.from_dict(raw, **config_overrides))
        model.load_hf_state_dict(read_weights(path), strict=strict, source=str(path))
        return model

    def _normalise_keys(self, state: dict[str, torch.Tensor], own: dict) -> dict[str, torch.Tensor]:
        """Rename old spellings, then add or strip the body's prefix where that makes a key
        the model's: a checkpoint of the bare body (``encoder.layer.0...``) loads into a
        model with a head (``bert.encoder.layer.0...``) and the other way round."""
        prefix = self.base_model_prefix + "." if self.base_model_prefix else ""
        out = {}
        for key, tensor in state.items():
            key = self._rename_key(key)
            if key is None:
                continue
            if prefix and key not in own:
                if prefix + key in own:
                    key = prefix + key
                elif key.startswith(prefix) and key[len(prefix) :] in own:
                    key = key[len(prefix) :]
            out[key] = tensor
        return out

    def load_hf_state_dict(self, state: dict[str, torch.Tensor], *, strict: bool = False, source: str = "checkpoint"):
        """Copy a HF-named state dict into this model, key by key (see ``from_pretrained``)."""
        own = self.state_dict(keep_vars=True)
        state = self._normalise_keys(state, own)
        tied = {k for k, _ in self._tied_keys}
        mismatched = [
            f"{k}: the checkpoint has {tuple(state[k].shape)}, the model expects {tuple(own[k].shape)}"
            for k in own
            if k in state and k not in tied and state[k].shape != own[k].shape
        ]
        if mismatched:
            raise ValueError(
                f"{source} does not fit {type(self).__name__} (config {self.config}): shape mismatch for\n  "
                + "\n  ".join(mismatched)
            )
        missing = [k for k in own if k not in state and k not in tied]
        unexpected = [k for k in state if k not in own]
        with torch.no_grad():
            for k, tensor in state.items():
                if k in own and k not in tied:
                    own[k].copy_(tensor)
        self.tie_weights()
        self.loading_info = {"missing_keys": missing, "unexpected_keys": unexpected}
        if missing or unexpected:
            message = (
                f"loading {source} into {type(self).__name__}: "
                f"{len(missing)} missing key(s) {missing} (left at their initial values), "
                f"{len(unexpected)} unexpected key(s) {unexpected} (ignored)"
            )
            if strict:
                raise KeyError(message)
            warnings.warn(message, stacklevel=3)
        return self.loading_info

    # -- saving --

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` in Hugging Face's format: the
        directory loads with ``transformers``' ``from_pretrained`` as well as with ours."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {"architectures": [type(self).__name__], **self.config.to_dict()}
        (path / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tied = {k for k, _ in self._tied_keys}  # stored once, under the key they repeat
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items() if k not in tied}
        save_file(tensors, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
        return path


__all__ = ["ConfigMixin", "PreTrainedModel", "read_config", "read_weights"]
