"""Chapter 6: GPT-2 (Radford et al., 2019), small enough to read in one sitting.

GPT-2 is a stack of Transformer *decoder* blocks without cross-attention: each position
attends only to itself and the positions before it (the causal mask), so the network
models p(x_t | x_<t) and the whole text is scored as sum_t log p(x_t | x_<t). Every
module and parameter has the name it has in Hugging Face's ``transformers``
(``transformer.h.0.attn.c_attn.weight``, ...), so loading a checkpoint is a key-by-key copy,
and the outputs match HF's ``GPT2LMHeadModel`` to float32 rounding (tests/test_gpt2.py).

Three things differ from BERT (Chapter 4):

* **Pre-LN**: LayerNorm comes *first* in each sub-block, x = x + Attn(LN(x)), and one
  more LayerNorm ``ln_f`` follows the last block (GPT-2 paper, section 2.3). GPT-1 was
  post-LN like BERT; moving the norm in front keeps the residual stream an unnormalised
  sum and trains deep stacks stably (Xiong et al., 2020).
* **Conv1D**: OpenAI's TensorFlow code stored every projection as a (in, out) matrix and
  computed x @ W + b; HF kept that layout (``Conv1D``), so ours does too and loading stays
  a plain copy (nn.Linear stores (out, in)).
* **The KV cache**: in generation, the keys and values of the tokens already seen never
  change (the causal mask means no later token alters them), so each step computes
  q, k, v for the *new* token only and attends to the cached k, v of all earlier ones.
  ``past_key_values`` is a tuple with one ``(k, v)`` per layer, each (B, nh, T_past, hs).

The LM head is tied to the token table (``lm_head.weight`` *is* ``transformer.wte.weight``,
Press & Wolf, 2017). ``forward(..., labels=...)`` returns HF's shifted loss: the logits at
position t are scored against the token at t + 1.

Shapes: B batch, T new positions, P cached (past) positions, C n_embd, nh heads,
hs = C / nh, V vocab_size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..embeddings import Embedding
from ..generation import GenerationMixin
from ..kernels.backend import use_triton
from ..kernels.bias_gelu import bias_gelu
from ..kernels.cross_entropy import linear_cross_entropy
from .checkpoint import ConfigMixin, PreTrainedModel
from .layers import ACTIVATIONS, GELU_APPROXIMATE, LayerNorm, activation, attend

IGNORE_INDEX = -100  # labels with this value contribute no loss (padding, prompts)


@dataclass
class GPT2Config(ConfigMixin):
    """GPT-2's hyper-parameters, with Hugging Face's field names and GPT-2 small's defaults."""

    model_type = "gpt2"

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # None: 4 * n_embd
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False  # fp16 stability trick; the math is unchanged (ours is fp32 inside)
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    pad_token_id: int | None = None
    tie_word_embeddings: bool = True
    use_cache: bool = True

    is_encoder_decoder = False  # for course_lib.generation (a class attribute, not a field)

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"activation_function must be one of {list(ACTIVATIONS)}, got {self.activation_function!r}")
        if not self.tie_word_embeddings:
            raise ValueError("tie_word_embeddings=False is not supported: GPT-2's LM head is the token table")

    @classmethod
    def _prepare(cls, d: dict) -> dict:
        if d.get("add_cross_attention"):
            raise ValueError("add_cross_attention=True (GPT-2 as the decoder of an encoder-decoder) is not supported")
        # HF's aliases, as keyword arguments of transformers.GPT2Config accept them.
        for alias, name in (("hidden_size", "n_embd"), ("num_hidden_layers", "n_layer"),
                            ("num_attention_heads", "n_head"), ("max_position_embeddings", "n_positions")):
            if alias in d:
                d.setdefault(name, d.pop(alias))
        return d

    # HF's generic names (its attribute_map), read by generation and by other chapters.
    hidden_size = property(lambda self: self.n_embd)
    num_hidden_layers = property(lambda self: self.n_layer)
    num_attention_heads = property(lambda self: self.n_head)
    max_position_embeddings = property(lambda self: self.n_positions)
    head_size = property(lambda self: self.n_embd // self.n_head)


# ---- building blocks --------------------------------------------------------------------


class Conv1D(nn.Module):
    """A linear layer stored as OpenAI stored it: ``weight`` is (in, out), y = x @ W + b.
    (The name is historical: it is a 1x1 convolution, i.e. a matmul.)"""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.empty(nx, nf))  # (in, out): the checkpoint's layout
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, self.nx), self.weight).view(*x.shape[:-1], self.nf)

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}"


class GPT2Attention(nn.Module):
    """Causal multi-head self-attention, with the KV cache."""

    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        C = config.n_embd
        self.n_head, self.head_size = config.n_head, config.head_size
        self.c_attn = Conv1D(3 * C, C)  # q, k, v in one matmul
        self.c_proj = Conv1D(C, C)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        # 1/sqrt(hs) keeps the scores' variance ~1; some GPT-2 variants also divide by the layer's depth.
        self.scale = self.head_size**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scale /= layer_idx + 1

    def forward(self, x, attention_mask=None, layer_past=None, use_cache=False, output_attentions=False, bias=None,
                causal=True):
        B, T, C = x.shape
        nh, hs = self.n_head, self.head_size
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if layer_past is not None:  # the cached keys and values of the P earlier positions
            past_k, past_v = layer_past
            k = torch.cat((past_k, k), dim=2)  # (B, nh, P + T, hs)
            v = torch.cat((past_v, v), dim=2)
        present = (k, v) if use_cache else None
        # The T queries are the last T of the P + T keys: query i sees key j <= i + P (the
        # causal mask aligned bottom-right), and never a padding key (attention_mask, (B, P + T)).
        # ``bias`` (broadcastable to (B, nh, T, P + T)) is added to the scaled scores; with
        # causal=False it alone decides which keys the queries see besides the padding mask.
        y, probs = attend(q, k, v, attention_mask=attention_mask, causal=causal, bias=bias, scale=self.scale,
                          dropout=self.attn_dropout.p if self.training else 0.0, need_weights=output_attentions)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y)), present, probs


class GPT2MLP(nn.Module):
    """The feed-forward block: C -> 4C, GELU (tanh form), 4C -> C."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        inner = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        self.c_fc = Conv1D(inner, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, inner)
        self.act = config.activation_function
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x):
        if self.act in GELU_APPROXIMATE and use_triton(x, op="bias_gelu"):
            # The matmul without its bias, then bias + GELU in one kernel (one pass over (B, T, 4C)).
            h = bias_gelu(x @ self.c_fc.weight, self.c_fc.bias, GELU_APPROXIMATE[self.act])
        else:  # plain PyTorch: addmm, then F.gelu, whose backward is already one fused CPU op
            h = activation(self.act)(self.c_fc(x))  # (B, T, 4C)
        return self.dropout(self.c_proj(h))


class GPT2Block(nn.Module):
    """One pre-LN decoder block: x = x + Attn(LN(x)); x = x + MLP(LN(x))."""

    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config, layer_idx)
        self.ln_2 = LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)

    def forward(self, x, attention_mask=None, layer_past=None, use_cache=False, output_attentions=False, bias=None,
                causal=True):
        a, present, probs = self.attn(self.ln_1(x), attention_mask, layer_past, use_cache, output_attentions, bias, causal)
        x = x + a  # the residual stream is never normalised in place: only the branch inputs are
        x = x + self.mlp(self.ln_2(x))
        return x, present, probs


# ---- outputs ----------------------------------------------------------------------------


@dataclass
class GPT2ModelOutput:
    last_hidden_state: torch.Tensor  # (B, T, C), after ln_f
    past_key_values: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None  # per layer (k, v): (B, nh, P+T, hs)
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, nh, T, P+T), if asked for


@dataclass
class CausalLMOutput:
    loss: torch.Tensor | None  # the mean next-token cross-entropy, when labels are given
    logits: torch.Tensor | None  # (B, T, V); None with fused_loss=True (never materialised)
    past_key_values: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


# ---- the models -------------------------------------------------------------------------


class GPT2PreTrainedModel(PreTrainedModel):
    config_class = GPT2Config
    base_model_prefix = "transformer"  # GPT2LMHeadModel keeps the body in .transformer

    def init_weights(self):
        """HF's ``_init_weights``: normal(0, 0.02) matrices and tables, zero biases, LayerNorm
        (1, 0), and the GPT-2 paper's scaled init of the projections into the residual stream
        (std / sqrt(2 n_layer): the stream sums 2 n_layer branches, so its variance would
        otherwise grow with depth)."""
        std = self.config.initializer_range
        for name, module in self.named_modules():
            if isinstance(module, Conv1D):
                scaled = name.endswith("c_proj")  # attn.c_proj and mlp.c_proj write into the residual stream
                nn.init.normal_(module.weight, std=std / (2 * self.config.n_layer) ** 0.5 if scaled else std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.tie_weights()

    @classmethod
    def _rename_key(cls, key: str) -> str | None:
        """Old checkpoints (OpenAI's conversions, transformers < 4.30) store the causal mask as
        buffers ``attn.bias`` (a (1, 1, 1024, 1024) lower triangle) and ``attn.masked_bias``:
        not parameters, so they are dropped. ``attn.c_attn.bias`` is a real parameter and kept."""
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            return None
        return key


class GPT2Model(GPT2PreTrainedModel):
    """Token + position embeddings, n_layer pre-LN blocks, and the final LayerNorm."""

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.wte = Embedding(config.vocab_size, config.n_embd)  # token embeddings (tied to the LM head)
        self.wpe = Embedding(config.n_positions, config.n_embd)  # learned absolute positions
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(GPT2Block(config, i) for i in range(config.n_layer))
        self.ln_f = LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False,
                output_attentions=False, bias=None, causal=True):
        """input_ids (B, T): the new tokens; past_key_values: the cache of the P tokens before
        them (or None); attention_mask (B, P + T): 1 = real token, 0 = padding, over the
        cached and the new positions; position_ids (B, T), default P, P+1, ..., P+T-1.

        Not in HF's GPT-2, for other chapters' attention patterns: ``bias``, an additive
        attention bias broadcastable to (B, nh, T, P + T) (-inf hides a key), the same in
        every layer; ``causal=False`` drops the causal mask, so that ``bias`` says what each
        query sees (Chapter 8's prefix LM: :func:`course_lib.decoder_only.prefix_lm_forward`)."""
        P = _check_inputs(self.config, input_ids, attention_mask, position_ids, past_key_values, bias)
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(P, P + T, device=input_ids.device).expand(B, T)
        x = self.drop(self.wte(input_ids) + self.wpe(position_ids))  # (B, T, C)
        presents, attentions = [], []
        for i, block in enumerate(self.h):
            layer_past = past_key_values[i] if past_key_values is not None else None
            x, present, probs = block(x, attention_mask, layer_past, use_cache, output_attentions, bias, causal)
            presents.append(present)
            attentions.append(probs)
        return GPT2ModelOutput(self.ln_f(x), tuple(presents) if use_cache else None,
                               tuple(attentions) if output_attentions else None)


def _check_inputs(config: GPT2Config, input_ids, attention_mask, position_ids, past_key_values, bias=None) -> int:
    """Clear errors for bad inputs; returns P, the number of cached positions."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be an integer tensor of shape (B, T), got {shape}")
    B, T = input_ids.shape
    P = 0
    if past_key_values is not None:
        if len(past_key_values) != config.n_layer:
            raise ValueError(f"past_key_values must hold one (k, v) per layer ({config.n_layer}), got {len(past_key_values)}")
        k = past_key_values[0][0]
        if k.dim() != 4 or k.shape[0] != B or k.shape[1] != config.n_head or k.shape[3] != config.head_size:
            raise ValueError(f"past_key_values[0][0] must be (B, nh, P, hs) = ({B}, {config.n_head}, P, "
                             f"{config.head_size}), got {tuple(k.shape)}")
        P = k.shape[2]
    if position_ids is None and P + T > config.n_positions:
        raise ValueError(f"input_ids: {P} cached + {T} new positions exceed n_positions = {config.n_positions}")
    if position_ids is not None:
        if tuple(position_ids.shape) not in ((B, T), (1, T)):
            raise ValueError(f"position_ids must have shape (B, T) = {(B, T)}, got {tuple(position_ids.shape)}")
        if position_ids.numel() and (position_ids.min() < 0 or position_ids.max() >= config.n_positions):
            raise ValueError(f"position_ids must lie in [0, n_positions = {config.n_positions}), got "
                             f"[{int(position_ids.min())}, {int(position_ids.max())}]")
    if attention_mask is not None and tuple(attention_mask.shape) != (B, P + T):
        raise ValueError(f"attention_mask must have shape (B, P + T) = {(B, P + T)} (P = {P} cached positions), "
                         f"got {tuple(attention_mask.shape)}")
    if bias is not None:
        full = (B, config.n_head, T, P + T)
        if (not isinstance(bias, torch.Tensor) or not bias.is_floating_point() or bias.dim() > 4
                or any(b not in (1, f) for b, f in zip(bias.shape[::-1], full[::-1]))):
            shape = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
            raise ValueError(f"bias must be a floating-point tensor broadcastable to (B, nh, T, P + T) = {full}, got {shape}")
    return P


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """HF's shifted next-token loss: the mean over (b, t) of -log softmax(logits[b, t])[labels[b, t + 1]],
    skipping targets equal to ``ignore_index``; logits (B, T, V) scored in fp32, labels (B, T)."""
    targets = F.pad(labels[:, 1:], (0, 1), value=ignore_index)  # position t predicts token t + 1; the last, nothing
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index)


class GPT2LMHeadModel(GenerationMixin, GPT2PreTrainedModel):
    """GPT-2 with its language-model head: logits over the vocabulary at every position.
    ``generate(input_ids, max_new_tokens, ...)``: greedy or sampled decoding, token for token
    as HF's (:func:`course_lib.generation.generate`)."""

    _tied_keys = (("lm_head.weight", "transformer.wte.weight"),)

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # weight tied to wte
        self.init_weights()

    def tie_weights(self):
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False,
                labels=None, output_attentions=False, logits_to_keep: int = 0, fused_loss: bool = False, bias=None,
                causal=True):
        """As HF's ``GPT2LMHeadModel.forward``. ``labels`` (B, T), usually ``input_ids``
        itself: the loss scores logits[:, t] against labels[:, t + 1] (HF shifts inside),
        ignoring labels of -100. ``logits_to_keep`` = n > 0: logits of the last n positions
        only (generation needs the last one). ``fused_loss=True`` (training): the loss from
        the hidden states with the fused linear + cross-entropy kernel, chunk by chunk, so the
        (B, T, V) logits are never stored; ``logits`` is then None. ``bias``, ``causal``: as
        :meth:`GPT2Model.forward`."""
        out = self.transformer(input_ids, attention_mask, position_ids, past_key_values, use_cache, output_attentions,
                               bias, causal)
        h = out.last_hidden_state  # (B, T, C)
        loss = logits = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels must have input_ids' shape {tuple(input_ids.shape)}, got {tuple(labels.shape)}")
            # Position t predicts token t + 1: the last position has no target (-100).
            targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # (B, T)
            if fused_loss:
                loss = linear_cross_entropy(h.reshape(-1, h.shape[-1]), self.lm_head.weight, targets.reshape(-1),
                                            ignore_index=IGNORE_INDEX)
        if not (fused_loss and labels is not None):
            logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep > 0 else h)  # (B, T, V)
            if labels is not None:
                loss = causal_lm_loss(logits, labels)
        return CausalLMOutput(loss, logits, out.past_key_values, out.attentions)



# ---- parameter counts -------------------------------------------------------------------


def parameter_count(config: GPT2Config) -> dict[str, int]:
    """GPT2LMHeadModel's parameters by part, from the config alone (the head is tied: 0).
    GPT-2 small (V=50257, C=768, L=12, 1024 positions): 124,439,808."""
    V, C, L, P = config.vocab_size, config.n_embd, config.n_layer, config.n_positions
    inner = config.n_inner if config.n_inner is not None else 4 * C
    block = 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * inner + inner) + (inner * C + C)  # 2 LNs, attn, MLP
    counts = {"embeddings": (V + P) * C, "blocks": L * block, "ln_f": 2 * C}
    counts["total"] = sum(counts.values())
    return counts


__all__ = [
    "CausalLMOutput",
    "Conv1D",
    "causal_lm_loss",
    "GPT2Config",
    "GPT2LMHeadModel",
    "GPT2Model",
    "GPT2ModelOutput",
]  # parameter_count stays gpt2.parameter_count (bert has one too)
