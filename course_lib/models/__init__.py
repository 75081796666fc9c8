"""Model implementations, one file per architecture, with Hugging Face's parameter names
so that a HF-format checkpoint directory loads by a key-by-key copy."""

from . import bert
from .bert import *  # noqa: F403 - each model file's __all__ is the package's public names

__all__ = [*bert.__all__]
