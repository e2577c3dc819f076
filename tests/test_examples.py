# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The files in examples/ work: every YAML holds the paper's hyperparameters, parses into the `promptkd train`
dataclasses, and trains through the real `promptkd train` code path on tiny local models (CPU, offline); the
quickstart script trains too.
"""

import json
import runpy
import sys
from pathlib import Path

import pytest
import yaml

from promptkd_trainer.cli import make_train_parser, run_train


ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
YAMLS = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.glob("*/*.yaml"))

# The official scripts: scripts/{gpt2,opt,llama}/promptkd/*.sh of gmkim-ai/PromptKD @ 383182f.
GPT2 = dict(micro=2, gpus=8, ckpt=False, launcher="deepspeed_zero1")
BIG = dict(lr=5e-6, micro=16, gpus=4, ga=1, epochs=10, ckpt=True, launcher="deepspeed_zero2_offload")
OFFICIAL = {
    "gpt2/gpt2-base.yaml": dict(GPT2, lr=5e-5, ga=16, epochs=20),
    "gpt2/gpt2-medium.yaml": dict(GPT2, lr=1e-5, ga=4, epochs=20),
    "gpt2/gpt2-large.yaml": dict(GPT2, lr=5e-6, ga=4, epochs=15),
    "opt/opt-1.3b.yaml": BIG,
    "opt/opt-2.7b.yaml": BIG,
    "opt/opt-6.7b.yaml": BIG,
    "llama/llama-7b.yaml": BIG,
}

# Dolly rows (the YAMLs' dataset_format). The MiniLLM Alpaca template alone is ~104 tokens with the tiny tokenizer.
DOLLY_ROWS = [
    {"instruction": "add two three", "context": "", "response": "five", "category": "open_qa"},
    {"instruction": "the cat sat on", "context": "the red mat", "response": "the mat", "category": "closed_qa"},
    {"instruction": "write a short text", "context": "", "response": "the sun and the moon", "category": "creative"},
    {"instruction": "read the book", "context": "a big tree", "response": "a tree", "category": "summarization"},
]

# Small everything; these flags come after `--config` and must win over the YAML values.
TINY_OVERRIDES = [
    "--teacher_model_init_kwargs", '{"dtype": "float32"}',
    "--fp16", "false", "--bf16", "false", "--use_cpu", "true",
    "--max_steps", "1", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
    "--per_device_eval_batch_size", "2", "--eval_rouge_examples", "2",
    "--max_length", "232", "--max_prompt_length", "200", "--max_new_tokens", "4",
    "--warmup_steps", "0", "--logging_steps", "1", "--disable_tqdm", "true", "--dataloader_pin_memory", "false",
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def parse_yaml(name: str, *extra: str):
    """(ScriptArguments, PromptKDConfig, ModelConfig, TrainScriptArguments) of `promptkd train --config <name>`."""
    return make_train_parser().parse_args_and_config(["--config", str(EXAMPLES / name), *extra])


@pytest.fixture(scope="module")
def tiny_models(tiny_dir, tmp_path_factory):
    """Student/teacher directories per family: GPT-2 and Llama from `tiny_dir`, plus a tiny OPT pair built here."""
    import torch
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_dir / "tokenizer")
    root = tmp_path_factory.mktemp("tiny-opt")
    for role, layers, seed in (("teacher", 2, 1), ("student", 1, 2)):
        torch.manual_seed(seed)
        cfg = OPTConfig(
            vocab_size=len(tok), hidden_size=64, word_embed_proj_dim=64, ffn_dim=128, num_hidden_layers=layers,
            num_attention_heads=2, max_position_embeddings=256, dropout=0.0, attention_dropout=0.0,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        OPTForCausalLM(cfg).save_pretrained(root / f"opt-{role}")
        tok.save_pretrained(root / f"opt-{role}")
    roles = ("teacher", "student")
    dirs = {family: {role: tiny_dir / f"{family}-{role}" for role in roles} for family in ("gpt2", "llama")}
    dirs["opt"] = {role: root / f"opt-{role}" for role in roles}
    return dirs


def test_every_official_setup_has_a_yaml():
    assert YAMLS == sorted(OFFICIAL)


@pytest.mark.parametrize("name", YAMLS)
def test_yaml_holds_the_official_hyperparameters(name):
    official = OFFICIAL[name]
    raw = yaml.safe_load((EXAMPLES / name).read_text())
    # The file asks for fp16 (official DeepSpeed fp16), which cannot be built on CPU: switched off here only.
    assert raw["fp16"] is True and raw["bf16"] is False
    script, config, model_args, extra = parse_yaml(name, "--fp16", "false")

    assert extra.dataset_format == "dolly" and script.dataset_name == "databricks/databricks-dolly-15k"
    assert script.dataset_train_split == "train[1000:]" and script.dataset_test_split == "train[:1000]"
    assert extra.eval_dataset_name is None  # the dev split comes from dataset_name
    assert extra.max_prompt_length == 256 and extra.eval_rouge_examples == 1000
    assert model_args.model_name_or_path.startswith("checkpoints/") and model_args.use_peft is False
    assert config.teacher_model_name_or_path.startswith("checkpoints/")
    assert config.teacher_model_init_kwargs == {"dtype": "float16"}

    assert config.learning_rate == pytest.approx(official["lr"])
    assert config.teacher_learning_rate == pytest.approx(official["lr"])
    assert config.per_device_train_batch_size == official["micro"]
    assert config.gradient_accumulation_steps == official["ga"]
    assert config.num_train_epochs == official["epochs"]
    assert config.gradient_checkpointing is official["ckpt"]
    assert config.teacher_gradient_checkpointing is None  # follows gradient_checkpointing: both models, as official

    assert config.num_virtual_tokens == 7 and config.prompt_init_text == "Suppose you are a student."
    assert config.reg_coef == 1.0 and config.update_order == "paper" and config.lmbda == 1.0
    assert {config.student_loss_type, config.prompt_loss_type, config.reg_loss_type} == {"reverse_kl"}
    assert (config.temperature, config.top_k, config.top_p) == (1.0, 0, 1.0)
    assert config.weight_decay == 0.01 and config.teacher_weight_decay == 0.01
    assert config.lr_scheduler_type == "constant_with_warmup" and config.warmup_steps == 100
    assert config.max_grad_norm == 1.0
    assert config.max_length == 512 and config.max_new_tokens == 256
    assert config.seed == 10

    assert config.eval_strategy == "epoch" and config.save_strategy == "epoch"
    assert config.metric_for_best_model == "eval_rougeL" and config.greater_is_better is True
    assert config.load_best_model_at_end is True
    assert config.output_dir.startswith("outputs/")


@pytest.mark.parametrize("name", YAMLS)
def test_yaml_header_commands(name):
    """The header's launch commands name existing configs, this file, and the official number of processes."""
    official = OFFICIAL[name]
    text = (EXAMPLES / name).read_text()
    launcher = ROOT / "promptkd_trainer" / "configs" / "accelerate" / f"{official['launcher']}.yaml"
    assert (
        f"accelerate launch --config_file promptkd_trainer/configs/accelerate/{official['launcher']}.yaml \\\n"
        f"#       -m promptkd_trainer train --config examples/{name}\n"
    ) in text
    assert yaml.safe_load(launcher.read_text())["num_processes"] == official["gpus"]
    ds_json = yaml.safe_load(launcher.read_text())["deepspeed_config"]["deepspeed_config_file"]
    assert (ROOT / ds_json).is_file()
    assert f"torchrun --nproc_per_node {official['gpus']} -m promptkd_trainer train --config examples/{name}" in text
    assert f"--deepspeed {ds_json}" in text
    effective = official["micro"] * official["gpus"] * official["ga"]
    assert f"= {effective}." in text


def test_cli_flags_override_yaml():
    _, config, _, _ = parse_yaml(
        "gpt2/gpt2-base.yaml", "--fp16", "false", "--learning_rate", "1e-3", "--num_virtual_tokens", "3"
    )
    assert config.learning_rate == 1e-3 and config.num_virtual_tokens == 3
    assert config.gradient_accumulation_steps == 16  # untouched keys keep the YAML value


@pytest.mark.parametrize("name", YAMLS)
def test_yaml_trains_on_tiny_models(name, tiny_models, tmp_path):
    """`promptkd train --config <yaml>` with tiny models and data: train, evaluate (ROUGE-L), save, reload the best."""
    family = name.split("/")[0]
    official = OFFICIAL[name]
    train = write_jsonl(tmp_path / "train.jsonl", DOLLY_ROWS)
    dev = write_jsonl(tmp_path / "dev.jsonl", DOLLY_ROWS[:2])
    out = tmp_path / "out"
    argv = [
        "--config", str(EXAMPLES / name),
        "--model_name_or_path", str(tiny_models[family]["student"]),
        "--teacher_model_name_or_path", str(tiny_models[family]["teacher"]),
        "--dataset_name", str(train), "--eval_dataset_name", str(dev),
        "--output_dir", str(out),
        *TINY_OVERRIDES,
    ]
    trainer = run_train(argv)

    args = trainer.args
    assert args.max_steps == 1 and args.fp16 is False and args.per_device_train_batch_size == 2  # flags won
    assert args.learning_rate == pytest.approx(official["lr"])  # the YAML's value where no flag was given
    assert args.gradient_checkpointing is official["ckpt"]
    assert args.lr_scheduler_type == "constant_with_warmup" and args.num_virtual_tokens == 7
    assert trainer.state.global_step == 1
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert evals and "eval_rougeL" in evals[-1]  # the ROUGE-L callback ran at the epoch's evaluation
    assert trainer.state.best_model_checkpoint is not None
    for directory in (out, out / "checkpoint-1"):
        assert (directory / "model.safetensors").is_file()
        assert (directory / "teacher_prompt" / "adapter_model.safetensors").is_file()


# The quickstart keeps TrainingArguments' dataloader_pin_memory=True, meant for GPUs; on CPU torch only warns.
@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true:UserWarning")
def test_quickstart_trains_on_tiny_models(tiny_models, tmp_path):
    quickstart = runpy.run_path(str(EXAMPLES / "quickstart.py"))  # not as __main__: only defines main()
    data = write_jsonl(tmp_path / "dolly.jsonl", DOLLY_ROWS)
    out = tmp_path / "quickstart"
    trainer = quickstart["main"](
        [
            "--student", str(tiny_models["gpt2"]["student"]),
            "--teacher", str(tiny_models["gpt2"]["teacher"]),
            "--dataset", str(data),
            "--max-steps", "1", "--max-length", "232", "--max-new-tokens", "4",
            "--output-dir", str(out),
        ]
    )
    assert trainer.state.global_step == 1
    assert (out / "model.safetensors").is_file()
    assert (out / "teacher_prompt" / "adapter_model.safetensors").is_file()


def test_quickstart_defaults_are_hub_ids():
    args = runpy.run_path(str(EXAMPLES / "quickstart.py"))["parse_args"]([])
    assert (args.student, args.teacher, args.dataset) == (
        "openai-community/gpt2", "openai-community/gpt2-xl", "databricks/databricks-dolly-15k"
    )


def test_train_script_is_promptkd_train(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["train_promptkd.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(EXAMPLES / "train_promptkd.py"), run_name="__main__")
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--teacher_model_name_or_path" in help_text and "--eval_rouge_examples" in help_text


def test_readme_lists_every_yaml():
    readme = (EXAMPLES / "README.md").read_text()
    for name in YAMLS:
        assert f"examples/{name}" in readme
    assert "promptkd eval" in readme and "quickstart.py" in readme
