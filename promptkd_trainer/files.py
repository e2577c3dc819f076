# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Reading and writing the package's files: readers that name a damaged file, and writes that stay in `output_dir`.

Every JSON, JSON Lines and safetensors file that the package reads from a checkpoint or a dataset goes through
[`read_json`], [`read_jsonl`] or [`read_safetensors`] / [`safetensors_shapes`]: a truncated or malformed file raises
[`DamagedFileError`] with the file's path (and, for JSON Lines, the line number) and what to do, instead of a bare
`JSONDecodeError` or `SafetensorError`. [`check_checkpoint_files`] reads the headers of the files that the Trainer
itself loads on resume (weights, optimizer states, RNG states, `trainer_state.json`) before it does.

[`check_writes_inside`] refuses a symbolic link under `output_dir` that resolves outside it before anything is
written: saving through it would overwrite a file elsewhere (a planted `README.md` link) or send a checkpoint into
another folder.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open


if TYPE_CHECKING:
    import torch


CHECKPOINT_DAMAGED = "this checkpoint is damaged; resume from the previous one"

# Files of a checkpoint that torch.save writes (zip archives): optimizer and scheduler states, RNG states, weights.
_TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class DamagedFileError(ValueError):
    """A file the package reads is truncated or malformed; the message names the file and says what to do."""


def _damaged(path: str | os.PathLike, problem: str, advice: str) -> DamagedFileError:
    return DamagedFileError(f"{os.fspath(path)} is damaged ({problem}): {advice}.")


def read_json(path: str | os.PathLike, advice: str = CHECKPOINT_DAMAGED, keys: tuple[str, ...] = ()) -> Any:
    """Parse a JSON file; [`DamagedFileError`] names it when it is not valid JSON or lacks one of `keys`.

    Args:
        path (`str` or `os.PathLike`): the file.
        advice (`str`, defaults to [`CHECKPOINT_DAMAGED`]): what the error tells the user to do.
        keys (`tuple[str, ...]`): keys the top-level object must have.
    """
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _damaged(path, f"not valid JSON: {err}", advice) from err
    missing = [k for k in keys if not isinstance(value, dict) or k not in value]
    if missing:
        raise _damaged(path, f"no {', '.join(repr(k) for k in missing)} entry", advice)
    return value


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield `(line number, row)` for each non-empty line of a JSON Lines file (numbered from 1).

    Raises:
        `DamagedFileError`: a line is not a JSON object; the message names the file and the line.
    """
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DamagedFileError(
                    f"{os.fspath(path)}, line {number}, is not valid JSON ({err}): fix or remove that line."
                ) from err
            if not isinstance(row, dict):
                raise DamagedFileError(
                    f"{os.fspath(path)}, line {number}, is a JSON {type(row).__name__}, not an object with named "
                    "fields: fix or remove that line."
                )
            yield number, row


def find_bad_jsonl_line(path: str | os.PathLike) -> DamagedFileError | None:
    """The [`DamagedFileError`] for the first malformed line of a JSON Lines file, or `None` when all lines parse
    (for a caller whose own reader failed without naming the line, e.g. `datasets`' JSON builder)."""
    try:
        for _ in read_jsonl(path):
            pass
    except DamagedFileError as err:
        return err
    return None


def safetensors_shapes(path: str | os.PathLike, advice: str = CHECKPOINT_DAMAGED) -> dict[str, list[int]]:
    """The tensor shapes recorded in a safetensors file's header (the data is not read).

    `safe_open` checks that the file holds every byte the header points to, so a truncated or empty file fails here.

    Raises:
        `DamagedFileError`: the header is unreadable or the file is shorter than the header says.
    """
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            return {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
    except SafetensorError as err:
        raise _damaged(path, f"unreadable safetensors file: {err}", advice) from err


def read_safetensors(path: str | os.PathLike, device: str = "cpu",
                     advice: str = CHECKPOINT_DAMAGED) -> dict[str, torch.Tensor]:
    """`safetensors.torch.load_file(path, device)`, naming the file when it is damaged."""
    from safetensors.torch import load_file  # imports torch: not needed by the other readers

    try:
        return load_file(os.fspath(path), device=device)
    except SafetensorError as err:
        raise _damaged(path, f"unreadable safetensors file: {err}", advice) from err


def check_torch_archive(path: str | os.PathLike, advice: str = CHECKPOINT_DAMAGED) -> None:
    """Check that a `torch.save` file is a complete zip archive (its directory, at the end of the file, is read; the
    tensors are not), so that a truncated optimizer or RNG state fails with the file's name."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise _damaged(path, f"not a complete torch.save archive: {err}", advice) from err


def check_checkpoint_files(checkpoint: str | os.PathLike) -> None:
    """Read the header of every JSON, safetensors and torch file under `checkpoint`, before the Trainer loads them.

    Raises:
        `DamagedFileError`: a file is truncated or malformed; the message names it and says to resume from the previous
        checkpoint.
    """
    for folder, _, names in os.walk(checkpoint):
        for name in sorted(names):
            path = os.path.join(folder, name)
            if name.endswith(".json"):
                read_json(path)
            elif name.endswith(".safetensors"):
                safetensors_shapes(path)
            elif name.endswith(_TORCH_SUFFIXES):
                check_torch_archive(path)


# ---------------------------------------------------------------------------------------------- writes


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_writes_inside(output_dir: str | os.PathLike, target: str | os.PathLike, recursive: bool = True) -> None:
    """Refuse to write `target` when a symbolic link would send the write outside `output_dir`.

    Checked: every existing component of the path from `output_dir` down to `target`, and, when `target` is an
    existing folder, what is in it: everything under it (`recursive=True`), or only the entries that are not folders
    (`recursive=False`: the files a save writes at its top level, e.g. `README.md`). A file saved over a link is
    written where the link points. `output_dir` itself may be a link: it is where the user chose to write. Links that
    stay inside `output_dir` are accepted.

    Raises:
        `ValueError`: a link resolves outside `output_dir`; the message names it and says to remove it.
    """
    root = os.path.realpath(output_dir)
    base = os.path.abspath(output_dir)
    target = os.path.abspath(target)
    if not _inside(target, base):
        raise ValueError(f"Refusing to write {target}: it is not inside output_dir={base}.")
    candidates = []
    path = base
    for part in os.path.relpath(target, base).split(os.sep):
        if part in ("", "."):
            continue
        path = os.path.join(path, part)
        candidates.append(path)
    if os.path.isdir(target) and not os.path.islink(target):
        if recursive:
            for folder, dirs, names in os.walk(target):
                candidates.extend(os.path.join(folder, n) for n in dirs + names)
        else:
            entries = (os.path.join(target, n) for n in os.listdir(target))
            candidates.extend(e for e in entries if not os.path.isdir(e))
    for path in candidates:
        if os.path.islink(path) and not _inside(os.path.realpath(path), root):
            raise ValueError(
                f"Refusing to write {path}: it is a symbolic link to {os.path.realpath(path)}, outside "
                f"output_dir={base}, so saving would write there. Remove the link (or use another output_dir)."
            )
