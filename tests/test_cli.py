# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The `promptkd` command: sub-command listing, `promptkd train` end to end on tiny local models, its errors, and
`promptkd eval` on the real MiniLLM sets (CPU, offline).

The commands run in-process (`promptkd_trainer.cli.main`, and `python -m promptkd_trainer` through runpy): a fresh
interpreter spends most of its time importing torch/transformers/trl, which the test session has already done.
"""

import json
import random
import runpy
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA, WORDS

from promptkd_trainer import cli


def words(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def write_minillm_jsonl(path: Path, n: int, seed: int = 0) -> Path:
    """MiniLLM-processed rows (`prompt` + `output`, the layout of dolly/valid.jsonl), with short prompts."""
    rng = random.Random(seed)
    rows = [{"prompt": f"Question: {words(rng, 2, 6)}\nAnswer:", "output": f" {words(rng, 1, 4)}"} for _ in range(n)]
    rows[-1]["output"] = [" the cat", " a dog"]  # S-NI style: several references, the first one is trained on
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def train_flags(tiny_dir, tmp_path, family="gpt2"):
    return [
        "--model_name_or_path", str(tiny_dir / f"{family}-student"),
        "--teacher_model_name_or_path", str(tiny_dir / f"{family}-teacher"),
        "--output_dir", str(tmp_path / "out"),
        "--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--disable_tqdm", "true",
        "--dataloader_pin_memory", "false",
    ]


# ------------------------------------------------------------------------------------------------ sub-commands


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "train", "eval"):
        assert command in out


def test_python_m_promptkd_trainer_is_the_cli(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["promptkd", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("promptkd_trainer", run_name="__main__")
    assert exit_info.value.code == 0
    assert "{demo,train,eval}" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["fit"]])
def test_missing_or_unknown_subcommand_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "usage: promptkd" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ promptkd train


def test_train_end_to_end_minillm_jsonl(tiny_dir, tmp_path):
    data = write_minillm_jsonl(tmp_path / "train.jsonl", 5)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[0]["prompt"] = "Question: " + " ".join(["the cat sat on the mat"] * 40) + "\nAnswer:"  # dropped below
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dev = write_minillm_jsonl(tmp_path / "dev.jsonl", 2, seed=1)

    code = cli.main(
        [
            "train", *train_flags(tiny_dir, tmp_path),
            "--dataset_name", str(data), "--dataset_format", "minillm", "--max_prompt_length", "64",
            "--eval_dataset_name", str(dev), "--eval_rouge_examples", "2",
            "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps", "--save_steps", "1",
            "--max_steps", "1", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2",
            "--max_length", "64", "--max_new_tokens", "4", "--num_virtual_tokens", "3", "--logging_steps", "1",
        ]
    )
    assert code == 0

    out = tmp_path / "out"
    checkpoint = out / "checkpoint-1"
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (out / name).is_file() and (checkpoint / name).is_file()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (out / "teacher_prompt" / name).is_file() and (checkpoint / "teacher_prompt" / name).is_file()
    for name in ("optimizer.pt", "scheduler.pt", "prompt_optimizer.pt", "prompt_scheduler.pt", "trainer_state.json"):
        assert (checkpoint / name).is_file(), name
    adapter = json.loads((out / "teacher_prompt" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "PROMPT_TUNING" and adapter["num_virtual_tokens"] == 3

    state = json.loads((checkpoint / "trainer_state.json").read_text())
    # The long prompt was dropped by --max_prompt_length: 4 rows at batch 2 make an epoch of 2 steps.
    assert state["log_history"][0]["epoch"] == pytest.approx(0.5)
    assert any("eval_rougeL" in entry for entry in state["log_history"])


def test_train_without_teacher_is_a_clear_error(tiny_dir, tmp_path, capsys):
    data = write_minillm_jsonl(tmp_path / "train.jsonl", 2)
    flags = train_flags(tiny_dir, tmp_path)
    i = flags.index("--teacher_model_name_or_path")
    del flags[i : i + 2]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *flags, "--dataset_name", str(data)])
    assert exit_info.value.code == 2
    assert "--teacher_model_name_or_path is required" in capsys.readouterr().err


def test_train_with_missing_teacher_directory_is_a_clear_error(tiny_dir, tmp_path, capsys):
    data = write_minillm_jsonl(tmp_path / "train.jsonl", 2)
    missing = tmp_path / "no-such-teacher"
    flags = train_flags(tiny_dir, tmp_path)
    flags[flags.index("--teacher_model_name_or_path") + 1] = str(missing)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *flags, "--dataset_name", str(data)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--teacher_model_name_or_path" in err and str(missing) in err and "no such file or directory" in err


def test_train_config_with_unknown_key_is_an_error(tiny_dir, tmp_path):
    data = write_minillm_jsonl(tmp_path / "train.jsonl", 2)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_dir / 'gpt2-student'}\nteacher_model_name_or_path: {tiny_dir / 'gpt2-teacher'}\n"
        f"dataset_name: {data}\nlearnig_rate: 1.0e-4\n"  # misspelt on purpose
    )
    with pytest.raises(ValueError, match="learnig_rate"):
        cli.main(["train", "--config", str(config), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"])


def write_split_dir(path: Path, sizes: dict[str, int]) -> Path:
    """A local dataset folder with one prompt/completion file per split (`train.jsonl`, `test.jsonl`, ...)."""
    path.mkdir()
    rng = random.Random(0)
    for split, n in sizes.items():
        rows = [
            {"prompt": f"Question: {words(rng, 2, 6)}\nAnswer:", "completion": f" {words(rng, 1, 3)}"}
            for _ in range(n)
        ]
        (path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_train_accepts_a_trl_gkd_yaml_with_a_lora_student(tiny_dir, tmp_path):
    """A YAML written for TRL's gkd.py (ScriptArguments + ModelConfig keys) trains a LoRA student."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    data = write_split_dir(tmp_path / "data", {"train": 6, "test": 2})
    out = tmp_path / "out"
    config = tmp_path / "gkd.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_dir / 'gpt2-student'}\n"
        f"teacher_model_name_or_path: {tiny_dir / 'gpt2-teacher'}\n"
        f"dataset_name: {data}\ndataset_train_split: train\ndataset_test_split: test\n"
        "dtype: float32\nattn_implementation: eager\n"
        "use_peft: true\nlora_r: 4\nlora_alpha: 8\nlora_target_modules: [c_attn, c_fc]\n"
        "learning_rate: 1.0e-2\nmax_steps: 2\nper_device_train_batch_size: 2\nper_device_eval_batch_size: 2\n"
        "eval_strategy: steps\neval_steps: 2\nmax_new_tokens: 4\nmax_length: 64\nnum_virtual_tokens: 3\n"
        f"use_cpu: true\nbf16: false\nreport_to: none\ndisable_tqdm: true\noutput_dir: {out}\n"
    )
    trainer = cli.run_train(["--config", str(config)])

    assert isinstance(trainer.model, PeftModel)
    lora = trainer.model.peft_config["default"]
    assert lora.r == 4 and lora.lora_alpha == 8 and set(lora.target_modules) == {"c_attn", "c_fc"}
    assert trainer.model.config._attn_implementation == "eager"
    assert trainer.model.get_base_model().dtype == torch.float32
    # dataset_test_split picked the folder's test.jsonl (2 rows) for evaluation.
    assert len(trainer.eval_dataset) == 2
    assert [h for h in trainer.state.log_history if "eval_loss" in h]

    # The adapter trained (LoRA B starts at zero) and the base weights did not move.
    adapter = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)
    base = load_file(tiny_dir / "gpt2-student" / "model.safetensors")
    trained = {k.removeprefix("base_model.model."): v for k, v in trainer.model.state_dict().items()}
    for name in ("transformer.h.0.attn.c_attn.base_layer.weight", "transformer.h.0.mlp.c_fc.base_layer.weight"):
        torch.testing.assert_close(trained[name], base[name.replace(".base_layer", "")], rtol=0, atol=0)
    assert (out / "teacher_prompt" / "adapter_model.safetensors").is_file()


def test_model_config_flags_reach_both_models():
    """ModelConfig's dtype / attn_implementation go to student and teacher; the config's own kwargs win."""
    parser = cli.make_train_parser()
    _, config, model_args, _ = parser.parse_args_and_config(
        [
            "--model_name_or_path", "s", "--teacher_model_name_or_path", "t", "--output_dir", "o", "--use_cpu", "true",
            "--dtype", "bfloat16", "--attn_implementation", "sdpa", "--model_revision", "v1",
            "--teacher_model_init_kwargs", '{"dtype": "float16"}',
        ]
    )
    student, teacher = cli._model_init_kwargs(model_args, config)
    assert student["dtype"] == "bfloat16" and student["attn_implementation"] == "sdpa" and student["revision"] == "v1"
    assert teacher["dtype"] == "float16" and teacher["attn_implementation"] == "sdpa" and "revision" not in teacher
    assert "quantization_config" not in student


def test_dash_spellings_are_aliases_of_the_snake_case_flags():
    parser = cli.make_train_parser()
    _, config, model_args, extra = parser.parse_args_and_config(
        ["--model-name-or-path", "s", "--output-dir", "o", "--use-cpu", "true", "--max-prompt-length", "9"]
    )
    assert (model_args.model_name_or_path, config.output_dir, extra.max_prompt_length) == ("s", "o", 9)


def test_train_eval_on_a_local_file_without_test_split_is_a_usage_error(tiny_dir, tmp_path, capsys):
    """Evaluating on the training file itself would be silent: a file has no `test` split, so say what to pass."""
    data = write_minillm_jsonl(tmp_path / "train.jsonl", 2)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *train_flags(tiny_dir, tmp_path), "--dataset_name", str(data), "--eval_strategy", "steps"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--eval_dataset_name" in err and "'test'" in err


def test_train_streams_a_local_dataset(tiny_dir, tmp_path):
    """--dataset_streaming gives the trainer an IterableDataset, tokenized and checked as it is read."""
    import torch
    from datasets import IterableDataset

    data = write_minillm_jsonl(tmp_path / "train.jsonl", 4)
    trainer = cli.run_train(
        [
            *train_flags(tiny_dir, tmp_path), "--dataset_name", str(data), "--dataset_format", "minillm",
            "--dataset_streaming", "true", "--max_train_examples", "4", "--max_steps", "1",
            "--per_device_train_batch_size", "2", "--max_length", "64", "--max_new_tokens", "4",
            "--num_virtual_tokens", "3", "--ignore_bias_buffers", "true",
        ]
    )
    assert isinstance(trainer.train_dataset, IterableDataset)
    assert trainer.state.global_step == 1
    # TRL's ScriptArguments flag is applied, not only accepted: boolean buffers are kept out of DDP's broadcast.
    bool_buffers = [n for n, b in trainer.model.named_buffers() if b.dtype == torch.bool]
    assert trainer.model._ddp_params_and_buffers_to_ignore == bool_buffers


# ------------------------------------------------------------------------------------------------ promptkd eval


@pytest.mark.skipif(not (SHARED_DATA / "minillm").is_dir(), reason="../shared/data/minillm is not present")
def test_eval_on_two_real_sets(tiny_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    code = cli.main(
        [
            "eval", "--model", str(tiny_dir / "gpt2-student"), "--data-dir", str(SHARED_DATA / "minillm"),
            "--sets", "dolly", "vicuna", "--max-examples", "3", "--seeds", "10", "--max-new-tokens", "8",
            "--output-dir", str(out), "--device", "cpu",
        ]
    )
    assert code == 0
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["sets"]) == {"dolly", "vicuna"} and scores["seeds"] == [10]
    for name, result in scores["sets"].items():
        assert result["num_examples"] == 3
        assert set(result["rougeL"]) == {"10"}
        assert 0.0 <= result["rougeL_mean"] <= 100.0
        answers = [json.loads(line) for line in (out / f"answers_{name}_seed10.jsonl").read_text().splitlines()]
        assert len(answers) == 3 and all({"prompt", "text", "references", "rougeL"} <= set(a) for a in answers)
    means = [s["rougeL_mean"] for s in scores["sets"].values()]
    assert scores["average_rougeL"] == pytest.approx(sum(means) / 2)
    assert "average" in capsys.readouterr().out  # the printed table


def test_eval_with_wrong_data_dir_fails_before_loading_the_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="dolly"):
        cli.main(["eval", "--model", str(tmp_path / "never-loaded"), "--data-dir", str(tmp_path), "--sets", "dolly"])
