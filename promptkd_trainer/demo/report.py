# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The demo's outputs: the checks the demo is built to show, the table, `results.json`, `report.md` and plots.

Spreads are sample standard deviations over seeds; intervals are 95 % t-intervals over seeds ([`results.Stats`]).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .plots import write_plots
from .report_text import format_report
from .results import BASELINES, Checks, DemoResults, PromptAnalysis, Run, Scores, Stats, paired


ROW_NAMES = {
    "teacher": "teacher (SFT)",
    "teacher_prompt_init": "teacher + initial prompt",
    "teacher_prompt_trained": "teacher + trained prompt",
    "student_init": "student init (SFT)",
}
TABLE_METRICS = (
    ("answer_accuracy_greedy", "answer acc. greedy"),
    ("answer_accuracy_sampled", "answer acc. sampled"),
    ("rougeL_sampled", "ROUGE-L sampled"),
    ("rougeL_greedy", "ROUGE-L greedy"),
    ("exact_match_greedy", "exact match greedy"),
)


def compute_checks(reference: dict[str, Scores], runs: dict[str, list[Run]], analysis: list[PromptAnalysis]) -> Checks:
    """The headline numbers, computed from the reference rows, the runs and the prompt analysis."""
    checks = Checks(
        teacher_answer_accuracy_greedy=reference["teacher"].answer_accuracy_greedy,
        student_init_answer_accuracy_greedy=reference["student_init"].answer_accuracy_greedy,
    )
    if "teacher_prompt_init" in reference:
        checks.initial_prompt_cost = {
            m: reference["teacher"].metric(m) - reference["teacher_prompt_init"].metric(m)
            for m in ("rougeL_sampled", "rougeL_greedy", "answer_accuracy_greedy", "answer_accuracy_sampled")
        }
    if runs.get("promptkd"):
        checks.loss_reg_step1 = Stats.of([r.first_reg_loss() for r in runs["promptkd"]])
    baselines = [b for b in BASELINES if runs.get(b)]
    if runs.get("sft") and baselines:

        def mean(method, metric):
            return Stats.of([r.scores.metric(metric) for r in runs[method]]).mean

        # Greedy answer accuracy, as for the teacher and the student init: what the model knows, read out by its
        # most likely answer; sampled answers at T=1 add how peaked it is (also reported).
        best = max(baselines, key=lambda b: mean(b, "answer_accuracy_greedy"))
        checks.best_baseline = best
        gain = {m: mean(best, m) - mean("sft", m) for m in ("answer_accuracy_greedy", "answer_accuracy_sampled")}
        checks.best_baseline_answer_accuracy_gain_over_sft = gain["answer_accuracy_greedy"]
        checks.best_baseline_answer_accuracy_sampled_gain_over_sft = gain["answer_accuracy_sampled"]
        checks.best_baseline_gain_over_sft = mean(best, "rougeL_sampled") - mean("sft", "rougeL_sampled")
        checks.best_baseline_spread_separated = all(
            min(r.scores.metric(k) for r in runs[best]) > max(r.scores.metric(k) for r in runs["sft"])
            for k in ("answer_accuracy_greedy", "rougeL_sampled")
        )
    if runs.get("promptkd") and runs.get("onpolicy"):
        comparison = paired(runs["promptkd"], runs["onpolicy"])
        checks.promptkd_minus_onpolicy_paired = {
            "rougeL_sampled": asdict(comparison.rougeL_sampled),
            "answer_accuracy": asdict(comparison.answer_accuracy_sampled),
            "variance": comparison.variance,
            "interval": "95 % Student t over training seeds of the per-seed paired difference",
        }
    if analysis:
        for when in ("kl_before", "kl_after"):
            for name in ("kl_prompted_teacher_student", "kl_teacher_student"):
                values = [getattr(a, when)[name] for a in analysis]
                checks.kl_probe[f"{when}_{name}"] = sum(values) / len(values)
        checks.prompt_drift = sum(a.drift for a in analysis) / len(analysis)
    return checks


def trained_prompt_row(results: DemoResults) -> dict[str, float] | None:
    """The teacher with its trained prompt, mean over seeds (each seed trains its own prompt)."""
    if not results.prompt:
        return None
    rows = [a.teacher_prompt_trained for a in results.prompt]
    return {m: sum(r.metric(m) for r in rows) / len(rows) for m, _ in TABLE_METRICS}


def format_table(results: DemoResults) -> str:
    """The results as a Markdown table: reference models, then each method's mean ± std over seeds."""
    header = " | ".join(label for _, label in TABLE_METRICS)
    lines = [f"| model | {header} |", "|---|" + "---:|" * len(TABLE_METRICS)]
    reference = {k: {m: v.metric(m) for m, _ in TABLE_METRICS} for k, v in results.reference.items()}
    trained = trained_prompt_row(results)
    if trained:
        reference["teacher_prompt_trained"] = trained
    for key, name in ROW_NAMES.items():
        if key in reference:
            lines.append(f"| {name} | " + " | ".join(f"{reference[key][m]:.1f}" for m, _ in TABLE_METRICS) + " |")
    for method in results.runs:
        if results.runs[method]:
            cells = []
            for m, _ in TABLE_METRICS:
                s = results.summary(method, m)
                cells.append(f"{s.mean:.1f} ± {s.std:.1f}")
            lines.append(f"| {method} | {' | '.join(cells)} |")
    st = results.settings
    lines.append(
        f"\nMethods: mean ± sample std over seeds {st['seeds']}{_comparison_seeds(results)}. Every method: "
        f"{st['steps']} steps, batch "
        f"{st['batch_size']}, lr {st['learning_rate']} ({st.get('lr_scheduler_type', 'constant')}); sft and kd "
        f"on the {st['n_labelled']} labelled rows, "
        f"seqkd, onpolicy and promptkd on {st['n_prompts']} prompts. Test: {st['n_test']} held-out prompts, "
        f"{st['eval_samples']} sampled answers (T=1) each and one greedy."
    )
    return "\n".join(lines)


def _comparison_seeds(results: DemoResults) -> str:
    seeds = sorted({r.seed for r in results.runs.get("onpolicy", [])} - set(results.settings["seeds"]))
    return f" (onpolicy and promptkd: also {seeds}, for their paired comparison)" if seeds else ""


def write_outputs(results: DemoResults, out: Path, plots: bool = True) -> list[str]:
    """Write `results.json`, `report.md` and (with matplotlib) the plots; return the paths written."""
    written = write_plots(results, out) if plots else []
    (out / "results.json").write_text(json.dumps(results.to_dict(), indent=2, default=str), encoding="utf-8")
    (out / "report.md").write_text(format_report(results, format_table(results), written), encoding="utf-8")
    return [str(out / name) for name in ("results.json", "report.md", *written)]
