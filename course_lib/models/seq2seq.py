"""What every encoder-decoder of the course shares (T5 and BART, Chapter 7): the output
objects, teacher forcing's ``shift_right``, and the input checks.

Training an encoder-decoder is *teacher forcing* (教师强制): the decoder reads the target
shifted one position to the right, behind a start token, and is trained to predict the
target at every position at once (the causal mask keeps position t from seeing targets
>= t). The output objects carry Hugging Face's field names (``logits``, ``past_key_values``,
``encoder_last_hidden_state``, ...), so code written for HF's models reads ours too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100  # labels with this value contribute no loss (padding)


# ---- outputs ----------------------------------------------------------------------------


@dataclass
class BaseModelOutput:
    last_hidden_state: torch.Tensor  # (B, S, D): the encoder's output
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, nh, S, S), if asked for

    def __getitem__(self, i):  # HF-style tuple access: encoder_outputs[0]
        return (self.last_hidden_state, self.attentions)[i]


@dataclass
class StackOutput:
    last_hidden_state: torch.Tensor  # (B, T, D)
    past_key_values: tuple[tuple[torch.Tensor, ...], ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class Seq2SeqModelOutput:
    last_hidden_state: torch.Tensor  # (B, T, D): the decoder's output
    past_key_values: tuple[tuple[torch.Tensor, ...], ...] | None = None  # per layer (self_k, self_v, cross_k, cross_v)
    encoder_last_hidden_state: torch.Tensor | None = None  # (B, S, D)
    decoder_attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, nh, T, S)
    encoder_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class Seq2SeqLMOutput:
    loss: torch.Tensor | None  # mean cross-entropy over the labelled target positions
    logits: torch.Tensor  # (B, T, V)
    past_key_values: tuple[tuple[torch.Tensor, ...], ...] | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    decoder_attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    encoder_attentions: tuple[torch.Tensor, ...] | None = None


# ---- teacher forcing and input checks ---------------------------------------------------


def shift_right(labels: torch.Tensor, decoder_start_token_id: int, pad_token_id: int) -> torch.Tensor:
    """The decoder's input for teacher forcing: the targets moved one position to the right,
    with ``decoder_start_token_id`` in front (the last target is dropped) and the loss's
    ignored -100 labels replaced by ``pad_token_id``. Position t of the decoder then sees
    the targets < t and is trained to predict target t. (HF's ``_shift_right`` /
    ``shift_tokens_right``.)"""
    if decoder_start_token_id is None:
        raise ValueError("decoder_start_token_id must be set (T5: the pad id 0; BART: </s> = 2) to shift labels right")
    if pad_token_id is None:
        raise ValueError("pad_token_id must be set to replace the -100 labels when shifting them right")
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[..., 1:] = labels[..., :-1]
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_token_id)


def check_ids(name: str, ids, vocab_size: int) -> tuple[int, int]:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point():
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"{name} must be an integer tensor of shape (B, T), got {shape}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"{name} must lie in [0, vocab_size = {vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")
    return tuple(ids.shape)


def check_mask(name: str, mask, shape: tuple[int, int]) -> None:
    if mask is not None and (not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(shape)):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {got}")


def check_labels(labels, config) -> None:
    """Labels are token ids, or -100 where there is no target (padding). The pad id itself
    is a mistake: the loss would teach the model to predict padding."""
    targets = labels.masked_fill(labels == IGNORE_INDEX, 0) if isinstance(labels, torch.Tensor) else labels
    check_ids("labels (token ids, or -100 for ignored positions)", targets, config.vocab_size)
    n_pad = int((labels == config.pad_token_id).sum())
    if n_pad:
        raise ValueError(f"labels hold pad_token_id = {config.pad_token_id} at {n_pad} position(s): padded target "
                         f"positions must be -100 (ignored by the loss), otherwise the model is trained to predict "
                         f"padding; use labels.masked_fill(labels == {config.pad_token_id}, -100)")


def check_decoder_start(decoder_input_ids, config) -> None:
    """Without a cache the decoder's first input must be the start token: teacher forcing
    feeds shift_right(labels), which begins with it (the labels themselves do not)."""
    first = decoder_input_ids[:, 0]
    if decoder_input_ids.shape[1] and bool((first != config.decoder_start_token_id).any()):
        raise ValueError(f"decoder_input_ids must start with decoder_start_token_id = {config.decoder_start_token_id} "
                         f"(the decoder's input is the targets shifted right: pass labels=..., or shift_right(labels)), "
                         f"got first tokens {first.tolist()[:8]}")


def check_decoder_inputs(config, decoder_input_ids, encoder_hidden_states, attention_mask, decoder_attention_mask,
                         past_key_values, num_layers: int) -> int:
    """The decoder's inputs against the encoder's output and the cache; returns P, the
    number of cached decoder positions."""
    check_mask("attention_mask (the encoder's padding mask)", attention_mask, encoder_hidden_states.shape[:2])
    B, T = check_ids("decoder_input_ids", decoder_input_ids, config.vocab_size)
    if B != encoder_hidden_states.shape[0]:
        raise ValueError(f"decoder_input_ids has batch size {B}, the encoder input {encoder_hidden_states.shape[0]}")
    P = 0
    if past_key_values is not None:
        if len(past_key_values) != num_layers or any(len(layer) != 4 for layer in past_key_values):
            raise ValueError(f"past_key_values must hold one (self_k, self_v, cross_k, cross_v) per decoder layer "
                             f"({num_layers}), got {len(past_key_values)} entries")
        P = past_key_values[0][0].shape[2]
    else:
        check_decoder_start(decoder_input_ids, config)
    check_mask("decoder_attention_mask (cached + new positions)", decoder_attention_mask, (B, P + T))
    return P


def encoder_states(encoder_outputs) -> torch.Tensor:
    """The (B, S, D) encoder output from our output object, HF's, or a tuple."""
    h = getattr(encoder_outputs, "last_hidden_state", None)
    return h if h is not None else encoder_outputs[0]


__all__ = ["IGNORE_INDEX", "BaseModelOutput", "Seq2SeqLMOutput", "Seq2SeqModelOutput", "StackOutput", "shift_right"]
