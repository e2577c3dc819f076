# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Dataset adapters: layout detection, Alpaca rendering (checked against the real MiniLLM files), loading."""

import json

import datasets
import pytest
from conftest import SHARED_DATA
from datasets import Dataset, IterableDataset

from promptkd_trainer import formats
from promptkd_trainer.formats import (
    ALPACA_TEMPLATE,
    ALPACA_TEMPLATE_WITH_INPUT,
    alpaca_prompt,
    detect_format,
    load_dataset_any,
    to_prompt_completion,
)


MINILLM = SHARED_DATA / "minillm"
MINILLM_FILES = [
    "dolly/valid.jsonl",
    "dolly/dev.jsonl",
    "self-inst/valid.jsonl",
    "vicuna/valid.jsonl",
    "sinst/valid.jsonl",
    "uinst/valid.jsonl",
]


def test_templates_are_minillm_verbatim():
    assert ALPACA_TEMPLATE == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    )
    assert ALPACA_TEMPLATE_WITH_INPUT == (
        "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
        "response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n"
        "{input}\n\n### Response:\n"
    )
    assert alpaca_prompt("Do X.") == alpaca_prompt("Do X.", "") == alpaca_prompt("Do X.", None)
    assert "### Input:\nctx\n\n" in alpaca_prompt("Do X.", "ctx")


@pytest.mark.parametrize("rel", MINILLM_FILES)
def test_template_matches_every_real_minillm_prompt(rel):
    path = MINILLM / rel
    if not path.exists():
        pytest.skip(f"{path} is not present")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert rows
    for i, row in enumerate(rows):
        assert alpaca_prompt(row["instruction"], row.get("input")) == row["prompt"], f"{rel} row {i}"


@pytest.mark.parametrize(
    "columns, expected",
    [
        (["messages"], "messages"),
        (["messages", "prompt"], "messages"),
        (["prompt", "completion"], "prompt_completion"),
        (["prompt"], "prompt_only"),
        (["instruction", "input", "output", "prompt", "topic"], "minillm"),
        (["instruction", "output", "prompt", "category"], "minillm"),  # vicuna: no `input`
        (["instruction", "context", "response", "category"], "dolly"),
        (["instruction", "input", "output"], "alpaca"),
        (["instruction", "output"], "alpaca"),
    ],
)
def test_detect_format(columns, expected):
    assert detect_format(columns) == expected


def test_detect_format_error_lists_layouts():
    with pytest.raises(ValueError) as err:
        detect_format(["text", "label"])
    msg = str(err.value)
    for piece in ("['label', 'text']", "messages", "completion", "instruction", "response", "output"):
        assert piece in msg


def test_dolly_rows():
    ds = Dataset.from_list(
        [
            {"instruction": "Name a cat.", "context": "", "response": "Tom.", "category": "open_qa"},
            {
                "instruction": "Summarize.", "context": "Cats sit.", "response": "They sit.",
                "category": "summarization",
            },
        ]
    )
    out = to_prompt_completion(ds)
    assert out.column_names == ["prompt", "completion"]
    assert out[0] == {"prompt": ALPACA_TEMPLATE.format(instruction="Name a cat."), "completion": "Tom."}
    assert out[1]["prompt"] == ALPACA_TEMPLATE_WITH_INPUT.format(instruction="Summarize.", input="Cats sit.")
    assert out[1]["completion"] == "They sit."  # no EOS: the trainer appends it


def test_alpaca_rows_and_missing_input_column():
    ds = Dataset.from_list([{"instruction": "Add 2 and 3.", "output": "5"}])
    out = to_prompt_completion(ds, format="alpaca")
    assert out[0] == {"prompt": ALPACA_TEMPLATE.format(instruction="Add 2 and 3."), "completion": "5"}
    ds = Dataset.from_list([{"instruction": "Add.", "input": "2 and 3", "output": "5"}])
    assert to_prompt_completion(ds)[0]["prompt"].endswith("### Input:\n2 and 3\n\n### Response:\n")


def test_minillm_rows_with_reference_lists():
    prompt = ALPACA_TEMPLATE.format(instruction="Title?")
    ds = Dataset.from_list(
        [
            {"instruction": "Title?", "input": "", "prompt": prompt, "output": ["First title", "Second title"]},
            {"instruction": "Title?", "input": "", "prompt": prompt, "output": ["Only"]},
        ]
    )
    out = to_prompt_completion(ds)
    assert out.column_names == ["prompt", "completion"]
    assert out[0] == {"prompt": prompt, "completion": "First title"}
    with_refs = to_prompt_completion(ds, keep_references=True)
    assert with_refs[0]["references"] == ["First title", "Second title"]
    assert with_refs[1]["references"] == ["Only"]


def test_trainer_layouts_pass_through_unchanged():
    for rows in (
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}],
        [{"prompt": "p", "completion": "c", "extra": 1}],
        [{"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "yo"}]}],
        [{"prompt": "only a prompt"}],
    ):
        ds = Dataset.from_list(rows)
        assert to_prompt_completion(ds) is ds


def test_bad_format_arguments():
    ds = Dataset.from_list([{"instruction": "x", "output": "y"}])
    with pytest.raises(ValueError, match="Unknown format"):
        to_prompt_completion(ds, format="sharegpt")
    with pytest.raises(ValueError, match="missing"):
        to_prompt_completion(ds, format="dolly")
    with pytest.raises(ValueError, match="one split"):
        to_prompt_completion(datasets.DatasetDict({"train": ds}))


def test_iterable_dataset():
    def gen():
        yield {"instruction": "a", "context": "", "response": "b"}

    out = to_prompt_completion(IterableDataset.from_generator(gen))
    assert list(out) == [{"prompt": ALPACA_TEMPLATE.format(instruction="a"), "completion": "b"}]


def test_load_dataset_any_local_files(tmp_path):
    rows = [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": "d", "output": "e"}]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "data.json").write_text(json.dumps(rows))
    Dataset.from_list(rows).to_parquet(str(tmp_path / "rows.parquet"))
    for name in ("train.jsonl", "data.json", "rows.parquet"):
        ds = load_dataset_any(tmp_path / name)
        assert isinstance(ds, Dataset) and ds.to_list() == rows
    # a directory: the file named after the split wins
    assert load_dataset_any(tmp_path, split="train").to_list() == rows
    with pytest.raises(ValueError, match="several data files"):
        load_dataset_any(tmp_path, split="test")
    single = tmp_path / "single"
    single.mkdir()
    (single / "whatever.jsonl").write_text(jsonl.read_text())
    assert len(load_dataset_any(single, split="test")) == 2
    saved = tmp_path / "saved"
    Dataset.from_list(rows).save_to_disk(str(saved))
    assert load_dataset_any(saved).to_list() == rows
    with pytest.raises(FileNotFoundError):
        load_dataset_any(tmp_path / "missing.jsonl")


def test_empty_data_file_is_a_clear_error(tmp_path):
    """`datasets` raises a bare StopIteration on an empty .jsonl: name the file instead."""
    empty = tmp_path / "train.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"train\.jsonl.*holds no rows"):
        load_dataset_any(empty)
    with pytest.raises(ValueError, match="holds no rows"):
        load_dataset_any(tmp_path, split="train")


def test_empty_generator_dataset_is_a_clear_error():
    def gen():
        yield from ()

    with pytest.raises(ValueError, match="empty"):
        to_prompt_completion(IterableDataset.from_generator(gen))


def test_load_dataset_any_hub_id_goes_to_datasets(monkeypatch):
    calls = []
    monkeypatch.setattr(formats.datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or "loaded")
    assert load_dataset_any("databricks/databricks-dolly-15k", split="train") == "loaded"
    assert calls == [(("databricks/databricks-dolly-15k",), {"split": "train"})]


def test_real_sinst_file_end_to_end():
    directory = MINILLM / "sinst"
    if not (directory / "valid.jsonl").exists():
        pytest.skip("../shared/data/minillm is not present")
    raw = load_dataset_any(directory, split="valid")
    assert len(raw) == 1694 and detect_format(raw.column_names) == "minillm"
    out = to_prompt_completion(raw, keep_references=True)
    assert out[0]["prompt"] == raw[0]["prompt"]
    assert out[0]["completion"] == raw[0]["output"][0]
    assert max(len(r) for r in out["references"]) == 20
