"""Chapter 7: BART (Lewis et al., 2020), a denoising sequence-to-sequence autoencoder.

BART is the Transformer encoder-decoder with BERT's encoder habits and GPT's decoder:
the input text is corrupted (spans replaced by one ``<mask>`` each, sentences shuffled, ...;
:mod:`course_lib.span_corruption`), the bidirectional encoder reads the corrupted text, and the
autoregressive decoder rewrites the *whole* original, attending to the encoder through
cross-attention. It is not a variant of BERT: BERT has no decoder and predicts only the
masked tokens, each independently. Every module and parameter has the name it has in
Hugging Face's ``transformers`` (``model.encoder.layers.0.self_attn.q_proj.weight``, ...), and
the outputs match HF's ``BartForConditionalGeneration`` to float32 rounding (tests/test_bart.py).

Where BART differs from T5 (:mod:`course_lib.models.t5`):

* **learned absolute positions**, one table per stack, with a historical **offset of 2**:
  fairseq numbered positions from ``padding_idx + 1 = 2``, so position p reads row p + 2
  and the table has ``max_position_embeddings + 2`` rows (rows 0 and 1 are never used);
* **post-LN** like BERT: x = LN(x + Dropout(Sublayer(x))), and a LayerNorm right after the
  embeddings (``layernorm_embedding``), with no final norm after the last layer;
* LayerNorm with bias, linear layers with biases, attention scaled by 1/sqrt(head size),
  GELU in the feed-forward block;
* the tied LM head adds a per-token bias ``final_logits_bias`` (a buffer, zero in the
  released checkpoints); no d_model^-0.5 rescale;
* decoding starts from ``decoder_start_token_id`` = ``</s>`` (2), labels usually begin
  with ``<s>`` (0): the decoder reads "</s> <s> w1 w2 ..." and writes "<s> w1 w2 ... </s>".

The decoder's KV cache is the same as T5's: ``(self_k, self_v, cross_k, cross_v)`` per layer.

Shapes: B batch, S encoder length, T new decoder positions, P cached decoder positions,
D d_model, nh heads, hs = D / nh, V vocab_size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..embeddings import Embedding
from ..generation import GenerationMixin
from ..kernels.backend import use_triton
from ..kernels.bias_gelu import bias_gelu
from .checkpoint import ConfigMixin, PreTrainedModel
from .layers import ACTIVATIONS, GELU_APPROXIMATE, LayerNorm, activation, attend
from .seq2seq import (IGNORE_INDEX, BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput, StackOutput,
                      check_decoder_inputs, check_ids, check_labels, check_mask, encoder_states, shift_right)

POSITION_OFFSET = 2  # fairseq's positions start after padding_idx = 1


@dataclass
class BartConfig(ConfigMixin):
    """BART's hyper-parameters, with Hugging Face's field names and bart-large's defaults."""

    model_type = "bart"

    vocab_size: int = 50265
    max_position_embeddings: int = 1024
    encoder_layers: int = 12
    encoder_ffn_dim: int = 4096
    encoder_attention_heads: int = 16
    decoder_layers: int = 12
    decoder_ffn_dim: int = 4096
    decoder_attention_heads: int = 16
    encoder_layerdrop: float = 0.0
    decoder_layerdrop: float = 0.0
    activation_function: str = "gelu"
    d_model: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    init_std: float = 0.02
    scale_embedding: bool = False  # multiply the token embeddings by sqrt(d_model) (off in bart-base/large)
    use_cache: bool = True
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    is_encoder_decoder: bool = True
    decoder_start_token_id: int = 2
    forced_eos_token_id: int | None = 2  # HF's generate forces </s> at max_length; course_lib's does not
    tie_word_embeddings: bool = True

    def __post_init__(self):
        for heads, name in ((self.encoder_attention_heads, "encoder"), (self.decoder_attention_heads, "decoder")):
            if self.d_model % heads:
                raise ValueError(f"d_model ({self.d_model}) must be a multiple of {name}_attention_heads ({heads})")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"activation_function must be one of {list(ACTIVATIONS)}, got {self.activation_function!r}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if not (isinstance(value, int) and 0 <= value < self.vocab_size):
                raise ValueError(f"{name} must be a token id in [0, vocab_size = {self.vocab_size}), got {value!r}")

    @classmethod
    def _prepare(cls, d: dict) -> dict:
        for name, default in (("pad_token_id", 1), ("bos_token_id", 0), ("eos_token_id", 2),
                              ("decoder_start_token_id", 2)):
            if d.get(name) is None:
                d[name] = default
        return d

    # HF's generic names (its attribute_map).
    hidden_size = property(lambda self: self.d_model)
    num_attention_heads = property(lambda self: self.encoder_attention_heads)
    num_hidden_layers = property(lambda self: self.encoder_layers)


# ---- building blocks --------------------------------------------------------------------


class BartLearnedPositionalEmbedding(Embedding):
    """A learned vector per absolute position, stored with BART's offset: position p is
    row p + 2 of a (max_position_embeddings + 2, D) table."""

    def __init__(self, num_positions: int, embedding_dim: int):
        super().__init__(num_positions + POSITION_OFFSET, embedding_dim)

    def forward(self, length: int, past_length: int = 0):
        positions = torch.arange(past_length, past_length + length, device=self.weight.device)  # (T,)
        return super().forward(positions + POSITION_OFFSET)  # (T, D), broadcast over the batch


class BartAttention(nn.Module):
    """Multi-head attention with biases and the 1/sqrt(hs) scale: self-attention (the
    encoder's bidirectional, the decoder's causal) or cross-attention."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, causal: bool = False):
        super().__init__()
        self.num_heads, self.head_dim, self.causal, self.dropout = num_heads, embed_dim // num_heads, causal, dropout
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x, key_value_states=None, attention_mask=None, layer_past=None, use_cache=False,
                output_attentions=False):
        """x (B, T, D); key_value_states (B, S, D) for cross-attention; attention_mask the key-
        padding mask (B, Tk). Returns (y, present (k, v) or None, probs or None)."""
        B, T, D = x.shape
        nh, hs = self.num_heads, self.head_dim
        q = self.q_proj(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        cross = key_value_states is not None
        if cross and layer_past is not None:  # the encoder output does not change: reuse its k, v
            k, v = layer_past
        else:
            source = key_value_states if cross else x
            k = self.k_proj(source).view(B, -1, nh, hs).transpose(1, 2)  # (B, nh, S or T, hs)
            v = self.v_proj(source).view(B, -1, nh, hs).transpose(1, 2)
            if layer_past is not None:
                k, v = torch.cat((layer_past[0], k), dim=2), torch.cat((layer_past[1], v), dim=2)  # (B, nh, P+T, hs)
        present = (k, v) if use_cache else None
        y, probs = attend(q, k, v, attention_mask=attention_mask, causal=self.causal and not cross, scale=hs**-0.5,
                          dropout=self.dropout if self.training else 0.0, need_weights=output_attentions)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D)), present, probs


def _feed_forward(layer, x):
    """fc2(Dropout(act(fc1 x))): on the GPU the fc1 bias and GELU in one kernel."""
    if layer.act in GELU_APPROXIMATE and use_triton(x, op="bias_gelu"):
        h = bias_gelu(F.linear(x, layer.fc1.weight), layer.fc1.bias, GELU_APPROXIMATE[layer.act])
    else:  # plain PyTorch: addmm, then the activation, whose backward is one fused CPU op
        h = activation(layer.act)(layer.fc1(x))  # (B, T, ffn_dim)
    h = F.dropout(h, layer.activation_dropout, layer.training)
    return F.dropout(layer.fc2(h), layer.dropout, layer.training)


class BartEncoderLayer(nn.Module):
    """x = LN(x + Dropout(SelfAttn(x))); x = LN(x + Dropout(FFN(x))): post-LN, as BERT."""

    def __init__(self, config: BartConfig):
        super().__init__()
        D = config.d_model
        self.self_attn = BartAttention(D, config.encoder_attention_heads, config.attention_dropout)
        self.self_attn_layer_norm = LayerNorm(D)
        self.fc1, self.fc2 = nn.Linear(D, config.encoder_ffn_dim), nn.Linear(config.encoder_ffn_dim, D)
        self.final_layer_norm = LayerNorm(D)
        self.act, self.dropout, self.activation_dropout = (config.activation_function, config.dropout,
                                                           config.activation_dropout)

    def forward(self, x, attention_mask=None, output_attentions=False):
        y, _, probs = self.self_attn(x, attention_mask=attention_mask, output_attentions=output_attentions)
        x = self.self_attn_layer_norm(F.dropout(y, self.dropout, self.training), residual=x)  # LN(x + y), one kernel
        return self.final_layer_norm(_feed_forward(self, x), residual=x), probs


class BartDecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder, feed-forward; each post-LN."""

    def __init__(self, config: BartConfig):
        super().__init__()
        D, nh = config.d_model, config.decoder_attention_heads
        self.self_attn = BartAttention(D, nh, config.attention_dropout, causal=True)
        self.self_attn_layer_norm = LayerNorm(D)
        self.encoder_attn = BartAttention(D, nh, config.attention_dropout)
        self.encoder_attn_layer_norm = LayerNorm(D)
        self.fc1, self.fc2 = nn.Linear(D, config.decoder_ffn_dim), nn.Linear(config.decoder_ffn_dim, D)
        self.final_layer_norm = LayerNorm(D)
        self.act, self.dropout, self.activation_dropout = (config.activation_function, config.dropout,
                                                           config.activation_dropout)

    def forward(self, x, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                layer_past=None, use_cache=False, output_attentions=False):
        self_past, cross_past = (layer_past[:2], layer_past[2:]) if layer_past is not None else (None, None)
        y, present, self_probs = self.self_attn(x, None, attention_mask, self_past, use_cache, output_attentions)
        x = self.self_attn_layer_norm(F.dropout(y, self.dropout, self.training), residual=x)
        y, cross_present, cross_probs = self.encoder_attn(x, encoder_hidden_states, encoder_attention_mask,
                                                          cross_past, use_cache, output_attentions)
        x = self.encoder_attn_layer_norm(F.dropout(y, self.dropout, self.training), residual=x)
        x = self.final_layer_norm(_feed_forward(self, x), residual=x)
        return x, (present + cross_present if use_cache else None), self_probs, cross_probs


class _BartStack(nn.Module):
    """What the encoder and the decoder share: the scaled token table, the positions, and
    the embedding LayerNorm: x = LN(E[ids] * embed_scale + P[positions])."""

    def __init__(self, config: BartConfig, embed_tokens: Embedding, layers: list[nn.Module], layerdrop: float):
        super().__init__()
        self.embed_tokens = embed_tokens  # the shared table (one module under both HF names)
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_positions = BartLearnedPositionalEmbedding(config.max_position_embeddings, config.d_model)
        self.layers = nn.ModuleList(layers)
        self.layernorm_embedding = LayerNorm(config.d_model)
        self.dropout, self.layerdrop = config.dropout, layerdrop

    def embed(self, input_ids, past_length: int = 0):
        x = self.embed_tokens(input_ids) * self.embed_scale  # (B, T, D)
        positions = self.embed_positions(input_ids.shape[1], past_length)  # (T, D)
        # The position vectors are added inside the LayerNorm kernel.
        return F.dropout(self.layernorm_embedding(x, residual=positions.expand_as(x)), self.dropout, self.training)

    def skip(self) -> bool:
        """LayerDrop (Fan et al., 2020): in training, skip each layer with probability layerdrop."""
        return self.training and self.layerdrop > 0 and bool(torch.rand([]) < self.layerdrop)


class BartEncoder(_BartStack):
    def __init__(self, config: BartConfig, embed_tokens: Embedding):
        super().__init__(config, embed_tokens, [BartEncoderLayer(config) for _ in range(config.encoder_layers)],
                         config.encoder_layerdrop)
        self.config = config

    def forward(self, input_ids, attention_mask=None, output_attentions=False):
        """input_ids (B, S), attention_mask (B, S) -> BaseModelOutput with (B, S, D)."""
        shape = check_ids("input_ids", input_ids, self.config.vocab_size)
        check_mask("attention_mask", attention_mask, shape)
        if shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"input_ids: {shape[1]} tokens exceed max_position_embeddings = "
                             f"{self.config.max_position_embeddings} (BART's positions are a learned table)")
        x = self.embed(input_ids)
        attentions = []
        for layer in self.layers:
            if self.skip():
                continue
            x, probs = layer(x, attention_mask, output_attentions)
            attentions.append(probs)
        return BaseModelOutput(x, tuple(attentions) if output_attentions else None)


class BartDecoder(_BartStack):
    def __init__(self, config: BartConfig, embed_tokens: Embedding):
        super().__init__(config, embed_tokens, [BartDecoderLayer(config) for _ in range(config.decoder_layers)],
                         config.decoder_layerdrop)
        self.config = config

    def forward(self, input_ids, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                past_key_values=None, use_cache=False, output_attentions=False):
        P = past_key_values[0][0].shape[2] if past_key_values is not None else 0
        if P + input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"decoder_input_ids: {P} cached + {input_ids.shape[1]} new positions exceed "
                             f"max_position_embeddings = {self.config.max_position_embeddings}")
        x = self.embed(input_ids, P)
        presents, attentions, cross_attentions = [], [], []
        for i, layer in enumerate(self.layers):
            if self.skip():
                continue
            layer_past = past_key_values[i] if past_key_values is not None else None
            x, present, probs, cross_probs = layer(x, attention_mask, encoder_hidden_states, encoder_attention_mask,
                                                   layer_past, use_cache, output_attentions)
            presents.append(present)
            attentions.append(probs)
            cross_attentions.append(cross_probs)
        return StackOutput(x, tuple(presents) if use_cache else None,
                           tuple(attentions) if output_attentions else None,
                           tuple(cross_attentions) if output_attentions else None)


# ---- the models -------------------------------------------------------------------------


class BartPreTrainedModel(PreTrainedModel):
    config_class = BartConfig
    base_model_prefix = "model"  # BartForConditionalGeneration keeps the encoder-decoder in .model

    def init_weights(self):
        """HF's ``_init_weights``: normal(0, init_std) matrices and tables (the padding row
        zero), zero biases, LayerNorm (1, 0), final_logits_bias 0."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():  # tables last: the head may share the token table
            if isinstance(module, Embedding):
                nn.init.normal_(module.weight, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
        if hasattr(self, "final_logits_bias"):
            self.final_logits_bias.zero_()
        self.tie_weights()

    @classmethod
    def _rename_key(cls, key: str) -> str | None:
        return None if key.endswith(("encoder.version", "decoder.version")) else key  # fairseq leftovers


class BartModel(BartPreTrainedModel):
    """The bare encoder-decoder: decoder hidden states (B, T, D), no head."""

    _tied_keys = (("encoder.embed_tokens.weight", "shared.weight"), ("decoder.embed_tokens.weight", "shared.weight"))

    def __init__(self, config: BartConfig):
        super().__init__(config)
        self.shared = Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.encoder = BartEncoder(config, self.shared)
        self.decoder = BartDecoder(config, self.shared)
        self.init_weights()

    @classmethod
    def _rename_key(cls, key: str) -> str | None:
        key = super()._rename_key(key)
        return None if key == "final_logits_bias" else key  # the head's, in a full checkpoint

    def get_encoder(self) -> BartEncoder:
        return self.encoder

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, past_key_values=None, use_cache=False, output_attentions=False):
        """input_ids (B, S), attention_mask (B, S) for the encoder; decoder_input_ids (B, T),
        beginning with decoder_start_token_id. Without decoder_input_ids (and no cache) the
        decoder reads shift_right(input_ids), as in HF (BART's denoising pretraining)."""
        c = self.config
        if decoder_input_ids is None:
            if input_ids is None:
                raise ValueError("decoder_input_ids (or input_ids, to shift right) must be given")
            decoder_input_ids = shift_right(input_ids, c.decoder_start_token_id, c.pad_token_id)
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("input_ids (or encoder_outputs) must be given: the encoder's input")
            encoder_outputs = self.encoder(input_ids, attention_mask, output_attentions)
        enc = encoder_states(encoder_outputs)  # (B, S, D)
        check_decoder_inputs(c, decoder_input_ids, enc, attention_mask, decoder_attention_mask, past_key_values,
                             c.decoder_layers)
        dec = self.decoder(decoder_input_ids, decoder_attention_mask, enc, attention_mask, past_key_values, use_cache,
                           output_attentions)
        return Seq2SeqModelOutput(dec.last_hidden_state, dec.past_key_values, enc, dec.attentions, dec.cross_attentions,
                                  getattr(encoder_outputs, "attentions", None))


class BartForConditionalGeneration(GenerationMixin, BartPreTrainedModel):
    """BART with its language-model head (the token table, plus final_logits_bias).
    ``generate(input_ids, max_new_tokens, attention_mask=...)``: greedy or sampled decoding,
    token for token as HF's (with HF's ``forced_eos_token_id`` off)."""

    def __init__(self, config: BartConfig):
        super().__init__(config)
        self.model = BartModel(config)
        self.register_buffer("final_logits_bias", torch.zeros(1, config.vocab_size))  # (1, V)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.init_weights()

    @property
    def _tied_keys(self):
        keys = (("model.encoder.embed_tokens.weight", "model.shared.weight"),
                ("model.decoder.embed_tokens.weight", "model.shared.weight"))
        return keys + ((("lm_head.weight", "model.shared.weight"),) if self.config.tie_word_embeddings else ())

    def tie_weights(self):
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.shared.weight

    def load_hf_state_dict(self, state, *, strict=False, source="checkpoint"):
        """As the base class; a checkpoint without final_logits_bias (HF lists it as
        optional) leaves it at zero without a warning."""
        if "final_logits_bias" not in state:
            state = {**state, "final_logits_bias": torch.zeros_like(self.final_logits_bias)}
        return super().load_hf_state_dict(state, strict=strict, source=source)

    def get_encoder(self) -> BartEncoder:
        return self.model.encoder

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, past_key_values=None, labels=None, use_cache=False, output_attentions=False):
        """As HF's ``BartForConditionalGeneration.forward``. ``labels`` (B, T): the target ids
        (the original text), -100 where there is none; without ``decoder_input_ids`` the
        decoder reads ``shift_right(labels)``."""
        c = self.config
        if labels is not None:
            check_labels(labels, c)
            use_cache = False  # as HF: training needs no cache
            if decoder_input_ids is None:
                decoder_input_ids = shift_right(labels, c.decoder_start_token_id, c.pad_token_id)
        out = self.model(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
                         past_key_values, use_cache, output_attentions)
        logits = self.lm_head(out.last_hidden_state) + self.final_logits_bias  # (B, T, V)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"labels must have the decoder input's shape {tuple(logits.shape[:2])}, "
                                 f"got {tuple(labels.shape)}")
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return Seq2SeqLMOutput(loss, logits, out.past_key_values, out.encoder_last_hidden_state,
                               out.decoder_attentions, out.cross_attentions, out.encoder_attentions)


__all__ = ["BartConfig", "BartForConditionalGeneration", "BartModel"]
