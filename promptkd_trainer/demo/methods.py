# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The five methods the demo compares, all from the same SFT student under one protocol.

Every method gets the same steps, batch size, learning rate, constant schedule, seed and prompts (the `n_labelled`
rows); they differ only in what the paper says they differ in (PromptKD paper, Section 4.1 baselines):

- `sft`: more supervised training on the labelled references;
- `kd`: word-level KD, forward KL(teacher || student) on the references (`lmbda=0`, no prompt);
- `seqkd`: supervised training on the teacher's greedy answers to the same prompts (sequence-level KD);
- `onpolicy`: reverse KL(student || teacher) on the student's own samples, no prompt (GKD with lmbda=1 / MiniLLM's
  token-level objective): PromptKD without its prompt, the paper's ablation;
- `promptkd`: the same plus the teacher's soft prompt trained with student guidance, with the official defaults for
  its own terms (7 tokens initialised from "Suppose you are a student.", prompt learning rate = student learning
  rate, regulariser coefficient 1 with linear decay, paper update order).

The three KD methods run on [`PromptKDTrainer`] (`num_virtual_tokens=0` turns the prompt off), so they share the
sampling, the masking and the loss code.
"""

from __future__ import annotations

import tempfile

from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging

from ..promptkd_config import PromptKDConfig
from ..promptkd_trainer import PromptKDTrainer
from .training import sft_dataset, train_causal_lm


logger = logging.get_logger(__name__)

# What each KD method changes from PromptKDConfig's defaults (which are PromptKD's official settings).
KD_SETTINGS = {
    "kd": {"num_virtual_tokens": 0, "lmbda": 0.0, "student_loss_type": "forward_kl"},
    "onpolicy": {"num_virtual_tokens": 0},
    "promptkd": {},
}


def distill_config(cfg, method: str, seed: int, output_dir: str) -> PromptKDConfig:
    """The [`PromptKDConfig`] of a KD method under the demo's shared protocol."""
    return PromptKDConfig(
        output_dir=output_dir,
        max_steps=cfg.steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        per_device_train_batch_size=cfg.batch_size,
        seed=seed,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,  # the loss terms at every step, for the report's curves
        disable_tqdm=True,
        max_new_tokens=cfg.max_new_tokens,
        max_length=256,
        update_order=cfg.update_order,
        dataloader_pin_memory=False,
        **KD_SETTINGS[method],
    )


def train_method(cfg, method: str, seed: int, student, teacher, tokenizer, rows, callbacks) -> dict:
    """Train `student` in place with `method` on `rows` (`prompt`/`completion`); return the run's record.

    For `seqkd`, `rows["completion"]` must already be the teacher's answers. Returns `{"history": log_history}` and,
    for `promptkd`, `"prompted_teacher"` (the teacher with its trained prompt).
    """
    if method in ("sft", "seqkd"):
        history = train_causal_lm(
            student, tokenizer, sft_dataset(tokenizer, rows["prompt"], rows["completion"]), steps=cfg.steps,
            learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, seed=seed, lr_scheduler_type="constant",
            warmup_steps=0, callbacks=callbacks,
        )
        return {"history": history}
    if method not in KD_SETTINGS:
        raise ValueError(f"Unknown method {method!r}; expected one of sft, seqkd, {', '.join(KD_SETTINGS)}.")
    with tempfile.TemporaryDirectory(prefix="promptkd-demo-run-") as tmp:
        trainer = PromptKDTrainer(
            model=student, teacher_model=teacher, args=distill_config(cfg, method, seed, tmp),
            train_dataset=rows.select_columns(["prompt", "completion"]), processing_class=tokenizer,
            callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)  # progress bars instead of per-step log dicts
        trainer.train()
    student.eval()
    record = {"history": trainer.state.log_history}
    if method == "promptkd":
        record["prompted_teacher"] = trainer.teacher
    return record
