"""Chapter 7: T5 (Raffel et al., 2020), the Text-to-Text Transfer Transformer, in one file.

T5 is the whole Transformer of Vaswani et al. (2017): a bidirectional **encoder** reads the
input text, an autoregressive **decoder** writes the output text, and every decoder layer
looks at the encoder's output through **cross-attention** (its queries from the decoder,
its keys and values from the encoder). Every task is cast as text to text ("translate
English to German: ...", "cola sentence: ..."), so one model, one loss and one decoding
procedure serve all of them. Every module and parameter has the name it has in Hugging
Face's ``transformers`` (``encoder.block.0.layer.0.SelfAttention.q.weight``, ...), so loading a
checkpoint is a key-by-key copy, and the outputs match HF's ``T5ForConditionalGeneration``
to float32 rounding (tests/test_t5.py).

What T5 changes in the 2017 Transformer (section 2.1 of the paper; v1.1's changes after):

* **Relative position buckets** instead of position embeddings: attention adds a learned
  scalar b[bucket(j - i), head] to the score of query i and key j. Offsets below
  ``num_buckets / 2`` (per direction) have a bucket each; larger ones share logarithmically
  wider buckets up to ``relative_attention_max_distance``, beyond which all are one bucket.
  The encoder's buckets are bidirectional (j - i < 0 and > 0 differ), the decoder's causal
  (it never sees j > i). Only the first layer owns the table; its (1, nh, Tq, Tk) bias is
  computed once per forward pass and reused by every later layer.
* **RMSNorm** ("a simplified layer normalization where the activations are only rescaled
  and no additive bias is applied"), with the mean square in float32; placed **pre-LN**:
  x = x + Dropout(Sublayer(Norm(x))), plus a final norm after each stack.
* **No 1/sqrt(d_kv) in attention**: the scale is folded into the initialisation of the
  query projection (std (d_model * d_kv)^-0.5), so ``scale=1.0``.
* No biases in any linear layer; ReLU feed-forward (v1.1: **gated-GELU**,
  wo(gelu_tanh(wi_0 x) * wi_1 x), from Shazeer, 2020).
* One token table ``shared`` for the encoder input, the decoder input and (original T5)
  the output layer. A tied head rescales the decoder output by d_model^-0.5 first (the
  table's entries have std 1, Mesh TensorFlow's convention); v1.1 unties the head and drops
  the rescale (``tie_word_embeddings=False``).

Decoding uses a KV cache per decoder layer: ``(self_k, self_v, cross_k, cross_v)``, each
(B, nh, T, d_kv). The self-attention part grows by one position per step; the
cross-attention part is computed from the encoder output at the first step and reused.

Shapes: B batch, S encoder (source) length, T new decoder positions, P cached decoder
positions, D d_model, nh num_heads, hs d_kv (nh * hs need not equal D), V vocab_size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..embeddings import Embedding
from ..generation import GenerationMixin
from ..kernels.rms_norm import rms_norm
from .checkpoint import ConfigMixin, PreTrainedModel
from .layers import ACTIVATIONS, activation, attend
from .seq2seq import (IGNORE_INDEX, BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput, StackOutput,
                      check_decoder_inputs, check_ids, check_labels, check_mask, encoder_states, shift_right)


@dataclass
class T5Config(ConfigMixin):
    """T5's hyper-parameters, with Hugging Face's field names and t5-small's defaults."""

    model_type = "t5"

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int | None = None  # None: as many as the encoder
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    feed_forward_proj: str = "relu"  # "relu" (T5), "gated-gelu" (T5 v1.1, Flan-T5)
    tie_word_embeddings: bool = True  # the LM head is the token table (T5); v1.1 unties it
    scale_decoder_outputs: bool | None = None  # the d_model^-0.5 before the head; None: = tie_word_embeddings
    is_encoder_decoder: bool = True
    use_cache: bool = True
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0  # T5 starts decoding from the padding token

    def __post_init__(self):
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        if self.scale_decoder_outputs is None:
            self.scale_decoder_outputs = self.tie_word_embeddings
        parts = self.feed_forward_proj.split("-")
        if not (len(parts) == 1 or (len(parts) == 2 and parts[0] == "gated")) or self.dense_act_fn not in ACTIVATIONS:
            raise ValueError(f"feed_forward_proj must be 'ACT' or 'gated-ACT' with ACT in {list(ACTIVATIONS)}, "
                             f"got {self.feed_forward_proj!r}")
        check_buckets(self.relative_attention_num_buckets, self.relative_attention_max_distance)
        for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if not (isinstance(value, int) and 0 <= value < self.vocab_size):
                raise ValueError(f"{name} must be a token id in [0, vocab_size = {self.vocab_size}), got {value!r}")

    @classmethod
    def _prepare(cls, d: dict) -> dict:
        d["pad_token_id"] = 0 if d.get("pad_token_id") is None else d["pad_token_id"]
        d["eos_token_id"] = 1 if d.get("eos_token_id") is None else d["eos_token_id"]
        if d.get("decoder_start_token_id") is None:  # T5's convention: start from the padding token
            d["decoder_start_token_id"] = d["pad_token_id"]
        if isinstance(d.get("eos_token_id"), list):
            d["eos_token_id"] = d["eos_token_id"][0]
        return d

    @property
    def is_gated_act(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def dense_act_fn(self) -> str:
        # HF's historical alias: "gated-gelu" means the tanh GELU (Mesh TensorFlow's).
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else self.feed_forward_proj.split("-")[-1]

    # HF's generic names (its attribute_map), read by generation and by other chapters.
    hidden_size = property(lambda self: self.d_model)
    num_attention_heads = property(lambda self: self.num_heads)
    num_hidden_layers = property(lambda self: self.num_layers)


# ---- relative position buckets ----------------------------------------------------------


def check_buckets(num_buckets: int, max_distance: int) -> None:
    """Clear errors for bucket settings the bucket function cannot use: each direction (the
    encoder's buckets are split in two) needs at least one exact bucket and one
    logarithmic one, and the log-spaced range must end beyond the exact buckets."""
    if not isinstance(num_buckets, int) or num_buckets < 4:
        raise ValueError(f"relative_attention_num_buckets must be an int >= 4 (bidirectional: half per direction, "
                         f"each half split into exact and logarithmic buckets), got {num_buckets!r}")
    max_exact = num_buckets // 4  # of the bidirectional half; the causal max_exact is larger, num_buckets // 2
    if not isinstance(max_distance, int) or max_distance <= num_buckets // 2:
        raise ValueError(f"relative_attention_max_distance must be an int > relative_attention_num_buckets // 2 = "
                         f"{num_buckets // 2} (the log-spaced buckets start after the {max_exact} (bidirectional) or "
                         f"{num_buckets // 2} (causal) exact ones), got {max_distance!r}")


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128) -> torch.Tensor:
    """T5's bucket of each offset ``relative_position`` = key position - query position
    (Mesh TensorFlow's ``_relative_position_bucket``, as Hugging Face computes it).

    Bidirectional: half of the buckets for keys after the query (offset > 0), half for the
    rest. Causal (the decoder): offsets > 0 never occur and all go to bucket 0. Within a
    direction of n buckets, distances 0 .. n/2 - 1 get a bucket each; distance d >= n/2 gets
    n/2 + floor(log(d / (n/2)) / log(max_distance / (n/2)) * (n - n/2)), capped at n - 1,
    so every distance >= max_distance shares the last bucket."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets  # keys to the right: the upper half
        distance = relative_position.abs()
    else:
        distance = -torch.clamp(relative_position, max=0)  # keys to the left; the future is masked anyway
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # log-spaced buckets for the larger distances (distance 0 gives -inf here; torch.where discards it)
    large = max_exact + (torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).to(torch.long)
    large = torch.clamp(large, max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


# ---- building blocks --------------------------------------------------------------------


class T5LayerNorm(nn.Module):
    """RMSNorm: weight * x / sqrt(mean(x^2) + eps), no mean subtracted, no bias (HF's name
    for T5's norm). The mean square is taken in float32 whatever x's dtype."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.variance_epsilon)


class T5DenseActDense(nn.Module):
    """T5's feed-forward block: wo(act(wi x)), no biases (act = ReLU)."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = activation(config.dense_act_fn)

    def forward(self, x):
        return self.wo(self.dropout(self.act(self.wi(x))))  # (B, T, D) -> (B, T, d_ff) -> (B, T, D)


class T5DenseGatedActDense(nn.Module):
    """v1.1's gated feed-forward (GEGLU, Shazeer 2020): wo(act(wi_0 x) * wi_1 x). A third
    matrix, so v1.1 shrinks d_ff to keep the parameter count."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = activation(config.dense_act_fn)

    def forward(self, x):
        return self.wo(self.dropout(self.act(self.wi_0(x)) * self.wi_1(x)))


class T5LayerFF(nn.Module):
    """Pre-LN feed-forward sub-layer: x + Dropout(FFN(Norm(x)))."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.DenseReluDense = T5DenseGatedActDense(config) if config.is_gated_act else T5DenseActDense(config)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x):
        return x + self.dropout(self.DenseReluDense(self.layer_norm(x)))


class T5Attention(nn.Module):
    """Multi-head attention without the 1/sqrt(d_kv) scale: self-attention (the encoder's
    bidirectional, the decoder's causal) or cross-attention (queries from the decoder, keys
    and values from the encoder output). The first layer of each stack owns the relative
    position bias table: (num_buckets, nh) scalars."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool = False, is_decoder: bool = False):
        super().__init__()
        self.is_decoder, self.has_relative_attention_bias = is_decoder, has_relative_attention_bias
        self.relative_attention_num_buckets = config.relative_attention_num_buckets
        self.relative_attention_max_distance = config.relative_attention_max_distance
        self.n_heads, self.key_value_proj_dim = config.num_heads, config.d_kv
        inner = config.num_heads * config.d_kv  # need not equal d_model
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        self.dropout = config.dropout_rate
        if has_relative_attention_bias:
            self.relative_attention_bias = Embedding(config.relative_attention_num_buckets, config.num_heads)

    def compute_bias(self, query_length: int, key_length: int, past_length: int = 0) -> torch.Tensor:
        """The (1, nh, Tq, Tk) bias b[bucket(j - i)] for queries at positions past_length + i
        (the new tokens after a KV cache of past_length) and keys at positions j."""
        device = self.relative_attention_bias.weight.device
        context = torch.arange(past_length, past_length + query_length, device=device)[:, None]  # (Tq, 1)
        memory = torch.arange(key_length, device=device)[None, :]  # (1, Tk)
        buckets = relative_position_bucket(memory - context, bidirectional=not self.is_decoder,
                                           num_buckets=self.relative_attention_num_buckets,
                                           max_distance=self.relative_attention_max_distance)  # (Tq, Tk)
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, nh, Tq, Tk)

    def forward(self, x, mask=None, key_value_states=None, position_bias=None, layer_past=None, use_cache=False,
                output_attentions=False):
        """x (B, T, D); key_value_states (B, S, D) for cross-attention; mask: the key-padding
        mask (B, Tk); layer_past: this layer's cached (k, v). Returns (y, position_bias,
        present (k, v) or None, probs or None)."""
        B, T, _ = x.shape
        nh, hs = self.n_heads, self.key_value_proj_dim
        q = self.q(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        cross = key_value_states is not None
        if cross and layer_past is not None:  # the encoder output does not change: reuse its k, v
            k, v = layer_past
        else:
            source = key_value_states if cross else x
            k = self.k(source).view(B, -1, nh, hs).transpose(1, 2)  # (B, nh, S or T, hs)
            v = self.v(source).view(B, -1, nh, hs).transpose(1, 2)
            if layer_past is not None:  # self-attention with a cache: append the new positions
                k, v = torch.cat((layer_past[0], k), dim=2), torch.cat((layer_past[1], v), dim=2)  # (B, nh, P+T, hs)
        present = (k, v) if use_cache else None
        if position_bias is None and self.has_relative_attention_bias:
            position_bias = self.compute_bias(T, k.shape[2], past_length=k.shape[2] - T)
        # T5 does not divide the scores by sqrt(hs): scale = 1. The decoder's self-attention is
        # causal, aligned bottom-right (the T new queries are the last T of the P + T keys).
        y, probs = attend(q, k, v, attention_mask=mask, causal=self.is_decoder and not cross, bias=position_bias,
                          scale=1.0, dropout=self.dropout if self.training else 0.0, need_weights=output_attentions)
        return self.o(y.transpose(1, 2).reshape(B, T, nh * hs)), position_bias, present, probs


class T5LayerSelfAttention(nn.Module):
    """Pre-LN self-attention sub-layer: x + Dropout(Attention(Norm(x)))."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool, is_decoder: bool):
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_attention_bias, is_decoder)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x, mask=None, position_bias=None, layer_past=None, use_cache=False, output_attentions=False):
        y, position_bias, present, probs = self.SelfAttention(self.layer_norm(x), mask, None, position_bias,
                                                              layer_past, use_cache, output_attentions)
        return x + self.dropout(y), position_bias, present, probs


class T5LayerCrossAttention(nn.Module):
    """Pre-LN cross-attention sub-layer (decoder only): x + Dropout(Attention(Norm(x), enc)).
    It has no position bias: a decoder position and an encoder position are in different
    sequences, so their offset means nothing."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.EncDecAttention = T5Attention(config, has_relative_attention_bias=False, is_decoder=True)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x, encoder_hidden_states, mask=None, layer_past=None, use_cache=False, output_attentions=False):
        y, _, present, probs = self.EncDecAttention(self.layer_norm(x), mask, encoder_hidden_states, None, layer_past,
                                                    use_cache, output_attentions)
        return x + self.dropout(y), present, probs


class T5Block(nn.Module):
    """One layer: self-attention, (decoder:) cross-attention, feed-forward, each pre-LN."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool, is_decoder: bool):
        super().__init__()
        self.is_decoder = is_decoder
        self.layer = nn.ModuleList([T5LayerSelfAttention(config, has_relative_attention_bias, is_decoder)])
        if is_decoder:
            self.layer.append(T5LayerCrossAttention(config))
        self.layer.append(T5LayerFF(config))

    def forward(self, x, mask=None, position_bias=None, encoder_hidden_states=None, encoder_mask=None,
                layer_past=None, use_cache=False, output_attentions=False):
        self_past = layer_past[:2] if layer_past is not None else None
        x, position_bias, present, self_probs = self.layer[0](x, mask, position_bias, self_past, use_cache,
                                                              output_attentions)
        cross_probs = None
        if self.is_decoder:
            cross_past = layer_past[2:] if layer_past is not None else None
            x, cross_present, cross_probs = self.layer[1](x, encoder_hidden_states, encoder_mask, cross_past,
                                                          use_cache, output_attentions)
            present = present + cross_present if use_cache else None  # (self_k, self_v, cross_k, cross_v)
        return self.layer[-1](x), position_bias, present, self_probs, cross_probs


# ---- the stacks and the models ------------------------------------------------------------


class T5PreTrainedModel(PreTrainedModel):
    config_class = T5Config
    base_model_prefix = ""  # the encoder, decoder and table sit at the top level of every T5 model

    def init_weights(self):
        """HF's ``_init_weights`` (Mesh TensorFlow's): with f = initializer_factor, norms f;
        the table N(0, f); wi N(0, f d_model^-0.5), wo N(0, f d_ff^-0.5); q N(0, f (d_model
        d_kv)^-0.5) (the missing 1/sqrt(d_kv) of the scores, moved into q), k, v N(0, f
        d_model^-0.5), o N(0, f (nh d_kv)^-0.5); the bias table N(0, f d_model^-0.5)."""
        c, f = self.config, self.config.initializer_factor
        for module in self.modules():
            if isinstance(module, T5LayerNorm):
                nn.init.constant_(module.weight, f)
            elif isinstance(module, (T5DenseActDense, T5DenseGatedActDense)):
                for name in ("wi", "wi_0", "wi_1"):
                    if hasattr(module, name):
                        nn.init.normal_(getattr(module, name).weight, std=f * c.d_model**-0.5)
                nn.init.normal_(module.wo.weight, std=f * c.d_ff**-0.5)
            elif isinstance(module, T5Attention):
                nn.init.normal_(module.q.weight, std=f * (c.d_model * c.d_kv) ** -0.5)
                nn.init.normal_(module.k.weight, std=f * c.d_model**-0.5)
                nn.init.normal_(module.v.weight, std=f * c.d_model**-0.5)
                nn.init.normal_(module.o.weight, std=f * (c.num_heads * c.d_kv) ** -0.5)
                if module.has_relative_attention_bias:
                    nn.init.normal_(module.relative_attention_bias.weight, std=f * c.d_model**-0.5)
        if hasattr(self, "shared"):
            nn.init.normal_(self.shared.weight, std=f)
        if getattr(self, "lm_head", None) is not None and not c.tie_word_embeddings:
            nn.init.normal_(self.lm_head.weight, std=f)
        self.tie_weights()

    @property
    def _tied_keys(self):
        keys = [("encoder.embed_tokens.weight", "shared.weight"), ("decoder.embed_tokens.weight", "shared.weight")]
        if getattr(self, "lm_head", None) is not None and self.config.tie_word_embeddings:
            keys.append(("lm_head.weight", "shared.weight"))
        return tuple(keys)

    @classmethod
    def _rename_key(cls, key: str) -> str | None:
        # Some old checkpoints hold a relative bias table for the first cross-attention, which T5 never uses.
        return None if key == "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight" else key

    def load_hf_state_dict(self, state, *, strict=False, source="checkpoint"):
        """As the base class; and a head stored apart from the table with other values is
        kept apart, as transformers 5 does (its configs always say tie_word_embeddings=True
        and keep the old untied meaning in scale_decoder_outputs)."""
        head, table = state.get("lm_head.weight"), state.get("shared.weight")
        if (getattr(self, "lm_head", None) is not None and self.config.tie_word_embeddings and head is not None
                and table is not None and not torch.equal(head, table)):
            self.config.tie_word_embeddings = False  # scale_decoder_outputs keeps its value
            self.lm_head.weight = nn.Parameter(self.shared.weight.detach().clone())
        return super().load_hf_state_dict(state, strict=strict, source=source)

    def get_input_embeddings(self):
        return self.shared


class T5Stack(nn.Module):
    """The encoder or the decoder: the shared table, num_layers blocks, a final RMSNorm.
    Block 0 computes the relative position bias; every later block reuses it."""

    def __init__(self, config: T5Config, embed_tokens: Embedding, is_decoder: bool):
        super().__init__()
        self.is_decoder = is_decoder
        self.embed_tokens = embed_tokens  # the shared table (one module under two names, as HF's keys)
        n = config.num_decoder_layers if is_decoder else config.num_layers
        self.block = nn.ModuleList(T5Block(config, has_relative_attention_bias=i == 0, is_decoder=is_decoder)
                                   for i in range(n))
        self.final_layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, input_ids, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                past_key_values=None, use_cache=False, output_attentions=False):
        x = self.dropout(self.embed_tokens(input_ids))  # (B, T, D): no position embedding at all
        position_bias = None  # computed by block 0, shared by all blocks
        presents, attentions, cross_attentions = [], [], []
        for i, block in enumerate(self.block):
            layer_past = past_key_values[i] if past_key_values is not None else None
            x, position_bias, present, probs, cross_probs = block(
                x, attention_mask, position_bias, encoder_hidden_states, encoder_attention_mask, layer_past,
                use_cache, output_attentions)
            presents.append(present)
            attentions.append(probs)
            cross_attentions.append(cross_probs)
        x = self.dropout(self.final_layer_norm(x))
        return StackOutput(x, tuple(presents) if use_cache else None, tuple(attentions) if output_attentions else None,
                           tuple(cross_attentions) if output_attentions and self.is_decoder else None)


class T5Encoder(nn.Module):
    """``model.get_encoder()``: the encoder stack with input checks; (B, S) ids -> (B, S, D)."""

    def __init__(self, model: "T5Model | T5ForConditionalGeneration"):
        super().__init__()
        self._model = [model]  # a plain list: not a submodule (no second copy of the keys)

    def forward(self, input_ids, attention_mask=None, output_attentions=False):
        model = self._model[0]
        shape = check_ids("input_ids", input_ids, model.config.vocab_size)
        check_mask("attention_mask", attention_mask, shape)
        out = model.encoder(input_ids, attention_mask, output_attentions=output_attentions)
        return BaseModelOutput(out.last_hidden_state, out.attentions)


class _T5EncoderDecoder(T5PreTrainedModel):
    """What T5Model and T5ForConditionalGeneration share: the table, the two stacks, and the
    encode-then-decode forward pass with its input checks."""

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.shared = Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, self.shared, is_decoder=False)
        self.decoder = T5Stack(config, self.shared, is_decoder=True)

    def get_encoder(self) -> T5Encoder:
        return T5Encoder(self)

    def _encode_decode(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
                       past_key_values, use_cache, output_attentions) -> Seq2SeqModelOutput:
        c = self.config
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("input_ids (or encoder_outputs) must be given: the encoder's input")
            encoder_outputs = self.get_encoder()(input_ids, attention_mask, output_attentions)
        enc = encoder_states(encoder_outputs)  # (B, S, D)
        check_decoder_inputs(c, decoder_input_ids, enc, attention_mask, decoder_attention_mask, past_key_values,
                             c.num_decoder_layers)
        dec = self.decoder(decoder_input_ids, decoder_attention_mask, enc, attention_mask, past_key_values, use_cache,
                           output_attentions)
        return Seq2SeqModelOutput(dec.last_hidden_state, dec.past_key_values, enc, dec.attentions, dec.cross_attentions,
                                  getattr(encoder_outputs, "attentions", None))


class T5Model(_T5EncoderDecoder):
    """The bare encoder-decoder: decoder hidden states (B, T, D), no head."""

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, past_key_values=None, use_cache=False, output_attentions=False):
        """input_ids (B, S) and attention_mask (B, S) for the encoder; decoder_input_ids
        (B, T), which must begin with decoder_start_token_id (see ``shift_right``)."""
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids must be given (T5Model has no labels to shift right)")
        return self._encode_decode(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                                   encoder_outputs, past_key_values, use_cache, output_attentions)


class T5ForConditionalGeneration(GenerationMixin, _T5EncoderDecoder):
    """T5 with its language-model head: logits over the vocabulary at every decoder position.
    ``generate(input_ids, max_new_tokens, attention_mask=...)``: greedy or sampled decoding,
    token for token as HF's (:func:`course_lib.generation.generate`)."""

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.init_weights()

    def tie_weights(self):
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.shared.weight

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, past_key_values=None, labels=None, use_cache=False, output_attentions=False):
        """As HF's ``T5ForConditionalGeneration.forward``. ``labels`` (B, T): the target ids,
        -100 where there is none; without ``decoder_input_ids`` the decoder reads
        ``shift_right(labels)``, and the loss scores logits[:, t] against labels[:, t]."""
        c = self.config
        if labels is not None:
            check_labels(labels, c)
            if decoder_input_ids is None:
                decoder_input_ids = shift_right(labels, c.decoder_start_token_id, c.pad_token_id)
        if decoder_input_ids is None:
            raise ValueError(f"decoder_input_ids or labels must be given: the decoder needs an input, starting with "
                             f"decoder_start_token_id = {c.decoder_start_token_id}")
        out = self._encode_decode(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                                  encoder_outputs, past_key_values, use_cache, output_attentions)
        h = out.last_hidden_state  # (B, T, D)
        if c.scale_decoder_outputs:
            h = h * c.d_model**-0.5  # the tied table's entries have std 1: bring h to that scale first
        logits = self.lm_head(h)  # (B, T, V)
        loss = None
        if labels is not None:
            if labels.shape != decoder_input_ids.shape:
                raise ValueError(f"labels must have decoder_input_ids' shape {tuple(decoder_input_ids.shape)}, "
                                 f"got {tuple(labels.shape)}")
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return Seq2SeqLMOutput(loss, logits, out.past_key_values, out.encoder_last_hidden_state,
                               out.decoder_attentions, out.cross_attentions, out.encoder_attentions)


def parameter_count(config: T5Config) -> dict[str, int]:
    """T5ForConditionalGeneration's parameters by part, from the config alone. t5-small
    (V=32128, D=512, d_kv=64, 8 heads, d_ff=2048, 6+6 layers, tied): 60,506,624."""
    D, inner, F_, nb = config.d_model, config.num_heads * config.d_kv, config.d_ff, config.relative_attention_num_buckets
    attention = 4 * D * inner + D  # q, k, v, o and the sub-layer's norm
    ff = (3 if config.is_gated_act else 2) * D * F_ + D
    counts = {
        "shared": config.vocab_size * D,
        "encoder": config.num_layers * (attention + ff) + nb * config.num_heads + D,
        "decoder": config.num_decoder_layers * (2 * attention + ff) + nb * config.num_heads + D,
        "lm_head": 0 if config.tie_word_embeddings else config.vocab_size * D,
    }
    counts["total"] = sum(counts.values())
    return counts


__all__ = [
    "T5Config",
    "T5ForConditionalGeneration",
    "T5Model",
    "check_buckets",
    "relative_position_bucket",
]
