# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Pretraining and supervised fine-tuning of the demo's models, as real LMs are made, at CPU scale.

- [`pretraining_dataset`]: next-token prediction on a text corpus, documents joined with EOS and cut into blocks of
  equal length (the `group_texts` recipe of transformers' `run_clm.py` example), so that the model sees text at
  every position and after arbitrary preceding text;
- [`sft_dataset`]: prompt/completion rows, loss on the completion and its EOS only (what TRL's `SFTTrainer` does with
  `completion_only_loss`). PromptKD's teacher is an SFT model and its students start from SFT checkpoints (paper
  Section 4.1).

Both train with [`train_causal_lm`], a plain [`~transformers.Trainer`] on the model's own cross-entropy. TRL's
`SFTTrainer` computes its loss through a fused LM-head path that also logs entropy and token accuracy; with these
tiny models on a CPU that made each step 2-3x slower (teacher pretraining 0.43 vs 0.23 s per step, student 0.21 vs
0.07 s, measured on 2 cores), and the demo's time budget is what decides how well its models can be trained.
"""

from __future__ import annotations

import tempfile

from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging


logger = logging.get_logger(__name__)


def pretraining_dataset(tokenizer, texts: list[str], block_size: int):
    """Tokenize `texts`, join them with EOS and cut the stream into `[block_size]` rows of `input_ids`/`labels`."""
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]:
        stream += ids + [tokenizer.eos_token_id]
    blocks = [stream[i : i + block_size] for i in range(0, len(stream) - block_size + 1, block_size)]
    if not blocks:
        raise ValueError(f"The corpus has {len(stream)} tokens, fewer than one block of {block_size}.")
    return Dataset.from_dict({"input_ids": blocks, "labels": blocks})


def sft_dataset(tokenizer, prompts: list[str], completions: list[str], max_length: int = 256):
    """Rows of `prompt + completion + EOS` whose labels are -100 on the prompt (loss on the answer and its EOS)."""
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False, verbose=False)["input_ids"]
    answer_ids = tokenizer(list(completions), add_special_tokens=False, verbose=False)["input_ids"]
    rows = {"input_ids": [], "labels": []}
    for p, a in zip(prompt_ids, answer_ids):
        ids = (p + a + [tokenizer.eos_token_id])[:max_length]
        rows["input_ids"].append(ids)
        rows["labels"].append(([-100] * len(p) + a + [tokenizer.eos_token_id])[:max_length])
    return Dataset.from_dict(rows)


def train_causal_lm(
    model,
    tokenizer,
    dataset,
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    lr_scheduler_type: str = "cosine",
    warmup_steps: int | None = None,
    callbacks: list | None = None,
) -> list[dict]:
    """Train `model` in place on `input_ids`/`labels` rows (from [`pretraining_dataset`] or [`sft_dataset`]).

    Args:
        model ([`~transformers.PreTrainedModel`]):
            Causal LM, trained in place (fp32, CPU) and left in eval mode.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Its tokenizer (pads the batches; labels are padded with -100).
        dataset (`datasets.Dataset`):
            `input_ids` and `labels` columns.
        steps (`int`), learning_rate (`float`), batch_size (`int`), seed (`int`):
            Optimizer steps (the data is cycled as often as needed), peak learning rate, rows per step, seed.
        lr_scheduler_type (`str`, *optional*, defaults to `"cosine"`), warmup_steps (`int`, *optional*):
            Schedule; warm-up defaults to 5 % of `steps`.
        callbacks (`list[transformers.TrainerCallback]`, *optional*):
            E.g. a progress bar.

    Returns:
        `list[dict]`: The trainer's `log_history` (the loss every `steps // 20` steps).
    """
    with tempfile.TemporaryDirectory(prefix="promptkd-demo-") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            max_steps=steps,
            learning_rate=learning_rate,
            per_device_train_batch_size=batch_size,
            lr_scheduler_type=lr_scheduler_type,
            warmup_steps=round(0.05 * steps) if warmup_steps is None else warmup_steps,
            weight_decay=0.0,
            seed=seed,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_steps=max(1, steps // 20),
            disable_tqdm=True,
            dataloader_pin_memory=False,
        )
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)  # the demo shows progress bars, not per-step log dicts
        trainer.train()
    model.eval()
    return trainer.state.log_history
