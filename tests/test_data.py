# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`promptkd_trainer.data` and `.collation`: formatting functions, streamed datasets, completion checks over every
row, collation."""

import pytest
import torch
from datasets import Dataset, IterableDataset

from promptkd_trainer.collation import PromptKDDataCollator, right_pad_sequences
from promptkd_trainer.data import apply_formatting_func, check_completions, empty_completion_rows, prepare_dataset


RAW = [
    {"instruction": "add two three", "response": "five", "category": "qa"},
    {"instruction": "the cat sat on", "response": "the mat", "category": "qa"},
]


def template(row):
    return f"Question: {row['instruction']}\nAnswer:"


# ------------------------------------------------------------------------------------------------ formatting_func


def test_formatting_func_returning_text_gives_the_prompt(tokenizer):
    """As in SFTTrainer the function returns text; here it is the prompt the student continues."""
    out = prepare_dataset(Dataset.from_list(RAW), tokenizer, 64, formatting_func=template)
    assert out.column_names == ["prompt_ids", "completion_ids"]
    for row, raw in zip(out, RAW):
        assert row["prompt_ids"] == tokenizer(template(raw))["input_ids"]
        assert row["completion_ids"] == []  # the raw rows have no `completion` column


def test_formatting_func_text_keeps_a_string_completion(tokenizer):
    rows = [{"question": "add two three", "completion": " five"}]
    out = apply_formatting_func(Dataset.from_list(rows), lambda r: f"Q: {r['question']}\nA:")
    assert out.to_list() == [{"prompt": "Q: add two three\nA:", "completion": " five"}]
    tokenized = prepare_dataset(
        Dataset.from_list(rows), tokenizer, 64, formatting_func=lambda r: f"Q: {r['question']}"
    )
    eos = tokenizer.eos_token_id
    assert tokenized[0]["completion_ids"] == tokenizer(" five", add_special_tokens=False)["input_ids"] + [eos]


def test_formatting_func_returning_a_dict_still_works(tokenizer):
    func = lambda r: {"prompt": template(r), "completion": " " + r["response"]}  # noqa: E731
    out = prepare_dataset(Dataset.from_list(RAW), tokenizer, 64, formatting_func=func)
    assert out[1]["prompt_ids"] == tokenizer(template(RAW[1]))["input_ids"]
    assert out[1]["completion_ids"][:-1] == tokenizer(" the mat", add_special_tokens=False)["input_ids"]


def test_formatting_func_applies_to_streamed_rows(tokenizer):
    streamed = IterableDataset.from_generator(lambda: iter(RAW))
    rows = list(prepare_dataset(streamed, tokenizer, 64, formatting_func=template))
    assert [r["prompt_ids"] for r in rows] == [tokenizer(template(r))["input_ids"] for r in RAW]


def test_formatting_func_with_another_return_type_is_a_clear_error(tokenizer):
    with pytest.raises(TypeError, match="must return a string"):
        prepare_dataset(Dataset.from_list(RAW), tokenizer, 64, formatting_func=lambda r: [template(r)])


@pytest.mark.parametrize("streamed", [False, True])
def test_keep_prompt_keeps_the_prompt_for_trl_callbacks(tokenizer, streamed):
    """TRL's LogCompletionsCallback reads the eval set's `prompt` column; keep_prompt keeps it next to the ids."""
    rows = [
        {"messages": [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat"}]},
        {"messages": [{"role": "user", "content": "a dog"}, {"role": "assistant", "content": "ran"}]},
    ]
    ds = Dataset.from_list(rows)
    out = prepare_dataset(ds.to_iterable_dataset() if streamed else ds, tokenizer, 64, keep_prompt=True)
    out = list(out)
    assert [r["prompt"] for r in out] == [r["messages"][:-1] for r in rows]
    text_rows = Dataset.from_list([{"prompt": "the cat", "completion": " sat"}])
    plain = prepare_dataset(text_rows, tokenizer, 64)
    assert plain.column_names == ["prompt_ids", "completion_ids"]
    kept = prepare_dataset(text_rows, tokenizer, 64, keep_prompt=True)
    assert kept[0]["prompt"] == "the cat" and kept[0]["prompt_ids"] == plain[0]["prompt_ids"]


# ------------------------------------------------------------------------------------------------ IterableDataset


def long_prompt_rows():
    return [
        {"prompt": "the cat", "completion": " sat"},
        {"prompt": " ".join(["the cat sat on the mat"] * 20), "completion": " sat"},
    ]


def test_generator_dataset_columns_are_read_from_its_first_row(tokenizer):
    """`from_generator` leaves column_names None; the columns must come from the data, not read as []."""
    streamed = IterableDataset.from_generator(lambda: iter(long_prompt_rows()[:1]))
    assert streamed.column_names is None
    rows = list(prepare_dataset(streamed, tokenizer, 64))
    assert rows == [{
        "prompt_ids": tokenizer("the cat")["input_ids"],
        "completion_ids": tokenizer(" sat", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id],
    }]


def test_generator_dataset_with_unknown_layout_names_its_real_columns(tokenizer):
    streamed = IterableDataset.from_generator(lambda: iter([{"question": "a", "answer": "b"}]))
    with pytest.raises(ValueError, match=r"columns \['answer', 'question'\]"):
        prepare_dataset(streamed, tokenizer, 64)


@pytest.mark.parametrize("make", ["generator", "to_iterable"])
def test_streamed_over_long_prompt_raises_instead_of_training_on_nothing(tokenizer, make):
    rows = long_prompt_rows()
    streamed = (
        IterableDataset.from_generator(lambda: iter(rows)) if make == "generator"
        else Dataset.from_list(rows).to_iterable_dataset()
    )
    n_long = len(tokenizer(rows[1]["prompt"])["input_ids"])
    assert n_long >= 32
    prepared = prepare_dataset(streamed, tokenizer, 32)
    match = rf"Row 1 of the train dataset has a prompt of {n_long} tokens.*max_length=32"
    with pytest.raises(ValueError, match=match):
        list(prepared)
    assert len(list(prepare_dataset(streamed, tokenizer, n_long + 1))) == 2  # room left: accepted


def test_streamed_empty_prompt_raises(tokenizer):
    streamed = IterableDataset.from_generator(lambda: iter([{"prompt": "a"}, {"prompt": ""}]))
    with pytest.raises(ValueError, match="Row 1 of the eval dataset has an empty prompt"):
        list(prepare_dataset(streamed, tokenizer, 64, name="eval"))


def test_empty_generator_dataset_is_a_clear_error(tokenizer):
    streamed = IterableDataset.from_generator(lambda: iter([]))
    with pytest.raises(ValueError, match="dataset is empty"):
        prepare_dataset(streamed, tokenizer, 64)


# ------------------------------------------------------------------------------------------------ empty completions


def prepared(lengths):
    return Dataset.from_list([{"prompt_ids": [1, 2], "completion_ids": list(range(n))} for n in lengths])


def test_empty_completion_rows_reads_every_row():
    lengths = [3] * 100
    lengths[70] = lengths[99] = 0  # past the first 64 rows
    assert empty_completion_rows(prepared(lengths)) == [70, 99]
    message = r"2 of the 100 rows of the train dataset have an empty completion \(rows 70, 99\)"
    with pytest.raises(ValueError, match=message):
        check_completions(prepared(lengths), "train", "lmbda < 1 asks for off-policy steps")


def test_a_set_whose_first_64_rows_are_empty_is_not_called_prompt_only():
    lengths = [0] * 64 + [2] * 36
    with pytest.raises(ValueError, match=r"64 of the 100 rows .* \(rows 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\.\)"):
        check_completions(prepared(lengths), "train", "completions are needed")


def test_prompt_only_set_and_full_set():
    with pytest.raises(ValueError, match="The eval dataset is prompt-only .* but eval_loss needs them"):
        check_completions(prepared([0, 0, 0]), "eval", "eval_loss needs them")
    check_completions(prepared([1, 2, 3]), "train", "unused")  # nothing to report
    check_completions(prepared([0]).to_iterable_dataset(), "train", "unused")  # streamed: cannot be scanned


def test_empty_completion_rows_follow_select_and_shuffle():
    ds = prepared([0, 1, 0, 2, 3])
    assert empty_completion_rows(ds.select([4, 2, 3, 0])) == [1, 3]


# ------------------------------------------------------------------------------------------------ collation


def test_collator_pads_prompts_left_and_sequences_right():
    batch = PromptKDDataCollator(pad_token_id=9, max_length=5)(
        [{"prompt_ids": [1, 2, 3], "completion_ids": [4, 5, 6]}, {"prompt_ids": [7], "completion_ids": []}]
    )
    expected = {
        "input_ids": [[1, 2, 3, 4, 5], [7, 9, 9, 9, 9]],  # the completion is cut at max_length
        "attention_mask": [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]],
        "labels": [[-100, -100, -100, 4, 5], [-100, -100, -100, -100, -100]],
        "prompts": [[1, 2, 3], [9, 9, 7]],
        "prompt_attention_mask": [[1, 1, 1], [0, 0, 1]],
    }
    assert {k: v.tolist() for k, v in batch.items()} == expected
    assert all(v.dtype == torch.long for v in batch.values())


def test_right_pad_sequences_takes_tensors_or_lists():
    out = right_pad_sequences([torch.tensor([5, 6]), [7]], [torch.tensor([8]), []], pad_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 8], [7, 0, 0]]
    assert out["labels"].tolist() == [[-100, -100, 8], [-100, -100, -100]]
