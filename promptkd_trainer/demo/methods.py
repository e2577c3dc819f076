# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The five methods the demo compares, all from the same SFT student under one protocol.

Every method gets the same steps, batch size, learning rate, schedule (constant by default) and seed; they differ
only in what the paper says they differ in (PromptKD paper, Section 4.1 baselines) and in the data that this requires:

- `sft`: more supervised training on the `n_labelled` labelled rows;
- `kd`: word-level KD, forward KL(teacher || student) on the labelled references (`lmbda=0`, no prompt);
- `seqkd`: supervised training on the teacher's greedy answers to the `n_prompts` prompts (sequence-level KD);
- `onpolicy`: reverse KL(student || teacher) on the student's own samples, no prompt (GKD with lmbda=1 / MiniLLM's
  token-level objective): PromptKD without its prompt, the paper's ablation;
- `promptkd`: the same plus the teacher's soft prompt trained with student guidance, with the official defaults for
  its own terms (7 tokens initialised from "Suppose you are a student.", prompt learning rate = student learning
  rate, regulariser coefficient 1 with linear decay, paper update order).

`onpolicy` and `promptkd` train on the `n_prompts` prompts without their answers (a prompt-only dataset: with
`lmbda=1` every completion is the student's sample, so labels could not leak in).

The three KD methods run on [`PromptKDTrainer`] (`num_virtual_tokens=0` turns the prompt off), so they share the
sampling, the masking and the loss code. [`ABLATIONS`] are PromptKD with one of its settings changed (paper
Section 5, ablation studies), for `promptkd demo --ablations`.

Gradient checkpointing is off for every method and every stage (SFTConfig, hence PromptKDConfig, turns it on by
default): it trades recomputation for activation memory, and the demo's models need a few MB of activations, so on a
CPU it only costs time.
"""

from __future__ import annotations

import tempfile

from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging

from ..promptkd_config import PromptKDConfig
from ..promptkd_trainer import PromptKDTrainer
from .training import sft_dataset, train_causal_lm


METHODS = ("sft", "kd", "seqkd", "onpolicy", "promptkd")
LABELLED_METHODS = ("sft", "kd")
"""Methods that need references, hence train on the labelled rows; the others train on the prompts."""


logger = logging.get_logger(__name__)

# What each KD method changes from PromptKDConfig's defaults (which are PromptKD's official settings).
KD_SETTINGS = {
    "kd": {"num_virtual_tokens": 0, "lmbda": 0.0, "student_loss_type": "forward_kl"},
    "onpolicy": {"num_virtual_tokens": 0},
    "promptkd": {},
}

ABLATIONS = {
    "promptkd_reg0": {"reg_coef": 0.0},
    "promptkd_random_init": {"prompt_init_text": None},
    "promptkd_prompt_lr_x10": {"teacher_learning_rate_factor": 10.0},
    "promptkd_20_tokens": {"num_virtual_tokens": 20},
}
"""PromptKD with one setting changed from its official defaults: no regulariser, random instead of text
initialisation, a 10x prompt learning rate, 20 virtual tokens (the paper's ablations, Section 5)."""

PROMPT_METHODS = ("promptkd", *ABLATIONS)

DISTILL_MAX_LENGTH = 128
"""Prompt + answer tokens of a training row: the demo's prompts are under 64 tokens and answers at most
`max_new_tokens`; below the models' 256 positions even with 20 virtual tokens, so no method is cut differently."""


def cpu_protocol_config(
    output_dir: str, *, steps: int, learning_rate: float, batch_size: int, seed: int, max_new_tokens: int,
    max_length: int, lr_scheduler_type: str = "constant", **settings,
) -> PromptKDConfig:
    """A [`PromptKDConfig`] for a short CPU run under a protocol shared by every method: one schedule (constant unless
    `lr_scheduler_type` says otherwise), no
    checkpoints or loggers, the loss terms logged at every step, no gradient checkpointing (see the module
    docstring), fp32. `settings` are the method's own (e.g. `num_virtual_tokens=0`). Used by the demo and by
    `examples/smollm2/run.py`.
    """
    return PromptKDConfig(
        output_dir=output_dir,
        max_steps=steps,
        learning_rate=learning_rate,
        lr_scheduler_type=lr_scheduler_type,
        per_device_train_batch_size=batch_size,
        seed=seed,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,  # the loss terms at every step, for the report's curves
        disable_tqdm=True,
        max_new_tokens=max_new_tokens,
        max_length=max_length,
        dataloader_pin_memory=False,
        gradient_checkpointing=False,
        **settings,
    )


def distill_config(cfg, method: str, seed: int, output_dir: str) -> PromptKDConfig:
    """The [`PromptKDConfig`] of a KD method (or an ablation) under the demo's shared protocol."""
    settings = dict(KD_SETTINGS[method] if method in KD_SETTINGS else ABLATIONS[method])
    if "teacher_learning_rate_factor" in settings:
        settings["teacher_learning_rate"] = settings.pop("teacher_learning_rate_factor") * cfg.learning_rate
    return cpu_protocol_config(
        output_dir, steps=cfg.steps, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, seed=seed,
        max_new_tokens=cfg.max_new_tokens, max_length=DISTILL_MAX_LENGTH, update_order=cfg.update_order,
        lr_scheduler_type=cfg.lr_scheduler_type, **settings,
    )


def train_method(cfg, method: str, seed: int, student, teacher, tokenizer, rows, callbacks) -> dict:
    """Train `student` in place with `method` on `rows`; return the run's record.

    `rows` has `prompt` and `completion` for `sft`, `kd` and `seqkd` (for `seqkd`, the teacher's answers), `prompt`
    only for the on-policy methods. Returns `{"history": log_history}` and, for PromptKD and its ablations,
    `"prompted_teacher"` (the teacher with its trained prompt).
    """
    if method in ("sft", "seqkd"):
        history = train_causal_lm(
            student, tokenizer, sft_dataset(tokenizer, rows["prompt"], rows["completion"]), steps=cfg.steps,
            learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, seed=seed,
            lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=0, callbacks=callbacks,
        )
        return {"history": history}
    if method not in KD_SETTINGS and method not in ABLATIONS:
        raise ValueError(f"Unknown method {method!r}; expected one of {METHODS} or {tuple(ABLATIONS)}.")
    columns = ["prompt", "completion"] if method == "kd" else ["prompt"]
    with tempfile.TemporaryDirectory(prefix="promptkd-demo-run-") as tmp:
        trainer = PromptKDTrainer(
            model=student, teacher_model=teacher, args=distill_config(cfg, method, seed, tmp),
            train_dataset=rows.select_columns(columns), processing_class=tokenizer, callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)  # progress bars instead of per-step log dicts
        trainer.train()
    student.eval()
    record = {"history": trainer.state.log_history}
    if method in PROMPT_METHODS:
        record["prompted_teacher"] = trainer.teacher
    return record
