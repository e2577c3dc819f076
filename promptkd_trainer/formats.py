# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Dataset adapters: turn Dolly, Alpaca and MiniLLM-processed rows into the layouts [`PromptKDTrainer`] accepts.

The trainer takes `messages` (conversational), `prompt` + `completion` (strings or conversational), or a prompt-only
`prompt` column. Instruction datasets are rendered through the Alpaca template that MiniLLM and the official PromptKD
code use (`tools/process_data_dolly.py`), so that a model trained here sees the same prompts as the MiniLLM evaluation
files (`dolly/valid.jsonl`, `self-inst/valid.jsonl`, ...), whose `prompt` field is exactly this template.

Example:

```python
>>> from promptkd_trainer.formats import load_dataset_any, to_prompt_completion
>>> ds = load_dataset_any("databricks/databricks-dolly-15k")  # or a local .jsonl / .json / .parquet file
>>> ds = to_prompt_completion(ds)  # columns: prompt, completion
```
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, IterableDataset
from datasets.exceptions import DatasetGenerationError
from transformers.utils import logging

from .files import find_bad_jsonl_line


logger = logging.get_logger(__name__)

ALPACA_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_TEMPLATE_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
    "response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)

FORMATS = ("messages", "prompt_completion", "prompt_only", "dolly", "minillm", "alpaca")

ACCEPTED_LAYOUTS = (
    "`messages` (conversational); `prompt` + `completion` (TRL prompt-completion); `prompt` alone (prompt-only); "
    "`prompt` + `output` (MiniLLM-processed, e.g. dolly/valid.jsonl); `instruction` + `response` [+ `context`] "
    "(Dolly, databricks-dolly-15k); `instruction` + `output` [+ `input`] (Alpaca)"
)

_DATA_EXTENSIONS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def alpaca_prompt(instruction: str, input: str | None = None) -> str:
    """Render an instruction (and optional input) with the MiniLLM/PromptKD Alpaca template.

    An empty or missing `input` selects [`ALPACA_TEMPLATE`] (MiniLLM tests `len(line["input"]) == 0`), any other
    value [`ALPACA_TEMPLATE_WITH_INPUT`].
    """
    if input is None or len(input) == 0:
        return ALPACA_TEMPLATE.format(instruction=instruction)
    return ALPACA_TEMPLATE_WITH_INPUT.format(instruction=instruction, input=input)


def detect_format(column_names: Iterable[str]) -> str:
    """Name the layout of a dataset from its column names.

    Args:
        column_names (`Iterable[str]`):
            The dataset's columns, e.g. `dataset.column_names`.

    Returns:
        `str`: one of `"messages"`, `"prompt_completion"`, `"minillm"`, `"dolly"`, `"alpaca"`, `"prompt_only"`,
        checked in that order (a MiniLLM-processed file also holds `instruction`/`input`/`output`, but its prebuilt
        `prompt` wins).

    Raises:
        `ValueError`: no accepted layout matches; the message lists them.
    """
    cols = set(column_names or [])
    if "messages" in cols:
        return "messages"
    if {"prompt", "completion"} <= cols:
        return "prompt_completion"
    if {"prompt", "output"} <= cols:
        return "minillm"
    if {"instruction", "response"} <= cols:
        return "dolly"
    if {"instruction", "output"} <= cols:
        return "alpaca"
    if "prompt" in cols:
        return "prompt_only"
    raise ValueError(f"Unrecognised dataset layout with columns {sorted(cols)}. Accepted layouts: {ACCEPTED_LAYOUTS}.")


def _references(output: Any) -> list[str]:
    if output is None:
        return []
    if isinstance(output, str):
        return [output]
    return [str(o) for o in output]


def _first_reference(output: Any) -> str:
    refs = _references(output)
    return refs[0] if refs else ""


def _convert_row(row: dict[str, Any], fmt: str, keep_references: bool) -> dict[str, Any]:
    if fmt == "dolly":
        prompt = alpaca_prompt(row["instruction"], row.get("context"))
        output = row["response"]
    elif fmt == "alpaca":
        prompt = alpaca_prompt(row["instruction"], row.get("input"))
        output = row["output"]
    elif fmt == "minillm":
        prompt = row["prompt"]
        output = row["output"]
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(fmt)
    out = {"prompt": prompt, "completion": _first_reference(output)}
    if keep_references:
        out["references"] = _references(output)
    return out


def to_prompt_completion(
    dataset: Dataset | IterableDataset,
    format: str = "auto",
    keep_references: bool = False,
    num_proc: int | None = None,
) -> Dataset | IterableDataset:
    """Convert a dataset to the trainer's `prompt`/`completion` layout.

    Dolly (`instruction`/`context`/`response`) and Alpaca (`instruction`/`input`/`output`) rows are rendered with the
    MiniLLM Alpaca template ([`alpaca_prompt`]); MiniLLM-processed rows (`prompt`/`output`) keep their prebuilt prompt.
    A list-valued `output` (S-NI has up to 20 references) gives its first reference as the completion. The
    completion carries no EOS: the trainer appends it. `messages`, `prompt`/`completion` and prompt-only datasets are
    already accepted by the trainer and are returned unchanged.

    Args:
        dataset (`Dataset` or `IterableDataset`):
            The rows to convert. A `DatasetDict` is rejected: pick a split first.
        format (`str`, *optional*, defaults to `"auto"`):
            One of `"auto"` (use [`detect_format`]), `"messages"`, `"prompt_completion"`, `"prompt_only"`, `"dolly"`,
            `"minillm"`, `"alpaca"`.
        keep_references (`bool`, *optional*, defaults to `False`):
            Also write a `references` column (`list[str]`, every reference) for evaluation.
        num_proc (`int`, *optional*):
            Processes for `Dataset.map`.

    Returns:
        `Dataset` or `IterableDataset` with columns `prompt` and `completion` (plus `references` if asked); the
        original columns are removed.
    """
    if isinstance(dataset, (DatasetDict, datasets.IterableDatasetDict)):
        raise ValueError(
            f"Got a {type(dataset).__name__} with splits {list(dataset.keys())}; pass one split, e.g. "
            "dataset['train']."
        )
    columns = dataset.column_names
    if columns is None:  # an IterableDataset with unresolved features (e.g. from_generator)
        first = next(iter(dataset), None)
        if first is None:
            raise ValueError("The dataset is empty: it has no rows to convert.")
        columns = list(first.keys())
    fmt = detect_format(columns) if format == "auto" else format
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {format!r}; expected 'auto' or one of {FORMATS}.")
    if fmt in ("messages", "prompt_completion", "prompt_only"):
        return dataset
    required = {
        "dolly": ("instruction", "response"),
        "alpaca": ("instruction", "output"),
        "minillm": ("prompt", "output"),
    }
    missing = [c for c in required[fmt] if c not in columns]
    if missing:
        raise ValueError(f"format={fmt!r} needs columns {required[fmt]}, but {missing} are missing from {columns}.")
    logger.info(f"Converting a {fmt!r} dataset to prompt/completion with the MiniLLM Alpaca template.")
    kwargs: dict[str, Any] = {"remove_columns": list(columns)}
    if isinstance(dataset, Dataset):
        kwargs.update(num_proc=num_proc, desc=f"Converting {fmt} to prompt/completion")
    return dataset.map(_convert_row, fn_kwargs={"fmt": fmt, "keep_references": keep_references}, **kwargs)


def builder_for(path: str) -> str | None:
    """The `datasets` builder (`"json"`, `"csv"` or `"parquet"`) that reads a data file, from its extension;
    `None` for a file that is not a dataset."""
    name = path.lower()
    for ext in (".jsonl.gz", ".json.gz"):
        if name.endswith(ext):
            return "json"
    return _DATA_EXTENSIONS.get(os.path.splitext(name)[1])


def _files_in_dir(directory: str, split: str) -> tuple[str, list[str]]:
    files = sorted(
        os.path.join(directory, f)
        for f in os.listdir(directory)
        if os.path.isfile(os.path.join(directory, f)) and builder_for(f) is not None
    )
    if not files:
        raise ValueError(
            f"No data file (.jsonl, .json, .parquet, .csv) in directory {directory!r}. Pass a file, a directory "
            "holding data files, a directory saved with `Dataset.save_to_disk`, or a Hub dataset id."
        )
    named = [f for f in files if os.path.basename(f).split(".")[0] == split]
    if named:
        files = named
    elif len(files) > 1:
        raise ValueError(
            f"Directory {directory!r} holds several data files {[os.path.basename(f) for f in files]} and none is "
            f"named after split {split!r}; pass one file, or the split whose file to load (e.g. split='valid')."
        )
    builders = {builder_for(f) for f in files}
    if len(builders) > 1:
        raise ValueError(f"Directory {directory!r} mixes data file types: {[os.path.basename(f) for f in files]}.")
    return builders.pop(), files


def _load_local(builder: str, files: str | list[str], where: str, **kwargs) -> Dataset | IterableDataset:
    try:
        return datasets.load_dataset(builder, data_files=files, split="train", **kwargs)
    except StopIteration:  # `datasets` infers the features from the first rows and has none to read
        raise ValueError(f"{where} holds no rows (empty data file); pass a file with at least one row.") from None
    except (DatasetGenerationError, ValueError) as err:
        # `datasets` says only "An error occurred while generating the dataset" (the file and row go to its log);
        # datasets 4.x raises its JSON parser's bare ValueError while inferring the features instead.
        if builder == "json":
            for path in [files] if isinstance(files, str) else files:
                if path.lower().endswith(".jsonl") and (bad := find_bad_jsonl_line(path)) is not None:
                    raise bad from err
        if not isinstance(err, DatasetGenerationError):
            raise
        raise ValueError(f"{where} could not be read: {err.__cause__ or err}. Fix the file.") from err


def load_dataset_any(path_or_id: str | os.PathLike, split: str = "train", **kwargs) -> Dataset | IterableDataset:
    """Load a dataset from a local file, a local directory, or the Hugging Face Hub.

    - A local `.jsonl`/`.json`(`.gz`)/`.parquet`/`.csv` file is read with `datasets.load_dataset("json"|"parquet"|
      "csv", data_files=...)`; `split` is ignored.
    - A directory saved with `Dataset.save_to_disk` is read with `datasets.load_from_disk`.
    - Any other directory: its data file named after `split` (e.g. `valid.jsonl` for `split="valid"`), or its only
      data file.
    - Anything else is a Hub id: `datasets.load_dataset(path_or_id, split=split, **kwargs)`.

    Args:
        path_or_id (`str` or `os.PathLike`):
            A path or a Hub dataset id such as `"databricks/databricks-dolly-15k"`.
        split (`str`, *optional*, defaults to `"train"`):
            The split of a Hub dataset or a saved `DatasetDict`, or the file stem to pick in a directory.
        **kwargs:
            Passed to `datasets.load_dataset` (e.g. `name=` for a Hub config, `streaming=True`).

    Returns:
        `datasets.Dataset` (`datasets.IterableDataset` with `streaming=True`).

    Raises:
        `FileNotFoundError`: a path that does not exist. `ValueError`: an unsupported or empty data file.
    """
    path = os.path.expanduser(os.fspath(path_or_id))
    if os.path.isfile(path):
        builder = builder_for(path)
        if builder is None:
            raise ValueError(f"Unsupported data file {path!r}: expected .jsonl, .json, .parquet or .csv.")
        return _load_local(builder, path, f"Data file {path!r}", **kwargs)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "dataset_info.json")) or os.path.exists(
            os.path.join(path, "dataset_dict.json")
        ):
            loaded = datasets.load_from_disk(path)
            return loaded[split] if isinstance(loaded, DatasetDict) else loaded
        builder, files = _files_in_dir(path, split)
        return _load_local(builder, files, f"Directory {path!r}", **kwargs)
    if path.endswith(tuple(_DATA_EXTENSIONS)) or path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"No such file or directory: {path!r}.")
    return datasets.load_dataset(path, split=split, **kwargs)
