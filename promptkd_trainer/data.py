# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Dataset checks, tokenization and collation for [`PromptKDTrainer`].

Every dataset is tokenized and checked when the trainer is built, so that a bad dataset fails before any compute is
spent: empty datasets, missing columns, prompts that leave no room for a completion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging


logger = logging.get_logger(__name__)

ACCEPTED_FORMATS = (
    "`messages` (a conversation whose last turn is the assistant's answer), "
    "`prompt` + `completion` (strings, or conversational lists of messages), "
    "or `prompt` alone (prompt-only, for on-policy training with lmbda=1.0)"
)


def _eos_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    return {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()


def _cut_after_eos(ids: list[int], eos_id: int | None) -> list[int]:
    """Keep a completion up to and including its first EOS; append one when it has none.

    Chat templates often emit text after the end-of-turn token (e.g. a newline); those tokens are never sampled by
    the student, so they are not trained on either.
    """
    if eos_id is None:
        return ids
    if eos_id in ids:
        return ids[: ids.index(eos_id) + 1]
    return ids + [eos_id]


def tokenize_example(example: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """Turn one row into `prompt_ids` and `completion_ids` (empty for prompt-only rows)."""
    eos = tokenizer.eos_token_id
    if "messages" in example:
        messages = example["messages"]
        if not isinstance(messages, list) or not messages or messages[-1].get("role") != "assistant":
            raise ValueError(
                "Each `messages` row must be a non-empty list of {'role', 'content'} dicts ending with the assistant's "
                f"answer; got {messages!r:.200}."
            )
        prompt, completion = messages[:-1], messages[-1:]
    else:
        prompt, completion = example["prompt"], example.get("completion")

    if isinstance(prompt, list):  # conversational
        if tokenizer.chat_template is None:
            raise ValueError(
                "The dataset is conversational but the tokenizer has no chat template. Set "
                "`tokenizer.chat_template` or pass `chat_template_path` in the config."
            )
        prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        completion_ids: list[int] = []
        if completion:
            full_text = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
            if not full_text.startswith(prompt_text):
                raise ValueError(
                    "The chat template renders the prompt differently with and without the answer, so the completion "
                    "cannot be located. Use a `prompt`/`completion` dataset instead."
                )
            completion_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
            completion_ids = _cut_after_eos(completion_ids, eos)
    else:
        if not isinstance(prompt, str):
            raise ValueError(f"`prompt` must be a string or a list of messages, got {type(prompt).__name__}.")
        prompt_ids = tokenizer(prompt)["input_ids"]
        completion_ids = []
        if completion:
            completion_ids = _cut_after_eos(tokenizer(completion, add_special_tokens=False)["input_ids"], eos)
    return {"prompt_ids": prompt_ids, "completion_ids": completion_ids}


def prepare_dataset(
    dataset: Dataset | IterableDataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None,
    name: str = "train",
    num_proc: int | None = None,
) -> Dataset | IterableDataset:
    """Tokenize and check a dataset for [`PromptKDTrainer`].

    Raises:
        `ValueError`: the dataset is empty, has none of the accepted layouts, or holds prompts that leave no room for
        a completion within `max_length`.
    """
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise ValueError(f"The {name} dataset is empty: pass a dataset with at least one example.")
    columns = set(dataset.column_names or [])
    if {"prompt_ids", "completion_ids"} <= columns:
        return dataset  # already prepared by this module
    if "messages" not in columns and "prompt" not in columns:
        raise ValueError(
            f"The {name} dataset has columns {sorted(columns)}, but PromptKD needs one of: {ACCEPTED_FORMATS}. "
            "Dolly/Alpaca/MiniLLM layouts can be converted with `promptkd_trainer.formats.to_prompt_completion`."
        )
    kwargs = {"remove_columns": list(columns)}
    if isinstance(dataset, Dataset):
        kwargs.update(num_proc=num_proc, desc=f"Tokenizing {name} dataset")
    dataset = dataset.map(tokenize_example, fn_kwargs={"tokenizer": tokenizer}, **kwargs)

    if isinstance(dataset, Dataset):
        prompt_lengths = [len(ids) for ids in dataset["prompt_ids"]]
        empty = [i for i, n in enumerate(prompt_lengths) if n == 0]
        if empty:
            raise ValueError(f"{len(empty)} prompts of the {name} dataset are empty (first at index {empty[0]}).")
        if max_length is not None:
            too_long = [i for i, n in enumerate(prompt_lengths) if n >= max_length]
            if too_long:
                i = too_long[0]
                raise ValueError(
                    f"{len(too_long)} prompts of the {name} dataset have at least max_length={max_length} tokens "
                    f"(first: index {i}, {prompt_lengths[i]} tokens), leaving no room for a completion. Raise "
                    "`max_length`, or drop them first, e.g. `dataset.filter(lambda x: len(tokenizer(x['prompt'])"
                    f"['input_ids']) < {max_length})` (the official code drops prompts over 256 tokens)."
                )
    return dataset


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if not r:
            continue
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, sl] = torch.tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def pack_sequences(
    prompts: list[list[int]] | list[torch.Tensor],
    completions: list[list[int]] | list[torch.Tensor],
    pad_id: int,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad `prompt + completion` sequences; labels are the completion tokens, -100 elsewhere.

    Right padding keeps every real token at the same position in the student (0..L-1) and in the prompted teacher
    (n..n+L-1), as the official code does (shared/research/paper.md §5.2).
    """
    rows, label_rows = [], []
    for p, c in zip(prompts, completions):
        p = p.tolist() if torch.is_tensor(p) else list(p)
        c = c.tolist() if torch.is_tensor(c) else list(c)
        if max_length is not None:
            c = c[: max(max_length - len(p), 0)]
        rows.append(p + c)
        label_rows.append([-100] * len(p) + c)
    input_ids, attention_mask = _pad(rows, pad_id, left=False)
    labels = torch.full_like(input_ids, -100)
    for i, r in enumerate(label_rows):
        labels[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@dataclass
class PromptKDDataCollator:
    """Collate tokenized rows into left-padded prompts (for generation) and right-padded ground-truth sequences.

    Batch keys: `prompts`, `prompt_attention_mask` (left-padded, as generation needs), and `input_ids`,
    `attention_mask`, `labels` (right-padded prompt + dataset completion, used on off-policy steps and in evaluation).
    """

    pad_token_id: int
    max_length: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [ex["prompt_ids"] for ex in examples]
        prompt_ids, prompt_mask = _pad(prompts, self.pad_token_id, left=True)
        batch = pack_sequences(prompts, [ex["completion_ids"] for ex in examples], self.pad_token_id, self.max_length)
        batch["prompts"] = prompt_ids
        batch["prompt_attention_mask"] = prompt_mask
        return batch
