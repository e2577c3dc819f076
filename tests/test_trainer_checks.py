# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Inputs that used to train on garbage or crash obscurely (non-finite losses, a teacher with another tokenizer or
no LM head, prompts longer than the models' positions, rows or windows without completion tokens, prompt-only eval
sets, a missing teacher folder): each is refused with a clear error, or fitted with a warning, before any step is
applied."""

import json
import math
import shutil

import pytest
import torch
from conftest import load, make_prompt_completion_dataset
from datasets import Dataset
from test_trainer import config, fake_generation, make_trainer, snapshot
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from promptkd_trainer import PromptKDTrainer
from promptkd_trainer.sampling import count_completion_tokens


def build(tiny_dir, tmp_path, teacher, dataset=None, **kwargs):
    return PromptKDTrainer(
        model=load(tiny_dir, "gpt2-student"), teacher_model=teacher, args=config(tmp_path, **kwargs),
        train_dataset=dataset if dataset is not None else make_prompt_completion_dataset(8),
        processing_class=AutoTokenizer.from_pretrained(tiny_dir / "gpt2-student"),
    )


# ------------------------------------------------------------------------------------------- 15: non-finite loss


def test_nan_teacher_stops_at_the_first_step_and_saves_nothing(tiny_dir, tmp_path):
    """Before: logged loss 0.0, exit 0, and an all-NaN student and prompt saved."""
    teacher = load(tiny_dir, "gpt2-teacher")
    with torch.no_grad():
        teacher.transformer.h[0].mlp.c_fc.weight.fill_(float("nan"))
    trainer = build(tiny_dir, tmp_path, teacher, max_steps=3, save_strategy="steps", save_steps=1)
    student0, prompt0, _ = snapshot(trainer)
    with pytest.raises(FloatingPointError, match="Non-finite loss at optimizer step 1 .*loss/prompt=nan"):
        trainer.train()
    student, prompt, _ = snapshot(trainer)
    assert torch.equal(prompt, prompt0)
    assert all(torch.equal(student[n], student0[n]) for n in student)
    assert not list((tmp_path / "out").glob("checkpoint-*"))


@pytest.mark.parametrize("order", ["paper", "joint"])
def test_nan_student_loss_stops_before_the_student_steps(tiny_dir, tmp_path, order):
    trainer = fake_generation(make_trainer(tiny_dir, tmp_path, update_order=order, max_steps=2))
    with torch.no_grad():
        trainer.model.lm_head.weight[5].fill_(float("nan"))  # sampling is faked: the NaN shows in the losses
    with pytest.raises(FloatingPointError, match="Non-finite loss at optimizer step 1"):
        trainer.train()
    assert trainer.state.global_step == 0


# ------------------------------------------------------------------------------ 16: tokenizer and causal checks


def test_teacher_with_another_tokenizer_of_the_same_size_is_refused(tiny_dir, tmp_path):
    other = tmp_path / "teacher-other-tokenizer"
    shutil.copytree(tiny_dir / "gpt2-teacher", other)
    spec = json.loads((other / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = [t for t, i in vocab.items() if i in (100, 101)]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, two ids swapped
    (other / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="teacher's tokenizer .* differs .* 2 of its 400 tokens have another id"):
        build(tiny_dir, tmp_path, str(other))


def test_teacher_with_the_same_tokenizer_passes(tiny_dir, tmp_path):
    build(tiny_dir, tmp_path, str(tiny_dir / "gpt2-teacher"))


def test_bert_folder_as_teacher_is_refused(tiny_dir, tmp_path, tokenizer):
    """Before: loaded as a non-causal BertLMHeadModel and trained without a word."""
    from transformers import BertConfig, BertLMHeadModel

    bert_dir = tmp_path / "bert"
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id)
    BertLMHeadModel(cfg).save_pretrained(bert_dir)
    with pytest.raises(ValueError, match=r"teacher \(BertLMHeadModel\) is not causal"):
        build(tiny_dir, tmp_path, str(bert_dir))


# ----------------------------------------------------------------------------------------- 17: position limits


def long_prompt_dataset(n=4, words=240):
    base = "the cat sat on mat ran fast slow red blue green big small tree house".split()
    prompt = " ".join(base[i % len(base)] for i in range(words))
    return Dataset.from_list([{"prompt": prompt, "completion": " the mat"} for _ in range(n)])


@pytest.mark.parametrize("max_length", [256, 300, None])
def test_max_length_is_fitted_to_the_positions(tiny_dir, tmp_path, max_length):
    """Before: max_length = the models' 256 positions crashed in the prompted teacher (7 more positions), above it
    or None in generation, with a bare IndexError. Now it is lowered to 256 - 7, with a warning that says so."""
    hf_logging.enable_propagation()
    trainer = build(
        tiny_dir, tmp_path, load(tiny_dir, "gpt2-teacher"), dataset=long_prompt_dataset(), max_length=max_length,
        max_new_tokens=16, per_device_train_batch_size=2, max_steps=1,
    )
    assert trainer.args.max_length == 249 and trainer.data_collator.max_length == 249
    trainer.generation_config.min_new_tokens = 16  # reach the cap
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss/student"])


def test_prompts_are_checked_against_the_fitted_max_length(tiny_dir, tmp_path):
    """Before: prompts were checked against the configured max_length (None: not at all) only; a prompt longer than the
    fitted 249 was cut to no completion and the first step failed with "off-policy rows without a completion"."""
    with pytest.raises(ValueError, match=r"4 rows of the train dataset have a prompt .* at least max_length=249"):
        build(tiny_dir, tmp_path, load(tiny_dir, "gpt2-teacher"), dataset=long_prompt_dataset(words=252),
              max_length=None)


def test_max_length_that_fits_is_kept(tiny_dir, tmp_path):
    trainer = build(tiny_dir, tmp_path, load(tiny_dir, "gpt2-teacher"), max_length=249)
    assert trainer.args.max_length == 249


# ---------------------------------------------------------------------------------- 19: rows without completion


def partly_empty(n, empty_rows):
    rows = make_prompt_completion_dataset(n).to_list()
    for i in empty_rows:
        rows[i]["completion"] = ""
    return Dataset.from_list(rows)


def test_off_policy_rows_without_completion_are_refused(tiny_dir, tmp_path):
    """Before: off-policy steps on such rows logged loss 0 and still moved the student and the prompt."""
    match = r"1 of the 70 rows of the train dataset have an empty completion \(rows 66\)"
    with pytest.raises(ValueError, match=match):
        build(tiny_dir, tmp_path, load(tiny_dir, "gpt2-teacher"), dataset=partly_empty(70, [66]), lmbda=0.0)


def test_prompt_only_eval_set_is_measured_on_samples_or_refused(tiny_dir, tmp_path):
    """Before: `eval_loss` 0.0. Now measured on student samples by default, refused with `eval_on_policy=False`."""
    evals = Dataset.from_list([{"prompt": r["prompt"]} for r in make_prompt_completion_dataset(4).to_list()])

    def build(**kwargs):
        return PromptKDTrainer(
            model=load(tiny_dir, "gpt2-student"), teacher_model=load(tiny_dir, "gpt2-teacher"),
            args=config(tmp_path, per_device_eval_batch_size=2, max_new_tokens=4, **kwargs),
            train_dataset=make_prompt_completion_dataset(4), eval_dataset=evals,
            processing_class=AutoTokenizer.from_pretrained(tiny_dir / "gpt2-student"),
        )

    assert build().evaluate()["eval_loss"] > 0
    with pytest.raises(ValueError, match="eval dataset is prompt-only.*eval_loss"):
        build(eval_on_policy=False)


def test_a_window_without_completion_tokens_is_refused():
    """The last guard (e.g. streamed rows, which cannot be checked up front): no step on a window with no token."""
    from accelerate import Accelerator

    labels = torch.full((2, 5), -100)
    with pytest.raises(ValueError, match="no completion token to train on"):
        count_completion_tokens([{"labels": labels}], Accelerator(cpu=True))
    labels[0, 3] = 7
    local, num_items = count_completion_tokens([{"labels": labels}], Accelerator(cpu=True))
    assert int(local) == 1 and float(num_items) == 1.0


# -------------------------------------------------------------------------------------- 20: missing teacher path


def test_missing_teacher_path_says_no_such_folder(tiny_dir, tmp_path):
    """Before: 'Repo id must be in the form ...' from huggingface_hub."""
    with pytest.raises(OSError, match="no such local folder"):
        build(tiny_dir, tmp_path, str(tmp_path / "does" / "not" / "exist"))
