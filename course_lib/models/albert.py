"""Chapter 5: ALBERT (Lan et al., 2020), "A Lite BERT", small enough to read in one sitting.

ALBERT keeps BERT's post-LN encoder and changes three things (Section 3 of the paper):

1. **Factorized embedding parameterization.** Tokens are embedded in a small space of
   size E (``embedding_size``, 128) and projected up to the hidden size H by one matrix
   (``encoder.embedding_hidden_mapping_in``): V*E + E*H parameters instead of V*H. With
   V = 30000 and H = 768 that is 3.9M instead of 23M. The masked-LM head does the reverse:
   H -> E, then scores against the (tied) E-dimensional word table.
2. **Cross-layer parameter sharing.** The layers are grouped: ``num_hidden_groups`` groups,
   each of ``inner_group_num`` layers, and the L = ``num_hidden_layers`` steps of the
   forward pass reuse them: step i runs group ``int(i / (L / num_hidden_groups))`` (all its
   inner layers in turn). With the released configs (1 group of 1 layer) every step is
   the *same* layer: the parameters of one layer, the computation of L. Sharing saves
   parameters and memory, not time: a forward pass costs as much as BERT's at the same H.
3. **Sentence-order prediction (SOP)** instead of NSP: the pair is two consecutive segments
   of one document, either in order (label 0) or swapped (label 1), so topic cues cannot
   solve it (``course_lib.pretraining.sop_pairs``).

Module and parameter names are Hugging Face's (``albert.encoder.albert_layer_groups.0.
albert_layers.0.attention.query.weight``, ``predictions.decoder.weight``,
``sop_classifier.classifier.weight``), so loading is a key-by-key copy; tests/test_albert.py
compares outputs, gradients and parameter counts with HF's.

Shapes: B batch, T length, E embedding_size, H hidden_size, nh heads, hs = H / nh, V vocab.
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
class AlbertConfig(ConfigMixin):
    """ALBERT's hyper-parameters, Hugging Face's field names, albert-base-v2's values."""

    model_type = "albert"

    vocab_size: int = 30000
    embedding_size: int = 128  # E: the word table's width (E != H: factorized)
    hidden_size: int = 768
    num_hidden_layers: int = 12  # L: how many layer *applications*
    num_hidden_groups: int = 1  # how many distinct groups of parameters
    inner_group_num: int = 1  # layers in each group
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu_new"
    hidden_dropout_prob: float = 0.0  # the released v2 models train without dropout (the paper found it hurt)
    attention_probs_dropout_prob: float = 0.0
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    classifier_dropout_prob: float = 0.1
    pad_token_id: int = 0
    bos_token_id: int = 2
    eos_token_id: int = 3
    num_labels: int = 2

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of "
                             f"num_attention_heads ({self.num_attention_heads})")
        if not 1 <= self.num_hidden_groups <= self.num_hidden_layers:
            raise ValueError(f"num_hidden_groups must be in [1, num_hidden_layers={self.num_hidden_layers}], "
                             f"got {self.num_hidden_groups}")
        if self.inner_group_num < 1:
            raise ValueError(f"inner_group_num must be >= 1, got {self.inner_group_num}")
        check_activation(self.hidden_act)
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id must be in [0, vocab_size={self.vocab_size}), got {self.pad_token_id}")

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

    def group_of_step(self, i: int) -> int:
        """The parameter group that forward step i (0 <= i < L) runs, about i * G / L.
        Computed in floating point exactly as HF does, ``int(i / (L / G))``: for a few odd
        configs (L = 18, G = 14, i = 9) rounding makes it differ from the exact i * G // L,
        and loading must run the layers HF runs."""
        return int(i / (self.num_hidden_layers / self.num_hidden_groups))


# ---- building blocks ----------------------------------------------------------------------


class AlbertEmbeddings(nn.Module):
    """BERT's three tables, but E wide: token + position + segment, LayerNorm, dropout."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        E = config.embedding_size
        self.word_embeddings = Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, E)
        self.token_type_embeddings = Embedding(config.type_vocab_size, E)
        self.LayerNorm = LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None, position_ids=None):
        B, T = input_ids.shape
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)  # (B, T)
        try:
            words = self.word_embeddings(input_ids)  # (B, T, E)
        except IndexError as e:
            raise IndexError(f"input_ids: {e} (vocab_size = {self.word_embeddings.num_embeddings})") from None
        x = words + self.token_type_embeddings(token_type_ids)  # (B, T, E)
        return self.dropout(self.LayerNorm(x, residual=self.position_embeddings(position_ids)))  # (B, T, E)


class AlbertAttention(nn.Module):
    """Self-attention and its output block in one module (HF's layout for ALBERT):
    LN(x + dropout(dense(attention(x))))."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        H = config.hidden_size
        self.num_attention_heads, self.attention_head_size = config.num_attention_heads, config.head_size
        self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.attention_dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.output_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.dense = nn.Linear(H, H)
        self.LayerNorm = LayerNorm(H, eps=config.layer_norm_eps)

    def forward(self, x, attention_mask=None, output_attentions=False):
        B, T, H = x.shape
        nh, hs = self.num_attention_heads, self.attention_head_size
        q = self.query(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        y, probs = attend(q, k, v, attention_mask=attention_mask, scale=hs**-0.5,
                          dropout=self.attention_dropout.p if self.training else 0.0,
                          need_weights=output_attentions)
        y = y.transpose(1, 2).reshape(B, T, H)  # (B, T, H)
        return self.LayerNorm(self.output_dropout(self.dense(y)), residual=x), probs


class AlbertLayer(nn.Module):
    """One encoder layer: x = LN(x + Attention(x)); x = LN(x + FFN(x))."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.attention = AlbertAttention(config)
        self.ffn = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.full_layer_layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.act = config.hidden_act

    def forward(self, x, attention_mask=None, output_attentions=False):
        x, probs = self.attention(x, attention_mask, output_attentions)  # (B, T, H)
        y = self.ffn_output(linear_act(x, self.ffn, self.act))  # (B, T, H) through (B, T, I)
        # No dropout on the feed-forward output: HF's AlbertLayer adds it back without one.
        return self.full_layer_layer_norm(y, residual=x), probs


class AlbertLayerGroup(nn.Module):
    """inner_group_num distinct layers, run one after the other."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.albert_layers = nn.ModuleList(AlbertLayer(config) for _ in range(config.inner_group_num))

    def forward(self, x, attention_mask=None, output_attentions=False):
        attentions = []
        for layer in self.albert_layers:
            x, probs = layer(x, attention_mask, output_attentions)
            attentions.append(probs)
        return x, attentions


class AlbertTransformer(nn.Module):
    """The E -> H projection, then L steps over the shared groups: the shared-layer path.

    Step i runs group ``config.group_of_step(i)``; with one group every step runs the same
    parameters, so their gradient is the sum over the L steps (autograd does that)."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.config = config
        self.embedding_hidden_mapping_in = nn.Linear(config.embedding_size, config.hidden_size)
        self.albert_layer_groups = nn.ModuleList(AlbertLayerGroup(config) for _ in range(config.num_hidden_groups))

    def forward(self, x, attention_mask=None, output_attentions=False):
        x = self.embedding_hidden_mapping_in(x)  # (B, T, E) -> (B, T, H)
        attentions = []
        for i in range(self.config.num_hidden_layers):
            x, probs = self.albert_layer_groups[self.config.group_of_step(i)](x, attention_mask, output_attentions)
            attentions.extend(probs)
        return x, attentions


# ---- outputs ------------------------------------------------------------------------------


@dataclass
class AlbertModelOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor | None = None  # (B, H)
    attentions: tuple[torch.Tensor, ...] | None = None  # one per layer application


@dataclass
class AlbertForPreTrainingOutput:
    loss: torch.Tensor | None  # MLM + SOP, when labels are given
    prediction_logits: torch.Tensor  # (B, T, V)
    sop_logits: torch.Tensor  # (B, 2): 0 = in order, 1 = swapped
    mlm_loss: torch.Tensor | None = None
    sop_loss: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class AlbertMaskedLMOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, T, V)
    attentions: tuple[torch.Tensor, ...] | None = None


# ---- the models ---------------------------------------------------------------------------


class AlbertPreTrainedModel(PreTrainedModel):
    config_class = AlbertConfig
    base_model_prefix = "albert"

    def init_weights(self):
        """HF's ``_init_weights``: normal(0, initializer_range), zero biases, LayerNorm (1, 0)."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, AlbertMLMHead):
                nn.init.zeros_(module.bias)
        for module in self.modules():  # tables last: the MLM decoder shares the word table
            if isinstance(module, Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
        self.tie_weights()

    @classmethod
    def _rename_key(cls, key: str) -> str | None:
        if key.endswith(("embeddings.position_ids", "embeddings.token_type_ids")):
            return None
        return key


class AlbertModel(AlbertPreTrainedModel):
    """Embeddings (E wide), the shared-layer transformer (H wide) and the pooler."""

    def __init__(self, config: AlbertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = AlbertEmbeddings(config)
        self.encoder = AlbertTransformer(config)
        if add_pooling_layer:
            self.pooler = nn.Linear(config.hidden_size, config.hidden_size)  # HF: a bare Linear + tanh
        else:
            self.pooler = None
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, output_attentions=False):
        _check_inputs(self.config, input_ids, attention_mask, token_type_ids, position_ids)
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, E)
        x, attentions = self.encoder(x, attention_mask, output_attentions)  # (B, T, H)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None  # (B, H)
        return AlbertModelOutput(x, pooled, tuple(attentions) if output_attentions else None)


def _check_inputs(config: AlbertConfig, input_ids, attention_mask, token_type_ids, position_ids) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be an integer tensor of shape (B, T), got {shape}")
    B, T = input_ids.shape
    if T > config.max_position_embeddings:
        raise ValueError(f"sequence length T = {T} exceeds max_position_embeddings = {config.max_position_embeddings}")
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                    ("position_ids", position_ids)):
        if t is not None and tuple(t.shape) != (B, T):
            raise ValueError(f"{name} must have input_ids' shape {(B, T)}, got {tuple(t.shape)}")


class AlbertMLMHead(nn.Module):
    """H -> E (dense, activation, LayerNorm), then scores against the tied E-wide word
    table plus a bias: the factorization again, on the way out."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        E = config.embedding_size
        self.LayerNorm = LayerNorm(E, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.dense = nn.Linear(config.hidden_size, E)
        self.decoder = nn.Linear(E, config.vocab_size)  # weight tied by the owner
        self.decoder.bias = self.bias
        self.act = config.hidden_act

    def forward(self, x):
        return self.decoder(self.LayerNorm(linear_act(x, self.dense, self.act)))  # (..., V)


class AlbertSOPHead(nn.Module):
    """Sentence-order prediction from the pooled vector: in order (0) or swapped (1)."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, pooled):
        return self.classifier(self.dropout(pooled))  # (B, 2)


_MLM_TIED = (("predictions.decoder.weight", "albert.embeddings.word_embeddings.weight"),
             ("predictions.decoder.bias", "predictions.bias"))


def _mlm_loss(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


class AlbertForPreTraining(AlbertPreTrainedModel):
    """ALBERT with its two pretraining heads: masked LM and sentence-order prediction."""

    _tied_keys = _MLM_TIED

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.albert = AlbertModel(config)
        self.predictions = AlbertMLMHead(config)
        self.sop_classifier = AlbertSOPHead(config)
        self.init_weights()

    def tie_weights(self):
        self.predictions.decoder.weight = self.albert.embeddings.word_embeddings.weight

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                sentence_order_label=None, output_attentions=False):
        """labels (B, T): original tokens where predicted, -100 elsewhere;
        sentence_order_label (B,): 0 = segments in order, 1 = swapped."""
        out = self.albert(input_ids, attention_mask, token_type_ids, position_ids, output_attentions)
        logits = self.predictions(out.last_hidden_state)  # (B, T, V)
        sop_logits = self.sop_classifier(out.pooler_output)  # (B, 2)
        mlm_loss = sop_loss = loss = None
        if labels is not None:
            loss = mlm_loss = _mlm_loss(logits, labels)
        if sentence_order_label is not None:
            sop_loss = F.cross_entropy(sop_logits, sentence_order_label.reshape(-1))
            loss = sop_loss if loss is None else loss + sop_loss
        return AlbertForPreTrainingOutput(loss, logits, sop_logits, mlm_loss, sop_loss, out.attentions)


class AlbertForMaskedLM(AlbertPreTrainedModel):
    """ALBERT with the masked-LM head only (no pooler)."""

    _tied_keys = _MLM_TIED

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.albert = AlbertModel(config, add_pooling_layer=False)
        self.predictions = AlbertMLMHead(config)
        self.init_weights()

    def tie_weights(self):
        self.predictions.decoder.weight = self.albert.embeddings.word_embeddings.weight

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_attentions=False):
        out = self.albert(input_ids, attention_mask, token_type_ids, position_ids, output_attentions)
        logits = self.predictions(out.last_hidden_state)  # (B, T, V)
        return AlbertMaskedLMOutput(_mlm_loss(logits, labels) if labels is not None else None, logits, out.attentions)


# ---- parameter counts ---------------------------------------------------------------------


def parameter_count(config: AlbertConfig) -> dict[str, int]:
    """AlbertModel's parameters by part, from the config alone.

    The embeddings are (V + P + S) * E + 2E, plus the E*H + H projection, instead of
    BERT's (V + P + S) * H + 2H; the encoder holds num_hidden_groups * inner_group_num
    layers, however many steps L runs."""
    V, E, H, I = config.vocab_size, config.embedding_size, config.hidden_size, config.intermediate_size
    P, S = config.max_position_embeddings, config.type_vocab_size
    layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H
    counts = {
        "embeddings": (V + P + S) * E + 2 * E,
        "projection": E * H + H,
        "encoder": config.num_hidden_groups * config.inner_group_num * layer,
        "pooler": H * H + H,
    }
    counts["total"] = sum(counts.values())
    return counts


__all__ = [
    "AlbertConfig",
    "AlbertForMaskedLM",
    "AlbertForPreTraining",
    "AlbertForPreTrainingOutput",
    "AlbertMaskedLMOutput",
    "AlbertModel",
    "AlbertModelOutput",
]
