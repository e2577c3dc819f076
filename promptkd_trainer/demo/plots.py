# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The demo's plots (matplotlib, the `plots` extra): PromptKD's loss terms, scores per method, and the KL probe."""

from __future__ import annotations

from pathlib import Path

from .results import DemoResults


def write_plots(results: DemoResults, out: Path) -> list[str]:
    """Write `losses.png`, `scores.png` and `kl.png` (those whose data exist) into `out`; return their names."""
    # matplotlib is an optional extra (`plots`): imported here, where it is used, and only when it is installed.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, draw in (("losses.png", _losses), ("scores.png", _scores), ("kl.png", _kl)):
        fig = draw(plt, results)
        if fig is not None:
            fig.tight_layout()
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
            written.append(name)
    return written


def _losses(plt, results):
    runs = results.runs.get("promptkd")
    if not runs:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, color in (("loss/student", "tab:blue"), ("loss/prompt", "tab:orange"), ("loss/reg", "tab:green")):
        for i, run in enumerate(runs):
            # loss/reg is skipped (logged as 0) once its weight is 0.
            history = [h for h in run.history if key in h and (key != "loss/reg" or h["reg_weight"] > 0)]
            label = key if i == 0 else None
            ax1.plot([h["step"] for h in history], [h[key] for h in history], color=color, alpha=0.7, label=label)
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("divergence (nats / token)")
    ax1.set_title("PromptKD loss terms (one line per seed)")
    ax1.legend()
    history = [h for h in runs[0].history if "reg_weight" in h]
    ax2.plot([h["step"] for h in history], [h["reg_weight"] for h in history], color="tab:red")
    ax2.set_xlabel("optimizer step")
    ax2.set_title("regulariser weight w(t)")
    return fig


def _scores(plt, results):
    methods = [m for m, rs in results.runs.items() if rs]
    ref = results.reference
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, key, title in (
        (axes[0], "answer_accuracy_sampled", "answer accuracy, sampled (%)"),
        (axes[1], "rougeL_sampled", "ROUGE-L, sampled (x100)"),
    ):
        stats = [results.summary(m, key) for m in methods]
        ax.bar(range(len(methods)), [s.mean for s in stats], 0.6,
               yerr=[[s.mean - s.ci95_low for s in stats], [s.ci95_high - s.mean for s in stats]], capsize=4)
        for i, m in enumerate(methods):
            values = [r.scores.metric(key) for r in results.runs[m]]
            ax.scatter([i] * len(values), values, color="k", s=8, zorder=3)
        ax.axhline(ref["teacher"].metric(key), color="tab:green", linestyle="--", label="teacher")
        ax.axhline(ref["student_init"].metric(key), color="tab:gray", linestyle=":", label="student init")
        ax.set_xticks(range(len(methods)), methods, rotation=20)
        ax.set_title(f"{title}: mean, 95 % interval, seeds")
        ax.legend(fontsize=8)
    return fig


def _kl(plt, results):
    analysis = results.prompt
    if not analysis:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = ("before training", "after training")
    for offset, name, label in (
        (-0.2, "kl_prompted_teacher_student", "KL(prompted teacher || student)"),
        (0.2, "kl_teacher_student", "KL(teacher || student)"),
    ):
        for i, when in enumerate(("kl_before", "kl_after")):
            values = [getattr(a, when)[name] for a in analysis]
            ax.bar(i + offset, sum(values) / len(values), 0.4, color="tab:orange" if offset < 0 else "tab:blue",
                   label=label if i == 0 else None)
            ax.scatter([i + offset] * len(values), values, color="k", s=8, zorder=3)
    ax.set_xticks(range(2), labels)
    ax.set_ylabel("nats / answer token")
    ax.set_title("On held-out student samples (bars: mean, dots: seeds)")
    ax.legend(fontsize=8)
    return fig
