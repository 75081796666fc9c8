"""Decoding: greedy search and sampling, token for token as Hugging Face's ``generate``.

A language model gives p(x_t | x_<t); *decoding* turns it into text, one token at a time:
run the model, take the scores of the last position, pick a token, append it, repeat. The
choice of the pick is the decoding strategy:

* **greedy**: the argmax. Deterministic; for open-ended text it soon loops.
* **sampling**: draw from softmax(scores), after reshaping the distribution with the
  *logits processors*, applied in Hugging Face's order (``GenerationMixin._get_logits_processor``):

  1. repetition penalty (also in greedy mode): a token already in the sequence has its
     score divided by ``penalty`` if positive, multiplied if negative (Keskar et al., 2019);
  2. temperature: scores / T (T < 1 sharpens, T > 1 flattens);
  3. top-k: keep the k best scores (every token tied with the k-th stays: the test is
     ``score < k-th best``), at least ``min_tokens_to_keep``;
  4. top-p (nucleus, Holtzman et al., 2020): sort ascending, remove the tokens whose
     cumulative probability is <= 1 - p, i.e. keep the smallest set of best tokens whose
     probability reaches p; at least ``min_tokens_to_keep``.

  Removed tokens get -inf; the draw is one ``torch.multinomial(softmax(scores), 1)`` per
  step over the whole batch, exactly HF's call, so after the same ``torch.manual_seed`` the
  same tokens come out.

Every step feeds only the new token and the cache of keys and values (``use_cache=True``),
see :mod:`course_lib.models.gpt2`. A batch of prompts of different lengths is **left
padded** (a decoder-only model continues from its last position, so every prompt must end
at the same column) with an ``attention_mask``; positions then count real tokens only
(``cumsum(mask) - 1``, padding at 0), as HF computes them. A sequence that has produced an
end-of-sequence token is finished: from then on it receives ``pad_token_id``, and decoding
stops when every sequence is finished or ``max_new_tokens`` are generated.

**The protocol** (what a model must offer; Chapter 7's encoder-decoders plug in here):

* decoder-only: ``model(input_ids, attention_mask=..., position_ids=..., past_key_values=...,
  use_cache=True)`` returning an object with ``.logits`` (B, T, V) and ``.past_key_values``;
* encoder-decoder (``model.config.is_encoder_decoder``): ``model.get_encoder()(input_ids,
  attention_mask=...)`` once, then ``model(encoder_outputs=..., attention_mask=<encoder
  mask>, decoder_input_ids=..., past_key_values=..., use_cache=True)``; decoding starts from
  ``config.decoder_start_token_id``.

``past_key_values`` is passed back to the model as it came: this file never looks inside
it (a tuple of per-layer tensors for course_lib's models, a ``Cache`` object for HF's; HF's
models work here too, which the tests use). The extension points are the functions
:func:`_prepare_decoder_only` / :func:`_prepare_encoder_decoder` (the inputs of the first
step) and :func:`_step_inputs` (those of every later step): a new model family that needs
other inputs (T5's encoder outputs, a prefix-LM's mask) changes only these.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

# ---- logits processors (HF's semantics) ---------------------------------------------------


def apply_repetition_penalty(scores: torch.Tensor, input_ids: torch.Tensor, penalty: float,
                             ignore_before: torch.Tensor | None = None) -> torch.Tensor:
    """HF's ``RepetitionPenaltyLogitsProcessor``: for every token in ``input_ids`` (B, L),
    its score is divided by ``penalty`` if positive, multiplied if negative (so it always
    drops for penalty > 1). ``ignore_before`` (B,): positions before it (left padding) are
    not counted. scores (B, V) -> (B, V)."""
    V = scores.shape[-1]
    if ignore_before is not None:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        input_ids = input_ids.masked_fill(positions[None, :] < ignore_before[:, None], V)
    ids = input_ids.clamp(max=V)  # V is a dummy column, dropped below
    padded = torch.nn.functional.pad(scores, (0, 1))
    seen = torch.gather(padded, 1, ids)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return padded.scatter(1, ids, seen)[:, :V]


def top_k_filter(scores: torch.Tensor, top_k: int, min_tokens_to_keep: int = 1,
                 filter_value: float = float("-inf")) -> torch.Tensor:
    """HF's ``TopKLogitsWarper``: keep the tokens whose score is >= the k-th best (ties with
    the k-th are all kept), k = max(top_k, min_tokens_to_keep); the rest get ``filter_value``."""
    k = min(max(top_k, min_tokens_to_keep), scores.shape[-1])
    kth_best = torch.topk(scores, k)[0][..., -1, None]  # (B, 1)
    return scores.masked_fill(scores < kth_best, filter_value)


def top_p_filter(scores: torch.Tensor, top_p: float, min_tokens_to_keep: int = 1,
                 filter_value: float = float("-inf")) -> torch.Tensor:
    """HF's ``TopPLogitsWarper``: sort ascending and remove every token whose cumulative
    probability (including itself) is <= 1 - top_p; the ``min_tokens_to_keep`` best stay."""
    sorted_scores, order = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)  # (B, V), ascending
    remove = cumulative <= (1 - top_p)
    remove[..., -min_tokens_to_keep:] = False
    remove = remove.scatter(1, order, remove)  # back to vocabulary order
    return scores.masked_fill(remove, filter_value)


@dataclass
class LogitsProcessors:
    """The processors one ``generate`` call applies, in HF's order."""

    repetition_penalty: float = 1.0
    ignore_before: torch.Tensor | None = None  # (B,): left-padding lengths, for the penalty
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_tokens_to_keep: int = 1
    steps: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.repetition_penalty != 1.0:
            self.steps.append("repetition_penalty")
        if self.do_sample:  # HF's "warpers" act only when sampling
            self.steps += [name for name, on in (("temperature", self.temperature != 1.0), ("top_k", self.top_k != 0),
                                                 ("top_p", self.top_p < 1.0)) if on]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            if step == "repetition_penalty":
                scores = apply_repetition_penalty(scores, input_ids, self.repetition_penalty, self.ignore_before)
            elif step == "temperature":
                scores = scores / self.temperature
            elif step == "top_k":
                scores = top_k_filter(scores, self.top_k, self.min_tokens_to_keep)
            else:
                scores = top_p_filter(scores, self.top_p, self.min_tokens_to_keep)
        return scores


# ---- checks -------------------------------------------------------------------------------


def _check_arguments(input_ids, max_new_tokens, temperature, top_k, top_p, repetition_penalty, attention_mask,
                     min_tokens_to_keep, vocab_size, n_positions, is_encoder_decoder) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be an integer tensor of shape (B, T), got {shape}")
    B, T = input_ids.shape
    if B == 0 or T == 0:
        raise ValueError(f"input_ids must hold at least one prompt of at least one token, got shape {(B, T)}")
    if vocab_size is not None and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        raise ValueError(f"input_ids must lie in [0, vocab_size = {vocab_size}), got "
                         f"[{int(input_ids.min())}, {int(input_ids.max())}]")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if n_positions is not None:
        decoder_length = 1 if is_encoder_decoder else T  # an encoder-decoder's decoder starts from one token
        if not is_encoder_decoder and T > n_positions:
            raise ValueError(f"input_ids: the prompt has {T} tokens, more than the model's n_positions = {n_positions}")
        if decoder_length + max_new_tokens > n_positions:
            raise ValueError(f"max_new_tokens = {max_new_tokens} after {decoder_length} token(s) would run past the "
                             f"model's n_positions = {n_positions} (at most {n_positions - decoder_length} new tokens)")
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0 (for greedy decoding use do_sample=False), got {temperature!r}")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 = no top-k filtering), got {top_k!r}")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1] (1 = no nucleus filtering), got {top_p!r}")
    if not isinstance(repetition_penalty, (int, float)) or not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be a number > 0 (1 = none), got {repetition_penalty!r}")
    if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
        raise ValueError(f"min_tokens_to_keep must be a positive int, got {min_tokens_to_keep!r}")
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != (B, T):
            shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
            raise ValueError(f"attention_mask must have input_ids' shape {(B, T)}, got {shape}")
        if not ((attention_mask == 0) | (attention_mask == 1)).all():
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
        if not attention_mask.bool().any(dim=1).all():
            raise ValueError("attention_mask: every prompt needs at least one real token (a row of 1s somewhere)")


def _token_list(token) -> list[int]:
    if token is None:
        return []
    return [int(t) for t in token] if isinstance(token, (list, tuple)) else [int(token)]


# ---- the inputs of each step (the extension points) ----------------------------------------


def _accepts(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _prepare_decoder_only(model, input_ids, attention_mask):
    """State of a decoder-only run: the whole prompt is the first step's input; positions
    count real tokens only (HF's ``_prepare_position_ids_for_generation``)."""
    if attention_mask is not None:
        position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # (B, T)
        if bool((attention_mask == 1).all()):
            attention_mask = None  # no padding: nothing to mask (HF drops it too)
    else:
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]  # (1, T)
    return dict(sequence=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                accepts_position_ids=_accepts(model, "position_ids"),
                accepts_logits_to_keep=_accepts(model, "logits_to_keep"))


def _prepare_encoder_decoder(model, input_ids, attention_mask, decoder_start_token_id):
    """State of an encoder-decoder run: the encoder runs once; the decoder starts from
    ``decoder_start_token_id``; the encoder's mask goes to every step's cross-attention."""
    if decoder_start_token_id is None:
        raise ValueError("decoder_start_token_id: an encoder-decoder needs it (model.config.decoder_start_token_id)")
    encoder_outputs = model.get_encoder()(input_ids, attention_mask=attention_mask)
    start = torch.full((input_ids.shape[0], 1), int(decoder_start_token_id), dtype=torch.long, device=input_ids.device)
    return dict(sequence=start, attention_mask=attention_mask, encoder_outputs=encoder_outputs)


def _step_inputs(model, state, past, use_cache, is_encoder_decoder, first):
    """The keyword arguments of one forward call."""
    sequence = state["sequence"]
    new = sequence if (first or not use_cache) else sequence[:, -1:]  # with the cache: only the newest token
    if is_encoder_decoder:
        return dict(encoder_outputs=state["encoder_outputs"], attention_mask=state["attention_mask"],
                    decoder_input_ids=new, past_key_values=past, use_cache=use_cache)
    kwargs = dict(attention_mask=state["attention_mask"], past_key_values=past, use_cache=use_cache)
    if state["accepts_position_ids"]:
        kwargs["position_ids"] = state["position_ids"][:, -new.shape[1]:]
    if state["accepts_logits_to_keep"]:
        kwargs["logits_to_keep"] = 1  # only the last position's scores are needed
    return dict(input_ids=new, **kwargs)


def _advance(state, next_tokens, is_encoder_decoder):
    """Append the new tokens: the sequence, the mask (a 1 per new token) and the positions."""
    state["sequence"] = torch.cat([state["sequence"], next_tokens[:, None]], dim=-1)
    if not is_encoder_decoder:
        if state["attention_mask"] is not None:
            mask = state["attention_mask"]
            state["attention_mask"] = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        pos = state["position_ids"]
        state["position_ids"] = torch.cat([pos, pos[:, -1:] + 1], dim=-1)


# ---- generate -----------------------------------------------------------------------------


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int = 20,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    min_tokens_to_keep: int = 1,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue ``input_ids`` (B, T) by up to ``max_new_tokens`` tokens: (B, T + new) for a
    decoder-only model (the prompt and its continuation), (B, 1 + new) for an
    encoder-decoder (the decoder's ids, from the start token), as HF's ``generate``.

    ``do_sample=False``: greedy (argmax). ``do_sample=True``: draw from the processed
    distribution (``temperature``, ``top_k`` (0 = off), ``top_p`` (1 = off); see the module
    docstring for the order); the global RNG unless a ``generator`` is given.
    ``repetition_penalty`` applies in both modes. ``eos_token_id`` (default: the model's
    config) ends a sequence; finished sequences get ``pad_token_id`` (default: the config's,
    else the first EOS id). Unlike HF, there are no hidden defaults: HF's ``do_sample=True``
    alone also applies top_k = 50 from its ``GenerationConfig``; here top-k is off unless asked."""
    model_config = model.config
    is_encoder_decoder = bool(getattr(model_config, "is_encoder_decoder", False))
    n_positions = getattr(model_config, "n_positions", None) or getattr(model_config, "max_position_embeddings", None)
    _check_arguments(input_ids, max_new_tokens, temperature, top_k, top_p, repetition_penalty, attention_mask,
                     min_tokens_to_keep, getattr(model_config, "vocab_size", None), n_positions, is_encoder_decoder)
    eos = _token_list(eos_token_id if eos_token_id is not None else getattr(model_config, "eos_token_id", None))
    if pad_token_id is None:
        pad_token_id = getattr(model_config, "pad_token_id", None)
    if pad_token_id is None and eos:
        pad_token_id = eos[0]  # HF's fallback
    if attention_mask is None and pad_token_id is not None and pad_token_id not in eos and (input_ids == pad_token_id).any():
        attention_mask = (input_ids != pad_token_id).long()  # HF infers the mask from padding it can recognise
    if attention_mask is not None:
        attention_mask = attention_mask.long()

    if is_encoder_decoder:
        state = _prepare_encoder_decoder(model, input_ids, attention_mask, getattr(model_config, "decoder_start_token_id", None))
        ignore_before = None  # HF counts every decoder token for the penalty
    else:
        state = _prepare_decoder_only(model, input_ids, attention_mask)
        # The repetition penalty skips left padding (HF: the index of each row's first real token).
        ignore_before = None if state["attention_mask"] is None else (attention_mask != 0).int().argmax(dim=1)
    processors = LogitsProcessors(float(repetition_penalty), ignore_before, do_sample, float(temperature), top_k,
                                  float(top_p), min_tokens_to_keep)

    B = input_ids.shape[0]
    unfinished = torch.ones(B, dtype=torch.long, device=input_ids.device)
    eos_tensor = torch.tensor(eos, device=input_ids.device) if eos else None
    past = None
    for step in range(max_new_tokens):
        out = model(**_step_inputs(model, state, past, use_cache, is_encoder_decoder, first=step == 0))
        logits = out.logits[:, -1].to(dtype=torch.float32, copy=True)  # (B, V), as HF: fp32 scores
        scores = processors(state["sequence"], logits)
        if do_sample:
            next_tokens = torch.multinomial(scores.softmax(dim=-1), num_samples=1, generator=generator).squeeze(1)
        else:
            next_tokens = scores.argmax(dim=-1)
        if eos_tensor is not None:  # finished sequences continue with padding only
            next_tokens = next_tokens * unfinished + pad_token_id * (1 - unfinished)
        _advance(state, next_tokens, is_encoder_decoder)
        if eos_tensor is not None:
            unfinished = unfinished & ~torch.isin(next_tokens, eos_tensor)
            if unfinished.max() == 0:
                break
        past = out.past_key_values if use_cache else None
    return state["sequence"]


# ---- beam search (for the chapter's comparison; not HF's beam scorer) ----------------------


@torch.no_grad()
def beam_search(model, input_ids: torch.Tensor, max_new_tokens: int, num_beams: int = 4):
    """Keep the ``num_beams`` continuations of highest total log-probability, extending each
    by every token and keeping the best ``num_beams`` of the (beams x V) candidates at every
    step. One prompt (1, T); no end-of-sequence handling and no length penalty (all beams
    have the same length). Returns (sequences (num_beams, T + new), their summed
    log-probabilities (num_beams,)), best first. ``num_beams=1`` is greedy search."""
    _check_arguments(input_ids, max_new_tokens, 1.0, 0, 1.0, 1.0, None, 1, getattr(model.config, "vocab_size", None),
                     getattr(model.config, "n_positions", None), False)
    if input_ids.shape[0] != 1:
        raise ValueError(f"input_ids: beam_search takes one prompt (1, T), got {tuple(input_ids.shape)}")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be a positive int, got {num_beams!r}")
    beams, scores = input_ids, torch.zeros(1, device=input_ids.device)  # (n, T), (n,)
    for _ in range(max_new_tokens):
        logp = torch.log_softmax(model(beams).logits[:, -1].float(), dim=-1)  # (n, V)
        candidates = (scores[:, None] + logp).flatten()  # every beam extended by every token
        scores, best = candidates.topk(min(num_beams, candidates.numel()))
        V = logp.shape[-1]
        beams = torch.cat([beams[best // V], (best % V)[:, None]], dim=-1)
    return beams, scores


class GenerationMixin:
    """``model.generate(...)`` for any model that follows the protocol above."""

    def generate(self, input_ids, max_new_tokens: int = 20, **kwargs):
        return generate(self, input_ids, max_new_tokens, **kwargs)


__all__ = ["GenerationMixin", "LogitsProcessors", "apply_repetition_penalty", "beam_search", "generate", "top_k_filter",
           "top_p_filter"]
