# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The demo's outputs: a summary with the checks the demo is built to show, the table, `report.md` and plots.

Spreads are sample standard deviations over seeds ([`promptkd_trainer.evaluation.mean_std`]).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..evaluation import mean_std


METRICS = ("rougeL_sampled", "rougeL_greedy", "exact_match_greedy")
BASELINES = ("kd", "seqkd", "onpolicy")
ROW_NAMES = {
    "teacher": "teacher (SFT)",
    "teacher_prompt_init": "teacher + initial prompt",
    "teacher_prompt_trained": "teacher + trained prompt",
    "student_init": "student init (SFT)",
}


def _stats(values: list[float]) -> dict[str, float]:
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "values": list(values)}


def summarise(cfg, models, reference, runs, prompt_analysis, timings) -> dict[str, Any]:
    """Collect everything into the `results.json` structure, with the headline checks under `checks`."""
    reference = dict(reference)
    if prompt_analysis:
        # One prompted-teacher row per seed (each seed trains its own prompt): mean (and std) over seeds.
        trained = [a["teacher_prompt_trained"] for a in prompt_analysis]
        prompt_analysis = [{k: v for k, v in a.items() if k != "teacher_prompt_trained"} for a in prompt_analysis]
        row = {k: mean_std([t[k] for t in trained])[0] for k in METRICS}
        row["rougeL_sampled_std"] = mean_std([t["rougeL_sampled"] for t in trained])[1]
        reference["teacher_prompt_trained"] = {**row, "examples": trained[0]["examples"]}
    summary = {m: {k: _stats([r[k] for r in rs]) for k in METRICS} for m, rs in runs.items()}
    info = models.info
    results = {
        "settings": cfg.to_dict(),
        "models": {
            "cache": str(models.path),
            "cached": models.cached,
            "teacher_parameters": info["teacher_parameters"],
            "student_parameters": info["student_parameters"],
            "teacher_non_embedding_parameters": info["teacher_non_embedding_parameters"],
            "student_non_embedding_parameters": info["student_non_embedding_parameters"],
            "build_timings_s": info["timings"],
            "build_losses": info["losses"],
        },
        "timings_s": timings,
        "reference": reference,
        "summary": summary,
        "runs": runs,
        "prompt": prompt_analysis,
    }
    results["checks"] = _checks(results)
    return results


def _checks(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers the demo exists to show (issue-level acceptance: see the README's demo section)."""
    ref, summary, runs = results["reference"], results["summary"], results["runs"]
    m = results["models"]
    checks: dict[str, Any] = {
        "capacity_ratio": m["teacher_non_embedding_parameters"] / m["student_non_embedding_parameters"],
        "teacher_student_gap_sampled": ref["teacher"]["rougeL_sampled"] - ref["student_init"]["rougeL_sampled"],
    }
    if "teacher_prompt_init" in ref:
        for kind in ("sampled", "greedy"):
            key = f"rougeL_{kind}"
            checks[f"initial_prompt_cost_{kind}"] = ref["teacher"][key] - ref["teacher_prompt_init"][key]
    if "promptkd" in runs:
        first = [next(h for h in r["history"] if "loss/reg" in h) for r in runs["promptkd"]]
        checks["loss_reg_step1"] = _stats([h["loss/reg"] for h in first])
    baselines = [b for b in BASELINES if b in summary]
    if "sft" in summary and baselines:
        best = max(baselines, key=lambda b: summary[b]["rougeL_sampled"]["mean"])
        b, s = summary[best]["rougeL_sampled"], summary["sft"]["rougeL_sampled"]
        checks["best_baseline"] = best
        checks["best_baseline_gain_over_sft"] = b["mean"] - s["mean"]
        checks["best_baseline_spread_separated"] = b["mean"] - b["std"] > s["mean"] + s["std"]
    if "promptkd" in runs and "onpolicy" in runs:
        pk = {r["seed"]: r["rougeL_sampled"] for r in runs["promptkd"]}
        op = {r["seed"]: r["rougeL_sampled"] for r in runs["onpolicy"]}
        diffs = [pk[s] - op[s] for s in pk if s in op]
        checks["promptkd_minus_onpolicy_paired"] = _stats(diffs)
    if results["prompt"]:
        for when in ("kl_before", "kl_after"):
            for name in ("kl_prompted_teacher_student", "kl_teacher_student"):
                checks[f"{when}_{name}"] = mean_std([a[when][name] for a in results["prompt"]])[0]
        checks["prompt_drift"] = mean_std([a["drift"] for a in results["prompt"]])[0]
    return checks


def format_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table: reference models, then each method's mean ± std over seeds."""
    lines = [
        "| model | ROUGE-L sampled (T=1) | ROUGE-L greedy | exact match greedy |",
        "|---|---:|---:|---:|",
    ]
    for key, name in ROW_NAMES.items():
        row = results["reference"].get(key)
        if row:
            lines.append(
                f"| {name} | {row['rougeL_sampled']:.1f} ± {row['rougeL_sampled_std']:.1f} | "
                f"{row['rougeL_greedy']:.1f} | {row['exact_match_greedy']:.1f} |"
            )
    for method, s in results["summary"].items():
        cells = " | ".join(f"{s[k]['mean']:.1f} ± {s[k]['std']:.1f}" for k in METRICS)
        lines.append(f"| {method} | {cells} |")
    st = results["settings"]
    lines.append(
        f"\nMean ± sample std over seeds {st['seeds']}; every method: {st['steps']} steps, batch {st['batch_size']}, "
        f"lr {st['learning_rate']} (constant), the same {st['n_labelled']} prompts."
    )
    return "\n".join(lines)


def write_outputs(results: dict[str, Any], out: Path, plots: bool = True) -> list[str]:
    """Write `results.json`, `report.md` and (with matplotlib) the plots; return the paths written."""
    from .plots import write_plots
    from .report_text import format_report

    written = write_plots(results, out) if plots else []
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    (out / "report.md").write_text(format_report(results, format_table(results), written), encoding="utf-8")
    return [str(out / name) for name in ("results.json", "report.md", *written)]
