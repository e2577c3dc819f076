# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Check the shipped launcher configs without launching anything (CPU, offline, a few seconds).

    python docs/check_configs.py

For every `promptkd_trainer/configs/deepspeed/*.json`:
  * it parses; the batch sizes, clipping and bf16/fp16 switches are "auto"; there is no optimizer/scheduler block;
    `overlap_comm` is false; ZeRO-3 files gather 16-bit weights on save; offload files allow the trainer's optimizer;
  * `transformers.integrations.deepspeed.HfTrainerDeepSpeedConfig` accepts it, fills every "auto" from a
    `TrainingArguments` and a tiny model (`trainer_config_process` + `trainer_config_finalize`), and none is left.
For every `promptkd_trainer/configs/accelerate/*.yaml`:
  * it parses and accelerate's own loader reads it;
  * DeepSpeed files point at an existing JSON, carry no key that accelerate refuses next to `deepspeed_config_file`,
    and `accelerate.utils.DeepSpeedPlugin` accepts them.
Exits non-zero with the list of problems otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import yaml


ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "promptkd_trainer" / "configs"
AUTO_KEYS = ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps", "gradient_clipping")
# accelerate.utils.dataclasses.DeepSpeedPlugin._deepspeed_config_checks: ignored (and refused) next to a config file.
REFUSED_WITH_FILE = (
    "gradient_accumulation_steps", "gradient_clipping", "zero_stage", "offload_optimizer_device",
    "offload_param_device", "offload_param_nvme_path", "offload_optimizer_nvme_path", "zero3_save_16bit_model",
)


def _leftover_autos(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leftover_autos(value, f"{prefix}{key}.")
    elif node == "auto":
        yield prefix.rstrip(".")


def check_deepspeed(problems: list[str]) -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # silences DeepSpeed's "Setting accelerator to CPU" line
    from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=64, vocab_size=128, n_positions=64))
    files = sorted((CONFIGS / "deepspeed").glob("*.json"))
    if not files:
        problems.append("no DeepSpeed JSON found")
    for path in files:
        name = path.relative_to(ROOT)
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            problems.append(f"{name}: invalid JSON: {err}")
            continue
        zero = cfg.get("zero_optimization", {})
        for key in AUTO_KEYS:
            if cfg.get(key) != "auto":
                problems.append(f"{name}: {key} must be \"auto\"")
        for key in ("bf16", "fp16"):
            if cfg.get(key, {}).get("enabled") != "auto":
                problems.append(f"{name}: {key}.enabled must be \"auto\"")
        for key in ("optimizer", "scheduler"):
            if key in cfg:
                problems.append(f"{name}: no {key} block expected (the HF Trainer creates it)")
        if zero.get("overlap_comm") is not False:
            problems.append(f"{name}: zero_optimization.overlap_comm must be false")
        if zero.get("stage") == 3 and zero.get("stage3_gather_16bit_weights_on_model_save") is not True:
            problems.append(f"{name}: ZeRO-3 needs stage3_gather_16bit_weights_on_model_save: true")
        offload = zero.get("offload_optimizer", {}).get("device", "none") != "none"
        if offload and cfg.get("zero_force_ds_cpu_optimizer") is not False:
            problems.append(
                f"{name}: optimizer offload without an optimizer block needs zero_force_ds_cpu_optimizer false"
            )
        try:
            with tempfile.TemporaryDirectory() as tmp:
                args = TrainingArguments(
                    output_dir=tmp, use_cpu=True, bf16=False, per_device_train_batch_size=2,
                    gradient_accumulation_steps=4, max_grad_norm=1.0, report_to="none",
                )
                hf_cfg = HfTrainerDeepSpeedConfig(str(path))
                hf_cfg.trainer_config_process(args)
                hf_cfg.trainer_config_finalize(args, model, num_training_steps=10)
                left = list(_leftover_autos(hf_cfg.config))
                if left:
                    problems.append(f"{name}: \"auto\" left after filling: {left}")
                if hf_cfg.config["train_batch_size"] != 2 * 4 * args.world_size:
                    problems.append(f"{name}: train_batch_size filled as {hf_cfg.config['train_batch_size']}")
                if hf_cfg.get_value("zero_optimization.stage") != zero.get("stage"):
                    problems.append(f"{name}: HfTrainerDeepSpeedConfig reads another ZeRO stage")
        except Exception as err:  # noqa: BLE001 - report every failure, keep checking the other files
            problems.append(f"{name}: rejected by HfTrainerDeepSpeedConfig: {type(err).__name__}: {err}")
        finally:
            unset_hf_deepspeed_config()
        print(f"ok  {name} (ZeRO-{zero.get('stage')})" if not any(str(name) in p for p in problems) else f"BAD {name}")


def check_accelerate(problems: list[str]) -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    files = sorted((CONFIGS / "accelerate").glob("*.yaml"))
    if not files:
        problems.append("no accelerate YAML found")
    for path in files:
        name = path.relative_to(ROOT)
        n_before = len(problems)
        try:
            raw = yaml.safe_load(path.read_text())
            loaded = load_config_from_file(str(path))
        except Exception as err:  # noqa: BLE001
            problems.append(f"{name}: not readable by accelerate: {type(err).__name__}: {err}")
            continue
        if raw.get("distributed_type") == "DEEPSPEED":
            ds = raw.get("deepspeed_config", {})
            json_path = ds.get("deepspeed_config_file")
            if json_path is None:
                problems.append(f"{name}: expected deepspeed_config_file")
            elif not (ROOT / json_path).is_file():
                problems.append(f"{name}: {json_path} does not exist (relative to the repository root)")
            else:
                refused = [k for k in REFUSED_WITH_FILE if k in ds]
                refused += ["mixed_precision"] if "mixed_precision" in raw else []
                if refused:
                    problems.append(f"{name}: accelerate refuses {refused} next to deepspeed_config_file")
                try:
                    DeepSpeedPlugin(hf_ds_config=str(ROOT / json_path), zero3_init_flag=ds.get("zero3_init_flag"))
                except Exception as err:  # noqa: BLE001
                    problems.append(f"{name}: DeepSpeedPlugin rejects it: {type(err).__name__}: {err}")
                finally:
                    unset_hf_deepspeed_config()
        elif raw.get("mixed_precision") not in ("no", None):
            problems.append(f"{name}: mixed_precision should be 'no' so that PromptKDConfig.bf16/fp16 decide")
        status = "ok " if len(problems) == n_before else "BAD"
        print(f"{status} {name} ({loaded.distributed_type}, {loaded.num_processes} processes)")


def main() -> int:
    problems: list[str] = []
    check_deepspeed(problems)
    check_accelerate(problems)
    for problem in problems:
        print("ERROR", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
