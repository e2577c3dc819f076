# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The `promptkd` command: `demo` (offline end-to-end run), `train` and `eval`.

```bash
promptkd demo --output_dir outputs/demo
promptkd train --config examples/gpt2/gpt2-base.yaml
promptkd eval --model outputs/gpt2-base-promptkd --sets dolly self_inst
```

`promptkd train` parses its flags the way TRL's example scripts do (`trl/experimental/gkd/gkd.py`): a `TrlParser`
over TRL's `ScriptArguments` and `ModelConfig` and the trainer's config, plus a few PromptKD data arguments, so a
GKD YAML or command line (`--dataset_test_split`, `--dtype`, `--use_peft --lora_r 16`, ...) works unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

from transformers.utils import logging


logger = logging.get_logger(__name__)


@dataclass
class TrainScriptArguments:
    """Arguments of `promptkd train` that are neither TRL's `ScriptArguments` / `ModelConfig` nor
    [`PromptKDConfig`]."""

    dataset_format: str = field(
        default="auto",
        metadata={
            "help": "Layout of the rows: auto, messages, prompt_completion, prompt_only, dolly "
            "(instruction/context/response), alpaca (instruction/input/output) or minillm (prompt/output)."
        },
    )
    eval_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Evaluation data, if not the dataset_test_split of dataset_name: a Hub dataset id, or a local "
            ".jsonl/.json/.parquet file or directory (its dataset_test_split). Used when eval_strategy is not 'no'."
        },
    )
    eval_rouge_examples: int = field(
        default=0,
        metadata={
            "help": "If > 0, add a ROUGE-L callback that generates on that many eval examples at each evaluation "
            "and logs eval_rougeL (use metric_for_best_model=eval_rougeL to keep the best checkpoint, as the "
            "official code keeps best_rougeL)."
        },
    )
    max_train_examples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Drop rows whose prompt has more tokens than this, logging how many (the official preprocessing "
            "drops prompts over 256 tokens). Without it, such prompts raise an error."
        },
    )
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Defaults to the student's."})


def make_train_parser():
    """The `TrlParser` of `promptkd train`: `ScriptArguments`, `PromptKDConfig`, `ModelConfig`,
    `TrainScriptArguments`."""
    from trl import ModelConfig, ScriptArguments, TrlParser

    from .promptkd_config import PromptKDConfig

    return TrlParser((ScriptArguments, PromptKDConfig, ModelConfig, TrainScriptArguments), prog="promptkd train")


def _load_rows(name: str, split: str, fmt: str, max_rows: int | None = None, keep_references: bool = False, **kwargs):
    from datasets import Dataset

    from .formats import load_dataset_any, to_prompt_completion

    streaming = kwargs.get("streaming", False)
    dataset = load_dataset_any(name, split=split, **kwargs)
    if streaming and isinstance(dataset, Dataset):  # load_from_disk has no streaming mode
        dataset = dataset.to_iterable_dataset()
    if max_rows is not None:
        dataset = dataset.take(max_rows) if streaming else dataset.select(range(min(max_rows, len(dataset))))
    return to_prompt_completion(dataset, format=fmt, keep_references=keep_references)


def _drop_long_prompts(dataset, tokenizer, max_tokens: int):
    from datasets import Dataset

    def fits(row):
        prompt = row["prompt"] if "prompt" in row else row["messages"][:-1]
        if isinstance(prompt, list):
            prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(prompt)["input_ids"]) <= max_tokens

    kept = dataset.filter(fits)
    if not isinstance(dataset, Dataset):  # streamed: filtered lazily, nothing to count yet
        logger.warning(f"Rows with prompts over {max_tokens} tokens are dropped as the streamed dataset is read.")
        return kept
    if len(kept) < len(dataset):
        dropped = len(dataset) - len(kept)
        logger.warning(f"Dropped {dropped} of {len(dataset)} rows with prompts over {max_tokens} tokens.")
    if len(kept) == 0:
        raise ValueError(f"Every prompt is longer than max_prompt_length={max_tokens} tokens; raise it.")
    return kept


def _missing_local_path(name: str | None) -> bool:
    """True for a name that can only be a local path (a Hub id is `name` or `namespace/name`) and does not exist."""
    if not name or os.path.exists(os.path.expanduser(name)):
        return False
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _local_split_exists(path: str, split: str) -> bool:
    """Whether a local dataset path holds a split of that name (a file is one split; a directory may hold several)."""
    from .files import read_json
    from .formats import builder_for

    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        return False
    dict_json = os.path.join(path, "dataset_dict.json")
    if os.path.isfile(dict_json):
        saved = read_json(dict_json, advice="save the dataset again with `DatasetDict.save_to_disk`")
        return split in saved.get("splits", [])
    return any(
        f.split(".")[0] == split and builder_for(f) is not None for f in os.listdir(path)
    )


def _model_init_kwargs(model_args, config) -> tuple[dict, dict]:
    """`from_pretrained` keyword arguments of the student and the teacher, as TRL's `gkd.py` / `sft.py` build them.

    `dtype` and `attn_implementation` apply to both models, `model_revision` and quantization to the student only;
    `model_init_kwargs` / `teacher_model_init_kwargs` given in the config win over them.
    """
    from trl import get_quantization_config

    common = dict(
        trust_remote_code=config.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    student = dict(common, revision=model_args.model_revision)
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:  # read from model_init_kwargs by SFTTrainer, as its `quantization_config`
        student["quantization_config"] = quantization_config
    student.update(config.model_init_kwargs or {})
    teacher = dict(common, **(config.teacher_model_init_kwargs or {}))
    return student, teacher


def run_train(argv: list[str] | None = None):
    """Entry point of `promptkd train`: TRL-style `--snake_case` flags, and `--config file.yaml`."""
    import torch
    from transformers import AutoTokenizer
    from trl import get_peft_config

    from .promptkd_trainer import PromptKDTrainer

    parser = make_train_parser()
    script_args, config, model_args, extra_args = parser.parse_args_and_config(argv)
    if model_args.model_name_or_path is None:
        parser.error("--model_name_or_path is required (the student model id or path).")
    if config.teacher_model_name_or_path is None:
        parser.error("--teacher_model_name_or_path is required (the teacher model id or path).")
    if script_args.dataset_name is None:
        parser.error("--dataset_name is required (a Hub dataset id, or a local .jsonl/.json/.parquet file or folder).")
    for flag, name in (
        ("--model_name_or_path", model_args.model_name_or_path),
        ("--teacher_model_name_or_path", config.teacher_model_name_or_path),
        ("--tokenizer_name_or_path", extra_args.tokenizer_name_or_path),
        ("--dataset_name", script_args.dataset_name),
        ("--eval_dataset_name", extra_args.eval_dataset_name),
    ):
        if _missing_local_path(name):
            parser.error(f"{flag} {name!r}: no such file or directory (and not a Hub id, of the form namespace/name).")

    eval_on = config.eval_strategy != "no"
    eval_source = extra_args.eval_dataset_name or script_args.dataset_name
    if eval_on and extra_args.eval_dataset_name is None and os.path.exists(os.path.expanduser(eval_source)):
        if not _local_split_exists(eval_source, script_args.dataset_test_split):
            parser.error(
                f"eval_strategy={config.eval_strategy.value!r} needs evaluation data, but --dataset_name "
                f"{eval_source!r} has no {script_args.dataset_test_split!r} split (a local file is one split): pass "
                "--eval_dataset_name, or --eval_strategy no."
            )
    if not eval_on and extra_args.eval_dataset_name is not None:
        logger.warning("--eval_dataset_name is not used: eval_strategy is 'no'.")

    config.model_init_kwargs, config.teacher_model_init_kwargs = _model_init_kwargs(model_args, config)
    tokenizer = AutoTokenizer.from_pretrained(
        extra_args.tokenizer_name_or_path or model_args.model_name_or_path,
        revision=None if extra_args.tokenizer_name_or_path else model_args.model_revision,
        trust_remote_code=config.trust_remote_code,
    )
    load_kwargs = {"streaming": script_args.dataset_streaming}
    if script_args.dataset_config is not None:
        load_kwargs["name"] = script_args.dataset_config
    train_dataset = _load_rows(
        script_args.dataset_name, script_args.dataset_train_split, extra_args.dataset_format,
        extra_args.max_train_examples, **load_kwargs,
    )
    if extra_args.max_prompt_length is not None:
        train_dataset = _drop_long_prompts(train_dataset, tokenizer, extra_args.max_prompt_length)
    eval_dataset = None
    callbacks = []
    if eval_on:
        # dataset_config names a configuration of dataset_name only.
        eval_kwargs = load_kwargs if extra_args.eval_dataset_name is None else {"streaming": load_kwargs["streaming"]}
        eval_dataset = _load_rows(
            eval_source, script_args.dataset_test_split, extra_args.dataset_format,
            keep_references=extra_args.eval_rouge_examples > 0, **eval_kwargs,
        )
        if extra_args.max_prompt_length is not None:
            eval_dataset = _drop_long_prompts(eval_dataset, tokenizer, extra_args.max_prompt_length)
        if extra_args.eval_rouge_examples > 0:
            from .evaluation import RougeEvalCallback

            rows = list(eval_dataset.take(extra_args.eval_rouge_examples))
            callbacks.append(
                RougeEvalCallback(
                    rows, tokenizer, max_new_tokens=config.max_new_tokens, greedy=False, seed=config.seed
                )
            )

    trainer = PromptKDTrainer(
        model=model_args.model_name_or_path,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=callbacks or None,
        peft_config=get_peft_config(model_args),
    )
    if script_args.ignore_bias_buffers:
        # As TRL's scripts do: DDP must not broadcast boolean buffers (causal masks), see
        # https://github.com/huggingface/transformers/issues/22482#issuecomment-1595790992. The student is wrapped
        # by DDP only in `train()`, so setting it here is in time.
        trainer.model._ddp_params_and_buffers_to_ignore = [
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool
        ]
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model(config.output_dir)
    return trainer


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"demo": "offline end-to-end demo on CPU", "train": "train with PromptKD", "eval": "evaluate ROUGE-L"}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        parser = argparse.ArgumentParser(prog="promptkd", description="PromptKD distillation for Hugging Face models.")
        sub = parser.add_subparsers(dest="command", required=True)
        for name, help_text in commands.items():
            sub.add_parser(name, help=help_text, add_help=False)
        parser.parse_args(argv)  # prints usage / errors and exits
        return 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        run_train(rest)
    elif command == "eval":
        from .eval_cli import main as eval_main

        eval_main(rest)
    else:
        from .demo.run import main as demo_main

        demo_main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
