"""Chapter 4: BERT (Devlin et al., 2019), small enough to read in one sitting.

BERT is the encoder of the Transformer (Vaswani et al., 2017) pretrained with two tasks:
masked language modelling (predict 15% of the tokens from both sides) and next sentence
prediction. Every module and parameter below has the name it has in Hugging Face's
``transformers`` (``bert.encoder.layer.0.attention.self.query.weight``, ...), so loading
a checkpoint is a key-by-key copy, and the outputs match HF's ``BertModel`` to float32
rounding (tests/test_bert.py measures it).

The model is post-LN: every sub-layer ends in LayerNorm(sublayer(x) + x), unlike the
pre-LN GPT-2 and T5. The hot operations run as Triton kernels on the GPU
(``course_lib.kernels``): fused bias + GELU, LayerNorm with fused residual add, a row
softmax and FlashAttention-style attention with a key-padding mask; on a plain CPU the
same functions run their PyTorch references. What every model of the course shares lives
in two small files: ``layers.py`` (LayerNorm, the GELUs, the attention core) and
``checkpoint.py`` (reading and writing Hugging Face checkpoint directories).

Shapes: B batch, T sequence length, H hidden_size, nh heads, hs = H / nh head size,
V vocab_size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..embeddings import Embedding
from .checkpoint import ConfigMixin, PreTrainedModel
from .layers import GELU_APPROXIMATE, LayerNorm, attend, linear_act


@dataclass
class BertConfig(ConfigMixin):
    """BERT's hyper-parameters, with Hugging Face's field names and BERT-base defaults."""

    model_type = "bert"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    num_labels: int = 2  # for the sequence/token classification and QA heads
    classifier_dropout: float | None = None  # None: use hidden_dropout_prob

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act not in GELU_APPROXIMATE:
            raise ValueError(f"hidden_act must be one of {sorted(GELU_APPROXIMATE)}, got {self.hidden_act!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id must be in [0, vocab_size={self.vocab_size}), got {self.pad_token_id}")

    @classmethod
    def _prepare(cls, d: dict) -> dict:
        if "num_labels" not in d and isinstance(d.get("id2label"), dict):
            d["num_labels"] = len(d["id2label"])  # HF stores the label count as the id2label map
        if d.get("pad_token_id") is None:
            d["pad_token_id"] = 0
        return d

    def to_dict(self) -> dict:
        d = super().to_dict()
        # transformers reads the number of labels from id2label, not from num_labels.
        d["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
        d["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        return d

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads


# ---- building blocks --------------------------------------------------------------------
# LayerNorm (with a fused residual add) and the attention core are shared by every model:
# course_lib/models/layers.py.


class BertEmbeddings(nn.Module):
    """Token + position + segment embeddings, summed, then LayerNorm and dropout.

    Position embeddings are learned (one vector per position up to
    max_position_embeddings), not the sinusoids of the original Transformer; the
    segment (token type) embedding tells sentence A (0) from sentence B (1)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        # padding_idx: the [PAD] vector never receives a gradient (as in HF).
        self.word_embeddings = Embedding(config.vocab_size, H, padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, H)
        self.token_type_embeddings = Embedding(config.type_vocab_size, H)
        self.LayerNorm = LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None, position_ids=None):
        B, T = input_ids.shape
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # everything is sentence A
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)  # (B, T)
        try:
            words = self.word_embeddings(input_ids)  # (B, T, H)
        except IndexError as e:
            raise IndexError(f"input_ids: {e} (vocab_size = {self.word_embeddings.num_embeddings})") from None
        x = words + self.token_type_embeddings(token_type_ids)  # (B, T, H)
        # The position vectors are added inside the LayerNorm kernel, in HF's order.
        return self.dropout(self.LayerNorm(x, residual=self.position_embeddings(position_ids)))


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention; every token sees every other one
    (bidirectional), except padding keys, which the key-padding mask hides."""

    def __init__(self, config: BertConfig):
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
        # softmax(q k^T / sqrt(hs)) v; the 1/sqrt(hs) keeps the scores' variance ~1 whatever
        # the head size. The (T, T) probabilities are materialised only when they are wanted
        # (to return or plot them, or to drop some out); otherwise FlashAttention never stores them.
        y, probs = attend(q, k, v, attention_mask=attention_mask, scale=hs**-0.5,
                          dropout=self.dropout.p if self.training else 0.0, need_weights=output_attentions)
        return y.transpose(1, 2).reshape(B, T, H), probs  # heads side by side again: (B, T, H)


class ProjectAddNorm(nn.Module):
    """How both sub-layers end (post-LN): project back to H, dropout, add the residual, LayerNorm."""

    def __init__(self, config: BertConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, y, x):
        return self.LayerNorm(self.dropout(self.dense(y)), residual=x)  # LN(dropout(y W^T + b) + x): (B, T, H)


class BertSelfOutput(ProjectAddNorm):
    """Output projection of the attention H -> H, dropout, residual add and LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__(config, config.hidden_size)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x, attention_mask=None, output_attentions=False):
        y, probs = self.self(x, attention_mask, output_attentions)
        return self.output(y, x), probs


class BertIntermediate(nn.Module):
    """The feed-forward block's expansion H -> intermediate_size (4H), then GELU."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = config.hidden_act

    def forward(self, x):
        # The matmul without its bias, then bias + GELU fused in one kernel.
        return linear_act(x, self.dense, self.act)  # (B, T, 4H)


class BertOutput(ProjectAddNorm):
    """The feed-forward block's projection back 4H -> H, dropout, residual add, LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__(config, config.intermediate_size)


class BertLayer(nn.Module):
    """One encoder layer: x = LN(x + Attention(x)); x = LN(x + FFN(x))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x, attention_mask=None, output_attentions=False):
        x, probs = self.attention(x, attention_mask, output_attentions)
        return self.output(self.intermediate(x), x), probs


class BertEncoder(nn.Module):
    """Only a container, so that parameters are named encoder.layer.N... as in HF;
    BertModel.forward runs the layers."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    """tanh(W h_[CLS] + b): the sentence vector that the NSP and classification heads read."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        return torch.tanh(self.dense(hidden_states[:, 0]))  # (B, H), from the first token [CLS]


# ---- outputs ----------------------------------------------------------------------------


@dataclass
class BertModelOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor | None = None  # (B, H)
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, nh, T, T), if asked for


@dataclass
class PreTrainingOutput:
    loss: torch.Tensor | None  # MLM loss + NSP loss, when labels are given
    prediction_logits: torch.Tensor  # (B, T, V), or (N, V) at the N labelled positions
    seq_relationship_logits: torch.Tensor | None = None  # (B, 2): 0 = IsNext, 1 = NotNext
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class ClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, num_labels) per sequence, or (B, T, num_labels) per token
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class QuestionAnsweringOutput:
    loss: torch.Tensor | None
    start_logits: torch.Tensor  # (B, T): where the answer span starts
    end_logits: torch.Tensor  # (B, T): where it ends
    attentions: tuple[torch.Tensor, ...] | None = None


# ---- the base class: initialisation, loading and saving ---------------------------------


class BertPreTrainedModel(PreTrainedModel):
    """Weight initialisation as in BERT; loading and saving of Hugging Face checkpoint
    directories come from ``checkpoint.PreTrainedModel`` (shared by every model)."""

    config_class = BertConfig
    base_model_prefix = "bert"  # BertForX keeps the encoder in .bert: keys "bert.encoder..."

    def init_weights(self):
        """normal(0, initializer_range) for every matrix and table (Google's code used a
        truncated normal, HF a plain one), zero biases, LayerNorm (1, 0), a zero [PAD]
        vector: HF's ``_init_weights``."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, BertLMPredictionHead):
                nn.init.zeros_(module.bias)
        # Tables last: the MLM decoder (a Linear) may share the word table, whose [PAD] row must end at zero.
        for module in self.modules():
            if isinstance(module, Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
        self.tie_weights()

    @classmethod
    def _rename_key(cls, key: str) -> str | None:
        """TF-converted checkpoints name LayerNorm parameters gamma/beta; old ones store the
        position_ids buffer, which is not a parameter."""
        if key.endswith("embeddings.position_ids"):
            return None
        return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


# ---- the models -------------------------------------------------------------------------


class BertModel(BertPreTrainedModel):
    """The encoder: embeddings, num_hidden_layers post-LN layers, and the [CLS] pooler."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, output_attentions=False):
        """input_ids (B, T); attention_mask (B, T), 1 = real token, 0 = padding;
        token_type_ids (B, T), 0 = sentence A, 1 = sentence B."""
        _check_inputs(self.config, input_ids, attention_mask, token_type_ids)
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, H)
        attentions = []
        for layer in self.encoder.layer:
            x, probs = layer(x, attention_mask, output_attentions)
            attentions.append(probs)
        pooled = self.pooler(x) if self.pooler is not None else None
        return BertModelOutput(x, pooled, tuple(attentions) if output_attentions else None)


def _check_inputs(config: BertConfig, input_ids, attention_mask, token_type_ids) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be an integer tensor of shape (B, T), got {shape}")
    B, T = input_ids.shape
    if T > config.max_position_embeddings:
        raise ValueError(f"sequence length T = {T} exceeds max_position_embeddings = {config.max_position_embeddings}")
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if t is not None and tuple(t.shape) != (B, T):
            raise ValueError(f"{name} must have input_ids' shape {(B, T)}, got {tuple(t.shape)}")


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = config.hidden_act
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(linear_act(x, self.dense, self.act))


class BertLMPredictionHead(nn.Module):
    """MLM head: transform (dense + GELU + LayerNorm), then scores against every token.

    The decoder's weight *is* the word-embedding table (tied, Press & Wolf, 2017): a
    token's score is the dot product of the transformed hidden state with that token's
    input embedding, plus a per-token output bias. Tying saves V x H parameters."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)  # weight tied by the owner
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias  # one parameter under both HF names

    def forward(self, x):
        return self.decoder(self.transform(x))  # (..., H) -> (..., V)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)  # NSP: IsNext (0) / NotNext (1)


_MLM_TIED = (
    ("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
    ("cls.predictions.decoder.bias", "cls.predictions.bias"),
)


def _mlm_logits(head: BertLMPredictionHead, x, labels, masked_positions_only):
    """Scores at every position (B, T, V), or, with ``masked_positions_only``, only at the
    N positions with a label (N, V). Original BERT does the latter (``gather_indexes``):
    the V-way output layer is the most expensive matmul of a small model, and ~85% of its
    rows would be thrown away."""
    if masked_positions_only and labels is not None:
        keep = labels != -100  # (B, T)
        return head(x[keep]), labels[keep]  # (N, V), (N,)
    return head(x), labels


class BertForPreTraining(BertPreTrainedModel):
    """BERT with both pretraining heads: masked LM and next sentence prediction."""

    _tied_keys = _MLM_TIED

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.init_weights()

    def tie_weights(self):
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(
        self, input_ids, attention_mask=None, token_type_ids=None, labels=None, next_sentence_label=None,
        output_attentions=False, masked_positions_only=False,
    ):
        """labels (B, T): the original token at predicted positions, -100 elsewhere;
        next_sentence_label (B,): 0 if sentence B follows A, 1 if it is random."""
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions)
        logits, targets = _mlm_logits(self.cls.predictions, out.last_hidden_state, labels, masked_positions_only)
        nsp_logits = self.cls.seq_relationship(out.pooler_output)  # (B, 2)
        mlm_loss = nsp_loss = loss = None
        if labels is not None:
            mlm_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
            loss = mlm_loss
        if next_sentence_label is not None:
            nsp_loss = F.cross_entropy(nsp_logits, next_sentence_label.reshape(-1))
            loss = nsp_loss if loss is None else loss + nsp_loss
        return PreTrainingOutput(loss, logits, nsp_logits, mlm_loss, nsp_loss, out.attentions)


class BertForMaskedLM(BertPreTrainedModel):
    """BERT with the MLM head only (no pooler, no NSP), as RoBERTa-style pretraining uses."""

    _tied_keys = _MLM_TIED

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.init_weights()

    def tie_weights(self):
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, output_attentions=False,
                masked_positions_only=False):
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions)
        logits, targets = _mlm_logits(self.cls.predictions, out.last_hidden_state, labels, masked_positions_only)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return ClassifierOutput(loss, logits, out.attentions)


class BertForSequenceClassification(BertPreTrainedModel):
    """One label per sequence (or pair) from the pooled [CLS] vector: sentiment, NLI, ...
    With num_labels == 1 it is a regression (MSE loss), as for STS-B."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, output_attentions=False):
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = F.cross_entropy(logits, labels)
        return ClassifierOutput(loss, logits, out.attentions)


class BertForTokenClassification(BertPreTrainedModel):
    """One label per token (named entities, part of speech) from each final hidden state."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, output_attentions=False):
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        loss = None
        if labels is not None:  # -100 marks positions without a label (padding, ## pieces)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        return ClassifierOutput(loss, logits, out.attentions)


class BertForQuestionAnswering(BertPreTrainedModel):
    """Extractive QA (SQuAD): input "[CLS] question [SEP] passage [SEP]"; two scores per
    token say how likely the answer span starts / ends there."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)  # num_labels = 2: start, end
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, start_positions=None,
                end_positions=None, output_attentions=False):
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions)
        logits = self.qa_outputs(out.last_hidden_state)  # (B, T, 2)
        start_logits, end_logits = logits[..., 0].contiguous(), logits[..., 1].contiguous()  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the sequence (an answer truncated away) are clamped to T and ignored.
            T = start_logits.shape[1]
            start, end = start_positions.clamp(0, T), end_positions.clamp(0, T)
            start_loss = F.cross_entropy(start_logits, start, ignore_index=T)
            loss = (start_loss + F.cross_entropy(end_logits, end, ignore_index=T)) / 2
        return QuestionAnsweringOutput(loss, start_logits, end_logits, out.attentions)


# ---- parameter counts -------------------------------------------------------------------


def parameter_count(config: BertConfig) -> dict[str, int]:
    """BertModel's parameters, by part, computed from the config alone (no tensors).

    With BERT-base (V=30522, H=768, L=12, 4H=3072, P=512): embeddings 23.8M, each
    layer 7.1M (attention 2.4M, feed-forward 4.7M), pooler 0.6M: 109,482,240 in all."""
    V, H, L = config.vocab_size, config.hidden_size, config.num_hidden_layers
    P, S, I = config.max_position_embeddings, config.type_vocab_size, config.intermediate_size
    attention = 4 * (H * H + H) + 2 * H  # Q, K, V, output dense; LayerNorm
    feed_forward = (H * I + I) + (I * H + H) + 2 * H  # expand, project back; LayerNorm
    counts = {
        "embeddings": (V + P + S) * H + 2 * H,  # three tables and a LayerNorm
        "encoder": L * (attention + feed_forward),
        "pooler": H * H + H,
    }
    counts["total"] = sum(counts.values())
    return counts


__all__ = [
    "BertConfig",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "BertModelOutput",
    "ClassifierOutput",
    "PreTrainingOutput",
    "QuestionAnsweringOutput",
    "parameter_count",
]
