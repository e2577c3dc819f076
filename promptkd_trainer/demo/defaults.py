# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Default settings of the CPU demo, chosen by experiment (see `DemoDefaults` for the measurements behind them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class DemoDefaults:
    """Sizes, budgets and seeds of `promptkd demo`, tuned so that the whole story runs on 2 CPU cores.

    Measured on the 2-core development machine (fp32, `torch` 2.13 CPU): see the module's report for the numbers.

    Args:
        n_train (`int`): Training rows of the synthetic tasks.
        n_val (`int`): Validation rows.
        n_test (`int`): Test rows (greedy-decoded for the final table).
        data_seed (`int`): Seed of [`~promptkd_trainer.demo.tasks.make_dataset`].
        template (`str`): Prompt template (`"short"`: Alpaca sections without the preamble, 3x shorter prompts).
        vocab_size (`int`): Cap of the byte-level BPE vocabulary (the task corpus saturates below it).
        model_family (`str`): `"gpt2"` or `"llama"`.
        teacher_size (`str`): Preset of [`~promptkd_trainer.demo.models.MODEL_SIZES`] for the teacher.
        student_size (`str`): Preset for the student.
        teacher_steps (`int`), teacher_lr (`float`), teacher_batch_size (`int`): Teacher SFT.
        student_steps (`int`), student_lr (`float`), student_batch_size (`int`): Student SFT initialisation.
        max_new_tokens (`int`): Generation budget at evaluation and for on-policy samples (longest answer: 19
            tokens + EOS).
        seeds (`tuple[int, ...]`): Seeds of the distillation runs, as in the paper's evaluation (10, 20, 30).
    """

    n_train: int = 8000
    n_val: int = 200
    n_test: int = 200
    data_seed: int = 0
    template: str = "short"
    vocab_size: int = 1536
    model_family: str = "gpt2"
    teacher_size: str = "teacher"
    student_size: str = "student"
    teacher_steps: int = 1600
    teacher_lr: float = 3e-3
    teacher_batch_size: int = 32
    student_steps: int = 1200
    student_lr: float = 5e-3
    student_batch_size: int = 32
    max_new_tokens: int = 24
    seeds: tuple[int, ...] = field(default=(10, 20, 30))

    def to_dict(self) -> dict:
        """The settings as a JSON-serialisable dict (for `results.json`)."""
        out = asdict(self)
        out["seeds"] = list(self.seeds)
        return out


DEMO_DEFAULTS = DemoDefaults()
