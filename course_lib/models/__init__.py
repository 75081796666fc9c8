"""Model implementations, one file per architecture, with Hugging Face's parameter names
so that a HF-format checkpoint directory loads by a key-by-key copy."""

from . import albert, bart, bert, gpt2, roberta, seq2seq, t5
from .albert import *  # noqa: F403
from .bart import *  # noqa: F403
from .bert import *  # noqa: F403 - each model file's __all__ is the package's public names
from .gpt2 import *  # noqa: F403
from .roberta import *  # noqa: F403
from .seq2seq import *  # noqa: F403
from .t5 import *  # noqa: F403

__all__ = [*bert.__all__, *gpt2.__all__, *seq2seq.__all__, *t5.__all__, *bart.__all__, *roberta.__all__, *albert.__all__]
