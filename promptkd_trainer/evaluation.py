# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""ROUGE-L evaluation as in the PromptKD/MiniLLM papers, and a callback that selects checkpoints by it.

The protocol (official `scripts/*/eval/*.sh`, `evaluate_main.py`, `rouge_metric.py`):

- prompts are the MiniLLM-processed `valid.jsonl` files of Dolly, Self-Instruct, Vicuna, S-NI and UnNI, whose
  `prompt` field is the Alpaca template ([`promptkd_trainer.formats.ALPACA_TEMPLATE`]);
- answers are sampled at temperature 1 with top-k 0, top-p 1 and `no_repeat_ngram_size=6`, for seeds 10..50
  ([`paper_generation_kwargs`]); a response is decoded with `skip_special_tokens`, cut at EOS and stripped;
- the score is `rouge_score`'s ROUGE-L F-measure with the Porter stemmer, max over the references of an example,
  averaged over examples, x100 ([`rouge_l`], [`compute_rouge_l`]);
- over seeds, scores are reported as mean ± sample standard deviation ([`mean_std`]).

Generation is [`promptkd_trainer.generation.generate_answers`], the one path used by `promptkd eval`,
[`RougeEvalCallback`] and `promptkd demo`.

Example:

```python
>>> from promptkd_trainer.evaluation import evaluate_model, load_eval_set
>>> examples = load_eval_set("data/minillm", "dolly")
>>> scores = evaluate_model(model, tokenizer, examples)  # 5 seeds, paper decoding
>>> scores["rougeL_mean"], scores["rougeL_std"]
```
"""

from __future__ import annotations

import functools
import itertools
import os
import statistics
import string
from collections.abc import Iterable, Sequence
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.utils import logging

from .files import read_jsonl
from .formats import alpaca_prompt
from .generation import generate_answers, paper_generation_kwargs


logger = logging.get_logger(__name__)

PAPER_SEEDS = (10, 20, 30, 40, 50)

EVAL_SETS = {
    "dolly": "dolly/valid.jsonl",
    "self_inst": "self-inst/valid.jsonl",
    "vicuna": "vicuna/valid.jsonl",
    "sinst": "sinst/valid.jsonl",
    "uinst": "uinst/valid.jsonl",
}

_SCORER = None


def _scorer():
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _SCORER


def _as_references(references: str | Sequence[str]) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("An example has no reference answer; ROUGE-L needs at least one.")
    return refs


# ---------------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------------


def rouge_l(prediction: str, references: str | Sequence[str]) -> float:
    """ROUGE-L F-measure x100 of one prediction, max over its references.

    Same computation as the official `rouge_metric.py`: `rouge_score.rouge_scorer.RougeScorer(["rougeL"],
    use_stemmer=True)`, whose tokenizer lowercases and keeps only `[a-z0-9]` runs (so non-Latin text scores 0, as in
    the papers).

    Args:
        prediction (`str`): the generated answer.
        references (`str` or `list[str]`): one or several reference answers.

    Returns:
        `float` in [0, 100].
    """
    scorer = _scorer()
    return 100.0 * max(
        scorer.score(target=ref, prediction=prediction)["rougeL"].fmeasure for ref in _as_references(references)
    )


def compute_rouge_l(predictions: Sequence[str], references_list: Sequence[str | Sequence[str]]) -> float:
    """Mean over examples of [`rouge_l`] (already x100).

    Raises:
        `ValueError`: the two lists differ in length or are empty. (The official script silently truncates to the
        shorter one; here a mismatch is a bug.)
    """
    if len(predictions) != len(references_list):
        raise ValueError(f"{len(predictions)} predictions but {len(references_list)} reference lists.")
    if not predictions:
        raise ValueError("No predictions to score.")
    return sum(rouge_l(p, r) for p, r in zip(predictions, references_list)) / len(predictions)


def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation, collapse whitespace (official `rouge_metric.normalize_answer`)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(text.split())


def exact_match(prediction: str, references: str | Sequence[str]) -> float:
    """100 if the normalized prediction equals any normalized reference ([`normalize_answer`]), else 0."""
    pred = normalize_answer(prediction)
    return 100.0 * max(float(pred == normalize_answer(ref)) for ref in _as_references(references))


def compute_exact_match(predictions: Sequence[str], references_list: Sequence[str | Sequence[str]]) -> float:
    """Mean over examples of [`exact_match`] (already x100)."""
    if len(predictions) != len(references_list):
        raise ValueError(f"{len(predictions)} predictions but {len(references_list)} reference lists.")
    if not predictions:
        raise ValueError("No predictions to score.")
    return sum(exact_match(p, r) for p, r in zip(predictions, references_list)) / len(predictions)


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation data
# ---------------------------------------------------------------------------------------------------------------------


def _example_from_row(row: dict[str, Any]) -> dict[str, Any]:
    prompt = row.get("prompt")
    if prompt is None:
        if "instruction" not in row:
            raise ValueError(f"An evaluation row has neither `prompt` nor `instruction`: keys {sorted(row)}.")
        prompt = alpaca_prompt(row["instruction"], row.get("input"))
    for key in ("references", "output", "completion", "response"):
        if key in row and row[key] is not None:
            return {"prompt": prompt, "references": _as_references(row[key])}
    raise ValueError(
        f"An evaluation row has no reference (`references`, `output` or `completion`): keys {sorted(row)}."
    )


def load_eval_set(data_dir: str | os.PathLike, name: str, max_examples: int | None = None) -> list[dict[str, Any]]:
    """Read a MiniLLM-processed evaluation file.

    Args:
        data_dir (`str` or `os.PathLike`):
            The directory holding `dolly/`, `self-inst/`, `vicuna/`, `sinst/`, `uinst/` (MiniLLM's `data/`).
        name (`str`):
            A key of [`EVAL_SETS`] (`"dolly"`, `"self_inst"`, `"vicuna"`, `"sinst"`, `"uinst"`; `"self-inst"` is
            accepted too), or a `.jsonl` path relative to `data_dir`.
        max_examples (`int`, *optional*):
            Keep the first `max_examples` rows (the official `--dev-num`).

    Returns:
        `list[dict]`: `{"prompt": str, "references": list[str]}` per row. `prompt` is the file's prebuilt Alpaca prompt
        (built from `instruction`/`input` when absent); `references` come from `output`, a string or (S-NI) a list.
    """
    key = name.replace("-", "_")
    rel = EVAL_SETS.get(key, name)
    path = os.path.join(os.fspath(data_dir), rel)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Evaluation set {name!r} not found at {path}. Known sets: {sorted(EVAL_SETS)} under a MiniLLM data "
            "directory (see the MiniLLM repo's data download instructions)."
        )
    # A malformed line is named with its file and line number; lines after the first `max_examples` are not read.
    return [_example_from_row(row) for _, row in itertools.islice(read_jsonl(path), max_examples)]


def _normalize_examples(examples: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accept `load_eval_set` output, a list of rows, or a `datasets.Dataset` (prompt + references/output/...)."""
    return [_example_from_row(dict(row)) for row in examples]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (Bessel-corrected, `statistics.stdev`; 0.0 for a single value).

    The package's one convention for "mean ± std" over seeds: `promptkd eval`, the demo and the docs all use it.
    """
    if not values:
        raise ValueError("mean_std needs at least one value.")
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def evaluate_model(
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    examples: Iterable[dict[str, Any]],
    *,
    seeds: Sequence[int] = PAPER_SEEDS,
    greedy: bool = True,
    prompted_teacher=None,
    batch_size: int = 8,
    generation_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score a model on one evaluation set: sampled ROUGE-L per seed, their mean and std, and a greedy run.

    Args:
        model (`PreTrainedModel`, *optional*):
            The model to evaluate (`None` with `prompted_teacher`).
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        examples (`list[dict]` or `datasets.Dataset`):
            Rows with `prompt` and `references` (or `output`/`completion`), e.g. from [`load_eval_set`].
        seeds (`list[int]`, defaults to `(10, 20, 30, 40, 50)`):
            One sampled generation per seed (the papers' 5 seeds). Empty to skip sampling.
        greedy (`bool`, defaults to `True`):
            Also run one greedy decode (`do_sample=False`, same length cap and n-gram constraint).
        prompted_teacher (`peft.PeftModel`, *optional*):
            Evaluate a teacher through its soft prompt (see [`generate_answers`]).
        batch_size (`int`, defaults to `8`):
            Generation batch size (official: 8).
        generation_kwargs (`dict`, *optional*):
            Decoding for the sampled runs; defaults to [`paper_generation_kwargs`]. Keys: `max_new_tokens`,
            `do_sample`, `temperature`, `top_k`, `top_p`, `no_repeat_ngram_size`, `add_special_tokens`.

    Returns:
        `dict` with `num_examples`, `seeds`, `rougeL` (`{str(seed): score}`), `rougeL_mean`, `rougeL_std` (sample std
        over seeds, [`mean_std`]), `exact_match` (`{str(seed): score}`), `exact_match_mean`, `greedy_rougeL`,
        `greedy_exact_match` (when `greedy`), `answers` (`{"seed10": [...], ..., "greedy": [...]}`) and
        `generation_kwargs`. Scores are x100.
    """
    examples = _normalize_examples(examples)
    if not examples:
        raise ValueError("No evaluation examples.")
    if not seeds and not greedy:
        raise ValueError("Nothing to evaluate: pass seeds and/or greedy=True.")
    kwargs = paper_generation_kwargs() if generation_kwargs is None else {**generation_kwargs}
    prompts = [ex["prompt"] for ex in examples]
    refs = [ex["references"] for ex in examples]
    result: dict[str, Any] = {
        "num_examples": len(examples),
        "seeds": list(seeds),
        "generation_kwargs": dict(kwargs),
        "answers": {},
    }
    generate = functools.partial(
        generate_answers, model, tokenizer, prompts, prompted_teacher=prompted_teacher, batch_size=batch_size
    )
    if seeds:
        sampled = {**kwargs, "do_sample": kwargs.get("do_sample", True)}
        rouge, em = {}, {}
        for seed in seeds:
            answers = generate(seed=seed, **sampled)
            result["answers"][f"seed{seed}"] = answers
            rouge[str(seed)] = compute_rouge_l(answers, refs)
            em[str(seed)] = compute_exact_match(answers, refs)
            logger.info(f"seed {seed}: ROUGE-L {rouge[str(seed)]:.4f}, exact match {em[str(seed)]:.4f}")
        result["rougeL"], result["exact_match"] = rouge, em
        result["rougeL_mean"], result["rougeL_std"] = mean_std(list(rouge.values()))
        result["exact_match_mean"], result["exact_match_std"] = mean_std(list(em.values()))
    if greedy:
        greedy_kwargs = {k: v for k, v in kwargs.items() if k not in ("do_sample", "temperature", "top_k", "top_p")}
        answers = generate(do_sample=False, **greedy_kwargs)
        result["answers"]["greedy"] = answers
        result["greedy_rougeL"] = compute_rouge_l(answers, refs)
        result["greedy_exact_match"] = compute_exact_match(answers, refs)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Trainer callback
# ---------------------------------------------------------------------------------------------------------------------


class RougeEvalCallback(TrainerCallback):
    """Generate answers with the model being trained and add their ROUGE-L to the evaluation metrics.

    The official code evaluates ROUGE-L on the Dolly dev set after every epoch and keeps the best checkpoint
    (`best_rougeL`). With this callback the Trainer does the same:

    ```python
    >>> args = PromptKDConfig(..., eval_strategy="steps", eval_steps=500, save_steps=500,
    ...                       metric_for_best_model="eval_rougeL", greater_is_better=True, load_best_model_at_end=True)
    >>> dev = load_eval_set("data/minillm", "dolly/dev.jsonl", max_examples=500)
    >>> trainer = PromptKDTrainer(..., eval_dataset=eval_ds, callbacks=[RougeEvalCallback(dev, tokenizer)])
    ```

    How it hooks in (transformers 5.x): `Trainer.evaluate` calls `on_evaluate(..., metrics=metrics)` with the very
    dict it then returns, and `_maybe_log_save_evaluate` reads that dict in `_determine_best_metric` *after* the
    callbacks ran and before `_save_checkpoint`. A key added here is therefore the one `metric_for_best_model` sees,
    and it is in the dict `trainer.evaluate()` returns. The callback also writes it into the last `state.log_history`
    entry (so `trainer_state.json` has it). Reporting integrations (TensorBoard, W&B) get `on_log` before
    `on_evaluate`; [`PromptKDTrainer`] logs the metrics that callbacks add in `on_evaluate` once more after them, so
    `report_to` receives `eval_rougeL` (a plain `Trainer` does not). Callbacks that read `metrics` in `on_evaluate`
    (e.g. `EarlyStoppingCallback`) must come after this one in `callbacks=[...]`.

    The key is `{prefix}_{metric_name}`, with the prefix of the evaluation (`eval`, or `eval_<name>` for a dict of
    eval datasets; the answers are generated once per step and shared). Every process generates the full set, so
    that all ranks take the same best-checkpoint decision.

    Args:
        eval_examples (`list[dict]` or `datasets.Dataset`):
            Rows with `prompt` and `references` (or `output`/`completion`), e.g. from [`load_eval_set`].
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Defaults to the trainer's `processing_class`.
        max_new_tokens (`int`, defaults to `256`), batch_size (`int`, defaults to `8`):
            Generation length cap and batch size.
        every (`int`, *optional*):
            Also score every `every` optimizer steps from `on_step_end`, without a Trainer evaluation (e.g. no
            eval dataset): the score goes to `state.log_history` and `self.history` only, not to checkpoint selection.
        greedy (`bool`, defaults to `True`):
            Greedy decoding (stable for model selection). `False` samples with `generation_kwargs`/`seed`, as the
            official in-training evaluation does (`--do-sample --top-k 0 --top-p 1.0 --temperature 1.0`, no n-gram
            constraint).
        seed (`int`, defaults to `10`):
            Seed of sampled decoding.
        generation_kwargs (`dict`, *optional*):
            Extra decoding arguments for [`generate_answers`].
        metric_name (`str`, defaults to `"rougeL"`):
            Metric suffix, giving `eval_rougeL`.
    """

    def __init__(
        self,
        eval_examples: Iterable[dict[str, Any]],
        tokenizer: PreTrainedTokenizerBase | None = None,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        every: int | None = None,
        greedy: bool = True,
        seed: int = 10,
        generation_kwargs: dict[str, Any] | None = None,
        metric_name: str = "rougeL",
    ):
        self.examples = _normalize_examples(eval_examples)
        if not self.examples:
            raise ValueError("RougeEvalCallback needs at least one evaluation example.")
        if every is not None and every < 1:
            raise ValueError(f"`every` must be a positive number of steps or None, got {every}.")
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.every = every
        self.greedy = greedy
        self.seed = seed
        self.generation_kwargs = dict(generation_kwargs or {})
        self.metric_name = metric_name
        self.history: list[dict[str, float]] = []
        self.last_answers: list[str] = []
        self._cache: tuple[int, float] | None = None

    def score(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> float:
        """Generate answers for the evaluation examples with `model` and return their mean ROUGE-L (x100)."""
        kwargs = (
            {"do_sample": False} if self.greedy else {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
        )
        kwargs.update(self.generation_kwargs)
        kwargs.setdefault("max_new_tokens", self.max_new_tokens)
        kwargs.setdefault("batch_size", self.batch_size)
        kwargs.setdefault("seed", self.seed)
        answers = generate_answers(model, tokenizer, [ex["prompt"] for ex in self.examples], **kwargs)
        self.last_answers = answers
        return compute_rouge_l(answers, [ex["references"] for ex in self.examples])

    def _score_at(self, state, model, tokenizer) -> float:
        if self._cache is not None and self._cache[0] == state.global_step:
            return self._cache[1]
        if tokenizer is None:
            raise ValueError(
                "RougeEvalCallback has no tokenizer: pass `tokenizer=` or give the trainer a processing_class."
            )
        value = self.score(model, tokenizer)
        self._cache = (state.global_step, value)
        self.history.append({"step": state.global_step, self.metric_name: value})
        logger.info(f"step {state.global_step}: {self.metric_name} {value:.4f} on {len(self.examples)} examples")
        return value

    def on_train_begin(self, args, state, control, **kwargs):
        self._cache = None

    def on_train_end(self, args, state, control, **kwargs):
        # `load_best_model_at_end` swaps the weights at the same global step: never reuse a score across it.
        self._cache = None

    def on_evaluate(self, args, state, control, metrics=None, model=None, processing_class=None, **kwargs):
        if metrics is None or model is None:
            return
        prefix = next((k[: -len("_runtime")] for k in metrics if k.endswith("_runtime")), "eval")
        key = f"{prefix}_{self.metric_name}"
        value = self._score_at(state, model, self.tokenizer or processing_class)
        metrics[key] = value
        if state.log_history:
            last = state.log_history[-1]
            if last.get("step") == state.global_step and f"{prefix}_runtime" in last:
                last[key] = value

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.every is None or model is None or state.global_step % self.every != 0:
            return
        value = self._score_at(state, model, self.tokenizer or processing_class)
        entry = {f"eval_{self.metric_name}": value, "step": state.global_step}
        if state.epoch is not None:
            entry["epoch"] = state.epoch
        state.log_history.append(entry)


class CallbackMetricsLogging:
    """Trainer mixin (before the `Trainer` class in the bases) that sends the metrics callbacks add in `on_evaluate`
    (e.g. `eval_rougeL` of [`RougeEvalCallback`]) to the `report_to` loggers.

    The Trainer calls `on_log` (where the integrations write) before `on_evaluate`, so a plain `Trainer` never shows
    them to TensorBoard or W&B; this mixin calls `on_log` once more with the keys that arrived late.
    """

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        super().log(logs, start_time)
        self._logged_keys = set(logs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """`Trainer.evaluate`, then send the metrics that callbacks added in `on_evaluate` to the loggers."""
        self._logged_keys = None
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        # A dict of eval sets recurses into this method once per set, each of which reports its own.
        logged, self._logged_keys = self._logged_keys, None
        if logged is not None:
            late = {k: v for k, v in metrics.items() if k not in logged and isinstance(v, (int, float))}
            if late:
                if self.state.log_history and logged <= self.state.log_history[-1].keys():
                    for key, value in late.items():
                        self.state.log_history[-1].setdefault(key, value)
                self.control = self.callback_handler.on_log(self.args, self.state, self.control, late)
        return metrics
