# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Every setting of `promptkd demo`, with its default: the one place where the demo's sizes and budgets live.

`promptkd demo --help` lists these fields as `--snake_case` flags ([`~transformers.HfArgumentParser`], as TRL's
scripts do).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .methods import METHODS


@dataclass
class DemoConfig:
    """Settings of `promptkd demo`.

    The regime (why these numbers): the teacher is instruction-tuned on `n_train` rows and answers the held-out
    prompts right; the student only ever sees `n_labelled` labelled rows (its SFT initialisation, and the data of the
    methods that need labels: continued SFT and word-level KD). The methods that need no labels (SeqKD, on-policy,
    PromptKD) train on `n_prompts` prompts without answers, the first `n_labelled` of which are the labelled ones:
    a teacher labels prompts that nobody labelled, which is what distillation offers a user. Every method gets the
    same steps, batch size and learning rate. The default seeds fit the demo's time budget on 2 cores; a PromptKD -
    on-policy interval of +-1 ROUGE-L point needs about 30 seeds of those two methods (`--methods onpolicy promptkd
    --extra_comparison_seeds 27`; docs/demo.md shows the variance measurement behind it).
    """

    output_dir: str = field(default="outputs/demo", metadata={"help": "Folder for the table, report, plots."})
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where the pretrained and SFT models are cached, keyed by their settings (default: "
            "$PROMPTKD_DEMO_CACHE, else ~/.cache/promptkd_trainer/demo). A second run skips those stages."
        },
    )
    no_cache: bool = field(
        default=False, metadata={"help": "Build the models even if pre-built or cached ones match the settings."}
    )
    rebuild_models: bool = field(
        default=False,
        metadata={
            "help": "Build the teacher and student with these settings and write them to the package's pre-built "
            "folder (promptkd_trainer/demo/prebuilt); logs how long it took."
        },
    )
    ablations: bool = field(
        default=False,
        metadata={
            "help": "Also run PromptKD's ablations (reg_coef 0, random prompt init, prompt lr x10, 20 virtual "
            "tokens) on the same seeds, each paired with full PromptKD."
        },
    )
    family: str = field(
        default="llama",
        metadata={"help": "Model family: llama (rotary positions) or gpt2.", "choices": ["llama", "gpt2"]},
    )
    teacher_size: str = field(default="teacher", metadata={"help": "Teacher preset of demo.models.MODEL_SIZES."})
    student_size: str = field(default="student", metadata={"help": "Student preset of demo.models.MODEL_SIZES."})
    vocab_size: int = field(default=2048, metadata={"help": "Cap of the byte-level BPE vocabulary."})
    # Data.
    n_train: int = field(default=20000, metadata={"help": "Task rows the teacher is instruction-tuned on."})
    n_labelled: int = field(
        default=64,
        metadata={"help": "Labelled task rows: the student's SFT init, and the data of sft and kd (need labels)."},
    )
    n_prompts: int = field(
        default=1024,
        metadata={"help": "Prompts (answers unused) that seqkd, onpolicy and promptkd train on; the first "
                  "n_labelled are the labelled rows."},
    )
    families: list[str] = field(
        default_factory=lambda: ["facts"],
        metadata={"help": "Task families (demo.tasks.TASK_FAMILIES); the defaults have several good wordings and "
                  "an answer the teacher learns to get right (docs/demo.md)."},
    )
    n_test: int = field(default=400, metadata={"help": "Held-out test prompts."})
    eval_samples: int = field(
        default=2, metadata={"help": "Sampled answers per test prompt (T=1), besides one greedy answer."}
    )
    data_seed: int = field(default=0, metadata={"help": "Seed of the data, the tokenizer and the models' init."})
    # Pretraining and SFT (cached).
    block_size: int = field(default=128, metadata={"help": "Tokens per packed pretraining sequence."})
    pretrain_batch_size: int = field(default=16, metadata={"help": "Packed sequences per pretraining step."})
    pretrain_lr: float = field(default=3e-3, metadata={"help": "Pretraining learning rate (cosine schedule)."})
    teacher_pretrain_steps: int = field(default=250, metadata={"help": "Pretraining steps of the teacher."})
    student_pretrain_steps: int = field(default=250, metadata={"help": "Pretraining steps of the student."})
    sft_lr: float = field(default=3e-3, metadata={"help": "Learning rate of the SFT stages (cosine schedule)."})
    sft_batch_size: int = field(default=32, metadata={"help": "Batch size of the SFT stages."})
    teacher_sft_steps: int = field(default=1600, metadata={"help": "SFT steps of the teacher on n_train rows."})
    teacher_preamble_fraction: float = field(
        default=0.5,
        metadata={
            "help": "Fraction of the teacher's SFT prompts that start with 1-2 generated English sentences (the "
            "context a system prompt or an earlier turn gives real instruction data), so that its answers do not "
            "depend on what stands at position 0, where PromptKD's soft prompt goes."
        },
    )
    student_sft_steps: int = field(default=60, metadata={"help": "SFT steps of the student on n_labelled rows."})
    # Distillation: the same for every method.
    steps: int = field(default=200, metadata={"help": "Training steps of every method."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of every method (and the prompt)."})
    batch_size: int = field(default=16, metadata={"help": "Batch size of every method."})
    lr_scheduler_type: str = field(
        default="constant",
        metadata={"help": "Learning-rate schedule of every method (a transformers `SchedulerType`)."},
    )
    seeds: list[int] = field(default_factory=lambda: [10, 20, 30], metadata={"help": "Seeds of every method."})
    extra_comparison_seeds: int = field(
        default=3,
        metadata={
            "help": "onpolicy and promptkd also train on this many more seeds (max(seeds) + 10, + 20, ...): their "
            "paired difference is small and varies with training, so its interval needs more training runs than "
            "the baselines' gaps over sft do (docs/demo.md). 0: none."
        },
    )
    methods: list[str] = field(
        default_factory=lambda: list(METHODS), metadata={"help": "Methods to run.", "choices": list(METHODS)}
    )
    update_order: str = field(
        default="paper", metadata={"help": "PromptKD's update order.", "choices": ["paper", "joint"]}
    )
    exposure_bias_prompts: int = field(
        default=64,
        metadata={"help": "Held-out prompts on which the exposure bias (ExAccErr) of sft/onpolicy/promptkd is "
                  "measured; 0 skips it."},
    )
    kl_probe_prompts: int = field(
        default=64, metadata={"help": "Held-out prompts on which the prompt's KL(teacher || student) is measured."}
    )
    max_new_tokens: int = field(
        default=16,
        metadata={"help": "Generation budget (evaluation and on-policy); the facts' answers take at most 7 tokens."},
    )
    workers: int = field(
        default=0,
        metadata={
            "help": "Processes that run the (method, seed) runs side by side (0: one per CPU, at most 8). Each run "
            "seeds itself, so the results are the same for any number of workers."
        },
    )
    threads: int = field(
        default=1,
        metadata={
            "help": "torch intra-op threads per process. The demo's models are too small to gain from more, and "
            "with other load on a 2-core machine two OpenMP threads made its small ops much slower."
        },
    )

    def __post_init__(self):
        # Settings that would otherwise fail deep inside a run, after minutes of training.
        if self.kl_probe_prompts < 1:
            raise ValueError(f"kl_probe_prompts must be >= 1 (the prompt's KL probe needs prompts), got "
                             f"{self.kl_probe_prompts}.")  # fmt: skip
        if self.exposure_bias_prompts < 0 or self.workers < 0:
            raise ValueError("exposure_bias_prompts and workers must be >= 0 (0: skip it / one worker per CPU).")
        if not 0.0 <= self.teacher_preamble_fraction <= 1.0:
            raise ValueError(f"teacher_preamble_fraction must be in [0, 1], got {self.teacher_preamble_fraction}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}.")
        if self.extra_comparison_seeds < 0:
            raise ValueError(f"extra_comparison_seeds must be >= 0, got {self.extra_comparison_seeds}.")

    @property
    def comparison_seeds(self) -> list[int]:
        """The seeds on which only onpolicy and promptkd run: after the largest of `seeds`, every 10."""
        return [max(self.seeds) + 10 * (i + 1) for i in range(self.extra_comparison_seeds)]

    def to_dict(self) -> dict:
        return asdict(self)
