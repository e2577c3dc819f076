# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Supervised fine-tuning with TRL's `SFTTrainer`, set up for a CPU demo.

PromptKD's teacher is an SFT model and its students start from SFT checkpoints (MiniLLM's `init` models, paper.md
§1.5); [`supervised_finetune`] builds both at toy scale: prompt/completion rows, loss on the completion tokens only
(EOS included), fp32 on CPU, no checkpoints written.
"""

from __future__ import annotations

import os
import tempfile
import time

from transformers.utils import logging


logger = logging.get_logger(__name__)


def _plain_loss_trainer_cls():
    """`SFTTrainer` whose loss is the model's own cross-entropy (`transformers.Trainer.compute_loss`).

    TRL >= 1.x computes the SFT loss through a fused LM-head kernel that also returns per-token entropy and top-1
    accuracy for logging. That kernel saves GPU memory on large vocabularies, but with the demo's tiny models on a
    2-core CPU it made each step 1.4-1.9x slower than the plain loss (teacher 80 vs 108-137 ms, student 25 vs 43-51
    ms at batch 32); the labels and the mean over completion tokens are the same. Data preparation, collation and the
    completion mask are unchanged.
    """
    from transformers import Trainer
    from trl import SFTTrainer

    class PlainLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return PlainLossSFTTrainer


def supervised_finetune(
    model,
    tokenizer,
    train_dataset,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    output_dir: str | os.PathLike | None = None,
    warmup_ratio: float = 0.05,
    lr_scheduler_type: str = "cosine",
    weight_decay: float = 0.0,
    max_length: int = 256,
    logging_steps: int = 50,
    callbacks: list | None = None,
    progress_bar: bool = False,
    fused_loss: bool = False,
    **sft_kwargs,
):
    """Fine-tune `model` on the prompt/completion pairs of `train_dataset` with [`~trl.SFTTrainer`].

    The loss is on the completion tokens only (TRL's `completion_only_loss`, on by default for prompt/completion
    data), and TRL appends `tokenizer.eos_token` to each completion, so the model learns to stop. Training runs in
    fp32 on CPU (`use_cpu=True`, `bf16=False`), without gradient checkpointing, reporting or checkpoints.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            Causal LM to train, modified in place (e.g. from [`~promptkd_trainer.demo.models.build_model`]).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Its tokenizer; must have a pad token.
        train_dataset (`datasets.Dataset`):
            Rows with `prompt` and `completion` strings; other columns (`family`, `references`) are dropped here.
        steps (`int`):
            Number of optimizer steps (`max_steps`); the data is cycled through as often as needed.
        lr (`float`):
            Peak learning rate.
        batch_size (`int`):
            Examples per step.
        seed (`int`):
            Seed for the data order and any randomness in training.
        output_dir (`str` or `os.PathLike`, *optional*):
            Trainer output directory; a temporary directory (deleted afterwards) when `None`. Nothing is saved there
            unless `sft_kwargs` asks for it.
        warmup_ratio (`float`, *optional*, defaults to `0.05`):
            Fraction of `steps` used for linear warm-up.
        lr_scheduler_type (`str`, *optional*, defaults to `"cosine"`):
            Learning-rate schedule after warm-up.
        weight_decay (`float`, *optional*, defaults to `0.0`):
            AdamW weight decay.
        max_length (`int`, *optional*, defaults to `256`):
            Truncation length of prompt + completion.
        logging_steps (`int`, *optional*, defaults to `50`):
            Logging interval, in steps (the loss history is kept in `model.sft_log_history`).
        callbacks (`list[transformers.TrainerCallback]`, *optional*):
            Extra trainer callbacks, e.g. a progress reporter.
        progress_bar (`bool`, *optional*, defaults to `False`):
            Show the trainer's tqdm bar.
        fused_loss (`bool`, *optional*, defaults to `False`):
            Use TRL's own loss path (a fused LM-head kernel that also logs `entropy` and `mean_token_accuracy`)
            instead of the model's plain cross-entropy, which is 1.4-1.9x faster per step on CPU for these models.
        **sft_kwargs:
            Further [`~trl.SFTConfig`] fields; they override the values above.

    Returns:
        [`~transformers.PreTrainedModel`]: The trained `model` in eval mode, with its own `forward` (TRL's patched
        forward is removed, so the model can be copied and trained again). Its attribute `sft_log_history` holds the
        trainer's `log_history` (losses and the final `train_runtime`).
    """
    missing = {"prompt", "completion"} - set(train_dataset.column_names)
    if missing:
        raise ValueError(f"`train_dataset` needs `prompt` and `completion` columns; missing {sorted(missing)}.")
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token; set one (e.g. `<|pad|>`) before SFT.")
    extra = [c for c in train_dataset.column_names if c not in ("prompt", "completion")]
    if extra:
        # `references` is a list column that the SFT collator would not know what to do with.
        train_dataset = train_dataset.remove_columns(extra)

    config_kwargs = {
        "max_steps": steps,
        "learning_rate": lr,
        "per_device_train_batch_size": batch_size,
        "gradient_accumulation_steps": 1,
        "lr_scheduler_type": lr_scheduler_type,
        "warmup_steps": round(warmup_ratio * steps),
        "weight_decay": weight_decay,
        "max_length": max_length,
        "completion_only_loss": True,
        "seed": seed,
        "data_seed": seed,
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": logging_steps,
        "disable_tqdm": not progress_bar,
        "dataloader_pin_memory": False,
        "dataset_num_proc": None,
        "log_level": "warning",
    }
    config_kwargs.update(sft_kwargs)

    import datasets

    # TRL's dataset preparation runs four `Dataset.map` passes, each with its own progress bar.
    bars_were_disabled = datasets.are_progress_bars_disabled()
    if not progress_bar:
        datasets.disable_progress_bars()
    # TRL's SFTTrainer replaces `model.forward` by a closure over the *bound* original forward (its fused LM head,
    # trl/trainer/utils.py). The patch outlives training, and a `copy.deepcopy` of the model keeps calling the
    # original object's forward: the copy's own weights get no gradient and never change. Undo it afterwards.
    patched_forward = model.__dict__.get("forward")
    try:
        trainer, elapsed = _train(model, tokenizer, train_dataset, output_dir, config_kwargs, callbacks, fused_loss)
    finally:
        if not bars_were_disabled:
            datasets.enable_progress_bars()
        if patched_forward is None:
            model.__dict__.pop("forward", None)
        else:
            model.forward = patched_forward
    model = trainer.model
    model.eval()
    model.sft_log_history = list(trainer.state.log_history)
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    last = f", last logged loss {losses[-1]:.3f}" if losses else ""
    logger.info(f"SFT: {steps} steps x {batch_size} examples in {elapsed:.1f} s{last}")
    return model


def _train(model, tokenizer, train_dataset, output_dir, config_kwargs, callbacks, fused_loss):
    from trl import SFTConfig, SFTTrainer

    with tempfile.TemporaryDirectory(prefix="promptkd-sft-") as tmp:
        args = SFTConfig(output_dir=str(output_dir) if output_dir is not None else tmp, **config_kwargs)
        trainer_cls = SFTTrainer if fused_loss else _plain_loss_trainer_cls()
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=train_dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
        )
        start = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - start
    return trainer, elapsed
