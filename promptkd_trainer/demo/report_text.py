# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`report.md`: the demo's table with the setting, the checks, what the prompt learned and, measured, why."""

from __future__ import annotations

from typing import Any


def _pm(stats: dict[str, float]) -> str:
    return f"{stats['mean']:+.2f} ± {stats['std']:.2f}"


def format_report(results: dict[str, Any], table: str, plots: list[str]) -> str:
    """The Markdown report (plots are linked by file name, next to it)."""
    lines = ["# PromptKD demo report", "", *_setting(results), "", table, "", *_checks(results)]
    if results["prompt"]:
        lines += ["", *_prompt(results), "", *_terms(results)]
    lines += ["", *[f"![{p}]({p})" for p in plots]]
    t = results["timings_s"]
    build = results["models"]["build_timings_s"]
    lines += [
        "",
        "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items())
        + ("; models loaded from the cache" if results["models"]["cached"] else "")
        + ". Model building: " + ", ".join(f"{k} {v:.0f}" for k, v in build.items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def _setting(results):
    s, m = results["settings"], results["models"]
    return [
        f"A {s['family']} teacher ({m['teacher_parameters']:,} parameters, {m['teacher_non_embedding_parameters']:,} "
        f"without embeddings) and a student ({m['student_parameters']:,}; "
        f"{m['student_non_embedding_parameters']:,}) are both pretrained on English text (CPython's bundled reference "
        f"manual and generated sentences, packed in blocks of {s['block_size']} tokens), then instruction-tuned: the "
        f"teacher on {s['n_train']:,} task rows, the student on {s['n_labelled']} of them. Those {s['n_labelled']} "
        "rows are all the student and every method ever see: the student is limited by data, and the teacher knows "
        f"more than its labels say. Tasks: {', '.join(s['families'])}, each answer with several good wordings "
        f"(references: all of them). Test: {s['n_test']} held-out prompts, ROUGE-L x100 (sampled at T=1, "
        "and greedy), the papers' decoding.",
    ]


def _checks(results):
    c = results["checks"]
    lines = ["## Checks", ""]
    lines.append(f"- Capacity: the teacher has {c['capacity_ratio']:.1f}x the student's non-embedding parameters.")
    if "loss_reg_step1" in c:
        lines.append(
            f"- The initial prompt is a nudge: `loss/reg` at PromptKD step 1 is {c['loss_reg_step1']['mean']:.3f} "
            f"nats/token; with it the teacher scores {-c['initial_prompt_cost_sampled']:+.1f} ROUGE-L sampled and "
            f"{-c['initial_prompt_cost_greedy']:+.1f} greedy against the teacher without it."
        )
    lines.append(f"- Teacher - student init gap: {c['teacher_student_gap_sampled']:.1f} ROUGE-L (sampled).")
    if "best_baseline" in c:
        sep = "do not overlap" if c["best_baseline_spread_separated"] else "overlap"
        lines.append(
            f"- Distillation vs continued SFT: the best baseline, `{c['best_baseline']}`, is "
            f"{c['best_baseline_gain_over_sft']:+.2f} points (sampled) from `sft`; their mean ± std intervals {sep}."
        )
    if "promptkd_minus_onpolicy_paired" in c:
        d = c["promptkd_minus_onpolicy_paired"]
        per_seed = ", ".join(f"{v:+.2f}" for v in d["values"])
        lines.append(
            f"- PromptKD - on-policy (same seeds, sampled ROUGE-L): {_pm(d)} (per seed: {per_seed})."
        )
    return lines


def _prompt(results):
    analysis, c = results["prompt"], results["checks"]
    first = analysis[0]
    lines = [
        "## What the prompt learned",
        "",
        f"Nearest vocabulary tokens (cosine, input embeddings) of each virtual token, seed {first['seed']}; the "
        f"prompt moved by {c['prompt_drift']:.2f} of its norm on average over seeds.",
        "",
        "| virtual token | at initialisation | after training |",
        "|---|---|---|",
    ]
    for i, (a, b) in enumerate(zip(first["nearest_tokens_init"], first["nearest_tokens_final"])):
        lines.append(f"| {i} | {' '.join(f'`{t}`' for t in a)} | {' '.join(f'`{t}`' for t in b)} |")
    lines += [
        "",
        f"KL on the student's own samples for {results['settings']['kl_probe_prompts']} held-out prompts (nats per "
        "answer token, mean over seeds). The paper's claim is that training makes the prompted teacher closer to the "
        "student than the plain teacher is.",
        "",
        "| | KL(prompted teacher ‖ student) | KL(teacher ‖ student) |",
        "|---|---:|---:|",
    ]
    for when, label in (("kl_before", "initial student, initial prompt"), ("kl_after", "trained student and prompt")):
        lines.append(
            f"| {label} | {c[f'{when}_kl_prompted_teacher_student']:.3f} | {c[f'{when}_kl_teacher_student']:.3f} |"
        )
    return lines


def _terms(results):
    runs, ref = results["runs"]["promptkd"], results["reference"]
    lines = [
        "## PromptKD's terms over training (measured)",
        "",
        "Nats per token, first → last step. `loss/reg` is KL(prompted teacher ‖ teacher), unweighted; it is not "
        "computed once its weight w(t) reaches 0, so its last value is from the last step with w(t) > 0.",
        "",
        "| seed | loss/student | loss/prompt | loss/reg |",
        "|---|---|---|---|",
    ]
    for run in runs:
        h = [x for x in run["history"] if "loss/student" in x]
        reg = [x for x in h if x.get("reg_weight", 1.0) > 0] or h
        cells = [f"{h[0][k]:.3f} → {h[-1][k]:.3f}" for k in ("loss/student", "loss/prompt")]
        cells.append(f"{reg[0]['loss/reg']:.3f} → {reg[-1]['loss/reg']:.3f}")
        lines.append(f"| {run['seed']} | {' | '.join(cells)} |")
    if "teacher_prompt_trained" in ref:
        lines += [
            "",
            "The student's target: the teacher scores "
            f"{ref['teacher']['rougeL_sampled']:.1f} sampled without a prompt, "
            f"{ref['teacher_prompt_init']['rougeL_sampled']:.1f} with the initial prompt and "
            f"{ref['teacher_prompt_trained']['rougeL_sampled']:.1f} with its trained prompt (mean over seeds).",
        ]
    c = results["checks"]
    paired = c.get("promptkd_minus_onpolicy_paired")
    if paired and paired["mean"] < 0:
        kl_gain = c["kl_after_kl_teacher_student"] - c["kl_after_kl_prompted_teacher_student"]
        lines += [
            "",
            f"Where PromptKD trails the prompt-less on-policy baseline ({paired['mean']:+.2f} ± {paired['std']:.2f} "
            f"points), the measurements above say what its prompt did: it moved by {c['prompt_drift']:.2f} of its "
            f"norm, it brought the teacher {kl_gain:.3f} nats/token closer to the trained student than the plain "
            "teacher is, and the prompted teacher's own ROUGE-L moved by "
            f"{ref['teacher_prompt_trained']['rougeL_sampled'] - ref['teacher']['rougeL_sampled']:+.1f} points. "
            "A target closer to the student is what the paper's prompt is for; here it did not turn into a higher "
            "student ROUGE-L"
            + (" (the difference is within the seed spread)." if -paired["mean"] <= paired["std"] else "."),
        ]
    return lines
