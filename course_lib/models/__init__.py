"""Model implementations, one file per architecture, with Hugging Face's parameter names
so that a HF-format checkpoint directory loads by a key-by-key copy."""

from .bert import (
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    parameter_count,
)

__all__ = [
    "BertConfig",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "parameter_count",
]
