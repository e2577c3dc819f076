# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Offline CPU demo of PromptKD: synthetic instruction data, a local tokenizer, and tiny SFT teacher and student.

The pieces, in the order the demo uses them:

- [`tasks.make_dataset`]: seeded synthetic instruction-following tasks (10 families) with checkable references;
- [`tokenizer.train_tokenizer`]: byte-level BPE trained locally on that data;
- [`models.build_model`]: random-init GPT-2 or Llama teacher/student presets sharing the vocabulary;
- [`sft.supervised_finetune`]: TRL `SFTTrainer` on prompt/completion pairs (teacher, and the student's SFT init);
- [`metrics.evaluate_model`]: greedy decoding scored by exact match and ROUGE-L, overall and per family;
- [`defaults.DemoDefaults`]: the sizes, budgets and seeds chosen by experiment.
"""

from .defaults import DEMO_DEFAULTS, DemoDefaults
from .metrics import evaluate_model, generate_completions, score_predictions, strict_exact_match
from .models import MODEL_SIZES, build_model, count_parameters
from .sft import supervised_finetune
from .tasks import TASK_FAMILIES, format_prompt, make_dataset, vocabulary_texts
from .tokenizer import train_tokenizer


__all__ = [
    "DEMO_DEFAULTS",
    "MODEL_SIZES",
    "TASK_FAMILIES",
    "DemoDefaults",
    "build_model",
    "count_parameters",
    "evaluate_model",
    "format_prompt",
    "generate_completions",
    "make_dataset",
    "score_predictions",
    "strict_exact_match",
    "supervised_finetune",
    "train_tokenizer",
    "vocabulary_texts",
]
