"""Chapter 5: RoBERTa (Liu et al., 2019), "a robustly optimized BERT pretraining approach".

RoBERTa is BERT's architecture, unchanged: post-LN encoder layers, learned positions, a
tied masked-LM head. What changed is how it is pretrained (dynamic masking, no next
sentence prediction, FULL-SENTENCES packing, batches of 8k sequences, 10x the data:
``course_lib.pretraining``) and its tokenizer (GPT-2's byte-level BPE with 50k merges
instead of a 30k WordPiece: ``course_lib.tokenization.ByteLevelBPETokenizer``).

Two details in the model itself differ from BERT, both inherited from fairseq:

* **Position ids start after the padding index.** fairseq numbers positions
  ``padding_idx + 1, padding_idx + 2, ...`` for real tokens and gives every padding token
  the position ``padding_idx`` (whose vector is zero and never trained). With
  ``pad_token_id = 1``, a sequence of length T uses positions 2 .. T + 1, which is why
  ``max_position_embeddings`` is 514 for 512 usable positions.
* ``type_vocab_size`` is 1: without NSP there is no sentence B to mark, and the single
  segment vector is simply added to every token.

Every module and parameter has its Hugging Face name (``roberta.encoder.layer.0.attention.
self.query.weight``, ``lm_head.dense.weight``, ...), so loading is a key-by-key copy
(``checkpoint.py``); tests/test_roberta.py compares outputs and gradients with HF's.

Shapes: B batch, T sequence length, H hidden_size, nh heads, hs = H / nh, V vocab_size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..embeddings import Embedding
from .checkpoint import ConfigMixin, PreTrainedModel
from .layers import LayerNorm, attend, check_activation, linear_act


@dataclass
class RobertaConfig(ConfigMixin):
    """RoBERTa's hyper-parameters, Hugging Face's field names, roberta-base's values."""

    model_type = "roberta"

    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 514  # 512 usable positions + the padding_idx offset
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1  # fairseq's dictionary: <s>=0, <pad>=1, </s>=2, <unk>=3
    bos_token_id: int = 0
    eos_token_id: int = 2
    initializer_range: float = 0.02
    num_labels: int = 2
    classifier_dropout: float | None = None  # None: hidden_dropout_prob

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of "
                             f"num_attention_heads ({self.num_attention_heads})")
        check_activation(self.hidden_act)
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id must be in [0, vocab_size={self.vocab_size}), got {self.pad_token_id}")
        if self.max_position_embeddings <= self.pad_token_id + 1:
            raise ValueError(f"max_position_embeddings ({self.max_position_embeddings}) leaves no position "
                             f"after the padding offset pad_token_id + 1 = {self.pad_token_id + 1}")

    @classmethod
    def _prepare(cls, d: dict) -> dict:
        if "num_labels" not in d and isinstance(d.get("id2label"), dict):
            d["num_labels"] = len(d["id2label"])
        return d

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
        d["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        return d

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_length(self) -> int:
        """The longest sequence the model reads: positions padding_idx + 1 ... are used."""
        return self.max_position_embeddings - self.pad_token_id - 1


def create_position_ids_from_input_ids(input_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """fairseq's ``make_positions``: real tokens get padding_idx + 1, padding_idx + 2, ...
    counted over real tokens only; padding tokens get padding_idx itself.

    ``[[0, 31, 2, 1, 1]]`` with padding_idx 1 -> ``[[2, 3, 4, 1, 1]]``. A cumulative sum,
    so it works for left padding too: the first real token is always position
    padding_idx + 1."""
    real = input_ids.ne(padding_idx).long()  # (B, T): 1 for real tokens
    return torch.cumsum(real, dim=1) * real + padding_idx  # (B, T)


# ---- building blocks (BERT's, with RoBERTa's names) -------------------------------------


class RobertaEmbeddings(nn.Module):
    """Token + position + (single) segment embeddings, summed, then LayerNorm and dropout."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        H, pad = config.hidden_size, config.pad_token_id
        self.padding_idx = pad
        self.word_embeddings = Embedding(config.vocab_size, H, padding_idx=pad)
        # The padding position's vector stays zero, as fairseq's LearnedPositionalEmbedding.
        self.position_embeddings = Embedding(config.max_position_embeddings, H, padding_idx=pad)
        self.token_type_embeddings = Embedding(config.type_vocab_size, H)
        self.LayerNorm = LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None, position_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None:
            position_ids = create_position_ids_from_input_ids(input_ids, self.padding_idx)  # (B, T)
        try:
            words = self.word_embeddings(input_ids)  # (B, T, H)
        except IndexError as e:
            raise IndexError(f"input_ids: {e} (vocab_size = {self.word_embeddings.num_embeddings})") from None
        x = words + self.token_type_embeddings(token_type_ids)  # (B, T, H)
        return self.dropout(self.LayerNorm(x, residual=self.position_embeddings(position_ids)))


class RobertaSelfAttention(nn.Module):
    """Bidirectional multi-head self-attention; padding keys are hidden by the mask."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        H = config.hidden_size
        self.num_attention_heads, self.attention_head_size = config.num_attention_heads, config.head_size
        self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, x, attention_mask=None, output_attentions=False):
        B, T, H = x.shape
        nh, hs = self.num_attention_heads, self.attention_head_size
        q = self.query(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        y, probs = attend(q, k, v, attention_mask=attention_mask, scale=hs**-0.5,
                          dropout=self.dropout.p if self.training else 0.0, need_weights=output_attentions)
        return y.transpose(1, 2).reshape(B, T, H), probs  # (B, T, H)


class RobertaAddNorm(nn.Module):
    """How both sub-layers end (post-LN): LN(dropout(y W^T + b) + x)."""

    def __init__(self, config: RobertaConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, y, x):
        return self.LayerNorm(self.dropout(self.dense(y)), residual=x)  # (B, T, H)


class RobertaAttention(nn.Module):
    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.self = RobertaSelfAttention(config)
        self.output = RobertaAddNorm(config, config.hidden_size)  # HF: RobertaSelfOutput

    def forward(self, x, attention_mask=None, output_attentions=False):
        y, probs = self.self(x, attention_mask, output_attentions)
        return self.output(y, x), probs


class RobertaIntermediate(nn.Module):
    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = config.hidden_act

    def forward(self, x):
        return linear_act(x, self.dense, self.act)  # (B, T, 4H), bias + GELU fused


class RobertaLayer(nn.Module):
    """x = LN(x + Attention(x)); x = LN(x + FFN(x))."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.attention = RobertaAttention(config)
        self.intermediate = RobertaIntermediate(config)
        self.output = RobertaAddNorm(config, config.intermediate_size)  # HF: RobertaOutput

    def forward(self, x, attention_mask=None, output_attentions=False):
        x, probs = self.attention(x, attention_mask, output_attentions)
        return self.output(self.intermediate(x), x), probs


class RobertaEncoder(nn.Module):
    """A container, so that parameters are named encoder.layer.N... as in HF."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.layer = nn.ModuleList(RobertaLayer(config) for _ in range(config.num_hidden_layers))


class RobertaPooler(nn.Module):
    """tanh(W h_<s> + b). RoBERTa never trains it (no NSP); the classification head below
    does not use it either, but checkpoints carry it."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        return torch.tanh(self.dense(hidden_states[:, 0]))  # (B, H)


# ---- outputs ------------------------------------------------------------------------------


@dataclass
class RobertaModelOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor | None = None  # (B, H)
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class RobertaClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, T, V) for the masked LM, (B, num_labels) for classification
    attentions: tuple[torch.Tensor, ...] | None = None


# ---- the models ---------------------------------------------------------------------------


class RobertaPreTrainedModel(PreTrainedModel):
    config_class = RobertaConfig
    base_model_prefix = "roberta"

    def init_weights(self):
        """HF's ``_init_weights``: normal(0, initializer_range) matrices and tables, zero
        biases, LayerNorm (1, 0), zero padding rows."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, RobertaLMHead):
                nn.init.zeros_(module.bias)
        for module in self.modules():  # tables last: the LM decoder shares the word table
            if isinstance(module, Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
        self.tie_weights()

    @classmethod
    def _rename_key(cls, key: str) -> str | None:
        if key.endswith(("embeddings.position_ids", "embeddings.token_type_ids")):
            return None  # buffers, not parameters, in older checkpoints
        return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


class RobertaModel(RobertaPreTrainedModel):
    """Embeddings, num_hidden_layers post-LN layers, and (optionally) the pooler."""

    def __init__(self, config: RobertaConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = RobertaEmbeddings(config)
        self.encoder = RobertaEncoder(config)
        self.pooler = RobertaPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, output_attentions=False):
        """input_ids (B, T); attention_mask (B, T), 1 = real token, 0 = padding. Without
        ``position_ids`` they are computed from input_ids (padding tokens are the ones equal
        to pad_token_id)."""
        _check_inputs(self.config, input_ids, attention_mask, token_type_ids, position_ids)
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, H)
        attentions = []
        for layer in self.encoder.layer:
            x, probs = layer(x, attention_mask, output_attentions)
            attentions.append(probs)
        pooled = self.pooler(x) if self.pooler is not None else None
        return RobertaModelOutput(x, pooled, tuple(attentions) if output_attentions else None)


def _check_inputs(config: RobertaConfig, input_ids, attention_mask, token_type_ids, position_ids) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be an integer tensor of shape (B, T), got {shape}")
    B, T = input_ids.shape
    if position_ids is None and T > config.max_length:
        # Positions run from pad_token_id + 1, so only max_position_embeddings - pad - 1 fit.
        raise ValueError(f"sequence length T = {T} exceeds RoBERTa's usable length max_position_embeddings - "
                         f"pad_token_id - 1 = {config.max_position_embeddings} - {config.pad_token_id} - 1 = "
                         f"{config.max_length}; nothing is truncated silently: shorten the input")
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                    ("position_ids", position_ids)):
        if t is not None and tuple(t.shape) != (B, T):
            raise ValueError(f"{name} must have input_ids' shape {(B, T)}, got {tuple(t.shape)}")
    if position_ids is not None and (position_ids.min() < 0 or position_ids.max() >= config.max_position_embeddings):
        raise ValueError(f"position_ids must lie in [0, {config.max_position_embeddings}), "
                         f"got [{int(position_ids.min())}, {int(position_ids.max())}]")


class RobertaLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> scores against the (tied) word table, plus a bias.
    The GELU is the exact one whatever hidden_act says, as in fairseq and HF."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)  # weight tied by the owner
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias  # one parameter, two HF names

    def forward(self, x):
        return self.decoder(self.layer_norm(linear_act(x, self.dense, "gelu")))  # (..., V)


class RobertaForMaskedLM(RobertaPreTrainedModel):
    """RoBERTa's only pretraining task: masked LM (no NSP, so no pooler)."""

    _tied_keys = (("lm_head.decoder.weight", "roberta.embeddings.word_embeddings.weight"),
                  ("lm_head.decoder.bias", "lm_head.bias"))

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.lm_head = RobertaLMHead(config)
        self.init_weights()

    def tie_weights(self):
        self.lm_head.decoder.weight = self.roberta.embeddings.word_embeddings.weight

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_attentions=False, masked_positions_only=False):
        """labels (B, T): the original token where one is predicted, -100 elsewhere.
        ``masked_positions_only``: score only the N labelled positions, logits (N, V), as
        BERT's pretraining does: the V-way head is the largest matmul of a small model and
        ~85% of its rows would be thrown away (HF scores every position)."""
        out = self.roberta(input_ids, attention_mask, token_type_ids, position_ids, output_attentions)
        x = out.last_hidden_state
        if masked_positions_only and labels is not None:
            keep = labels != -100  # (B, T)
            x, labels = x[keep], labels[keep]  # (N, H), (N,)
        logits = self.lm_head(x)  # (B, T, V) or (N, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        return RobertaClassifierOutput(loss, logits, out.attentions)


class RobertaClassificationHead(nn.Module):
    """fairseq's sentence head on the <s> state: dropout, dense, tanh, dropout, out_proj.
    (The pooler's dense + tanh, re-learned during fine-tuning.)"""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(p)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden_states):
        x = self.dropout(hidden_states[:, 0])  # (B, H): the <s> token
        return self.out_proj(self.dropout(torch.tanh(self.dense(x))))  # (B, num_labels)


class RobertaForSequenceClassification(RobertaPreTrainedModel):
    """One label per sequence (num_labels == 1: regression with an MSE loss)."""

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.classifier = RobertaClassificationHead(config)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_attentions=False):
        out = self.roberta(input_ids, attention_mask, token_type_ids, position_ids, output_attentions)
        logits = self.classifier(out.last_hidden_state)  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = F.cross_entropy(logits, labels)
        return RobertaClassifierOutput(loss, logits, out.attentions)


__all__ = [
    "RobertaClassifierOutput",
    "RobertaConfig",
    "RobertaForMaskedLM",
    "RobertaForSequenceClassification",
    "RobertaModel",
    "RobertaModelOutput",
    "create_position_ids_from_input_ids",
]
