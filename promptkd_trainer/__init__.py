# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""PromptKD for the Hugging Face stack: a drop-in TRL trainer that distils a causal LM teacher into a student while
training a soft prompt on the frozen teacher (Kim, Jang, Yang, Findings of EMNLP 2024, arXiv 2402.12842)."""

__version__ = "0.1.0"

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


__all__ = [
    "DIVERGENCE_TYPES",
    "PromptKDConfig",
    "PromptKDTrainer",
    "divergence",
    "forward_kl",
    "generalized_jsd",
    "reverse_kl",
    "skew_forward_kl",
    "skew_reverse_kl",
    "__version__",
]
