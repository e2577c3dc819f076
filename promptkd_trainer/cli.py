# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The `promptkd` command: `demo` (offline end-to-end run), `train` and `eval`.

```bash
promptkd demo --output-dir outputs/demo
promptkd train --config examples/gpt2/gpt2-base.yaml
promptkd eval --model outputs/gpt2-base-promptkd --sets dolly self_inst
```
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
    """Arguments of `promptkd train` that are not [`PromptKDConfig`] fields."""

    model_name_or_path: str = field(metadata={"help": "Student model id or path."})
    dataset_name: str = field(
        metadata={"help": "Training data: a Hub dataset id, or a local .jsonl/.json/.parquet file or directory."}
    )
    dataset_format: str = field(
        default="auto",
        metadata={
            "help": "Layout of the rows: auto, messages, prompt_completion, prompt_only, dolly "
            "(instruction/context/response), alpaca (instruction/input/output) or minillm (prompt/output)."
        },
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split used for training."})
    eval_dataset_name: str | None = field(
        default=None, metadata={"help": "Optional evaluation data (same forms as dataset_name)."}
    )
    eval_dataset_split: str = field(default="validation", metadata={"help": "Split of eval_dataset_name."})
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


def _load_rows(name: str, split: str, fmt: str, max_rows: int | None = None, keep_references: bool = False):
    from .formats import load_dataset_any, to_prompt_completion

    dataset = load_dataset_any(name, split=split)
    if max_rows is not None:
        dataset = dataset.select(range(min(max_rows, len(dataset))))
    return to_prompt_completion(dataset, format=fmt, keep_references=keep_references)


def _drop_long_prompts(dataset, tokenizer, max_tokens: int):
    def fits(row):
        prompt = row["prompt"] if "prompt" in row else row["messages"][:-1]
        if isinstance(prompt, list):
            prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(prompt)["input_ids"]) <= max_tokens

    kept = dataset.filter(fits)
    if len(kept) < len(dataset):
        logger.warning(f"Dropped {len(dataset) - len(kept)} of {len(dataset)} rows with prompts over {max_tokens} tokens.")
    if len(kept) == 0:
        raise ValueError(f"Every prompt is longer than max_prompt_length={max_tokens} tokens; raise it.")
    return kept


def _missing_local_path(name: str | None) -> bool:
    """True for a name that can only be a local path (a Hub id is `name` or `namespace/name`) and does not exist."""
    if not name or os.path.exists(os.path.expanduser(name)):
        return False
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def run_train(argv: list[str] | None = None):
    """Entry point of `promptkd train`: TRL-style flags plus `--config file.yaml`."""
    from transformers import AutoTokenizer
    from trl import TrlParser

    from .promptkd_config import PromptKDConfig
    from .promptkd_trainer import PromptKDTrainer

    parser = TrlParser((TrainScriptArguments, PromptKDConfig), prog="promptkd train")
    script_args, config = parser.parse_args_and_config(argv)
    if config.teacher_model_name_or_path is None:
        parser.error("--teacher_model_name_or_path is required (the teacher model id or path).")
    for flag, name in (
        ("--model_name_or_path", script_args.model_name_or_path),
        ("--teacher_model_name_or_path", config.teacher_model_name_or_path),
        ("--tokenizer_name_or_path", script_args.tokenizer_name_or_path),
    ):
        if _missing_local_path(name):
            parser.error(f"{flag} {name!r}: no such directory (and not a Hub id, which has the form namespace/name).")

    tokenizer = AutoTokenizer.from_pretrained(
        script_args.tokenizer_name_or_path or script_args.model_name_or_path,
        trust_remote_code=config.trust_remote_code,
    )
    train_dataset = _load_rows(
        script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_format,
        script_args.max_train_examples,
    )
    if script_args.max_prompt_length is not None:
        train_dataset = _drop_long_prompts(train_dataset, tokenizer, script_args.max_prompt_length)
    eval_dataset = None
    callbacks = []
    if script_args.eval_dataset_name:
        eval_dataset = _load_rows(
            script_args.eval_dataset_name, script_args.eval_dataset_split, script_args.dataset_format,
            keep_references=script_args.eval_rouge_examples > 0,
        )
        if script_args.max_prompt_length is not None:
            eval_dataset = _drop_long_prompts(eval_dataset, tokenizer, script_args.max_prompt_length)
        if script_args.eval_rouge_examples > 0:
            from .evaluation import RougeEvalCallback

            n = min(script_args.eval_rouge_examples, len(eval_dataset))
            rows = eval_dataset.select(range(n))
            callbacks.append(
                RougeEvalCallback(rows, tokenizer, max_new_tokens=config.max_new_tokens, greedy=False, seed=config.seed)
            )

    trainer = PromptKDTrainer(
        model=script_args.model_name_or_path,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=callbacks or None,
    )
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
