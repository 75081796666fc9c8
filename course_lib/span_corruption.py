"""Chapter 7: the denoising objectives of T5 and BART, on token ids.

Both models are pretrained by corrupting a text and asking the decoder for the original;
they differ in what the decoder must write.

**T5's span corruption** (Raffel et al., 2020, section 3.1.4; the ``span_corruption``
preprocessor of the ``t5`` library). :func:`random_spans_noise_mask` marks 15% of the
tokens as noise in spans of mean length 3, with T5's exact counts:

    noise tokens  n = round(length * noise_density), kept in [1, length - 1]
    noise spans   k = max(round(n / mean_noise_span_length), 1)

(``round`` is round-half-to-even, as ``tf.round``). The n noise tokens are cut at random
into k non-empty spans, the length - n others likewise, and the spans alternate, starting
with a non-noise span (so the last span is noise). The input keeps the non-noise tokens
and replaces each noise span by one sentinel (``<extra_id_0>``, ``<extra_id_1>``, ...); the
target lists each noise span after the sentinel that replaced it:

    text     Thank you for inviting me to your party last week .
    inputs   Thank you <extra_id_0> me to your party <extra_id_1> week .
    targets  <extra_id_0> for inviting <extra_id_1> last <extra_id_2>

(the paper's Figure 2; with T5's exact mask the text ends in noise, so targets end with a
span, not a sentinel). The decoder writes only about 15% + k tokens, not the whole text:
the cheapest of the objectives the paper compares (Table 7), and as good as any.

**BART's noising** (Lewis et al., 2020, section 2.2; fairseq's ``DenoisingDataset``): the
decoder rewrites the whole original text. :func:`text_infilling` replaces spans whose
lengths are drawn from Poisson(3) with a single ``<mask>`` each (a span of length 0 inserts a
``<mask>``), so the model must also say how many tokens are missing;
:func:`token_masking` (BERT's masking without 80/10/10), :func:`token_deletion` (where is
a token missing?), :func:`sentence_permutation` and :func:`document_rotation` (which token
starts the document?) are the other corruptions of the paper's Table 1. BART-large uses
text infilling of 30% of the tokens plus the permutation of all sentences
(:func:`bart_noise`).

All functions take one 1-D integer tensor of token ids (no BOS/EOS: add those after
corruption) and draw every random number from ``generator`` (the default generator if None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# ---- T5: the noise mask --------------------------------------------------------------------


def _round_half_even(x: float) -> int:
    return int(round(x))  # Python's round is half-to-even, like tf.round and np.round


def span_counts(length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """(noise tokens, noise spans) of :func:`random_spans_noise_mask` for a sequence of
    ``length`` tokens: T5's formulas, with T5's clamps (a sequence shorter than 2 counts
    as 2, and is then cut back to its length)."""
    length = max(length, 2)
    num_noise = min(max(_round_half_even(length * noise_density), 1), length - 1)
    num_spans = max(_round_half_even(num_noise / mean_noise_span_length), 1)
    return num_noise, num_spans


def span_corruption_lengths(tokens_length: int, noise_density: float = 0.15,
                            mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """(inputs length, targets length), each with its EOS, of span corruption applied to
    ``tokens_length`` tokens (T5's ``random_spans_helper``): the inputs keep the non-noise
    tokens plus one sentinel per span, the targets the noise tokens plus one sentinel per
    span. T5 pretraining cuts 568 tokens to get inputs of 512 and targets of 114."""
    num_noise = _round_half_even(tokens_length * noise_density)
    num_spans = _round_half_even(num_noise / mean_noise_span_length)
    return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def _random_segmentation(num_items: int, num_segments: int, generator) -> torch.Tensor:
    """Cut num_items items into num_segments non-empty segments, uniformly over all ways:
    the segment lengths (num_segments,). A segment starts at item 0 and after each of
    num_segments - 1 cut points chosen among the num_items - 1 gaps (T5's shuffle of a
    0/1 vector)."""
    cuts = torch.randperm(num_items - 1, generator=generator)[: num_segments - 1] + 1  # gap i: before item i
    first = torch.zeros(num_items, dtype=torch.long)
    first[0] = 1
    first[cuts] = 1
    return torch.bincount(first.cumsum(0) - 1, minlength=num_segments)


def random_spans_noise_mask(length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """T5's noise mask (``t5.data.preprocessors.random_spans_noise_mask``): a (length,) bool
    tensor, True at the noise tokens, with exactly the counts of :func:`span_counts`,
    arranged as non-noise span, noise span, non-noise span, ... (first span non-noise, last
    span noise). Every split of the counts into non-empty spans is equally likely."""
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ValueError(f"length must be an int >= 0, got {length!r}")
    if not 0 < noise_density < 1:
        raise ValueError(f"noise_density must lie in (0, 1), got {noise_density!r}")
    if not mean_noise_span_length >= 1:
        raise ValueError(f"mean_noise_span_length must be >= 1, got {mean_noise_span_length!r}")
    orig_length, length = length, max(length, 2)
    num_noise, num_spans = span_counts(length, noise_density, mean_noise_span_length)
    num_nonnoise = length - num_noise
    if num_nonnoise < num_spans:
        raise ValueError(f"noise_density = {noise_density} with mean_noise_span_length = {mean_noise_span_length} "
                         f"asks for {num_spans} noise spans but leaves only {num_nonnoise} non-noise tokens to separate "
                         f"them (length {length}): lower noise_density or raise mean_noise_span_length")
    noise_lengths = _random_segmentation(num_noise, num_spans, generator)
    nonnoise_lengths = _random_segmentation(num_nonnoise, num_spans, generator)
    interleaved = torch.stack([nonnoise_lengths, noise_lengths], dim=1).reshape(-1)  # (2k,): keep, noise, keep, ...
    span_id = torch.repeat_interleave(torch.arange(2 * num_spans), interleaved)  # (length,)
    return (span_id % 2 == 1)[:orig_length]


# ---- T5: sentinels ---------------------------------------------------------------------------


def _check_tokens(tokens, noise_mask=None) -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1 or tokens.is_floating_point():
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a 1-D integer tensor of token ids, got {shape}")
    if noise_mask is not None and (not isinstance(noise_mask, torch.Tensor) or noise_mask.shape != tokens.shape
                                   or noise_mask.dtype != torch.bool):
        raise ValueError(f"noise_mask must be a bool tensor of tokens' shape {tuple(tokens.shape)}, got "
                         f"{getattr(noise_mask, 'dtype', type(noise_mask).__name__)} "
                         f"{tuple(getattr(noise_mask, 'shape', ()))}")


def noise_span_to_unique_sentinel(tokens: torch.Tensor, noise_mask: torch.Tensor,
                                  sentinel_ids: Sequence[int]) -> torch.Tensor:
    """Replace each run of noise tokens by one sentinel: the first run by sentinel_ids[0]
    (``<extra_id_0>``), the second by sentinel_ids[1], ... (T5's function of this name)."""
    _check_tokens(tokens, noise_mask)
    previous = torch.cat([noise_mask[:1] & False, noise_mask[:-1]])  # is the token before noise?
    first = noise_mask & ~previous  # the first token of each noise span
    n = int(first.sum())
    if n > len(sentinel_ids):
        raise ValueError(f"sentinel_ids: {n} spans need {n} sentinels, only {len(sentinel_ids)} are given")
    sentinels = torch.as_tensor(list(sentinel_ids)[:n], dtype=tokens.dtype)
    out = tokens.clone()
    out[first] = sentinels  # in order: the k-th span start gets the k-th sentinel
    return out[~(noise_mask & previous)]  # drop the rest of each span


def nonnoise_span_to_unique_sentinel(tokens: torch.Tensor, noise_mask: torch.Tensor,
                                     sentinel_ids: Sequence[int]) -> torch.Tensor:
    """The targets: the non-noise runs replaced by sentinels, so what remains is each noise
    span behind the sentinel that stands for it in the inputs."""
    return noise_span_to_unique_sentinel(tokens, ~noise_mask, sentinel_ids)


def span_corruption(tokens: torch.Tensor, sentinel_ids: Sequence[int], eos_token_id: int | None = None, *,
                    noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                    generator: torch.Generator | None = None,
                    noise_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """T5's span corruption of one sequence: (inputs, targets), each followed by
    ``eos_token_id`` when given. ``noise_mask`` (optional) replaces the random one."""
    _check_tokens(tokens)
    if noise_mask is None:
        noise_mask = random_spans_noise_mask(len(tokens), noise_density, mean_noise_span_length, generator)
    inputs = noise_span_to_unique_sentinel(tokens, noise_mask, sentinel_ids)
    targets = nonnoise_span_to_unique_sentinel(tokens, noise_mask, sentinel_ids)
    if eos_token_id is not None:
        eos = torch.tensor([eos_token_id], dtype=tokens.dtype)
        inputs, targets = torch.cat([inputs, eos]), torch.cat([targets, eos])
    return inputs, targets


def undo_span_corruption(inputs: torch.Tensor, targets: torch.Tensor, sentinel_ids: Sequence[int],
                         eos_token_id: int | None = None) -> torch.Tensor:
    """The inverse of :func:`span_corruption`: every sentinel of the inputs replaced by the
    tokens that follow the same sentinel in the targets (EOS dropped from both)."""
    _check_tokens(inputs)
    _check_tokens(targets)
    strip = (lambda t: t[:-1] if len(t) and int(t[-1]) == eos_token_id else t) if eos_token_id is not None else None
    inputs, targets = (strip(inputs), strip(targets)) if strip else (inputs, targets)
    index = {int(s): i for i, s in enumerate(sentinel_ids)}
    spans, current = {}, None
    for t in targets.tolist():  # split the targets at their sentinels
        if t in index:
            current = index[t]
            spans[current] = []
        elif current is None:
            raise ValueError(f"targets must start with a sentinel, got token {t} first")
        else:
            spans[current].append(t)
    out = []
    for t in inputs.tolist():
        if t in index:
            if index[t] not in spans:
                raise ValueError(f"inputs hold sentinel {t} (<extra_id_{index[t]}>), which the targets do not")
            out.extend(spans[index[t]])
        else:
            out.append(t)
    return torch.tensor(out, dtype=inputs.dtype)


# ---- BART: the noising functions ---------------------------------------------------------------


def infill_spans(tokens: torch.Tensor, starts: Sequence[int], lengths: Sequence[int], mask_token_id: int) -> torch.Tensor:
    """Replace each span (start, length) by one mask token, as fairseq's ``replace_length=1``:
    the start becomes ``<mask>``, the rest of the span is deleted. A length of 0 inserts a
    ``<mask>`` before ``start``. Spans are applied as fairseq does, all at once: a span that
    starts inside another span is swallowed by it, adjacent spans give adjacent masks."""
    _check_tokens(tokens)
    n = len(tokens)
    if len(starts) != len(lengths):
        raise ValueError(f"starts and lengths must have the same number of spans, got {len(starts)} and {len(lengths)}")
    keep = torch.ones(n + 1, dtype=torch.bool)  # position n: insertions at the very end
    is_mask = torch.zeros(n + 1, dtype=torch.bool)
    inserts = torch.zeros(n + 1, dtype=torch.long)  # masks to insert before each position
    for s, length in zip(starts, lengths):
        if not (0 <= s <= n and length >= 0 and s + length <= n and (length == 0 or s < n)):
            raise ValueError(f"span (start {s}, length {length}) does not fit in {n} tokens")
        if length == 0:
            inserts[s] += 1
        else:
            is_mask[s] = True
            keep[s + 1: s + length] = False
    out = []
    values = tokens.tolist() + [None]
    for i in range(n + 1):
        out.extend([mask_token_id] * int(inserts[i]))
        if i < n and keep[i]:
            out.append(mask_token_id if is_mask[i] else values[i])
    return torch.tensor(out, dtype=tokens.dtype)


def text_infilling(tokens: torch.Tensor, mask_token_id: int, mask_ratio: float = 0.3, poisson_lambda: float = 3.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """BART's text infilling: span lengths drawn from Poisson(``poisson_lambda``) until they
    cover ceil(mask_ratio * n) tokens (the last one cut to fit), each span at a start drawn
    uniformly (without repetition; clipped at the end) and replaced by one ``<mask>``; spans of length 0 insert a
    ``<mask>`` at a random place (:func:`infill_spans`)."""
    _check_tokens(tokens)
    if not 0 <= mask_ratio <= 1:
        raise ValueError(f"mask_ratio must lie in [0, 1], got {mask_ratio!r}")
    if not poisson_lambda > 0:
        raise ValueError(f"poisson_lambda must be > 0, got {poisson_lambda!r}")
    n = len(tokens)
    num_to_mask = math.ceil(n * mask_ratio)
    lengths: list[int] = []
    rate = torch.tensor([float(poisson_lambda)])
    while sum(lengths) < num_to_mask:
        lengths.append(int(torch.poisson(rate, generator=generator)))
    if lengths:
        lengths[-1] -= sum(lengths) - num_to_mask  # the last span cut so the total is exactly num_to_mask
    spans = [length for length in lengths if length > 0][:n]
    starts = torch.randperm(n, generator=generator)[: len(spans)].tolist() if spans else []
    spans = [min(length, n - s) for s, length in zip(starts, spans)]
    num_inserts = sum(1 for length in lengths if length == 0)
    inserts = torch.randint(0, n + 1, (num_inserts,), generator=generator).tolist()
    return infill_spans(tokens, starts + inserts, spans + [0] * num_inserts, mask_token_id)


def _random_positions(n: int, ratio: float, generator) -> torch.Tensor:
    if not 0 <= ratio <= 1:
        raise ValueError(f"the ratio must lie in [0, 1], got {ratio!r}")
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[torch.randperm(n, generator=generator)[: _round_half_even(n * ratio)]] = True
    return chosen


def token_masking(tokens: torch.Tensor, mask_token_id: int, ratio: float = 0.15,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace round(ratio * n) random tokens by ``<mask>`` (BERT's corruption, all masks)."""
    _check_tokens(tokens)
    return tokens.masked_fill(_random_positions(len(tokens), ratio, generator), mask_token_id)


def token_deletion(tokens: torch.Tensor, ratio: float = 0.15, generator: torch.Generator | None = None) -> torch.Tensor:
    """Delete round(ratio * n) random tokens: the model must also find where they were."""
    _check_tokens(tokens)
    return tokens[~_random_positions(len(tokens), ratio, generator)]


def sentence_permutation(tokens: torch.Tensor, full_stop_ids: int | Sequence[int],
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Split the document after every full stop (``full_stop_ids``: the id, or ids, that end a
    sentence; a last sentence without one counts too) and shuffle the sentences."""
    _check_tokens(tokens)
    stops = torch.isin(tokens, torch.as_tensor([full_stop_ids] if isinstance(full_stop_ids, int) else
                                               list(full_stop_ids), dtype=tokens.dtype))
    ends = (stops.nonzero().flatten() + 1).tolist()
    if not ends or ends[-1] != len(tokens):
        ends.append(len(tokens))
    bounds = list(zip([0] + ends[:-1], ends))
    order = torch.randperm(len(bounds), generator=generator).tolist()
    return torch.cat([tokens[bounds[i][0]: bounds[i][1]] for i in order]) if bounds else tokens.clone()


def document_rotation(tokens: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate the document to begin at a token chosen uniformly at random."""
    _check_tokens(tokens)
    if len(tokens) == 0:
        return tokens.clone()
    start = int(torch.randint(0, len(tokens), (1,), generator=generator))
    return torch.cat([tokens[start:], tokens[:start]])


def bart_noise(tokens: torch.Tensor, mask_token_id: int, full_stop_ids: int | Sequence[int] | None = None, *,
               mask_ratio: float = 0.3, poisson_lambda: float = 3.0, rotate: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """BART-large's pretraining noise, in fairseq's order: permute the sentences (when
    ``full_stop_ids`` is given), text infilling, then (``rotate``) document rotation."""
    if full_stop_ids is not None:
        tokens = sentence_permutation(tokens, full_stop_ids, generator)
    tokens = text_infilling(tokens, mask_token_id, mask_ratio, poisson_lambda, generator)
    return document_rotation(tokens, generator) if rotate else tokens


# ---- batches ----------------------------------------------------------------------------------


def collate_seq2seq(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """A batch from (source ids, target ids) pairs: ``input_ids`` right-padded with
    ``pad_token_id`` and its ``attention_mask``; ``labels`` right-padded with -100 (ignored by
    the loss; the models shift them right themselves)."""
    if not pairs:
        raise ValueError("pairs must hold at least one (source, target) pair")
    S = max(len(s) for s, _ in pairs)
    T = max(len(t) for _, t in pairs)
    input_ids = torch.full((len(pairs), S), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(len(pairs), S, dtype=torch.long)
    labels = torch.full((len(pairs), T), -100, dtype=torch.long)
    for i, (s, t) in enumerate(pairs):
        input_ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        attention_mask[i, : len(s)] = 1
        labels[i, : len(t)] = torch.as_tensor(list(t), dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


__all__ = [
    "bart_noise",
    "collate_seq2seq",
    "document_rotation",
    "infill_spans",
    "noise_span_to_unique_sentinel",
    "nonnoise_span_to_unique_sentinel",
    "random_spans_noise_mask",
    "sentence_permutation",
    "span_corruption",
    "span_corruption_lengths",
    "span_counts",
    "text_infilling",
    "token_deletion",
    "token_masking",
    "undo_span_corruption",
]
