# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Saving and restoring the soft prompt next to the student's checkpoint.

A [`PromptKDTrainer`] checkpoint is the Trainer's own (student weights, optimizer, scheduler, RNG states) plus:

- `teacher_prompt/`: the prompt as a PEFT prompt-tuning adapter (`adapter_model.safetensors` + `adapter_config.json`),
  loadable with `PeftModel.from_pretrained(teacher, path)`, and `teacher_identity.json`, which records the teacher it
  was trained on ([`teacher_identity`]);
- `prompt_optimizer.pt` and `prompt_scheduler.pt`: the prompt's AdamW and scheduler states (tensors only, loaded with
  `weights_only=True`);
- `promptkd_complete.json`, written last: a checkpoint without it was interrupted while being saved.

The trainer mixin [`PromptCheckpointing`] writes and restores these files. The model card's section on the teacher is
`model_card.py`; the metrics that callbacks add in `on_evaluate` reach the loggers through
[`~promptkd_trainer.evaluation.CallbackMetricsLogging`], next to the ROUGE-L callback.
"""

from __future__ import annotations

import json
import os
import re

import torch
from peft import PeftModel, PromptTuningInit, set_peft_model_state_dict
from peft.utils.integrations import gather_params_ctx
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .distributed import name_stalled_ranks
from .files import (
    check_checkpoint_files,
    check_torch_archive,
    check_writes_inside,
    read_json,
    read_safetensors,
    safetensors_shapes,
)
from .preemption import checkpoint_on_signals
from .teacher import base_model


logger = logging.get_logger(__name__)

PROMPT_ADAPTER_DIR = "teacher_prompt"
PROMPT_OPTIMIZER_NAME = "prompt_optimizer.pt"
PROMPT_SCHEDULER_NAME = "prompt_scheduler.pt"
TEACHER_IDENTITY_NAME = "teacher_identity.json"
COMPLETE_MARKER_NAME = "promptkd_complete.json"
COMPLETIONS_DIR = "completions"  # `log_completions` tables, written by the trainer into output_dir
_ADAPTER_WEIGHTS = "adapter_model.safetensors"
_ADAPTER_CONFIG = "adapter_config.json"
_TRAINER_STATE = "trainer_state.json"
_IDENTITY_KEYS = ("name_or_path", "architecture", "embedding_shape", "embedding_dtype", "embedding_rows",
                  "embedding_sample")

# The architecture entries compared (those a config has): a whole-config hash would change with how the teacher is
# loaded and with the transformers version that wrote it.
_ARCHITECTURE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                      "num_key_value_heads", "intermediate_size", "max_position_embeddings", "tie_word_embeddings")
_FINGERPRINT_ROWS, _FINGERPRINT_COLS = 8, 16
_CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


# ---------------------------------------------------------------------------------------------- teacher identity


def _architecture(config) -> dict:
    text = config.get_text_config()
    values = {key: getattr(text, key, None) for key in _ARCHITECTURE_KEYS}
    return {key: value for key, value in values.items() if isinstance(value, (int, str, bool))}


def teacher_identity_name(teacher) -> str:
    """The teacher's name or path, as recorded with its prompt and named in the model card."""
    base = base_model(teacher)
    return str(getattr(base, "name_or_path", "") or base.config._name_or_path or "(a teacher given in memory)")


def teacher_identity(teacher) -> dict:
    """What identifies the teacher a prompt was trained on, as saved in `teacher_prompt/teacher_identity.json`.

    `name_or_path` is informative only (a folder can move); the check uses the architecture (model type and sizes
    from the config), the input-embedding table's shape, and a fingerprint of its weights: the first 16 values of 8
    rows spread over the vocabulary, in fp32.
    """
    base = base_model(teacher)
    weight = base.get_input_embeddings().weight
    # Under ZeRO-3 the table is partitioned (shape [0]) until gathered.
    with torch.no_grad(), gather_params_ctx(weight, modifier_rank=None):
        rows = torch.linspace(0, weight.shape[0] - 1, _FINGERPRINT_ROWS).long().tolist()
        sample = weight[rows, :_FINGERPRINT_COLS].detach().float().cpu()
        shape = list(weight.shape)
    return {
        "name_or_path": teacher_identity_name(teacher),
        "architecture": _architecture(base.config),
        "embedding_shape": shape,
        "embedding_dtype": str(weight.dtype).replace("torch.", ""),
        "embedding_rows": rows,
        "embedding_sample": sample.tolist(),
    }


def _prompt_hidden_size(adapter_dir: str) -> int | None:
    path = os.path.join(adapter_dir, _ADAPTER_WEIGHTS)
    if not os.path.exists(path):
        return None
    shapes = list(safetensors_shapes(path).values())
    return shapes[0][-1] if shapes else None


def check_prompt_matches_teacher(teacher, adapter_dir: str) -> None:
    """Refuse a prompt adapter that was trained on another teacher than `teacher`.

    Call it before `PeftModel.from_pretrained(teacher, adapter_dir)` (e.g. in `promptkd eval`) and before resuming:
    a prompt only means something on the teacher it was tuned for; on another teacher of the same size it silently
    scores garbage, and on one of another size PEFT fails with a bare tensor-size `RuntimeError`.

    Args:
        teacher (`PreTrainedModel` or `PeftModel`):
            The teacher about to carry the prompt, with or without a prompt adapter on it.
        adapter_dir (`str`):
            A `teacher_prompt/` folder written by [`save_prompt`].

    Raises:
        `FileNotFoundError`: `adapter_dir` holds no adapter.
        [`~promptkd_trainer.files.DamagedFileError`]: `adapter_config.json`, the weights or `teacher_identity.json`
        is truncated or malformed.
        `ValueError`: the adapter is not a prompt-tuning one, the prompt's hidden size is not the teacher's, or the
        recorded identity (architecture, embedding shape or embedding weights) differs. An adapter saved without
        `teacher_identity.json` (by older versions) is only checked for its size, with a warning.
    """
    config_path = os.path.join(adapter_dir, _ADAPTER_CONFIG)
    if not os.path.exists(config_path):
        raise FileNotFoundError(
            f"No PEFT adapter in {adapter_dir} (no adapter_config.json): pass a `teacher_prompt/` folder."
        )
    peft_type = read_json(config_path, keys=("peft_type",))["peft_type"]
    if peft_type != "PROMPT_TUNING":
        raise ValueError(
            f"{adapter_dir} holds a {peft_type} adapter, not a prompt-tuning one (a PromptKD `teacher_prompt/`)."
        )
    current = teacher_identity(teacher)
    hidden = current["embedding_shape"][1]
    prompt_hidden = _prompt_hidden_size(adapter_dir)
    if prompt_hidden is not None and prompt_hidden != hidden:
        raise ValueError(
            f"The prompt in {adapter_dir} has hidden size {prompt_hidden} but the teacher "
            f"{current['name_or_path']} has hidden size {hidden}: it was trained for another teacher. "
            "Pass the teacher the prompt was trained with."
        )
    path = os.path.join(adapter_dir, TEACHER_IDENTITY_NAME)
    if not os.path.exists(path):
        logger.warning(
            f"{adapter_dir} has no {TEACHER_IDENTITY_NAME} (saved by an older version): cannot check that the prompt "
            "was trained on this teacher; make sure it was."
        )
        return
    saved = read_json(path, keys=_IDENTITY_KEYS)
    reason = None
    if saved["embedding_shape"] != current["embedding_shape"]:
        reason = f"input embeddings of shape {saved['embedding_shape']}, not {current['embedding_shape']}"
    elif any(current["architecture"].get(k, v) != v for k, v in saved["architecture"].items()):
        diff = {k: (v, current["architecture"].get(k)) for k, v in saved["architecture"].items()
                if current["architecture"].get(k, v) != v}
        reason = f"another architecture (saved vs given: {diff})"
    else:
        # Same weights loaded in another dtype (e.g. bf16 for eval) differ by their rounding only.
        eps = max(torch.finfo(getattr(torch, d)).eps for d in (saved["embedding_dtype"], current["embedding_dtype"]))
        a, b = torch.tensor(saved["embedding_sample"]), torch.tensor(current["embedding_sample"])
        if saved["embedding_rows"] != current["embedding_rows"] or not torch.allclose(a, b, rtol=eps, atol=1e-6):
            reason = "input embeddings differ (other weights)"
    if reason is not None:
        raise ValueError(
            f"The prompt in {adapter_dir} was trained for the teacher {saved['name_or_path']!r}; the teacher given "
            f"({current['name_or_path']}) has {reason}. Pass the teacher the prompt was trained with, "
            "or start a new prompt instead of loading this one."
        )


def load_prompt_adapter(teacher, adapter_dir: str, **kwargs) -> PeftModel:
    """`PeftModel.from_pretrained(teacher, adapter_dir, **kwargs)` once [`check_prompt_matches_teacher`] passed: the
    way to put a saved prompt on a teacher for evaluation or generation."""
    check_prompt_matches_teacher(teacher, adapter_dir)
    return PeftModel.from_pretrained(teacher, adapter_dir, **kwargs)


# ---------------------------------------------------------------------------------------------- save / load


def save_prompt(teacher: PeftModel, output_dir: str, identity: dict | None = None) -> None:
    """Write the prompt adapter and its teacher's identity (`identity`, by default computed by [`teacher_identity`])
    to `output_dir/teacher_prompt` (safetensors).

    The adapter config is saved with `prompt_tuning_init="RANDOM"`: the TEXT initialisation has been applied already,
    and a TEXT config makes `PeftModel.from_pretrained` load the init tokenizer again (and fail without a path to
    one, e.g. for an in-memory tokenizer). The init text stays in `prompt_tuning_init_text` as a record.
    """
    adapter_dir = os.path.join(output_dir, PROMPT_ADAPTER_DIR)
    check_writes_inside(output_dir, adapter_dir)
    config = teacher.active_peft_config
    init, tokenizer_path = config.prompt_tuning_init, config.tokenizer_name_or_path
    config.prompt_tuning_init, config.tokenizer_name_or_path = PromptTuningInit.RANDOM, None
    try:
        teacher.save_pretrained(adapter_dir, safe_serialization=True)
    finally:
        config.prompt_tuning_init, config.tokenizer_name_or_path = init, tokenizer_path
    with open(os.path.join(adapter_dir, TEACHER_IDENTITY_NAME), "w") as f:
        json.dump(identity or teacher_identity(teacher), f, indent=1)


def save_prompt_optimizer(optimizer: torch.optim.Optimizer, scheduler, output_dir: str) -> None:
    """Write the prompt optimizer's and scheduler's states to `output_dir`."""
    torch.save(optimizer.state_dict(), os.path.join(output_dir, PROMPT_OPTIMIZER_NAME))
    torch.save(scheduler.state_dict(), os.path.join(output_dir, PROMPT_SCHEDULER_NAME))


def load_prompt(teacher: PeftModel, checkpoint: str) -> None:
    """Copy the prompt saved in `checkpoint/teacher_prompt` into `teacher`'s prompt.

    Raises:
        `FileNotFoundError`: `checkpoint` holds no prompt adapter.
    """
    adapter = os.path.join(checkpoint, PROMPT_ADAPTER_DIR, _ADAPTER_WEIGHTS)
    if not os.path.exists(adapter):
        raise FileNotFoundError(
            f"{checkpoint} holds no prompt adapter ({adapter}): the checkpoint is incomplete (a save interrupted) or "
            "was not written by PromptKDTrainer. Resume from an earlier checkpoint."
        )
    # Read on CPU: safetensors rejects indexed CPU devices ("device cpu:0 is invalid"), which is what
    # `accelerator.device` is in a multi-process CPU run; the state dict is copied into the prompt's own device.
    set_peft_model_state_dict(teacher, read_safetensors(adapter, device="cpu"))


def load_prompt_optimizer(optimizer: torch.optim.Optimizer, scheduler, checkpoint: str) -> None:
    """Restore the prompt optimizer's and scheduler's states saved in `checkpoint`.

    Raises:
        `FileNotFoundError`: one of the two files is missing (resuming with fresh moments would silently give another
        run than the uninterrupted one).
    """
    for obj, name in ((optimizer, PROMPT_OPTIMIZER_NAME), (scheduler, PROMPT_SCHEDULER_NAME)):
        path = os.path.join(checkpoint, name)
        if not os.path.exists(path):
            raise FileNotFoundError(_missing_message(checkpoint, [name]))
        check_torch_archive(path)
        # map_location "cpu" for the same reason ("cpu:0" cannot be restored); Optimizer.load_state_dict moves
        # the moments to the prompt's device.
        obj.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


# ---------------------------------------------------------------------------------------------- completeness


def _missing_message(checkpoint: str, missing: list[str]) -> str:
    return (
        f"Cannot resume from {checkpoint}: {', '.join(missing)} missing (a save interrupted, or files removed). "
        "Resume from an earlier complete checkpoint (`resume_from_checkpoint=True` picks the last complete one), or "
        "train without resuming."
    )


def missing_checkpoint_files(checkpoint: str, use_prompt: bool = True, optimizer_states: bool = True) -> list[str]:
    """The files a complete PromptKDTrainer checkpoint has and `checkpoint` lacks (the completion marker included)."""
    expected = [_TRAINER_STATE, COMPLETE_MARKER_NAME]
    if use_prompt:
        expected += [os.path.join(PROMPT_ADAPTER_DIR, n) for n in (_ADAPTER_WEIGHTS, "adapter_config.json")]
        if optimizer_states:
            expected += [PROMPT_OPTIMIZER_NAME, PROMPT_SCHEDULER_NAME]
    return [name for name in expected if not os.path.exists(os.path.join(checkpoint, name))]


def check_saves_stay_inside(output_dir: str) -> None:
    """Refuse a symbolic link in `output_dir` through which a save would write outside it: one of the files saved at
    its top level (`README.md`, the student's weights, ...), `teacher_prompt/`, `completions/` (`log_completions`), or
    a `checkpoint-N` folder or anything in it ([`~promptkd_trainer.files.check_writes_inside`]). Other folders (e.g. a
    linked `runs/` for TensorBoard) are not written by the trainer and are left alone.

    Raises:
        `ValueError`: such a link exists; the message names it.
    """
    if not os.path.isdir(output_dir):
        return
    check_writes_inside(output_dir, output_dir, recursive=False)
    for name in sorted(os.listdir(output_dir)):
        if name in (PROMPT_ADAPTER_DIR, COMPLETIONS_DIR) or _CHECKPOINT_PATTERN.match(name):
            check_writes_inside(output_dir, os.path.join(output_dir, name))


def check_same_prompt_length(checkpoint: str, num_virtual_tokens: int) -> None:
    """Refuse to resume from `checkpoint` with another prompt length than the one it was trained with (PEFT would
    fail on a bare tensor `size mismatch`).

    Raises:
        `ValueError`: the lengths differ, or one of the two has no prompt; the message names both values.
    """
    config_path = os.path.join(checkpoint, PROMPT_ADAPTER_DIR, _ADAPTER_CONFIG)
    saved = read_json(config_path).get("num_virtual_tokens", 0) if os.path.isfile(config_path) else 0
    if saved != num_virtual_tokens:
        raise ValueError(
            f"Cannot resume from {checkpoint} with num_virtual_tokens={num_virtual_tokens}: it was trained with "
            f"num_virtual_tokens={saved} ({config_path if saved else 'no prompt'}). Set "
            f"`num_virtual_tokens={saved}` to resume it, or train from scratch (without resuming) with the new value."
        )


def last_complete_checkpoint(output_dir: str, required: bool = False) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest `checkpoint-N` folder of `output_dir` whose save completed (it holds `promptkd_complete.json`).

    A save killed half-way (`kill -9`, out of disk) leaves a newer folder without the marker; Trainer's own
    `get_last_checkpoint` would pick it and fail on the missing files.

    Args:
        output_dir (`str`): the run's output directory.
        required (`bool`, defaults to `False`): raise when checkpoint folders exist but none is complete.

    Returns:
        `(path or None, skipped)`: `skipped` lists the newer incomplete folders with what they lack.
    """
    found = []
    if os.path.isdir(output_dir):
        found = sorted(
            (int(m.group(1)), os.path.join(output_dir, name))
            for name in os.listdir(output_dir)
            if (m := _CHECKPOINT_PATTERN.match(name)) and os.path.isdir(os.path.join(output_dir, name))
        )
    skipped = []
    for _, path in reversed(found):
        missing = missing_checkpoint_files(path, use_prompt=False)
        if not missing:
            return path, skipped
        skipped.append((path, f"no completion marker ({COMPLETE_MARKER_NAME})" if missing == [COMPLETE_MARKER_NAME]
                        else f"missing {', '.join(missing)}"))
    if required and skipped:
        listing = "; ".join(f"{path}: {why}" for path, why in skipped)
        raise ValueError(
            f"No complete checkpoint in {output_dir} ({listing}). A folder without {COMPLETE_MARKER_NAME} was "
            "interrupted while saving, or written by an older version: if it has all its files, pass it explicitly "
            "as `resume_from_checkpoint`; otherwise train without resuming."
        )
    return None, skipped


# ---------------------------------------------------------------------------------------------- the Trainer mixin


class PromptCheckpointing:
    """Trainer mixin (before the `Trainer` class in the bases) that saves and restores the prompt with the student,
    marks complete checkpoints, and resumes from the last complete one.

    It expects the trainer's `teacher`, `use_prompt`, `prompt_optimizer`, `prompt_scheduler` and
    `_prompt_optimizer_and_scheduler()` (which creates the last two on first use).
    """

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """`Trainer.train`, resuming from the last *complete* checkpoint for `resume_from_checkpoint=True` (or
        `"true"`, as the command line passes it), and refusing before anything loads or trains: a checkpoint with
        missing prompt state, a damaged file, another `num_virtual_tokens` or another teacher, and a symbolic link in
        `output_dir` that a save would write through ([`check_saves_stay_inside`]). With `save_on_signal`, SIGTERM
        and SIGINT save a checkpoint at the next step end and raise
        [`~promptkd_trainer.preemption.Preempted`]. A rank that stops answering for `ddp_timeout` seconds ends the
        run with a [`~promptkd_trainer.distributed.StalledRankError`] that names it."""
        check_saves_stay_inside(self.args.output_dir)
        self._prompt_teacher_identity()  # on every rank: under ZeRO-3 reading the embeddings is collective
        if isinstance(resume_from_checkpoint, str) and resume_from_checkpoint.lower() == "true":
            if not os.path.isdir(resume_from_checkpoint):  # `--resume_from_checkpoint true` on the command line
                resume_from_checkpoint = True
        if resume_from_checkpoint is True:
            found, skipped = last_complete_checkpoint(self.args.output_dir, required=True)
            for path, why in skipped:
                logger.warning(f"Not resuming from {path}: {why} (its save was interrupted).")
            if found is not None:  # None and no folder at all: the Trainer says so
                resume_from_checkpoint = found
                logger.info(f"Resuming from {found}, the last complete checkpoint.")
        if isinstance(resume_from_checkpoint, str) and os.path.isdir(resume_from_checkpoint):
            self._check_resumable(resume_from_checkpoint)
        with name_stalled_ranks(self.args), checkpoint_on_signals(self, getattr(self.args, "save_on_signal", True)):
            return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)

    def _check_resumable(self, checkpoint: str) -> None:
        missing = missing_checkpoint_files(checkpoint, self.use_prompt, not self.args.save_only_model)
        if missing == [COMPLETE_MARKER_NAME]:
            logger.warning(f"{checkpoint} has no {COMPLETE_MARKER_NAME}: its save may have been interrupted.")
        elif missing:
            raise FileNotFoundError(_missing_message(checkpoint, [m for m in missing if m != COMPLETE_MARKER_NAME]))
        check_checkpoint_files(checkpoint)  # the Trainer's own loaders would fail on a damaged file without its name
        check_same_prompt_length(checkpoint, self.args.num_virtual_tokens)
        if self.use_prompt:
            check_prompt_matches_teacher(self.teacher, os.path.join(checkpoint, PROMPT_ADAPTER_DIR))
        # transformers only logs a missing RNG state at info level; the run then draws other samples.
        name = f"rng_state_{self.args.process_index}.pth" if self.args.world_size > 1 else "rng_state.pth"
        if not os.path.isfile(os.path.join(checkpoint, name)):
            logger.warning(
                f"{checkpoint} has no {name}: the random number generators cannot be restored, so the resumed run "
                "will not be reproducible (it samples other completions than an uninterrupted run would). Resume "
                "from a checkpoint that has it to continue the same run."
            )

    def _prompt_teacher_identity(self) -> dict | None:
        # The teacher is frozen: its identity is computed once and saved with every checkpoint.
        if self.use_prompt and getattr(self, "_teacher_identity", None) is None:
            self._teacher_identity = teacher_identity(self.teacher)
        return getattr(self, "_teacher_identity", None)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the student as a regular HF model and the prompt as a PEFT adapter in `output_dir/teacher_prompt`.

        Raises:
            `ValueError`: before anything is written, when a symbolic link in `output_dir` would send a file
            elsewhere ([`check_saves_stay_inside`]).
        """
        if self.args.should_save:
            check_saves_stay_inside(output_dir or self.args.output_dir)
        super().save_model(output_dir, _internal_call)
        if self.args.should_save and self.use_prompt:
            save_prompt(self.teacher, output_dir or self.args.output_dir, self._prompt_teacher_identity())

    # The private Trainer methods below are overridden because the Trainer has no public hook for state saved next
    # to its optimizer, restored with the best model, or written after a checkpoint; checked against transformers 5.24.

    def _save_checkpoint(self, model, trial) -> None:
        # The marker is removed first and written last, so that a folder re-saved over (after a resume) is not taken
        # for complete while half of it is new.
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        marker = os.path.join(folder, COMPLETE_MARKER_NAME)
        if self.args.should_save:
            check_saves_stay_inside(run_dir)  # before anything is written (TRL writes the model card first)
            if os.path.exists(marker):
                os.remove(marker)
        super()._save_checkpoint(model, trial)
        # Every rank writes its part (DeepSpeed shards); the marker waits for all of them.
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            with open(marker, "w") as f:
                json.dump({"global_step": self.state.global_step}, f)

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
        if not self.args.save_only_model:  # such checkpoints hold no optimizer state, the student's neither
            load_prompt_optimizer(*self._prompt_optimizer_and_scheduler(), checkpoint)

    def _load_best_model(self) -> None:
        # `load_best_model_at_end` restores the best student; the prompt of the same checkpoint goes with it (the
        # official code keeps the best student and prompt together, `best_rougeL`).
        super()._load_best_model()
        if self.use_prompt:
            load_prompt(self.teacher, self.state.best_model_checkpoint)
