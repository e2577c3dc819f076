# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`promptkd eval`: score a model (or a prompted teacher) on the PromptKD/MiniLLM instruction-following sets.

```bash
promptkd eval --model path/to/student --data_dir data/minillm --output_dir outputs/eval-student
promptkd eval --teacher gpt2-xl-sft --teacher_prompt outputs/run/teacher_prompt --data_dir data/minillm --sets dolly \
    --seeds 10
```

For each set and seed it writes `answers_{set}_seed{seed}.jsonl` (one `{"prompt", "text", "references", "rougeL"}`
line per example; `text` as in the official prediction files) and, at the end, `scores.json`; then prints a table.
Decoding follows the papers ([`promptkd_trainer.generation.paper_generation_kwargs`]).

With `--exposure_bias`, it measures the exposure bias of `--model` (the student) against `--teacher` (through
`--teacher_prompt` when given) instead: ExAccErr per set ([`promptkd_trainer.evaluation.exposure_bias`]).

```bash
promptkd eval --exposure_bias --model path/to/student --teacher path/to/teacher --data_dir data/minillm --sets dolly
```
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging

from .checkpointing import load_prompt_adapter
from .evaluation import EVAL_SETS, PAPER_SEEDS, evaluate_model, exposure_bias, load_eval_set, rouge_l
from .generation import PAPER_GENERATION


logger = logging.get_logger(__name__)

_DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `promptkd eval` options to `parser` (a parser or a sub-command parser) and return it."""
    what = parser.add_argument_group(
        "what to evaluate (pass --model, or --teacher with --teacher_prompt; both with --exposure_bias)"
    )
    what.add_argument(
        "--model", help="Model directory or Hub id (a student, or any causal LM; a LoRA adapter directory works too)."
    )
    what.add_argument(
        "--teacher",
        help="Teacher model directory or Hub id, evaluated through --teacher_prompt (with --exposure_bias: the "
        "teacher the student is measured against).",
    )
    what.add_argument(
        "--teacher_prompt", "--teacher-prompt", help="Directory of the teacher's PEFT prompt-tuning adapter."
    )
    what.add_argument("--tokenizer", help="Tokenizer directory or Hub id (default: the model's or the teacher's).")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data_dir", "--data-dir",
        required=True,
        help="MiniLLM data directory holding dolly/, self-inst/, vicuna/, sinst/, uinst/ (MiniLLM's `data/`, see "
        "docs/datasets.md).",
    )
    data.add_argument("--sets", nargs="+", default=list(EVAL_SETS), choices=list(EVAL_SETS), help="Sets to score.")
    data.add_argument(
        "--max_examples", "--max-examples", type=int, default=None,
        help="Keep the first N examples of each set.",
    )
    gen = parser.add_argument_group("generation (defaults: the papers' protocol)")
    gen.add_argument("--seeds", nargs="+", type=int, default=list(PAPER_SEEDS), help="One sampled run per seed.")
    gen.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=PAPER_GENERATION["max_new_tokens"])
    gen.add_argument("--batch_size", "--batch-size", type=int, default=8)
    gen.add_argument(
        "--no_repeat_ngram_size", "--no-repeat-ngram-size", type=int,
        default=PAPER_GENERATION["no_repeat_ngram_size"], help="0 disables the constraint.",
    )
    gen.add_argument("--temperature", type=float, default=PAPER_GENERATION["temperature"])
    gen.add_argument("--top_k", "--top-k", type=int, default=PAPER_GENERATION["top_k"], help="0 disables top-k.")
    gen.add_argument("--top_p", "--top-p", type=float, default=PAPER_GENERATION["top_p"])
    gen.add_argument("--greedy", action="store_true", help="Also score one greedy decode per set.")
    bias = parser.add_argument_group("exposure bias (ExAccErr of the official evaluate_exposure_bias.py)")
    bias.add_argument(
        "--exposure_bias", action="store_true",
        help="Instead of ROUGE-L, measure ExAccErr of --model (the student) against --teacher (through "
        "--teacher_prompt when given) on each set; the first of --seeds seeds the samples.",
    )
    bias.add_argument(
        "--exposure_bias_samples", type=int, default=3,
        help="Samples per prompt and model (default 3, the official --eb-sample-times).",
    )
    bias.add_argument(
        "--exposure_bias_lengths", type=int, nargs="+", default=None,
        help="Response lengths l to report (default: every l up to --max_new_tokens in scores.json; the table "
        "shows the powers of two and the last).",
    )
    run = parser.add_argument_group("runtime")
    run.add_argument(
        "--output_dir", "--output-dir", default=os.path.join("outputs", "eval"),
        help="Where answers and scores go.",
    )
    run.add_argument("--dtype", choices=list(_DTYPES), default="auto", help="Weights dtype (auto: the checkpoint's).")
    run.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (default: cuda when available).")
    run.add_argument(
        "--disable_tqdm", "--disable-tqdm", action="store_true",
        help="No progress bars (the bars are per set and seed; same name as TrainingArguments' flag).",
    )
    run.add_argument(
        "--trust_remote_code", "--trust-remote-code", action="store_true",
        help="Allow model code from the Hub (off by default).",
    )
    return parser


def _load_model(name_or_path: str, args: argparse.Namespace):
    kwargs: dict[str, Any] = {"dtype": _DTYPES[args.dtype], "trust_remote_code": args.trust_remote_code}
    adapter_config = os.path.join(name_or_path, "adapter_config.json")
    if os.path.isfile(adapter_config) and not os.path.isfile(os.path.join(name_or_path, "config.json")):
        with open(adapter_config) as f:
            peft_type = json.load(f).get("peft_type")
        if peft_type in ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING"):
            raise ValueError(
                f"{name_or_path} is a {peft_type} adapter; evaluate it with --teacher BASE --teacher_prompt "
                f"{name_or_path}."
            )
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)


def _load_tokenizer(args: argparse.Namespace, source: str, model):
    """`--tokenizer`, else the model's directory or id, else (adapter directories) the base model's."""
    candidates = [args.tokenizer] if args.tokenizer else [source, getattr(model, "name_or_path", None)]
    peft_config = getattr(model, "peft_config", None)
    if peft_config and not args.tokenizer:
        candidates += [c.base_model_name_or_path for c in peft_config.values()]
    errors = []
    for candidate in dict.fromkeys(c for c in candidates if c):
        try:
            return AutoTokenizer.from_pretrained(candidate, trust_remote_code=args.trust_remote_code)
        except (OSError, ValueError) as e:
            errors.append(f"{candidate}: {e}")
    raise ValueError("Could not load a tokenizer; pass --tokenizer. Tried: " + " | ".join(errors))


def _device(args: argparse.Namespace) -> torch.device:
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _load_teacher(args: argparse.Namespace):
    """`--teacher`, wrapped with `--teacher_prompt` when given, on the device: `(model, is_prompted)`."""
    teacher = AutoModelForCausalLM.from_pretrained(
        args.teacher, dtype=_DTYPES[args.dtype], trust_remote_code=args.trust_remote_code
    )
    if not args.teacher_prompt:
        return teacher.to(_device(args)), False
    # Refuses a prompt trained on another teacher (recorded identity) or a non-prompt-tuning adapter, with a clear
    # error, before PEFT would score it silently or fail on a tensor size.
    return load_prompt_adapter(teacher, args.teacher_prompt).to(_device(args)), True


def _load(args: argparse.Namespace):
    """Model (or None), prompted teacher (or None), tokenizer."""
    if args.teacher_prompt and not args.teacher:
        raise ValueError("--teacher_prompt needs --teacher (the base model the prompt was trained on).")
    if args.model and args.teacher:
        raise ValueError(
            "Pass either --model or --teacher/--teacher_prompt, not both (run the command twice), or add "
            "--exposure_bias to measure the --model student against the --teacher."
        )
    if not args.model and not args.teacher:
        raise ValueError("Nothing to evaluate: pass --model, or --teacher with --teacher_prompt.")
    if args.model:
        model = _load_model(args.model, args)
        return model.to(_device(args)), None, _load_tokenizer(args, args.model, model)
    teacher, prompted = _load_teacher(args)
    tokenizer = _load_tokenizer(args, args.teacher, teacher)
    return (None, teacher, tokenizer) if prompted else (teacher, None, tokenizer)


def _write_jsonl(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def format_table(scores: dict[str, Any]) -> str:
    """The scores as a plain-text table (printed by the `promptkd eval` command)."""
    header = f"{'set':<10} {'n':>5} {'ROUGE-L mean':>13} {'std':>7} {'EM':>7}"
    if any("greedy_rougeL" in s for s in scores["sets"].values()):
        header += f" {'greedy R-L':>11}"
    lines = [header, "-" * len(header)]
    for name, s in scores["sets"].items():
        line = f"{name:<10} {s['num_examples']:>5} {s.get('rougeL_mean', float('nan')):>13.2f} "
        line += f"{s.get('rougeL_std', float('nan')):>7.2f} {s.get('exact_match_mean', float('nan')):>7.2f}"
        if "greedy_rougeL" in s:
            line += f" {s['greedy_rougeL']:>11.2f}"
        lines.append(line)
    if scores.get("average_rougeL") is not None:
        lines += ["-" * len(header), f"{'average':<10} {'':>5} {scores['average_rougeL']:>13.2f}"]
    return "\n".join(lines)


def run_eval(args: argparse.Namespace) -> dict[str, Any]:
    """Run `promptkd eval` with parsed arguments; return the content of `scores.json`.

    `scores.json` holds `model`, `teacher`, `teacher_prompt`, `data_dir`, `seeds`, `generation_kwargs`,
    `average_rougeL` (mean over sets of the seed-mean ROUGE-L) and `sets`: per set `num_examples`, `rougeL`
    (`{seed: score}`), `rougeL_mean`, `rougeL_std`, `exact_match` (`{seed: score}`), `exact_match_mean` (and
    `greedy_rougeL`, `greedy_exact_match` with `--greedy`). Scores are x100.

    With `--exposure_bias` it holds `model`, `teacher`, `teacher_prompt`, `data_dir`, `seed`, `generation_kwargs`
    and `sets`: per set `num_examples` and `exposure_bias`
    ([`~promptkd_trainer.evaluation.ExposureBiasResult.to_dict`]).
    """
    if not args.data_dir:
        raise ValueError("Pass --data_dir: the MiniLLM data directory holding dolly/, self-inst/, vicuna/, ...")
    if not args.seeds and not args.greedy:
        raise ValueError("Nothing to generate: pass --seeds and/or --greedy.")
    if args.exposure_bias and not (args.model and args.teacher):
        raise ValueError("--exposure_bias measures a student against a teacher: pass --model and --teacher.")
    # Read every set before loading weights, so that a wrong --data-dir or --sets fails fast.
    eval_sets = {name: load_eval_set(args.data_dir, name, max_examples=args.max_examples) for name in args.sets}
    generation_kwargs = {
        "do_sample": True,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "no_repeat_ngram_size": args.no_repeat_ngram_size or None,
        "max_new_tokens": args.max_new_tokens,
    }
    os.makedirs(args.output_dir, exist_ok=True)
    if args.exposure_bias:
        return _run_exposure_bias(args, eval_sets, generation_kwargs)
    model, prompted, tokenizer = _load(args)
    scores: dict[str, Any] = {
        "model": args.model,
        "teacher": args.teacher,
        "teacher_prompt": args.teacher_prompt,
        "data_dir": os.path.abspath(args.data_dir),
        "seeds": list(args.seeds),
        "max_examples": args.max_examples,
        "generation_kwargs": generation_kwargs,
        "sets": {},
    }
    for name, examples in eval_sets.items():
        logger.info(f"Evaluating {name}: {len(examples)} examples, seeds {list(args.seeds)}")
        result = evaluate_model(
            model,
            tokenizer,
            examples,
            seeds=args.seeds,
            greedy=args.greedy,
            prompted_teacher=prompted,
            batch_size=args.batch_size,
            generation_kwargs=generation_kwargs,
            show_progress=not args.disable_tqdm,
            progress_desc=name,
        )
        for run_name, answers in result.pop("answers").items():
            rows = [
                {
                    "prompt": ex["prompt"],
                    "text": ans,
                    "references": ex["references"],
                    "rougeL": rouge_l(ans, ex["references"]),
                }
                for ex, ans in zip(examples, answers)
            ]
            _write_jsonl(os.path.join(args.output_dir, f"answers_{name}_{run_name}.jsonl"), rows)
        result.pop("generation_kwargs", None)
        result.pop("seeds", None)
        scores["sets"][name] = result
    means = [s["rougeL_mean"] for s in scores["sets"].values() if "rougeL_mean" in s]
    scores["average_rougeL"] = sum(means) / len(means) if means else None
    with open(os.path.join(args.output_dir, "scores.json"), "w", encoding="utf-8") as f:
        json.dump(scores, f, indent=2)
    logger.info(f"Scores written to {os.path.join(args.output_dir, 'scores.json')}")
    return scores


def _run_exposure_bias(args: argparse.Namespace, eval_sets, generation_kwargs: dict[str, Any]) -> dict[str, Any]:
    """`promptkd eval --exposure_bias`: ExAccErr of `--model` against `--teacher` on each set; writes `scores.json`."""
    if args.teacher_prompt and not args.teacher:
        raise ValueError("--teacher_prompt needs --teacher (the base model the prompt was trained on).")
    student = _load_model(args.model, args).to(_device(args))
    tokenizer = _load_tokenizer(args, args.model, student)
    teacher, _ = _load_teacher(args)
    scores: dict[str, Any] = {
        "model": args.model,
        "teacher": args.teacher,
        "teacher_prompt": args.teacher_prompt,
        "data_dir": os.path.abspath(args.data_dir),
        "seed": args.seeds[0],
        "max_examples": args.max_examples,
        "generation_kwargs": generation_kwargs,
        "sets": {},
    }
    for name, examples in eval_sets.items():
        logger.info(f"Exposure bias on {name}: {len(examples)} prompts x {args.exposure_bias_samples} samples")
        result = exposure_bias(
            teacher,
            student,
            tokenizer,
            [ex["prompt"] for ex in examples],
            max_new_tokens=args.max_new_tokens,
            lengths=args.exposure_bias_lengths,
            num_samples=args.exposure_bias_samples,
            batch_size=args.batch_size,
            seed=args.seeds[0],
            show_progress=not args.disable_tqdm,
            generation_kwargs=generation_kwargs,
        )
        scores["sets"][name] = {"num_examples": len(examples), "exposure_bias": result.to_dict()}
    with open(os.path.join(args.output_dir, "scores.json"), "w", encoding="utf-8") as f:
        json.dump(scores, f, indent=2)
    logger.info(f"Scores written to {os.path.join(args.output_dir, 'scores.json')}")
    return scores


def format_exposure_bias_table(scores: dict[str, Any]) -> str:
    """The exposure-bias scores as a plain-text table: per set, ExAccErr (%) and the two regrets at the powers of two
    among the measured lengths, and at the last one."""
    header = f"{'set':<10} {'l':>5} {'ExAccErr %':>11} {'R(l)':>10} {'E(l)':>10}"
    lines = [header, "-" * len(header)]
    for name, s in scores["sets"].items():
        eb = s["exposure_bias"]
        last = len(eb["lengths"]) - 1
        for i, n in enumerate(eb["lengths"]):
            if i == last or n & (n - 1) == 0:
                lines.append(
                    f"{name:<10} {n:>5} {eb['exaccerr'][i]:>11.2f} {eb['regret_student_samples'][i]:>10.4f} "
                    f"{eb['regret_teacher_samples'][i]:>10.4f}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point for `python -m promptkd_trainer.eval_cli`."""
    parser = add_eval_arguments(argparse.ArgumentParser(prog="promptkd eval", description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    scores = run_eval(args)
    table = format_exposure_bias_table(scores) if args.exposure_bias else format_table(scores)
    sys.stdout.write(table + "\n")  # the command's output
    return scores


if __name__ == "__main__":
    main()
