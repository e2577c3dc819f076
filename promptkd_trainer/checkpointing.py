# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Saving and restoring the soft prompt next to the student's checkpoint.

A [`PromptKDTrainer`] checkpoint is the Trainer's own (student weights, optimizer, scheduler, RNG states) plus:

- `teacher_prompt/`: the prompt as a PEFT prompt-tuning adapter (`adapter_model.safetensors` + `adapter_config.json`),
  loadable with `PeftModel.from_pretrained(teacher, path)`;
- `prompt_optimizer.pt` and `prompt_scheduler.pt`: the prompt's AdamW and scheduler states (tensors only, loaded with
  `weights_only=True`).
"""

from __future__ import annotations

import os

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file


PROMPT_ADAPTER_DIR = "teacher_prompt"
PROMPT_OPTIMIZER_NAME = "prompt_optimizer.pt"
PROMPT_SCHEDULER_NAME = "prompt_scheduler.pt"


def save_prompt(teacher: PeftModel, output_dir: str) -> None:
    """Write the prompt adapter to `output_dir/teacher_prompt` (safetensors)."""
    teacher.save_pretrained(os.path.join(output_dir, PROMPT_ADAPTER_DIR), safe_serialization=True)


def save_prompt_optimizer(optimizer: torch.optim.Optimizer, scheduler, output_dir: str) -> None:
    """Write the prompt optimizer's and scheduler's states to `output_dir`."""
    torch.save(optimizer.state_dict(), os.path.join(output_dir, PROMPT_OPTIMIZER_NAME))
    torch.save(scheduler.state_dict(), os.path.join(output_dir, PROMPT_SCHEDULER_NAME))


def load_prompt(teacher: PeftModel, checkpoint: str) -> None:
    """Copy the prompt saved in `checkpoint/teacher_prompt` into `teacher`'s prompt.

    Raises:
        `FileNotFoundError`: `checkpoint` holds no prompt adapter.
    """
    adapter = os.path.join(checkpoint, PROMPT_ADAPTER_DIR, "adapter_model.safetensors")
    if not os.path.exists(adapter):
        raise FileNotFoundError(
            f"{checkpoint} holds no prompt adapter ({adapter}); it was not written by PromptKDTrainer."
        )
    # Read on CPU: safetensors rejects indexed CPU devices ("device cpu:0 is invalid"), which is what
    # `accelerator.device` is in a multi-process CPU run; the state dict is copied into the prompt's own device.
    set_peft_model_state_dict(teacher, load_file(adapter, device="cpu"))


def load_prompt_optimizer(optimizer: torch.optim.Optimizer, scheduler, checkpoint: str) -> None:
    """Restore the prompt optimizer's and scheduler's states saved in `checkpoint` (when present)."""
    for obj, name in ((optimizer, PROMPT_OPTIMIZER_NAME), (scheduler, PROMPT_SCHEDULER_NAME)):
        path = os.path.join(checkpoint, name)
        if os.path.exists(path):
            # map_location "cpu" for the same reason ("cpu:0" cannot be restored); Optimizer.load_state_dict moves
            # the moments to the prompt's device.
            obj.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


class PromptCheckpointing:
    """Trainer mixin (before the `Trainer` class in the bases) that saves and restores the prompt with the student.

    It expects the trainer's `teacher`, `use_prompt`, `prompt_optimizer`, `prompt_scheduler` and
    `_create_prompt_optimizer(num_training_steps)`.
    """

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the student as a regular HF model and the prompt as a PEFT adapter in `output_dir/teacher_prompt`."""
        super().save_model(output_dir, _internal_call)
        if self.args.should_save and self.use_prompt:
            save_prompt(self.teacher, output_dir or self.args.output_dir)

    # The three private Trainer methods below are overridden because the Trainer has no public hook for state saved
    # next to its optimizer or restored with the best model; checked against transformers 5.24.

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        # Called by `_save_checkpoint` on every process that saves optimizer state.
        super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save and self.prompt_optimizer is not None:
            save_prompt_optimizer(self.prompt_optimizer, self.prompt_scheduler, output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # Runs on every resume path (plain, DDP and DeepSpeed), unlike `_load_from_checkpoint`.
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or not self.use_prompt:
            return
        load_prompt(self.teacher, checkpoint)
        self._create_prompt_optimizer(self.state.max_steps)
        load_prompt_optimizer(self.prompt_optimizer, self.prompt_scheduler, checkpoint)

    def _load_best_model(self) -> None:
        # `load_best_model_at_end` restores the best student; the prompt of the same checkpoint goes with it (the
        # official code keeps the best student and prompt together, `best_rougeL`).
        super()._load_best_model()
        if self.use_prompt:
            load_prompt(self.teacher, self.state.best_model_checkpoint)
