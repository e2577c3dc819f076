# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The demo's results as types: what each stage measures, in one place, read by the report, the plots and tests.

`results.json` is [`DemoResults.to_dict`]; its `checks` object is documented field by field in [`Checks`].
Scores are x100 (ROUGE-L F-measure, exact match and answer accuracy are percentages).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


METRICS = (
    "rougeL_sampled", "answer_accuracy_sampled", "exact_match_sampled",
    "rougeL_greedy", "answer_accuracy_greedy", "exact_match_greedy",
)  # fmt: skip
"""The per-model metrics, in table order."""

BASELINES = ("kd", "seqkd", "onpolicy")
"""The distillation baselines compared with continued SFT."""


@dataclass
class Scores:
    """One model on the held-out prompts.

    Args:
        rougeL_sampled, answer_accuracy_sampled, exact_match_sampled (`float`):
            Means over the prompts and `samples` answers per prompt, sampled at temperature 1 (the papers' decoding).
        rougeL_greedy, answer_accuracy_greedy, exact_match_greedy (`float`):
            The same on one greedy answer per prompt.
        samples (`int`): Sampled answers per prompt.
        answer_accuracy_greedy_by_family (`dict[str, float]`): Greedy answer accuracy per task family.
        per_prompt_rougeL_sampled, per_prompt_answer_accuracy_sampled (`list[float]`):
            Per-prompt means over the samples (test order): what the paired intervals and the variance split use.
        examples (`list[dict]`): The first few prompts with their references, a sampled and the greedy answer.
    """

    rougeL_sampled: float
    answer_accuracy_sampled: float
    exact_match_sampled: float
    rougeL_greedy: float
    answer_accuracy_greedy: float
    exact_match_greedy: float
    samples: int
    answer_accuracy_greedy_by_family: dict[str, float] = field(default_factory=dict)
    per_prompt_rougeL_sampled: list[float] = field(default_factory=list, repr=False)
    per_prompt_answer_accuracy_sampled: list[float] = field(default_factory=list, repr=False)
    examples: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def metric(self, name: str) -> float:
        return getattr(self, name)


@dataclass
class Run:
    """One method trained with one seed from the SFT student, and its scores."""

    method: str
    seed: int
    scores: Scores
    train_s: float
    history: list[dict[str, Any]] = field(repr=False)

    def first_reg_loss(self) -> float | None:
        """`loss/reg` at the first optimizer step (PromptKD only)."""
        return next((h["loss/reg"] for h in self.history if "loss/reg" in h), None)


@dataclass
class PromptAnalysis:
    """What one seed's trained prompt learned ([`~promptkd_trainer.demo.analysis`])."""

    seed: int
    nearest_tokens_init: list[list[str]]
    nearest_tokens_final: list[list[str]]
    drift: float
    kl_before: dict[str, float]
    kl_after: dict[str, float]
    teacher_prompt_trained: Scores


@dataclass
class Stats:
    """Mean, sample std and a 95 % interval of `values`.

    The interval is Student's t over the values (`mean ± t_{0.975, n-1} * std / sqrt(n)`): for paired differences,
    one value per training seed, i.e. the seed is the unit of replication.
    """

    mean: float
    std: float
    ci95_low: float
    ci95_high: float
    n: int
    values: list[float]

    @classmethod
    def of(cls, values: list[float]) -> Stats:
        values = [float(v) for v in values]
        if not values:
            raise ValueError("No values to summarise.")
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        half = t_quantile(0.975, len(values) - 1) * std / math.sqrt(len(values)) if len(values) > 1 else math.inf
        return cls(mean, std, mean - half, mean + half, len(values), values)

    @property
    def half_width(self) -> float:
        return (self.ci95_high - self.ci95_low) / 2


@dataclass
class Paired:
    """A paired comparison `a - b` over the same seeds and prompts, on two metrics, with where its variance is.

    Args:
        rougeL_sampled, answer_accuracy_sampled ([`Stats`]): Per-seed differences of the test means, t-interval.
        variance (`dict[str, dict[str, float]]`): Per metric, `between_seed_var` (the variance of the per-seed
            differences), `within_seed_var` (the mean over seeds of the sampling variance of one seed's
            difference: per-prompt differences' variance / number of prompts) and `training_var` (their
            difference, floored at 0: what more samples or prompts cannot remove, only more seeds).
    """

    a: str
    b: str
    rougeL_sampled: Stats
    answer_accuracy_sampled: Stats
    variance: dict[str, dict[str, float]]


@dataclass
class Checks:
    """The numbers the demo is built to show (`results.json` → `checks`). Points are x100 metric points.

    Args:
        teacher_answer_accuracy_greedy (`float`): The teacher's greedy answer accuracy.
        student_init_answer_accuracy_greedy (`float`): The SFT student's, before any method.
        best_baseline (`str`): The baseline (kd, seqkd, onpolicy) with the highest mean greedy answer accuracy.
        best_baseline_answer_accuracy_gain_over_sft (`float`): Its mean greedy answer accuracy minus `sft`'s.
        best_baseline_answer_accuracy_sampled_gain_over_sft (`float`): The same on sampled answers (T=1).
        best_baseline_gain_over_sft (`float`): Its mean ROUGE-L (sampled) minus `sft`'s.
        best_baseline_spread_separated (`bool`): Its min over seeds is above `sft`'s max, on greedy answer accuracy
            and on sampled ROUGE-L.
        loss_reg_step1 ([`Stats`]): `loss/reg` at PromptKD's first step over seeds (nats/token).
        initial_prompt_cost (`dict[str, float]`): Teacher minus teacher with the initial prompt, per metric.
        promptkd_minus_onpolicy_paired (`dict`): `rougeL_sampled` and `answer_accuracy_sampled` (also under the
            key `answer_accuracy`), each a [`Stats`] dict (`mean`, `ci95_low`, `ci95_high`, ...), and `variance`.
    """

    teacher_answer_accuracy_greedy: float
    student_init_answer_accuracy_greedy: float
    best_baseline: str | None = None
    best_baseline_answer_accuracy_gain_over_sft: float | None = None
    best_baseline_answer_accuracy_sampled_gain_over_sft: float | None = None
    best_baseline_gain_over_sft: float | None = None
    best_baseline_spread_separated: bool | None = None
    loss_reg_step1: Stats | None = None
    initial_prompt_cost: dict[str, float] = field(default_factory=dict)
    promptkd_minus_onpolicy_paired: dict[str, Any] | None = None
    kl_probe: dict[str, float] = field(default_factory=dict)
    prompt_drift: float | None = None


@dataclass
class DemoResults:
    """Everything `promptkd demo` measured; `results.json` is [`to_dict`]."""

    settings: dict[str, Any]
    models: dict[str, Any]
    reference: dict[str, Scores]
    runs: dict[str, list[Run]]
    prompt: list[PromptAnalysis]
    checks: Checks
    timings_s: dict[str, float]
    exposure_bias: dict[str, Any] = field(default_factory=dict)
    ablations: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def summary(self, method: str, metric: str) -> Stats:
        """Mean, std and t-interval over seeds of `method`'s `metric`."""
        return Stats.of([r.scores.metric(metric) for r in self.runs[method]])

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["summary"] = {
            m: {k: _short(asdict(self.summary(m, k))) for k in METRICS} for m in self.runs if self.runs[m]
        }
        return out


def _short(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items()}


def t_quantile(p: float, df: int) -> float:
    """Quantile `p` (in (0.5, 1)) of Student's t with `df` degrees of freedom, by bisection on its CDF.

    The CDF is integrated numerically (Simpson's rule on the density, `math.lgamma` for the constant): exact to
    1e-6 for the 95 % intervals used here, without SciPy.
    """
    if df < 1:
        raise ValueError(f"`df` must be >= 1, got {df}.")
    if not 0.5 < p < 1:
        raise ValueError(f"`p` must be in (0.5, 1), got {p}.")
    const = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x: float, n: int = 2000) -> float:
        h = x / n
        density = [const * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
        simpson = density[0] + density[-1] + 4 * sum(density[1:-1:2]) + 2 * sum(density[2:-1:2])
        return 0.5 + simpson * h / 3

    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def paired(a: list[Run], b: list[Run]) -> Paired:
    """`a - b` paired by seed (same seeds, same prompts, same sampling seed), on sampled ROUGE-L and answer accuracy.

    Besides the t-interval over seeds, it splits the variance: `within_seed_var` estimates how much one seed's
    difference would move if its prompts and samples were drawn again (more prompts or samples reduce it), while
    `between_seed_var` is what the seeds show; the excess is training variance (only more seeds reduce it).
    """
    by_seed = {r.seed: r for r in b}
    pairs = [(r, by_seed[r.seed]) for r in a if r.seed in by_seed]
    if not pairs:
        raise ValueError(f"No common seeds between {a[0].method if a else '?'} and {b[0].method if b else '?'}.")
    stats, variance = {}, {}
    for metric in ("rougeL_sampled", "answer_accuracy_sampled"):
        diffs, within = [], []
        for ra, rb in pairs:
            per_prompt = [x - y for x, y in zip(getattr(ra.scores, f"per_prompt_{metric}"),
                                                getattr(rb.scores, f"per_prompt_{metric}"))]
            diffs.append(ra.scores.metric(metric) - rb.scores.metric(metric))
            within.append(statistics.variance(per_prompt) / len(per_prompt) if len(per_prompt) > 1 else 0.0)
        stats[metric] = Stats.of(diffs)
        between = stats[metric].std ** 2
        variance[metric] = {
            "between_seed_var": between,
            "within_seed_var": statistics.fmean(within),
            "training_var": max(0.0, between - statistics.fmean(within)),
        }
    return Paired(pairs[0][0].method, pairs[0][1].method, stats["rougeL_sampled"], stats["answer_accuracy_sampled"],
                  variance)
