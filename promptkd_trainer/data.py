# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Dataset checks and tokenization for [`PromptKDTrainer`] (collation: `promptkd_trainer.collation`).

Every dataset is tokenized and checked when the trainer is built, so that a bad dataset fails before any compute is
spent: empty datasets, missing columns, prompts that leave no room for a completion (a streamed `IterableDataset` is
checked row by row as it is read), and, through [`check_completions`], rows without a completion where one is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow.compute as pc
from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging


logger = logging.get_logger(__name__)

ACCEPTED_FORMATS = (
    "`messages` (a conversation whose last turn is the assistant's answer), "
    "`prompt` + `completion` (strings, or conversational lists of messages), "
    "or `prompt` alone (prompt-only, for on-policy training with lmbda=1.0)"
)


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


def _text_content(message: dict[str, Any]) -> str:
    """A message's content as text: a string, or a list of parts that are all text (the multimodal message layout,
    `[{"type": "text", "text": ...}]`), joined as chat templates that accept parts render them."""
    content = message.get("content")
    role = message.get("role")
    if isinstance(content, str):
        return content
    if content is None:
        raise ValueError(
            f"the {role} message has no content (`content` is None); give every message its text (the assistant's "
            "answer, or drop the assistant turn and use a prompt-only `prompt` column for on-policy training)."
        )
    if isinstance(content, list):
        other = [p.get("type") if isinstance(p, dict) else type(p).__name__ for p in content
                 if not (isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str))]
        if other:
            raise ValueError(
                f"the {role} message's content has non-text parts ({', '.join(map(str, other))}); PromptKD trains "
                "text-only language models: give text content (a string, or only {'type': 'text', 'text': ...} "
                "parts)."
            )
        return "".join(part["text"] for part in content)
    raise ValueError(f"the {role} message's content is a {type(content).__name__}, not a string or a list of parts.")


def _text_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**message, "content": _text_content(message)} for message in messages]


def tokenize_example(
    example: dict[str, Any], tokenizer: PreTrainedTokenizerBase, chat_template_kwargs: dict[str, Any] | None = None
) -> dict[str, list[int]]:
    """Turn one row into `prompt_ids` and `completion_ids` (empty for prompt-only rows); `chat_template_kwargs` go to
    `apply_chat_template` for conversational rows (e.g. `{"enable_thinking": False}`).

    A message's `content` is a string, or a list of text parts (`[{"type": "text", "text": ...}]`), taken as their
    concatenated text; `None` content and non-text parts (images, ...) are refused.
    """
    eos = tokenizer.eos_token_id
    template_kwargs = chat_template_kwargs or {}
    if "messages" in example:
        messages = example["messages"]
        if not isinstance(messages, list) or not messages or messages[-1].get("role") != "assistant":
            raise ValueError(
                "Each `messages` row must be a non-empty list of {'role', 'content'} dicts ending with the "
                f"assistant's answer; got {messages!r:.200}."
            )
        prompt, completion = messages[:-1], messages[-1:]
    else:
        prompt, completion = example["prompt"], example.get("completion")

    if isinstance(prompt, list):  # conversational
        prompt = _text_messages(prompt)
        completion = _text_messages(completion) if isinstance(completion, list) else completion
        if tokenizer.chat_template is None:
            raise ValueError(
                "The dataset is conversational but the tokenizer has no chat template. Set "
                "`tokenizer.chat_template` or pass `chat_template_path` in the config."
            )
        prompt_text = tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True, **template_kwargs
        )
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        completion_ids: list[int] = []
        if completion:
            full_text = tokenizer.apply_chat_template(prompt + completion, tokenize=False, **template_kwargs)
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


def _column_names(dataset: Dataset | IterableDataset, name: str) -> list[str]:
    """The dataset's columns; those of its first row for an `IterableDataset` without features (`from_generator`)."""
    if dataset.column_names is not None:
        return list(dataset.column_names)
    return list(_first_row(dataset, name).keys())


def _first_row(dataset: Dataset | IterableDataset, name: str) -> dict[str, Any]:
    try:
        return next(iter(dataset))
    except StopIteration:
        raise ValueError(f"The {name} dataset is empty: pass a dataset with at least one example.") from None


def _format_row(example: dict[str, Any], formatting_func: Callable[[dict], str | dict]) -> dict[str, Any]:
    out = formatting_func(example)
    if isinstance(out, str):
        # The text is the prompt the student continues; a string completion of the raw row is kept as the reference
        # (off-policy steps, eval loss). The caller drops every other column.
        completion = example.get("completion")
        return {"prompt": out, "completion": completion if isinstance(completion, str) else ""}
    if isinstance(out, dict):
        return out
    raise TypeError(
        "`formatting_func` must return a string (the prompt, as SFTTrainer's returns the text) or a dict with "
        f"`prompt`/`completion` or `messages`, got {type(out).__name__}."
    )


def apply_formatting_func(
    dataset: Dataset | IterableDataset,
    formatting_func: Callable[[dict], str | dict],
    name: str = "train",
    num_proc: int | None = None,
) -> Dataset | IterableDataset:
    """Apply a `formatting_func` to every row, as `SFTTrainer` does before tokenization.

    As in `SFTTrainer`, the function takes one raw row and returns text. Here that text is the *prompt* that the
    student continues on-policy (PromptKD trains on sampled completions, not on the text itself). A string
    `completion` column of the raw row is kept as the dataset completion; every other column is dropped. The
    function may instead return a dict (`prompt`/`completion` or `messages`), which is merged into the row.

    Args:
        dataset (`Dataset` or `IterableDataset`):
            Raw rows.
        formatting_func (`Callable[[dict], str | dict]`):
            Maps one row to its prompt text (or to a dict).
        name (`str`, *optional*, defaults to `"train"`):
            Name of the dataset in messages.
        num_proc (`int`, *optional*):
            Processes for `Dataset.map`.

    Returns:
        The mapped dataset.
    """
    columns = _column_names(dataset, name)
    returns_text = isinstance(formatting_func(_first_row(dataset, name)), str)
    kwargs: dict[str, Any] = {"fn_kwargs": {"formatting_func": formatting_func}}
    if returns_text:
        kwargs["remove_columns"] = columns
    if isinstance(dataset, Dataset):
        kwargs.update(num_proc=num_proc, desc=f"Applying formatting function to {name} dataset")
    return dataset.map(_format_row, **kwargs)


def _too_long_message(count: str, name: str, where: str, max_length: int, advice: str | None = None) -> str:
    drop = (
        f"drop such prompts first, e.g. `dataset.filter(lambda x: len(tokenizer(x['prompt'])['input_ids']) < "
        f"{max_length})` (the official code drops prompts over 256 tokens)"
    )
    return (
        f"{count} of the {name} dataset {where}, at least max_length={max_length} tokens: no room is left for a "
        f"completion (it would train on 0 tokens). {advice or 'Raise `max_length`, or'} {drop}."
    )


def _tokenize(
    example: dict[str, Any], index: int, tokenizer: PreTrainedTokenizerBase, keep_prompt: bool, name: str = "train",
    chat_template_kwargs=None,
) -> dict[str, Any]:
    try:
        row: dict[str, Any] = tokenize_example(example, tokenizer, chat_template_kwargs)
    except ValueError as err:
        raise ValueError(f"Row {index} of the {name} dataset: {err}") from None
    if keep_prompt:  # e.g. for TRL's LogCompletionsCallback, which reads the eval set's `prompt` column
        row["prompt"] = example["messages"][:-1] if "messages" in example else example["prompt"]
    return row


def _checked_tokenize(
    example, index, tokenizer, keep_prompt: bool, max_length: int | None, name: str, chat_template_kwargs=None
) -> dict:
    """[`tokenize_example`] plus the prompt checks, row by row: a streamed dataset cannot be scanned up front."""
    row = _tokenize(example, index, tokenizer, keep_prompt, name, chat_template_kwargs)
    return _check_row(row, index, max_length, name)


def _check_row(row: dict, index: int, max_length: int | None, name: str, advice: str | None = None) -> dict:
    n = len(row["prompt_ids"])
    if n == 0:
        raise ValueError(f"Row {index} of the {name} dataset has an empty prompt.")
    if max_length is not None and n >= max_length:
        raise ValueError(_too_long_message(f"Row {index}", name, f"has a prompt of {n} tokens", max_length, advice))
    return row


def prepare_dataset(
    dataset: Dataset | IterableDataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None,
    name: str = "train",
    num_proc: int | None = None,
    formatting_func: Callable[[dict], str | dict] | None = None,
    keep_prompt: bool = False,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> Dataset | IterableDataset:
    """Tokenize and check a dataset for [`PromptKDTrainer`].

    Args:
        dataset (`Dataset` or `IterableDataset`):
            `messages`, `prompt`/`completion` or prompt-only `prompt` rows, or rows already tokenized by this function
            (`prompt_ids`/`completion_ids`, returned unchanged).
        tokenizer (`PreTrainedTokenizerBase`):
            The tokenizer shared by student and teacher.
        max_length (`int`, *optional*):
            Maximum prompt + completion length; a prompt of `max_length` tokens or more is an error.
        name (`str`, *optional*, defaults to `"train"`):
            Name of the dataset in error messages.
        num_proc (`int`, *optional*):
            Processes for `Dataset.map` (not used for an `IterableDataset`).
        formatting_func (`Callable`, *optional*):
            Applied to every raw row first, see [`apply_formatting_func`]: returns the prompt text (as SFTTrainer's
            returns the text), or a dict.
        keep_prompt (`bool`, *optional*, defaults to `False`):
            Also keep a `prompt` column (the prompt text, or the conversation before the answer for `messages`
            rows), as TRL's `LogCompletionsCallback` reads from the eval set. The collator ignores it.
        chat_template_kwargs (`dict`, *optional*):
            Keyword arguments of `apply_chat_template` for conversational rows.

    Returns:
        The dataset with columns `prompt_ids` and `completion_ids` (empty for prompt-only rows), and `prompt` with
        `keep_prompt`. A `Dataset` is
        checked here, every row; an `IterableDataset` is checked row by row as it is read, and the first offending
        row raises.

    Raises:
        `ValueError`: the dataset is empty, has none of the accepted layouts, or holds empty prompts or prompts that
        leave no room for a completion within `max_length`.
    """
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise ValueError(f"The {name} dataset is empty: pass a dataset with at least one example.")
    columns = _column_names(dataset, name)
    if {"prompt_ids", "completion_ids"} <= set(columns):
        if formatting_func is not None:
            logger.warning(f"The {name} dataset is already tokenized (`prompt_ids`); `formatting_func` is ignored.")
        return dataset  # already prepared by this module
    if formatting_func is not None:
        dataset = apply_formatting_func(dataset, formatting_func, name, num_proc)
        columns = _column_names(dataset, name)
    if "messages" not in columns and "prompt" not in columns:
        raise ValueError(
            f"The {name} dataset has columns {sorted(columns)}, but PromptKD needs one of: {ACCEPTED_FORMATS}. "
            "Dolly/Alpaca/MiniLLM layouts can be converted with `promptkd_trainer.formats.to_prompt_completion`; "
            "any other layout with a `formatting_func` that returns the prompt text."
        )
    if isinstance(dataset, IterableDataset):
        return dataset.map(
            _checked_tokenize,
            with_indices=True,
            fn_kwargs={
                "tokenizer": tokenizer, "keep_prompt": keep_prompt, "max_length": max_length, "name": name,
                "chat_template_kwargs": chat_template_kwargs,
            },
            remove_columns=columns,
        )
    dataset = dataset.map(
        _tokenize,
        with_indices=True,
        fn_kwargs={"tokenizer": tokenizer, "keep_prompt": keep_prompt, "name": name,
                   "chat_template_kwargs": chat_template_kwargs},
        remove_columns=columns,
        num_proc=num_proc, desc=f"Tokenizing {name} dataset",
    )
    check_prompt_lengths(dataset, max_length, name)
    return dataset


def check_prompt_lengths(dataset: Dataset | IterableDataset, max_length: int | None, name: str = "train",
                         advice: str | None = None) -> None:
    """Raise if a prompt of a prepared `Dataset` is empty or leaves no room for a completion within `max_length`
    (every row is read; an `IterableDataset` is checked row by row as it is read, not here). `advice` replaces the
    message's "Raise `max_length`" when that cannot help."""
    if not isinstance(dataset, Dataset):
        return
    prompt_lengths = _lengths(dataset, "prompt_ids")
    empty = [i for i, n in enumerate(prompt_lengths) if n == 0]
    if empty:
        raise ValueError(f"{len(empty)} prompts of the {name} dataset are empty (first at index {empty[0]}).")
    if max_length is not None:
        too_long = [i for i, n in enumerate(prompt_lengths) if n >= max_length]
        if too_long:
            i = too_long[0]
            where = f"have a prompt (first: index {i}, {prompt_lengths[i]} tokens)"
            raise ValueError(_too_long_message(f"{len(too_long)} rows", name, where, max_length, advice))


def _lengths(dataset: Dataset, column: str) -> list[int]:
    """Lengths of a list column over every row, read from Arrow without decoding the lists."""
    table = dataset.with_format("arrow")[:]  # honours `select`/`shuffle` indices, unlike `dataset.data`
    return pc.list_value_length(table.column(column)).to_pylist()


def empty_completion_rows(dataset: Dataset) -> list[int]:
    """Indices of the rows of a prepared dataset whose completion has no token; every row is read.

    Args:
        dataset (`Dataset`):
            A dataset returned by [`prepare_dataset`].

    Returns:
        `list[int]`: the row indices, in order; empty when every row has a completion.
    """
    return [i for i, n in enumerate(_lengths(dataset, "completion_ids")) if not n]


def check_completions(dataset: Dataset | IterableDataset, name: str, reason: str) -> None:
    """Raise if a row of a prepared dataset has no completion while completions are needed (`reason` says why).

    Every row is read (of a `Dataset`; an `IterableDataset` cannot be scanned before training and is not checked).
    Without completion tokens a row adds nothing to the loss: a training step on it still moves the models (AdamW
    momentum), and in evaluation it dilutes `eval_loss` (measured on completions, a prompt-only set would be 0.0).

    Args:
        dataset (`Dataset` or `IterableDataset`):
            A dataset returned by [`prepare_dataset`].
        name (`str`):
            Name of the dataset in the message, e.g. `"train"` or `"eval"`.
        reason (`str`):
            Why completions are needed, e.g. `"lmbda < 1 asks for off-policy steps on the dataset's completions"`.

    Raises:
        `ValueError`: naming how many rows are empty and the first ten indices.
    """
    if not isinstance(dataset, Dataset):
        return
    empty = empty_completion_rows(dataset)
    if not empty:
        return
    if len(empty) == len(dataset):
        what = f"The {name} dataset is prompt-only (none of its {len(dataset)} rows has a completion)"
    else:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        what = f"{len(empty)} of the {len(dataset)} rows of the {name} dataset have an empty completion (rows {shown})"
    raise ValueError(
        f"{what}, but {reason}. Add completions, or drop those rows first, e.g. "
        "`dataset.filter(lambda x: len(x['completion']) > 0)`."
    )

def prepare_tokenizer(model, processing_class: PreTrainedTokenizerBase | None, args) -> PreTrainedTokenizerBase:
    """The tokenizer shared by student and teacher: `processing_class`, or the student's own; EOS pads when there is
    no pad token (as the official code does; completions are cut at their first EOS, so it is safe)."""
    if processing_class is None:
        from transformers import AutoTokenizer

        name = model if isinstance(model, str) else model.config._name_or_path
        processing_class = AutoTokenizer.from_pretrained(name, trust_remote_code=args.trust_remote_code)
    if not isinstance(processing_class, PreTrainedTokenizerBase):
        raise TypeError("`processing_class` must be a tokenizer (PreTrainedTokenizerBase).")
    if processing_class.eos_token_id is None:
        raise ValueError(
            "The tokenizer has no EOS token; PromptKD needs one to end sampled completions. Set "
            "`tokenizer.eos_token` (or `eos_token` in the config)."
        )
    if processing_class.pad_token_id is None:
        logger.warning("The tokenizer has no pad token; using its EOS token for padding, as PromptKD does.")
        processing_class.pad_token = processing_class.eos_token
    return processing_class


def prepare_datasets(train_dataset, eval_dataset, tokenizer: PreTrainedTokenizerBase, args, formatting_func=None):
    """Tokenize and check the train and eval datasets of [`PromptKDTrainer`] before any model is built.

    `formatting_func` applies to both (as in `SFTTrainer`). Eval sets keep their `prompt` column (TRL's
    `LogCompletionsCallback` reads it). `eval_loss` is the student term on the eval set's completions or on student
    samples (`args.eval_on_policy`): with `False`, every eval row needs a completion; with `None`, a set is either
    prompt-only (student samples) or has a completion in every row. A streamed set is checked as its batches are read
    (`PromptKDTrainer.prediction_step`). Every train row needs a completion when off-policy steps read them (`lmbda`
    < 1 without `seq_kd`).

    Returns:
        `(train_dataset, eval_dataset)`, prepared by [`prepare_dataset`].
    """
    if train_dataset is None:
        raise ValueError("`train_dataset` is required.")

    def prepare(dataset, name, keep_prompt):
        return prepare_dataset(
            dataset, tokenizer, args.max_length, name, num_proc=args.dataset_num_proc,
            formatting_func=formatting_func, keep_prompt=keep_prompt,
            chat_template_kwargs=getattr(args, "chat_template_kwargs", None),
        )

    train_dataset = prepare(train_dataset, "train", keep_prompt=False)
    if args.lmbda < 1.0 and not args.seq_kd:
        check_completions(train_dataset, "train", "`lmbda` < 1 asks for off-policy steps on the dataset's completions")
    return train_dataset, prepare_eval_datasets(eval_dataset, tokenizer, args, formatting_func)


def prepare_eval_datasets(eval_dataset, tokenizer: PreTrainedTokenizerBase, args, formatting_func=None):
    """The eval part of [`prepare_datasets`]: one dataset, a dict of them (`DatasetDict` too) or `None`; also used for
    a dataset passed to `PromptKDTrainer.evaluate`."""
    eval_sets = dict(eval_dataset) if isinstance(eval_dataset, dict) else {None: eval_dataset}
    for key, dataset in eval_sets.items():
        if dataset is not None:
            name = "eval" if key is None else f"eval[{key}]"
            eval_sets[key] = prepare_dataset(
                dataset, tokenizer, args.max_length, name, num_proc=args.dataset_num_proc,
                formatting_func=formatting_func, keep_prompt=True,
                chat_template_kwargs=getattr(args, "chat_template_kwargs", None),
            )
            check_eval_completions(eval_sets[key], name, getattr(args, "eval_on_policy", None))
    return eval_sets if isinstance(eval_dataset, dict) else eval_sets[None]


def eval_completions_reason(eval_on_policy: bool | None) -> str:
    """Why an eval set needs a completion in every row (the message of [`check_eval_completions`] and the trainer)."""
    if eval_on_policy is False:
        return "`eval_on_policy=False` measures `eval_loss` on the eval set's completions"
    return (
        "`eval_loss` is measured on the eval set's completions when its rows have them and on student samples when "
        "it is prompt-only, never on a mixture (`eval_on_policy=None`); set `eval_on_policy=True` to measure it on "
        "student samples for every row"
    )


def check_eval_completions(dataset: Dataset | IterableDataset, name: str, eval_on_policy: bool | None) -> None:
    """Raise if a prepared eval `Dataset` cannot be measured as `eval_on_policy` asks (see `PromptKDConfig`).

    `True`: anything goes (every row gets a student sample). `False`: every row needs a completion. `None`: a
    prompt-only set (student samples) or a completion in every row. A streamed set is checked batch by batch by the
    trainer, with the same rule and [`eval_completions_reason`].
    """
    if eval_on_policy is True or not isinstance(dataset, Dataset):
        return
    if eval_on_policy is None and len(empty_completion_rows(dataset)) == len(dataset):
        return  # prompt-only: eval_loss on student samples, as DistillationTrainer measures it
    check_completions(dataset, name, eval_completions_reason(eval_on_policy))


def recheck_prompt_lengths(train_dataset, eval_dataset, max_length: int | None, advice: str | None = None):
    """Check every dataset's prompts again, for a `max_length` lowered to fit the models' positions (the datasets are
    prepared before the models are loaded, against the configured value).

    A `Dataset` is checked now ([`check_prompt_lengths`]); a streamed `IterableDataset` gets a second row-by-row check
    with the new value, as it is read. `advice` says what helps instead of raising `max_length`.

    Returns:
        `(train_dataset, eval_dataset)`, the streamed ones wrapped with the new check.
    """
    def recheck(dataset, name):
        if isinstance(dataset, IterableDataset):
            kwargs = {"max_length": max_length, "name": name, "advice": advice}
            return dataset.map(_check_row, with_indices=True, fn_kwargs=kwargs)
        check_prompt_lengths(dataset, max_length, name, advice)
        return dataset

    train_dataset = recheck(train_dataset, "train") if train_dataset is not None else None
    if isinstance(eval_dataset, dict):
        eval_dataset = {k: recheck(d, f"eval[{k}]") for k, d in eval_dataset.items()}
    elif eval_dataset is not None:
        eval_dataset = recheck(eval_dataset, "eval")
    return train_dataset, eval_dataset
