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
