# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`report.md`: the demo's table with the setting, the checks, the paired comparison, exposure bias, what the prompt
learned and, measured, why."""

from __future__ import annotations

from .results import DemoResults


def _ci(stats: dict | object) -> str:
    s = stats if isinstance(stats, dict) else stats.__dict__
    return f"{s['mean']:+.2f} [{s['ci95_low']:+.2f}, {s['ci95_high']:+.2f}]"


def format_report(results: DemoResults, table: str, plots: list[str]) -> str:
    """The Markdown report (plots are linked by file name, next to it)."""
    lines = ["# PromptKD demo report", "", *_setting(results), "", table, "", *_checks(results)]
    if results.exposure_bias:
        lines += ["", *_exposure(results)]
    if results.ablations:
        lines += ["", *_ablations(results)]
    if results.prompt:
        lines += ["", *_prompt(results), "", *_terms(results)]
    lines += ["", *_examples(results), "", *[f"![{p}]({p})" for p in plots]]
    t, build = results.timings_s, results.models["build_timings_s"]
    lines += [
        "",
        "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items())
        + f"; models: {results.models['source']} ({results.models['path']})"
        + ". Model building (when they were made): " + ", ".join(f"{k} {v:.0f}" for k, v in build.items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def _setting(results):
    s, m = results.settings, results.models
    return [
        f"A {s['family']} teacher ({m['teacher_parameters']:,} parameters, {m['teacher_non_embedding_parameters']:,} "
        f"without embeddings) and a student ({m['student_parameters']:,}; "
        f"{m['student_non_embedding_parameters']:,}) are both pretrained on English text (CPython's bundled reference "
        f"manual and generated sentences), then instruction-tuned: the teacher on {s['n_train']:,} task rows "
        f"({100 * s.get('teacher_preamble_fraction', 0.0):.0f} % of its prompts after 1-2 generated sentences), the "
        f"student on {s['n_labelled']} of them, the only labelled rows it and the label-using methods (sft, kd) ever "
        f"see; seqkd, onpolicy and promptkd train on {s['n_prompts']} prompts without their answers. Tasks: "
        f"{', '.join(s['families'])}, each answer with several good wordings (references: all of them). Answer "
        "accuracy checks the content (the number, word or value) whatever the wording; ROUGE-L x100 is the best "
        "over the references; decoding is the papers' (T=1, no top-k/top-p).",
    ]


def _checks(results):
    c = results.checks
    lines = ["## Checks", ""]
    lines.append(
        f"- The teacher is right: greedy answer accuracy {c.teacher_answer_accuracy_greedy:.1f} %; the SFT student: "
        f"{c.student_init_answer_accuracy_greedy:.1f} %."
    )
    if c.loss_reg_step1 is not None:
        cost = c.initial_prompt_cost
        lines.append(
            f"- The initial prompt is a nudge: `loss/reg` at PromptKD step 1 is {c.loss_reg_step1.mean:.3f} "
            f"nats/token; it costs the teacher {cost['rougeL_sampled']:+.1f} ROUGE-L sampled, "
            f"{cost['rougeL_greedy']:+.1f} greedy and {cost['answer_accuracy_greedy']:+.1f} points of greedy answer "
            "accuracy (teacher minus teacher with the initial prompt)."
        )
    if c.best_baseline is not None:
        sep = "do not overlap" if c.best_baseline_spread_separated else "overlap"
        lines.append(
            f"- Distillation vs continued SFT: the best baseline, `{c.best_baseline}`, beats `sft` by "
            f"{c.best_baseline_answer_accuracy_gain_over_sft:+.1f} points of greedy answer accuracy "
            f"({c.best_baseline_answer_accuracy_sampled_gain_over_sft:+.1f} on sampled answers) and "
            f"{c.best_baseline_gain_over_sft:+.1f} ROUGE-L (sampled); their seed ranges {sep}."
        )
    if c.promptkd_minus_onpolicy_paired:
        d = c.promptkd_minus_onpolicy_paired
        r, a = d["rougeL_sampled"], d["answer_accuracy"]
        sign = _sign(r)
        lines += [
            f"- **PromptKD - on-policy** (paired: same seeds, prompts and sampling seeds; mean [95 % t-interval over "
            f"{r['n']} training seeds]): ROUGE-L sampled {_ci(r)}, answer accuracy {_ci(a)}. {sign}",
            "  Per seed (ROUGE-L): " + ", ".join(f"{v:+.2f}" for v in r["values"]) + ".",
        ]
        v = d["variance"]["rougeL_sampled"]
        lines.append(
            f"- Where the variance is (ROUGE-L, squared points): between seeds {v['between_seed_var']:.2f}; of which "
            f"evaluation (prompts and samples) about {v['within_seed_var']:.2f}, training about "
            f"{v['training_var']:.2f}."
        )
    return lines


def _sign(stats: dict) -> str:
    if stats["ci95_low"] > 0:
        return "PromptKD's prompt gives a better student here."
    if stats["ci95_high"] < 0:
        return "PromptKD's prompt gives a worse student here: on-policy distillation without it is better."
    return "The interval covers 0: at this scale the prompt neither helps nor hurts measurably."


def _exposure(results):
    lines = [
        "## Exposure bias (ExAccErr, %)",
        "",
        "The official code's metric (`evaluate_exposure_bias.py`): the cumulative KL(teacher ‖ student) over the "
        "first l tokens of the student's own samples, relative to the same on the teacher's samples, minus 1, x100; "
        "mean over seeds. Lower: the student's errors compound less on its own text.",
        "",
    ]
    methods = list(results.exposure_bias)
    lengths = results.exposure_bias[methods[0]][0]["lengths"]
    lines += ["| student | " + " | ".join(f"l={n}" for n in lengths) + " |", "|---|" + "---:|" * len(lengths)]
    for method in methods:
        per_seed = [r["exaccerr"] for r in results.exposure_bias[method]]
        cells = []
        for i in range(len(lengths)):
            values = [v[i] for v in per_seed if v[i] == v[i]]  # skip nan (E(l) = 0)
            cells.append(f"{sum(values) / len(values):.1f}" if values else "n/a")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _ablations(results):
    lines = [
        "## Ablations (each minus full PromptKD, paired by seed; mean [95 % t-interval])",
        "",
        "| ablation | ROUGE-L sampled | answer accuracy sampled |",
        "|---|---:|---:|",
    ]
    for name, row in results.ablations.items():
        lines.append(f"| {name} | {_ci(row['rougeL_sampled'])} | {_ci(row['answer_accuracy_sampled'])} |")
    return lines


def _prompt(results):
    analysis, c = results.prompt, results.checks
    first = analysis[0]
    lines = [
        "## What the prompt learned",
        "",
        f"Nearest vocabulary tokens (cosine, input embeddings) of each virtual token, seed {first.seed}; the prompt "
        f"moved by {c.prompt_drift:.2f} of its norm on average over seeds.",
        "",
        "| virtual token | at initialisation | after training |",
        "|---|---|---|",
    ]
    for i, (a, b) in enumerate(zip(first.nearest_tokens_init, first.nearest_tokens_final)):
        lines.append(f"| {i} | {' '.join(f'`{t}`' for t in a)} | {' '.join(f'`{t}`' for t in b)} |")
    lines += [
        "",
        f"KL on the student's own samples for {results.settings['kl_probe_prompts']} held-out prompts (nats per "
        "answer token, mean over seeds). The paper's claim is that training makes the prompted teacher closer to the "
        "student than the plain teacher is.",
        "",
        "| | KL(prompted teacher ‖ student) | KL(teacher ‖ student) |",
        "|---|---:|---:|",
    ]
    for when, label in (("kl_before", "initial student, initial prompt"), ("kl_after", "trained student and prompt")):
        lines.append(
            f"| {label} | {c.kl_probe[f'{when}_kl_prompted_teacher_student']:.3f} | "
            f"{c.kl_probe[f'{when}_kl_teacher_student']:.3f} |"
        )
    return lines


def _terms(results):
    lines = [
        "## PromptKD's terms over training (measured)",
        "",
        "Nats per token, first → last step. `loss/reg` is KL(prompted teacher ‖ teacher), unweighted; it is not "
        "computed once its weight w(t) reaches 0, so its last value is from the last step with w(t) > 0.",
        "",
        "| seed | loss/student | loss/prompt | loss/reg |",
        "|---|---|---|---|",
    ]
    for run in results.runs["promptkd"]:
        h = [x for x in run.history if "loss/student" in x]
        reg = [x for x in h if x.get("reg_weight", 1.0) > 0] or h
        cells = [f"{h[0][k]:.3f} → {h[-1][k]:.3f}" for k in ("loss/student", "loss/prompt")]
        cells.append(f"{reg[0]['loss/reg']:.3f} → {reg[-1]['loss/reg']:.3f}")
        lines.append(f"| {run.seed} | {' | '.join(cells)} |")
    ref = results.reference
    trained = [a.teacher_prompt_trained for a in results.prompt]
    lines += [
        "",
        "The student's target, greedy answer accuracy: the teacher "
        f"{ref['teacher'].answer_accuracy_greedy:.1f} without a prompt, "
        f"{ref['teacher_prompt_init'].answer_accuracy_greedy:.1f} with the initial prompt and "
        f"{sum(t.answer_accuracy_greedy for t in trained) / len(trained):.1f} with its trained prompt (mean over "
        "seeds).",
    ]
    return lines


def _examples(results):
    lines = ["## Examples (greedy answers; truth in brackets)", ""]
    rows = [("teacher", results.reference["teacher"])]
    rows += [(f"{m} (seed {rs[0].seed})", rs[0].scores) for m, rs in results.runs.items() if rs][:5]
    first = results.reference["teacher"].examples
    for i, ex in enumerate(first):
        prompt = ex["prompt"].replace("\n", " / ")
        lines.append(f"- `{prompt}` [{ex['answer']}]")
        for name, scores in rows:
            lines.append(f"  - {name}: {scores.examples[i]['greedy']!r}")
    return lines
