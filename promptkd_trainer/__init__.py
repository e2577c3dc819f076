# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""PromptKD for the Hugging Face stack: a drop-in TRL trainer that distils a causal LM teacher into a student while
training a soft prompt on the frozen teacher (Kim, Jang, Yang, Findings of EMNLP 2024, arXiv 2402.12842)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING


__version__ = "0.1.0"

# Public names and the module defining each. They are imported on first use (PEP 562), so that `promptkd --help`
# and light-weight imports (e.g. the divergences alone) do not pay for torch + transformers + trl at start-up.
_EXPORTS = {
    "PromptKDConfig": "promptkd_config",
    "PromptKDTrainer": "promptkd_trainer",
    "DIVERGENCE_TYPES": "divergences",
    "divergence": "divergences",
    "forward_kl": "divergences",
    "reverse_kl": "divergences",
    "generalized_jsd": "divergences",
    "skew_forward_kl": "divergences",
    "skew_reverse_kl": "divergences",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from .divergences import (
        DIVERGENCE_TYPES,
        divergence,
        forward_kl,
        generalized_jsd,
        reverse_kl,
        skew_forward_kl,
        skew_reverse_kl,
    )
    from .promptkd_config import PromptKDConfig
    from .promptkd_trainer import PromptKDTrainer


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
