# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`promptkd demo`: PromptKD end to end on CPU, offline, in a few minutes.

Stages: synthetic instruction data → local BPE tokenizer → SFT teacher and SFT-initialised smaller student → five
methods trained from the same student under the same budget (steps, learning rate, batch, data) → ROUGE-L (the
paper's way: rouge_score ROUGE-L F × 100, max over references; sampled at temperature 1 and greedy) and exact match
on the test split over several seeds → table, `results.json`, `report.md` and PNG plots in the output folder.

Methods (all start from the same SFT student):

- `sft`: more supervised training on the references;
- `kd`: word-level KD, forward KL(teacher || student) on the references (`lmbda=0`, no prompt);
- `seqkd`: supervised training on the teacher's greedy answers (sequence-level KD);
- `onpolicy`: reverse KL(student || teacher) on the student's own samples, no prompt (GKD with λ=1, β=1 / MiniLLM's
  token-level objective);
- `promptkd`: the same plus the teacher's soft prompt trained with student guidance (paper order, official
  defaults).

The distillation methods run on the same trainer ([`PromptKDTrainer`]; `num_virtual_tokens=0` turns the prompt off),
so they differ only in what the paper says they differ in.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from transformers.utils import logging


logger = logging.get_logger(__name__)

METHODS = ("sft", "kd", "seqkd", "onpolicy", "promptkd")
PROMPT_INIT_TEXT = "Suppose you are a student."


def build_parser() -> argparse.ArgumentParser:
    from .defaults import DEMO_DEFAULTS as D

    p = argparse.ArgumentParser(prog="promptkd demo", description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", default="outputs/demo", help="Folder for the table, report, plots and models.")
    p.add_argument("--steps", type=int, default=80, help="Distillation steps per method (same for every method).")
    p.add_argument("--lr", type=float, default=1e-3, help="Learning rate of every method (and of the prompt).")
    p.add_argument("--batch-size", type=int, default=16, help="Batch size of every method.")
    p.add_argument(
        "--prompt-lr", type=float, default=None,
        help="Learning rate of PromptKD's soft prompt. Default: --lr, as the official scripts (teacher-lr = lr).",
    )
    p.add_argument("--reg-coef", type=float, default=1.0, help="PromptKD's regulariser coefficient (official: 1.0).")
    p.add_argument("--seeds", type=int, nargs="+", default=list(D.seeds), help="Seeds of the distillation runs.")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--teacher-size", default=D.teacher_size, help="Model preset of the teacher (demo.models).")
    p.add_argument("--student-size", default=D.student_size, help="Model preset of the student.")
    p.add_argument("--family", default=D.model_family, choices=("gpt2", "llama"))
    # Shorter than DemoDefaults' SFT budgets (1800 / 600 steps) so that the whole demo fits in 10 minutes on 2 cores.
    p.add_argument("--teacher-steps", type=int, default=600, help="SFT steps of the teacher.")
    p.add_argument("--student-steps", type=int, default=300, help="SFT steps of the student's init.")
    p.add_argument("--n-train", type=int, default=D.n_train)
    p.add_argument("--n-test", type=int, default=D.n_test)
    p.add_argument("--max-new-tokens", type=int, default=D.max_new_tokens)
    p.add_argument("--update-order", default="paper", choices=("paper", "joint"), help="PromptKD's update order.")
    p.add_argument("--reuse-models", action="store_true", help="Reuse the SFT teacher/student in --output-dir.")
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads. 1 by default: the demo's models are too small to gain from more, and with other "
        "load on a 2-core machine two OpenMP threads made its small ops up to 90x slower (measured).",
    )
    return p


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)


class _TqdmCallback:
    """Advance a shared progress bar by one per optimizer step."""

    def __new__(cls, bar):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                bar.update(1)

        return Callback()


def _distill_config(output_dir: str, method: str, args, seed: int):
    from ..promptkd_config import PromptKDConfig

    common = dict(
        output_dir=output_dir,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        per_device_train_batch_size=args.batch_size,
        seed=seed,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=max(1, args.steps // 30),
        disable_tqdm=True,
        max_new_tokens=args.max_new_tokens,
        max_length=256,
        dataloader_pin_memory=False,
    )
    if method == "kd":
        return PromptKDConfig(**common, num_virtual_tokens=0, lmbda=0.0, student_loss_type="forward_kl")
    if method == "onpolicy":
        return PromptKDConfig(**common, num_virtual_tokens=0, lmbda=1.0)
    return PromptKDConfig(
        **common, update_order=args.update_order, teacher_learning_rate=args.prompt_lr, reg_coef=args.reg_coef
    )


def _evaluate(model, tokenizer, test, max_new_tokens: int, seed: int, prompted_teacher=None) -> dict[str, Any]:
    from ..evaluation import compute_rouge_l, generate_answers
    from .metrics import strict_exact_match

    prompts, refs = test["prompt"], test["references"]
    gen = dict(batch_size=64, max_new_tokens=max_new_tokens, add_special_tokens=False, prompted_teacher=prompted_teacher)
    sampled = generate_answers(model, tokenizer, prompts, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                               seed=seed, **gen)
    greedy = generate_answers(model, tokenizer, prompts, do_sample=False, seed=seed, **gen)
    return {
        "rougeL_sampled": compute_rouge_l(sampled, refs),
        "rougeL_greedy": compute_rouge_l(greedy, refs),
        # Strict (case and punctuation kept): on these tasks they are the answer (uppercase, commas, numbering).
        "exact_match_greedy": statistics.fmean(strict_exact_match(g, r) for g, r in zip(greedy, refs)),
        "examples": [{"prompt": p, "greedy": g, "sampled": s, "references": r}
                     for p, g, s, r in list(zip(prompts, greedy, sampled, refs))[:5]],
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..promptkd_config import PromptKDConfig
    from ..promptkd_trainer import PromptKDTrainer
    from .defaults import DEMO_DEFAULTS as D
    from .models import build_model, count_parameters
    from .sft import supervised_finetune
    from .tasks import make_dataset, vocabulary_texts
    from .tokenizer import train_tokenizer

    torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    models_dir = out / "models"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # 1. data and tokenizer -----------------------------------------------------------------------------------------
    data = make_dataset(args.n_train, D.n_val, args.n_test, seed=D.data_seed, template=D.template)
    train, test = data["train"], data["test"]
    tok_dir = models_dir / "tokenizer"
    if args.reuse_models and tok_dir.exists():
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        corpus = list(train["prompt"]) + list(train["completion"]) + vocabulary_texts()
        tokenizer = train_tokenizer(corpus, vocab_size=D.vocab_size, save_dir=tok_dir)
    timings["data_and_tokenizer_s"] = time.perf_counter() - t0

    # 2. SFT teacher and SFT-initialised student --------------------------------------------------------------------
    def sft_model(role: str, size: str, steps: int, lr: float, batch: int):
        path = models_dir / role
        if args.reuse_models and (path / "config.json").exists():
            return AutoModelForCausalLM.from_pretrained(path)
        model = build_model(tokenizer, size, family=args.family, seed=D.data_seed + (1 if role == "teacher" else 2))
        with _progress(steps, f"SFT {role}") as bar:
            supervised_finetune(model, tokenizer, train, steps=steps, lr=lr, batch_size=batch, seed=D.data_seed,
                                callbacks=[_TqdmCallback(bar)])
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        return model

    t = time.perf_counter()
    teacher = sft_model("teacher", args.teacher_size, args.teacher_steps, D.teacher_lr, D.teacher_batch_size)
    timings["teacher_sft_s"] = time.perf_counter() - t
    t = time.perf_counter()
    sft_model("student", args.student_size, args.student_steps, D.student_lr, D.student_batch_size)
    timings["student_sft_s"] = time.perf_counter() - t

    def fresh_student():
        return AutoModelForCausalLM.from_pretrained(models_dir / "student")

    rows: dict[str, Any] = {"models": {"teacher_params": count_parameters(teacher),
                                       "student_params": count_parameters(fresh_student())}}
    t = time.perf_counter()
    rows["teacher"] = _evaluate(teacher, tokenizer, test, args.max_new_tokens, args.seeds[0])
    rows["student_init"] = _evaluate(fresh_student(), tokenizer, test, args.max_new_tokens, args.seeds[0])
    if "promptkd" in args.methods:
        from ..teacher import build_prompted_teacher

        fields = PromptKDConfig.__dataclass_fields__
        initial = build_prompted_teacher(
            teacher, tokenizer, fields["num_virtual_tokens"].default, fields["prompt_init_text"].default
        )
        rows["teacher_prompt_init"] = _evaluate(None, tokenizer, test, args.max_new_tokens, args.seeds[0],
                                                prompted_teacher=initial)
        teacher = initial.get_base_model()  # prompt tuning wraps the model without changing its weights
    timings["baseline_eval_s"] = time.perf_counter() - t

    # 3. distillation -----------------------------------------------------------------------------------------------
    seqkd_train = None
    if "seqkd" in args.methods:
        from ..evaluation import generate_answers

        n = min(len(train), args.steps * args.batch_size)
        subset = train.select(range(n))
        answers = generate_answers(teacher, tokenizer, subset["prompt"], do_sample=False, batch_size=64,
                                   max_new_tokens=args.max_new_tokens, add_special_tokens=False)
        seqkd_train = subset.remove_columns("completion").add_column("completion", answers)

    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods}
    histories: dict[str, Any] = {}
    total = len(args.methods) * len(args.seeds) * args.steps
    t_distill = time.perf_counter()
    with _progress(total, "distill (methods x seeds)") as bar:
        for seed in args.seeds:
            for method in args.methods:
                t = time.perf_counter()
                student = fresh_student()
                run_dir = str(out / "runs" / f"{method}-seed{seed}")
                if method in ("sft", "seqkd"):
                    rows_ = train if method == "sft" else seqkd_train
                    supervised_finetune(student, tokenizer, rows_, steps=args.steps, lr=args.lr,
                                        batch_size=args.batch_size, seed=seed, lr_scheduler_type="constant",
                                        warmup_ratio=0.0, callbacks=[_TqdmCallback(bar)])
                    history = getattr(student, "sft_log_history", [])
                else:
                    trainer = PromptKDTrainer(
                        model=student, teacher_model=teacher, args=_distill_config(run_dir, method, args, seed),
                        train_dataset=train.select_columns(["prompt", "completion"]), processing_class=tokenizer,
                        callbacks=[_TqdmCallback(bar)],
                    )
                    trainer.train()
                    history = trainer.state.log_history
                    student = trainer.model
                    if method == "promptkd" and seed == args.seeds[0]:
                        trainer.teacher.save_pretrained(out / "teacher_prompt")
                        # How good a teacher the prompted teacher is, before and after training its prompt: the
                        # student's target in PromptKD (answers the "why" when PromptKD trails the baseline).
                        rows["teacher_prompt_trained"] = _evaluate(
                            None, tokenizer, test, args.max_new_tokens, seed, prompted_teacher=trainer.teacher
                        )
                    del trainer
                train_s = time.perf_counter() - t
                student.eval()
                result = _evaluate(student, tokenizer, test, args.max_new_tokens, seed)
                result.update(seed=seed, train_seconds=train_s)
                runs[method].append(result)
                if seed == args.seeds[0]:
                    histories[method] = history
                shutil.rmtree(run_dir, ignore_errors=True)
    timings["distillation_and_eval_s"] = time.perf_counter() - t_distill
    timings["total_s"] = time.perf_counter() - t0

    summary = {}
    for method, results in runs.items():
        summary[method] = {
            key: dict(zip(("mean", "std"), _mean_std([r[key] for r in results])))
            for key in ("rougeL_sampled", "rougeL_greedy", "exact_match_greedy")
        }
        summary[method]["seconds_per_run"] = statistics.fmean(r["train_seconds"] for r in results)
    results = {
        "settings": {**vars(args), "defaults": D.to_dict(), "torch_threads": torch.get_num_threads()},
        "timings": timings,
        "reference_rows": rows,
        "summary": summary,
        "runs": runs,
        "histories": histories,
    }
    with open(out / "results.json", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, default=str)
    table = format_table(results)
    plots = write_plots(results, out)
    (out / "report.md").write_text(format_report(results, table, plots), encoding="utf-8")
    results["files"] = [str(out / name) for name in ("results.json", "report.md", *plots)]
    return results


def format_table(results: dict[str, Any]) -> str:
    ref = results["reference_rows"]
    lines = [
        "| model | ROUGE-L sampled (T=1) | ROUGE-L greedy | exact match greedy |",
        "|---|---:|---:|---:|",
    ]
    names = (
        ("teacher (SFT)", "teacher"),
        ("teacher + initial prompt", "teacher_prompt_init"),
        ("teacher + trained prompt (first seed)", "teacher_prompt_trained"),
        ("student init (SFT)", "student_init"),
    )
    for name, key in names:
        if key not in ref:
            continue
        r = ref[key]
        lines.append(f"| {name} | {r['rougeL_sampled']:.1f} | {r['rougeL_greedy']:.1f} | {r['exact_match_greedy']:.1f} |")
    for method, s in results["summary"].items():
        cells = [f"{s[k]['mean']:.1f} ± {s[k]['std']:.1f}" for k in ("rougeL_sampled", "rougeL_greedy",
                                                                   "exact_match_greedy")]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    n = len(results["settings"]["seeds"])
    lines.append(f"\nMethods: mean ± std over {n} seeds, {results['settings']['steps']} steps each, same lr and batch.")
    return "\n".join(lines)


def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    """Loss terms and regulariser weight over steps (PromptKD), and ROUGE-L per method with seed spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    history = [h for h in results["histories"].get("promptkd", []) if "loss/student" in h]
    if history:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        steps = [h["step"] for h in history]
        for key in ("loss/student", "loss/prompt", "loss/reg"):
            ax1.plot(steps, [h[key] for h in history], label=key)
        ax1.set_xlabel("optimizer step")
        ax1.set_ylabel("divergence (nats / token)")
        ax1.set_title("PromptKD loss terms")
        ax1.legend()
        ax2.plot(steps, [h["reg_weight"] for h in history], color="tab:red")
        ax2.set_xlabel("optimizer step")
        ax2.set_title("regulariser weight w(t) = reg_coef (1 - t/T)")
        fig.tight_layout()
        fig.savefig(out / "losses.png", dpi=110)
        plt.close(fig)
        written.append("losses.png")

    summary = results["summary"]
    methods = list(summary)
    fig, ax = plt.subplots(figsize=(8, 4))
    x = range(len(methods))
    for offset, key, label in ((-0.2, "rougeL_sampled", "sampled (T=1)"), (0.2, "rougeL_greedy", "greedy")):
        means = [summary[m][key]["mean"] for m in methods]
        stds = [summary[m][key]["std"] for m in methods]
        ax.bar([i + offset for i in x], means, 0.4, yerr=stds, capsize=4, label=label)
        for i, m in enumerate(methods):
            ax.scatter([i + offset] * len(results["runs"][m]), [r[key] for r in results["runs"][m]], color="k", s=8)
    ref = results["reference_rows"]
    ax.axhline(ref["teacher"]["rougeL_greedy"], color="tab:green", linestyle="--", label="teacher (greedy)")
    ax.axhline(ref["student_init"]["rougeL_greedy"], color="tab:gray", linestyle=":", label="student init (greedy)")
    ax.set_xticks(list(x), methods)
    ax.set_ylabel("ROUGE-L (x100)")
    ax.set_title("Test ROUGE-L per method (bars: mean, whiskers: std, dots: seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rougeL.png", dpi=110)
    plt.close(fig)
    written.append("rougeL.png")
    return written


def format_report(results: dict[str, Any], table: str, plots: list[str]) -> str:
    s = results["settings"]
    ref = results["reference_rows"]
    summary = results["summary"]
    lines = [
        "# PromptKD demo report",
        "",
        f"Synthetic instruction tasks ({s['n_train']} train / {s['n_test']} test rows), a local BPE tokenizer, a "
        f"{ref['models']['teacher_params']:,}-parameter teacher and a {ref['models']['student_params']:,}-parameter "
        f"student ({s['family']}), both supervised first. Each method then trains the same SFT student for "
        f"{s['steps']} steps (lr {s['lr']}, batch {s['batch_size']}, constant schedule), seeds {s['seeds']}.",
        "",
        table,
        "",
    ]
    if "promptkd" in summary and "onpolicy" in summary:
        diff = summary["promptkd"]["rougeL_sampled"]["mean"] - summary["onpolicy"]["rougeL_sampled"]["mean"]
        spread = math.hypot(summary["promptkd"]["rougeL_sampled"]["std"], summary["onpolicy"]["rougeL_sampled"]["std"])
        verdict = "above" if diff > spread else "below" if diff < -spread else "within the seed spread of"
        lines += [
            f"PromptKD vs the prompt-less on-policy baseline (sampled ROUGE-L): {diff:+.2f} points, {verdict} "
            f"the seed spread ({spread:.2f}).",
            "",
        ]
    if "teacher_prompt_init" in ref:
        lines += [
            "PromptKD's student learns from the *prompted* teacher. Its greedy ROUGE-L: "
            f"{ref['teacher']['rougeL_greedy']:.1f} without the prompt, "
            f"{ref['teacher_prompt_init']['rougeL_greedy']:.1f} with the initial prompt "
            f"(\"{PROMPT_INIT_TEXT}\"), "
            + (f"{ref['teacher_prompt_trained']['rougeL_greedy']:.1f} with the prompt trained for {s['steps']} steps. "
               if "teacher_prompt_trained" in ref else "")
            + "When the prompt degrades the teacher (a small teacher trained from scratch never saw such a prefix, "
            "and GPT-2's learned absolute positions shift by the prompt length), the student's target is worse than "
            "the prompt-less baseline's until the regulariser and the prompt updates repair it.",
            "",
        ]
    lines += [f"![{p}]({p})" for p in plots]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = run_demo(build_parser().parse_args(argv))
    # The command's output: the table, and where everything was written.
    sys.stdout.write(format_table(results) + "\n\nWrote " + ", ".join(results["files"])
                     + f" in {results['timings']['total_s']:.0f} s.\n")
    return results
