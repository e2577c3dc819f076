# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Collation for [`PromptKDTrainer`]: rows of `prompt_ids` / `completion_ids` (as [`prepare_dataset`] returns them)
into batches of left-padded prompts, for generation, and right-padded prompt + completion sequences, for the losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from trl.trainer.utils import pad


BATCH_KEYS = ("prompts", "prompt_attention_mask", "input_ids", "attention_mask", "labels")


def check_collator(collator, dataset) -> None:
    """Refuse a data collator that cannot collate the prepared rows into the batches [`PromptKDTrainer`] reads.

    Raises:
        `ValueError`: GKD's `DataCollatorForChatML` (it reads raw `messages` and left-pads the training sequences,
        where the prompted teacher needs right padding), a collator that fails on a prepared row, or one whose batch
        misses one of `BATCH_KEYS`.
    """
    advice = (
        "PromptKDTrainer tokenizes the datasets itself (rows of `prompt_ids` and `completion_ids`). Pass no "
        "`data_collator` (PromptKDDataCollator is used), or one that takes such rows and returns "
        f"{', '.join(BATCH_KEYS)} with right-padded `input_ids`."
    )
    if type(collator).__name__ == "DataCollatorForChatML":
        raise ValueError(f"GKD's DataCollatorForChatML reads raw `messages` rows and left-pads them. {advice}")
    if isinstance(collator, PromptKDDataCollator) or not isinstance(dataset, Dataset):
        return
    try:
        batch = collator([dataset[0]])
    except Exception as err:
        raise ValueError(f"The data collator failed on a prepared row ({err!r}). {advice}") from err
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise ValueError(f"The data collator's batch has no {', '.join(missing)}. {advice}")


def right_pad_sequences(
    prompts: list[list[int]] | list[torch.Tensor],
    completions: list[list[int]] | list[torch.Tensor],
    pad_id: int,
    max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad `prompt + completion` sequences; labels are the completion tokens, -100 elsewhere.

    Right padding keeps every real token at the same position in the student (0..L-1) and in the prompted teacher
    (n..n+L-1), as the official code does (gmkim-ai/PromptKD @ 383182f, `data_utils/lm_datasets.py` right-pads the
    training sequences). `pad_to_multiple_of` rounds the padded width up (e.g. for kernels that want multiples of 8).
    """
    rows, label_rows = [], []
    for p, c in zip(prompts, completions):
        p = torch.as_tensor(p, dtype=torch.long).flatten()
        c = torch.as_tensor(c, dtype=torch.long).flatten()
        if max_length is not None:
            c = c[: max(max_length - len(p), 0)]
        rows.append(torch.cat([p, c]))
        label_rows.append(torch.cat([torch.full_like(p, -100), c]))
    kwargs = {"padding_side": "right", "pad_to_multiple_of": pad_to_multiple_of}
    return {
        "input_ids": pad(rows, padding_value=pad_id, **kwargs),
        "attention_mask": pad([torch.ones_like(r) for r in rows], padding_value=0, **kwargs),
        "labels": pad(label_rows, padding_value=-100, **kwargs),
    }


@dataclass
class PromptKDDataCollator:
    """Collate tokenized rows into left-padded prompts (for generation) and right-padded ground-truth sequences.

    Batch keys: `prompts`, `prompt_attention_mask` (left-padded, as generation needs), and `input_ids`,
    `attention_mask`, `labels` (right-padded prompt + dataset completion, used on off-policy steps and in evaluation).
    With `pad_to_multiple_of`, every width is rounded up to a multiple of it (`SFTConfig.pad_to_multiple_of`).
    """

    pad_token_id: int
    max_length: int | None = None
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [torch.as_tensor(ex["prompt_ids"], dtype=torch.long) for ex in examples]
        completions = [ex["completion_ids"] for ex in examples]
        multiple = self.pad_to_multiple_of
        batch = right_pad_sequences(
            prompts, completions, self.pad_token_id, self.max_length, pad_to_multiple_of=multiple
        )
        batch["prompts"] = pad(prompts, self.pad_token_id, padding_side="left", pad_to_multiple_of=multiple)
        masks = [torch.ones_like(p) for p in prompts]
        batch["prompt_attention_mask"] = pad(masks, 0, padding_side="left", pad_to_multiple_of=multiple)
        return batch
