"""Chapter 8: why today's large models are decoder-only, as quantities that can be computed.

The chapter treats each reason given for the decoder-only design as a hypothesis and needs a
few exact tools to test it; they are all here, small and model-agnostic:

* :func:`attention_mask`: the four visibility patterns (bidirectional, causal, prefix LM,
  encoder-decoder) from one function, over the concatenated sequence [input; output], and
  :func:`prefix_lm_forward`, GPT-2 run as a prefix LM (UniLM's mask on a decoder).
* :func:`numerical_rank`, :func:`effective_rank`, :func:`attention_probabilities`: the
  "low-rank" argument measured rather than asserted.
* :func:`loss_tokens`: how many positions give a training signal under MLM, span corruption,
  prefix LM and causal LM.
* :func:`kv_cache_bytes`, :func:`cache_bytes`, :func:`dialogue_tokens`: the memory of the key-value
  cache, and the tokens each design must run per turn of a multi-turn dialogue.
* :class:`TransformerShape`, :func:`forward_flops`, :func:`training_flops`: FLOPs counted from
  a config, so that models of different architectures can be trained with the same compute.

Conventions: "input" (the prompt, the encoder's text, the prefix) comes before "output" (the
text that is generated, the decoder's text, the continuation); a visibility matrix is bool,
(query, key), True = the query may attend to the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .kernels.flash_attention import attention_scores, visibility_bias
from .span_corruption import span_counts

KINDS = ("bidirectional", "causal", "prefix", "encoder-decoder")
OBJECTIVES = ("clm", "prefix", "mlm", "span")


# ---- the four masks ---------------------------------------------------------------------


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def attention_mask(kind: str, n_input: int, n_output: int = 0) -> torch.Tensor:
    """The (N, N) visibility matrix, N = n_input + n_output, of one architecture over the
    concatenated sequence [input; output]: entry (i, j) is True when position i may attend to
    position j (in some attention layer).

    * ``"bidirectional"`` (BERT's encoder): every position sees every position.
    * ``"causal"`` (GPT): position i sees j <= i; input and output are one text.
    * ``"prefix"`` (UniLM, the "non-causal decoder" of Wang et al., 2022): the input is read
      bidirectionally, each output position sees the whole input and the outputs up to itself.
    * ``"encoder-decoder"`` (T5, BART): the *same* pattern as the prefix LM, but made of three
      attentions with separate weights: the encoder's self-attention (input x input, all
      visible), the decoder's causal self-attention (output x output, lower triangle) and the
      cross-attention (output x input, all visible), which reads the encoder's *last* layer
      instead of the same layer. No input position ever sees an output position.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    n_input, n_output = _check_count("n_input", n_input), _check_count("n_output", n_output)
    n = n_input + n_output
    if kind == "bidirectional":
        return torch.ones(n, n, dtype=torch.bool)
    visible = torch.ones(n, n, dtype=torch.bool).tril()  # causal: key j <= query i
    if kind in ("prefix", "encoder-decoder"):
        visible[:, :n_input] = True  # the input is visible to everyone ...
        visible[:n_input, n_input:] = False  # ... and no input position sees an output (already so)
    return visible


def encoder_decoder_blocks(n_input: int, n_output: int) -> dict[str, torch.Tensor]:
    """The three attentions of an encoder-decoder, as (query, key) bool matrices: the blocks
    of :func:`attention_mask` ("encoder-decoder") that each weight set computes."""
    joint = attention_mask("encoder-decoder", n_input, n_output)
    return {"encoder self-attention": joint[:n_input, :n_input],
            "decoder self-attention": joint[n_input:, n_input:],
            "cross-attention": joint[n_input:, :n_input]}


def plot_masks(n_input: int = 5, n_output: int = 4, axes=None):
    """Draw the four masks side by side (matplotlib); returns the figure. Dark = visible."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(KINDS), figsize=(2.6 * len(KINDS), 2.9))
    n = n_input + n_output
    labels = [f"x{i + 1}" for i in range(n_input)] + [f"y{i + 1}" for i in range(n_output)]
    for ax, kind in zip(axes, KINDS):
        ax.imshow(attention_mask(kind, n_input, n_output).float(), cmap="Blues", vmin=0, vmax=1.25)
        if kind != "bidirectional":  # the input / output boundary
            for f in (ax.axhline, ax.axvline):
                f(n_input - 0.5, color="tab:red", lw=1)
        ax.set_xticks(range(n), labels, fontsize=6, rotation=90)
        ax.set_yticks(range(n), labels, fontsize=6)
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("key (attended to)", fontsize=7)
    axes[0].set_ylabel("query (attending)", fontsize=7)
    axes[-1].figure.tight_layout()
    return axes[-1].figure


def prefix_visibility(prefix_lengths: torch.Tensor, T: int) -> torch.Tensor:
    """A batch of prefix-LM masks, (B, 1, T, T) bool, for prefixes of the given lengths (B,):
    query i sees key j when j <= i or j < prefix_length. Length 0 is the causal mask."""
    if prefix_lengths.dim() != 1 or prefix_lengths.is_floating_point():
        raise ValueError(f"prefix_lengths must be a 1-d integer tensor (B,), got {prefix_lengths.dtype} "
                         f"{tuple(prefix_lengths.shape)}")
    if (prefix_lengths < 0).any() or (prefix_lengths > T).any():
        raise ValueError(f"prefix_lengths must lie in [0, T = {T}], got {prefix_lengths.tolist()}")
    pos = torch.arange(T, device=prefix_lengths.device)
    causal = pos[None, :] <= pos[:, None]  # (T, T)
    in_prefix = pos[None, None, :] < prefix_lengths[:, None, None]  # (B, 1, T): key j in the prefix
    return (causal[None] | in_prefix)[:, None]  # (B, 1, T, T)


def prefix_lm_forward(model, input_ids: torch.Tensor, prefix_lengths: torch.Tensor, output_attentions: bool = False,
                      use_cache: bool = False):
    """GPT-2 (``course_lib.models.gpt2.GPT2LMHeadModel``) run as a **prefix LM**: the last hidden
    states (B, T, C), with the first ``prefix_lengths[b]`` tokens of row b attending to each
    other in both directions and the rest causal (UniLM's seq2seq mask; Raffel et al., 2020,
    Fig. 3). The LM head is left to the caller, so that logits are computed only where a loss is.

    The same weights and the same forward pass as GPT-2; only the mask differs: GPT-2's causal
    mask is switched off (``causal=False``) and the prefix-LM mask goes in as an additive bias
    (:func:`~course_lib.kernels.flash_attention.visibility_bias`), the same in every layer (no
    cache, no padding). With all prefix lengths 0 it computes exactly what ``model.transformer``
    computes (tests/test_decoder_only.py).
    ``output_attentions=True`` also returns the probabilities, one (B, nh, T, T) per layer, and
    ``use_cache=True`` the keys and values, one ``(k, v)`` per layer as GPT-2's
    ``past_key_values``: later tokens can then be *generated* causally by ``model(...,
    past_key_values=...)``, each seeing the whole prefix. Returns ``hidden``, or a tuple
    ``(hidden, [probs], [past_key_values])`` with what was asked for.
    """
    B, T = input_ids.shape
    if prefix_lengths.shape != (B,):
        raise ValueError(f"prefix_lengths must have shape (B,) = ({B},), got {tuple(prefix_lengths.shape)}")
    bias = visibility_bias(prefix_visibility(prefix_lengths.to(input_ids.device), T))  # (B, 1, T, T)
    out = model.transformer(input_ids, use_cache=use_cache, output_attentions=output_attentions, bias=bias, causal=False)
    extra = ((list(out.attentions),) if output_attentions else ()) + ((out.past_key_values,) if use_cache else ())
    return (out.last_hidden_state, *extra) if extra else out.last_hidden_state


# ---- rank --------------------------------------------------------------------------------


def numerical_rank(A: torch.Tensor, rtol: float | None = None) -> int | torch.Tensor:
    """The number of singular values of ``A`` (..., M, N) above ``rtol`` times the largest.

    ``rtol=None`` uses max(M, N) * eps of A's dtype, the default of ``torch.linalg.matrix_rank``
    and NumPy: the rank that floating-point arithmetic can tell apart. A larger ``rtol`` (1e-3,
    say) asks how many directions carry a noticeable share of the matrix. A batch of matrices
    gives a tensor of ranks; one matrix an int. The zero matrix has rank 0."""
    if not isinstance(A, torch.Tensor) or A.dim() < 2 or not A.is_floating_point():
        raise ValueError(f"A must be a floating-point tensor of shape (..., M, N), got "
                         f"{A.dtype if isinstance(A, torch.Tensor) else type(A).__name__}"
                         f"{tuple(A.shape) if isinstance(A, torch.Tensor) else ''}")
    if rtol is None:
        rtol = max(A.shape[-2:]) * torch.finfo(A.dtype).eps
    if A.shape[-1] == 0 or A.shape[-2] == 0:
        ranks = torch.zeros(A.shape[:-2], dtype=torch.long)
    else:
        s = torch.linalg.svdvals(A)  # (..., min(M, N)), descending
        ranks = ((s > rtol * s[..., :1]) & (s > 0)).sum(-1)
    return int(ranks) if A.dim() == 2 else ranks


def effective_rank(A: torch.Tensor) -> float | torch.Tensor:
    """Roy & Vetterli's (2007) effective rank exp(H(p)), p_i = s_i / sum(s): n for a matrix
    whose n singular values are equal, 1 for rank 1; no tolerance to choose."""
    s = torch.linalg.svdvals(A.double())  # (..., K)
    p = s / s.sum(-1, keepdim=True)
    h = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    r = torch.exp(h)
    return float(r) if A.dim() == 2 else r


def attention_probabilities(q: torch.Tensor, k: torch.Tensor, visible: torch.Tensor | None = None,
                            scale: float | None = None) -> torch.Tensor:
    """softmax(Q K^T * scale) over the visible keys: (..., Tq, Tk), computed by the shared
    attention's score function (``visible`` a bool (Tq, Tk) or broadcastable matrix)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    bias = None if visible is None else visibility_bias(visible, torch.float64 if q.dtype == torch.float64
                                                         else torch.float32)
    squeeze = q.dim() == 2
    if squeeze:
        q, k = q[None, None], k[None, None]
    p = torch.softmax(attention_scores(q, k, bias=bias, scale=scale), dim=-1)
    return p[0, 0] if squeeze else p


def random_attention_ranks(lengths, head_size: int, score_std: float = 1.0, rtol: float = 1e-6,
                           seed: int = 0) -> list[dict]:
    """Rank of random single-head attention matrices, bidirectional vs causal, in float64.

    q, k ~ N(0, 1) scaled so that the scores q.k / sqrt(hs) have standard deviation
    ``score_std`` (trained attention is sharper than at initialisation: larger scores). One
    row per length T: numerical rank at ``rtol``, effective rank and the smallest singular value."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for T in lengths:
        q = torch.randn(T, head_size, generator=g, dtype=torch.float64) * score_std
        k = torch.randn(T, head_size, generator=g, dtype=torch.float64)
        for kind in ("bidirectional", "causal"):
            A = attention_probabilities(q, k, attention_mask(kind, T))
            s = torch.linalg.svdvals(A)
            rows.append({"T": T, "head_size": head_size, "score_std": score_std, "mask": kind,
                         "numerical_rank": numerical_rank(A, rtol), "rtol": rtol,
                         "effective_rank": effective_rank(A), "smallest_singular_value": float(s[-1])})
    return rows


# ---- the training signal ---------------------------------------------------------------


def loss_tokens(objective: str, n_tokens: int, *, mask_rate: float = 0.15, mean_span: float = 3.0,
                prefix_length: int | None = None) -> dict[str, int]:
    """Lengths and training signal of one text of ``n_tokens`` tokens under each objective.

    Returns ``input_length`` (tokens the model reads), ``target_length`` (tokens it is scored on,
    sentinels and EOS included) and ``text_tokens_predicted`` (tokens *of the original text* that
    get a loss):

    * ``"clm"`` (GPT): every position predicts the next one: n - 1 targets (n with a BOS token).
    * ``"prefix"`` (prefix LM): the first ``prefix_length`` tokens (default n // 2) are context;
      the rest are predicted.
    * ``"mlm"`` (BERT): round(mask_rate * n) selected positions (on average; Hugging Face draws
      each position independently, Google's script takes exactly this many).
    * ``"span"`` (T5, Raffel et al., 2020, §3.1.4): T5's counts from Chapter 7's
      :func:`course_lib.span_corruption.span_counts`, c = round(mask_rate * n) noise tokens (at
      least 1, at most n - 1) in s = max(round(c / mean_span), 1) spans; the input keeps the
      n - c others plus one sentinel per span and an EOS; the target is each sentinel followed
      by its span, then EOS. Needs n >= 2.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    n = _check_count("n_tokens", n_tokens)
    if objective == "clm":
        return {"input_length": n, "target_length": max(n - 1, 0), "text_tokens_predicted": max(n - 1, 0)}
    if objective == "prefix":
        p = n // 2 if prefix_length is None else _check_count("prefix_length", prefix_length)
        if p > n:
            raise ValueError(f"prefix_length must be <= n_tokens = {n}, got {p}")
        return {"input_length": n, "target_length": n - p, "text_tokens_predicted": n - p}
    if not 0 < mask_rate < 1:
        raise ValueError(f"mask_rate must lie in (0, 1), got {mask_rate}")
    if objective == "mlm":
        corrupted = round(mask_rate * n)
        return {"input_length": n, "target_length": corrupted, "text_tokens_predicted": corrupted}
    if mean_span < 1:
        raise ValueError(f"mean_span must be >= 1, got {mean_span}")
    if n < 2:
        raise ValueError(f"span corruption needs n_tokens >= 2 (one noise and one kept token), got {n}")
    corrupted, spans = span_counts(n, mask_rate, mean_span)
    return {"input_length": n - corrupted + spans + 1, "target_length": corrupted + spans + 1,
            "text_tokens_predicted": corrupted}


def count_loss_tokens(labels: torch.Tensor, ignore_index: int = -100) -> int:
    """Measured signal: how many labels of a batch carry a loss (are not ``ignore_index``)."""
    return int((labels != ignore_index).sum())


# ---- the key-value cache ------------------------------------------------------------------


def kv_cache_bytes(n_layer: int, n_kv_head: int, head_size: int, seq_len: int, batch: int = 1,
                   bytes_per_element: int = 2) -> int:
    """Bytes of a decoder's key-value cache: a key and a value vector per layer, per key-value
    head and per position: 2 * n_layer * n_kv_head * head_size * seq_len * batch * bytes.
    (n_kv_head < n_head with multi-query / grouped-query attention; Shazeer, 2019; Ainslie et
    al., 2023.) For an encoder-decoder, add the cross-attention cache: the same formula with the
    decoder's layers and the *input* length (its keys and values are computed once)."""
    for name, v in (("n_layer", n_layer), ("n_kv_head", n_kv_head), ("head_size", head_size),
                    ("seq_len", seq_len), ("batch", batch), ("bytes_per_element", bytes_per_element)):
        _check_count(name, v)
    return 2 * n_layer * n_kv_head * head_size * seq_len * batch * bytes_per_element


def cache_bytes(past_key_values) -> int:
    """The bytes a model's returned cache actually holds: every tensor of every layer."""
    return sum(t.numel() * t.element_size() for layer in past_key_values for t in layer)


def dialogue_tokens(turns, design: str) -> list[int]:
    """Tokens the network must run per turn of a dialogue, ``turns`` = [(user_tokens,
    reply_tokens), ...], the whole history being the context of each reply.

    * ``"decoder"`` keeps its KV cache across turns: each turn runs only the user's new tokens
      and the reply's tokens (a causal position never changes once computed).
    * ``"prefix"`` (prefix LM) or ``"encoder-decoder"``: the context is read bidirectionally, so
      when it grows every earlier position's representation changes and must be recomputed: the
      whole history plus the user's tokens, then the reply (its own part is causal and cached
      within the turn).
    """
    if design not in ("decoder", "prefix", "encoder-decoder"):
        raise ValueError(f"design must be 'decoder', 'prefix' or 'encoder-decoder', got {design!r}")
    out, history = [], 0
    for user, reply in turns:
        _check_count("user tokens", user)
        _check_count("reply tokens", reply)
        out.append(user + reply if design == "decoder" else history + user + reply)
        history += user + reply
    return out


# ---- FLOPs from a config ---------------------------------------------------------------


@dataclass(frozen=True)
class TransformerShape:
    """What the FLOP count needs from a config: widths and depths, whatever the architecture."""

    d_model: int
    n_head: int
    head_size: int
    d_ff: int
    vocab_size: int
    n_encoder_layers: int = 0  # layers that read the input bidirectionally (BERT, T5's encoder)
    n_decoder_layers: int = 0  # causal layers (GPT-2, T5's decoder)
    cross_attention: bool = False  # decoder layers attend to the encoder (T5)
    gated_ffn: bool = False  # T5 v1.1 / LLaMA: two input matrices in the FFN
    mlm_transform: bool = False  # BERT's head has a dense d x d layer before the output layer

    @property
    def d_attn(self) -> int:
        return self.n_head * self.head_size

    @classmethod
    def from_config(cls, config) -> TransformerShape:
        """From a course_lib (or Hugging Face) GPT-2, BERT or T5 config."""
        kind = getattr(config, "model_type", None)
        if kind == "gpt2":
            d = config.n_embd
            return cls(d, config.n_head, d // config.n_head, config.n_inner or 4 * d, config.vocab_size,
                       n_decoder_layers=config.n_layer)
        if kind in ("bert", "roberta"):
            d = config.hidden_size
            return cls(d, config.num_attention_heads, d // config.num_attention_heads, config.intermediate_size,
                       config.vocab_size, n_encoder_layers=config.num_hidden_layers, mlm_transform=True)
        if kind == "t5":
            n_dec = getattr(config, "num_decoder_layers", None) or config.num_layers
            gated = "gated" in getattr(config, "feed_forward_proj", "relu")
            return cls(config.d_model, config.num_heads, config.d_kv, config.d_ff, config.vocab_size,
                       n_encoder_layers=config.num_layers, n_decoder_layers=n_dec, cross_attention=True,
                       gated_ffn=gated)
        raise ValueError(f"config must be a GPT-2, BERT, RoBERTa or T5 config, got model_type {kind!r}")

    def parameters(self) -> int:
        """Weights of the matrices the FLOP count multiplies by (no embeddings, norms, biases)."""
        attn = 4 * self.d_model * self.d_attn
        ffn = (3 if self.gated_ffn else 2) * self.d_model * self.d_ff
        enc = self.n_encoder_layers * (attn + ffn)
        dec = self.n_decoder_layers * (attn + ffn + (attn if self.cross_attention else 0))
        return enc + dec


def _layer_flops(s: TransformerShape, n_tokens: int, attended_pairs: int) -> int:
    """One self-attention layer over n_tokens positions: q, k, v, o projections and the FFN per
    token (2 FLOPs per multiply-add), and Q K^T and P V over the attended (query, key) pairs."""
    per_token = 2 * 4 * s.d_model * s.d_attn + 2 * (3 if s.gated_ffn else 2) * s.d_model * s.d_ff
    return n_tokens * per_token + 2 * 2 * s.d_attn * attended_pairs


def forward_flops(shape: TransformerShape, n_input: int, n_output: int = 0, *, logits: int | None = None,
                  attention: str = "dense") -> int:
    """Matrix-multiply FLOPs of one forward pass over one text (input, then output).

    * decoder-only or prefix LM (only decoder layers): every layer runs all n_input + n_output
      positions; * encoder-only: the same with encoder layers; * encoder-decoder: the encoder
      layers run the n_input positions only, the decoder layers the n_output positions only,
      plus cross-attention (q and o per output position, k and v per input position, scores
      over output x input pairs).

    ``logits``: positions at which the (d x V) output layer runs (default: every output position
    for an encoder-decoder, every position otherwise). ``attention="dense"`` counts every
    (query, key) score, as a plain implementation computes them; ``"visible"`` only the visible
    pairs of the architecture's mask (what a causal FlashAttention kernel approaches). Norms,
    softmax and embedding look-ups are left out (a few percent for these shapes).
    Training costs about 3x the forward pass (:func:`training_flops`)."""
    if attention not in ("dense", "visible"):
        raise ValueError(f"attention must be 'dense' or 'visible', got {attention!r}")
    n_input, n_output = _check_count("n_input", n_input), _check_count("n_output", n_output)
    s, N = shape, n_input + n_output
    total = 0
    if s.cross_attention:  # encoder-decoder
        enc_pairs = n_input * n_input
        dec_pairs = n_output * n_output if attention == "dense" else n_output * (n_output + 1) // 2
        total += s.n_encoder_layers * _layer_flops(s, n_input, enc_pairs)
        cross = 2 * 2 * s.d_model * s.d_attn * (n_output + n_input) + 2 * 2 * s.d_attn * n_output * n_input
        total += s.n_decoder_layers * (_layer_flops(s, n_output, dec_pairs) + cross)
        n_logits = n_output if logits is None else logits
    else:
        kind = "bidirectional" if s.n_encoder_layers else ("prefix" if n_input else "causal")
        pairs = N * N if attention == "dense" else int(attention_mask(kind, n_input, n_output).sum())
        total += (s.n_encoder_layers + s.n_decoder_layers) * _layer_flops(s, N, pairs)
        n_logits = N if logits is None else logits
    head = 2 * s.d_model * s.vocab_size + (2 * s.d_model * s.d_model if s.mlm_transform else 0)
    return total + _check_count("logits", n_logits) * head


def training_flops(shape: TransformerShape, n_input: int, n_output: int = 0, **kwargs) -> int:
    """One training step on one text: forward + backward ~ 3 x forward (the backward pass
    multiplies by each weight twice: for the input's gradient and for the weight's; Kaplan et
    al., 2020, §2.1, whose 6N per token is this for a decoder with short contexts)."""
    return 3 * forward_flops(shape, n_input, n_output, **kwargs)


def steps_for_budget(budget_flops: float, flops_per_step: float) -> int:
    """Training steps that fit a FLOPs budget (at least one)."""
    if flops_per_step <= 0:
        raise ValueError(f"flops_per_step must be positive, got {flops_per_step}")
    return max(1, math.floor(budget_flops / flops_per_step))


__all__ = [
    "KINDS", "OBJECTIVES", "TransformerShape", "attention_mask", "attention_probabilities", "cache_bytes",
    "count_loss_tokens", "dialogue_tokens", "effective_rank", "encoder_decoder_blocks", "forward_flops",
    "kv_cache_bytes", "loss_tokens", "numerical_rank", "plot_masks", "prefix_lm_forward", "prefix_visibility",
    "random_attention_ranks", "steps_for_budget", "training_flops",
]
