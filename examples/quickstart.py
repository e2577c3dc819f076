# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Quickstart: `PromptKDTrainer` as a drop-in TRL trainer, in a few lines of Python.

```bash
# GPT-2 XL -> GPT-2 on Dolly, from the Hub (a GPU is advised)
python examples/quickstart.py
# any teacher/student pair sharing a tokenizer, any Dolly / Alpaca / MiniLLM / prompt-completion data
python examples/quickstart.py --student path/to/small --teacher path/to/large --dataset data.jsonl --max-steps 10
```

The student samples answers to the prompts, the teacher's 7-token soft prompt learns from the student's samples, and
the student learns from the prompted teacher (see docs/method.md). For the paper's full configurations use the YAMLs
next to this file with `promptkd train --config ...` (examples/README.md).
"""

from __future__ import annotations

import argparse

from transformers import AutoTokenizer

from promptkd_trainer import PromptKDConfig, PromptKDTrainer
from promptkd_trainer.formats import load_dataset_any, to_prompt_completion


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="openai-community/gpt2", help="Student model id or path.")
    parser.add_argument("--teacher", default="openai-community/gpt2-xl", help="Teacher model id or path.")
    parser.add_argument(
        "--dataset", default="databricks/databricks-dolly-15k", help="Hub dataset id or local .jsonl/.json/.parquet."
    )
    parser.add_argument("--max-steps", type=int, default=100, help="Optimizer steps.")
    parser.add_argument("--max-length", type=int, default=512, help="Prompt + completion tokens (official: 512).")
    parser.add_argument(
        "--max-new-tokens", type=int, default=256,
        help="Tokens the student samples per prompt; prompts may use the rest of --max-length (official: 256).",
    )
    parser.add_argument("--output-dir", default="outputs/quickstart", help="Where the student and the prompt go.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> PromptKDTrainer:
    args = parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.student)

    # Dolly (instruction/context/response), Alpaca or MiniLLM rows -> prompt/completion, rendered with the
    # MiniLLM/PromptKD Alpaca template. As the official preprocessing, drop prompts that leave no room for a sample
    # (official: max_prompt_length 256 = max_length 512 - max_new_tokens 256).
    dataset = to_prompt_completion(load_dataset_any(args.dataset, split="train"))
    max_prompt_length = args.max_length - args.max_new_tokens
    dataset = dataset.filter(lambda row: len(tokenizer(row["prompt"])["input_ids"]) <= max_prompt_length)

    config = PromptKDConfig(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=5e-5,  # official GPT-2 base rate; the prompt uses the same one (teacher_learning_rate=None)
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(100, args.max_steps // 10),
        weight_decay=0.01,
        max_length=args.max_length,
        max_new_tokens=args.max_new_tokens,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=10,
        # PromptKD's own knobs keep the official defaults: num_virtual_tokens=7,
        # prompt_init_text="Suppose you are a student.", reg_coef=1.0, reverse KL for every term.
    )
    trainer = PromptKDTrainer(
        model=args.student,  # a model id/path or an instantiated model, as with TRL's GKDTrainer
        teacher_model=args.teacher,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    # The student as a regular HF model, the teacher's soft prompt as a PEFT adapter in output_dir/teacher_prompt.
    trainer.save_model()
    return trainer


if __name__ == "__main__":
    main()
