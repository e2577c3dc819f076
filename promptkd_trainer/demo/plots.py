# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The demo's plots (matplotlib, the `plots` extra): PromptKD's loss terms, ROUGE-L per method, and the KL probe."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    """Write `losses.png`, `rougeL.png` and `kl.png` (those whose data exist) into `out`; return their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, draw in (("losses.png", _losses), ("rougeL.png", _rouge), ("kl.png", _kl)):
        fig = draw(plt, results)
        if fig is not None:
            fig.tight_layout()
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
            written.append(name)
    return written


def _losses(plt, results):
    runs = results["runs"].get("promptkd")
    if not runs:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, color in (("loss/student", "tab:blue"), ("loss/prompt", "tab:orange"), ("loss/reg", "tab:green")):
        for i, run in enumerate(runs):
            # loss/reg is skipped (logged as 0) once its weight is 0.
            history = [h for h in run["history"] if key in h and (key != "loss/reg" or h["reg_weight"] > 0)]
            label = key if i == 0 else None
            ax1.plot([h["step"] for h in history], [h[key] for h in history], color=color, alpha=0.7, label=label)
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("divergence (nats / token)")
    ax1.set_title("PromptKD loss terms (one line per seed)")
    ax1.legend()
    history = [h for h in runs[0]["history"] if "reg_weight" in h]
    ax2.plot([h["step"] for h in history], [h["reg_weight"] for h in history], color="tab:red")
    ax2.set_xlabel("optimizer step")
    ax2.set_title("regulariser weight w(t) = reg_coef (1 - t/T)")
    return fig


def _rouge(plt, results):
    summary, runs, ref = results["summary"], results["runs"], results["reference"]
    methods = list(summary)
    fig, ax = plt.subplots(figsize=(8, 4))
    for offset, key, label in ((-0.2, "rougeL_sampled", "sampled (T=1)"), (0.2, "rougeL_greedy", "greedy")):
        x = [i + offset for i in range(len(methods))]
        ax.bar(x, [summary[m][key]["mean"] for m in methods], 0.4,
               yerr=[summary[m][key]["std"] for m in methods], capsize=4, label=label)
        for xi, m in zip(x, methods):
            ax.scatter([xi] * len(runs[m]), [r[key] for r in runs[m]], color="k", s=8, zorder=3)
    ax.axhline(ref["teacher"]["rougeL_sampled"], color="tab:green", linestyle="--", label="teacher (sampled)")
    ax.axhline(ref["student_init"]["rougeL_sampled"], color="tab:gray", linestyle=":", label="student init (sampled)")
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel("ROUGE-L (x100)")
    ax.set_title("Test ROUGE-L per method (bars: mean, whiskers: std, dots: seeds)")
    ax.legend(fontsize=8)
    return fig


def _kl(plt, results):
    analysis = results["prompt"]
    if not analysis:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = ("before training", "after training")
    for offset, name, label in (
        (-0.2, "kl_prompted_teacher_student", "KL(prompted teacher || student)"),
        (0.2, "kl_teacher_student", "KL(teacher || student)"),
    ):
        for i, when in enumerate(("kl_before", "kl_after")):
            values = [a[when][name] for a in analysis]
            ax.bar(i + offset, sum(values) / len(values), 0.4, color="tab:orange" if offset < 0 else "tab:blue",
                   label=label if i == 0 else None)
            ax.scatter([i + offset] * len(values), values, color="k", s=8, zorder=3)
    ax.set_xticks(range(2), labels)
    ax.set_ylabel("nats / answer token")
    ax.set_title("On held-out student samples (bars: mean, dots: seeds)")
    ax.legend(fontsize=8)
    return fig
