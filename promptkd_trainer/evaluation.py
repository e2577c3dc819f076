# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""ROUGE-L evaluation as in the PromptKD/MiniLLM papers, and a callback that selects checkpoints by it.

The protocol (official `scripts/*/eval/*.sh`, `evaluate_main.py`, `rouge_metric.py`):

- prompts are the MiniLLM-processed `valid.jsonl` files of Dolly, Self-Instruct, Vicuna, S-NI and UnNI, whose
  `prompt` field is the Alpaca template ([`promptkd_trainer.formats.ALPACA_TEMPLATE`]);
- answers are sampled at temperature 1 with top-k 0, top-p 1 and `no_repeat_ngram_size=6`, for seeds 10..50
  ([`paper_generation_kwargs`]); a response is decoded with `skip_special_tokens`, cut at EOS and stripped;
- the score is `rouge_score`'s ROUGE-L F-measure with the Porter stemmer, max over the references of an example,
  averaged over examples, x100 ([`rouge_l`], [`compute_rouge_l`]).

Example:

```python
>>> from promptkd_trainer.evaluation import evaluate_model, load_eval_set
>>> examples = load_eval_set("data/minillm", "dolly")
>>> scores = evaluate_model(model, tokenizer, examples)  # 5 seeds, paper decoding
>>> scores["rougeL_mean"], scores["rougeL_std"]
```
"""

from __future__ import annotations

import json
import math
import os
import string
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.utils import logging

from .formats import alpaca_prompt


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
    examples = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if max_examples is not None and len(examples) >= max_examples:
                break
            if line.strip():
                examples.append(_example_from_row(json.loads(line)))
    return examples


def _normalize_examples(examples: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accept `load_eval_set` output, a list of rows, or a `datasets.Dataset` (prompt + references/output/...)."""
    return [_example_from_row(dict(row)) for row in examples]


# ---------------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------------


def paper_generation_kwargs() -> dict[str, Any]:
    """Decoding of the papers' evaluation: sampling at temperature 1, top-k 0 (off), top-p 1, no 6-gram repeats, and
    256 new tokens (official `max_length` 512 with prompts left-padded to 256)."""
    return {
        "do_sample": True,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "no_repeat_ngram_size": 6,
        "max_new_tokens": 256,
    }


def _position_limit(model: PreTrainedModel) -> int | None:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _eos_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> list[int]:
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, gen_eos):
        if value is None:
            continue
        for v in [value] if isinstance(value, int) else list(value):
            if v not in ids:
                ids.append(int(v))
    return ids


def _generate_prompted_with_ids(prompted, input_ids, attention_mask, pad_id, gen_kwargs) -> torch.Tensor:
    """Like [`promptkd_trainer.teacher.generate_with_prompt`], but also hands `generate` the token ids.

    With `inputs_embeds` alone, `generate` applies `no_repeat_ngram_size` to the new tokens only (transformers 5.x
    warns so); the papers' evaluation (token ids) bans n-grams of the prompt too. Decoder-only `generate` accepts
    `input_ids` next to `inputs_embeds` (embeddings feed the first step, the ids feed the logits processors), so the
    ids are passed with `pad_id` placeholders under the virtual tokens, exactly like left padding.
    """
    from .teacher import prepend_prompt

    embeds, mask = prepend_prompt(prompted, input_ids, attention_mask)
    n_virtual = embeds.shape[1] - input_ids.shape[1]
    placeholders = input_ids.new_full((input_ids.shape[0], n_virtual), pad_id)
    full_ids = torch.cat([placeholders, input_ids], dim=1)
    out = prompted.get_base_model().generate(
        input_ids=full_ids, inputs_embeds=embeds, attention_mask=mask, **gen_kwargs
    )
    return out[:, full_ids.shape[1] :]


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    prompted_teacher=None,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    no_repeat_ngram_size: int | None = None,
    seed: int = 10,
    add_special_tokens: bool = True,
) -> list[str]:
    """Generate one answer per prompt.

    Prompts are tokenized (with special tokens, as the official `PromptDataset` and TRL do), left-padded per batch
    and decoded with the KV cache. Each answer is cut at its first EOS, decoded with `skip_special_tokens=True` and
    stripped. Each call runs `torch.manual_seed(seed)` inside `torch.random.fork_rng`: a call is reproducible, and the
    caller's RNG state (e.g. a trainer's, when a callback evaluates mid-training) is restored afterwards.

    Args:
        model (`PreTrainedModel`, *optional*):
            The causal LM to generate with (student or any model). Ignored, and may be `None`, when
            `prompted_teacher` is given.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer. Without a pad token, EOS pads (GPT-2, official code).
        prompts (`list[str]`):
            Prompt strings, e.g. the `prompt` field of [`load_eval_set`] rows.
        prompted_teacher (`peft.PeftModel`, *optional*):
            A teacher carrying a PEFT prompt-tuning adapter; generation then goes through
            [`promptkd_trainer.teacher.generate_with_prompt`] (`PeftModel.generate` is wrong with the KV cache on
            transformers 5.x + peft 0.21). With `no_repeat_ngram_size`, the prompt's token ids are passed along so
            that its n-grams are banned too, as for a plain model.
        batch_size (`int`, defaults to `8`), max_new_tokens (`int`, defaults to `256`):
            Batch size and answer length cap.
        do_sample, temperature, top_k, top_p, no_repeat_ngram_size:
            Decoding; the defaults sample at temperature 1 with top-k/top-p off. `top_k=0` disables top-k.
        seed (`int`, defaults to `10`):
            Passed to `torch.manual_seed` (in a forked RNG) before generating.
        add_special_tokens (`bool`, defaults to `True`):
            Whether prompts get the tokenizer's special tokens (BOS for Llama/OPT).

    Returns:
        `list[str]`, aligned with `prompts`.

    Prompts longer than the model's position limit minus `max_new_tokens` (minus the virtual tokens of a prompted
    teacher) are truncated from the left, with a warning.
    """
    if prompted_teacher is not None:
        from .teacher import generate_with_prompt, num_virtual_tokens

        gen_model = prompted_teacher.get_base_model()
        reserved = num_virtual_tokens(prompted_teacher)
        modules = [prompted_teacher]
    else:
        if model is None:
            raise ValueError("Pass `model`, or `prompted_teacher` to generate with a prompted teacher.")
        gen_model = model
        reserved = 0
        modules = [model]
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}.")

    eos_ids = _eos_ids(tokenizer, gen_model)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        if not eos_ids:
            raise ValueError("The tokenizer has neither a pad nor an EOS token; set `tokenizer.pad_token`.")
        pad_id = eos_ids[0]

    limit = _position_limit(gen_model)
    max_prompt_len = None
    if limit is not None:
        max_prompt_len = limit - max_new_tokens - reserved
        if max_prompt_len < 1:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} (+{reserved} virtual tokens) leaves no room for a prompt within the "
                f"model's {limit} positions; lower max_new_tokens."
            )

    encoded = [tokenizer(p, add_special_tokens=add_special_tokens, verbose=False)["input_ids"] for p in prompts]
    if max_prompt_len is not None:
        truncated = [i for i, ids in enumerate(encoded) if len(ids) > max_prompt_len]
        if truncated:
            logger.warning(
                f"{len(truncated)} of {len(encoded)} prompts are longer than {max_prompt_len} tokens (the model's "
                f"{limit} positions minus max_new_tokens={max_new_tokens}"
                + (f" minus {reserved} virtual tokens" if reserved else "")
                + f"); they were truncated from the left (first: index {truncated[0]})."
            )
            encoded = [ids[-max_prompt_len:] if len(ids) > max_prompt_len else ids for ids in encoded]
    if any(len(ids) == 0 for ids in encoded):
        raise ValueError("A prompt tokenizes to no tokens; pass non-empty prompts.")

    gen_kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "pad_token_id": pad_id,
        "use_cache": True,
    }
    if eos_ids:
        gen_kwargs["eos_token_id"] = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    if do_sample:
        # Passed explicitly so that a checkpoint's generation_config (e.g. top_k=50) cannot change the protocol.
        gen_kwargs.update(temperature=temperature, top_k=top_k, top_p=top_p)
    if no_repeat_ngram_size:
        gen_kwargs["no_repeat_ngram_size"] = no_repeat_ngram_size

    device = next(gen_model.parameters()).device
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    answers: list[str] = []
    eos_set = set(eos_ids)
    # Seeded inside a forked RNG, so that evaluating mid-training leaves the trainer's random stream untouched.
    cuda_devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            for start in range(0, len(encoded), batch_size):
                batch = encoded[start : start + batch_size]
                width = max(len(ids) for ids in batch)
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, ids in enumerate(batch):
                    input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                    attention_mask[row, width - len(ids) :] = 1
                input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
                if prompted_teacher is not None and no_repeat_ngram_size:
                    new_tokens = _generate_prompted_with_ids(
                        prompted_teacher, input_ids, attention_mask, pad_id, gen_kwargs
                    )
                elif prompted_teacher is not None:
                    new_tokens = generate_with_prompt(prompted_teacher, input_ids, attention_mask, **gen_kwargs)
                else:
                    out = gen_model.generate(input_ids=input_ids, attention_mask=attention_mask, **gen_kwargs)
                    new_tokens = out[:, width:]
                for ids in new_tokens.tolist():
                    cut = next((i for i, t in enumerate(ids) if t in eos_set), len(ids))
                    answers.append(tokenizer.decode(ids[:cut], skip_special_tokens=True).strip())
    finally:
        for m, mode in zip(modules, was_training):
            m.train(mode)
    return answers


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


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
        `dict` with `num_examples`, `seeds`, `rougeL` (`{str(seed): score}`), `rougeL_mean`, `rougeL_std` (population
        std over seeds), `exact_match` (`{str(seed): score}`), `exact_match_mean`, `greedy_rougeL`,
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
    if seeds:
        sampled = {**kwargs, "do_sample": kwargs.get("do_sample", True)}
        rouge, em = {}, {}
        for seed in seeds:
            answers = generate_answers(
                model,
                tokenizer,
                prompts,
                prompted_teacher=prompted_teacher,
                batch_size=batch_size,
                seed=seed,
                **sampled,
            )
            result["answers"][f"seed{seed}"] = answers
            rouge[str(seed)] = compute_rouge_l(answers, refs)
            em[str(seed)] = compute_exact_match(answers, refs)
            logger.info(f"seed {seed}: ROUGE-L {rouge[str(seed)]:.4f}, exact match {em[str(seed)]:.4f}")
        result["rougeL"], result["exact_match"] = rouge, em
        result["rougeL_mean"], result["rougeL_std"] = _mean_std(list(rouge.values()))
        result["exact_match_mean"], result["exact_match_std"] = _mean_std(list(em.values()))
    if greedy:
        greedy_kwargs = {k: v for k, v in kwargs.items() if k not in ("do_sample", "temperature", "top_k", "top_p")}
        answers = generate_answers(
            model,
            tokenizer,
            prompts,
            prompted_teacher=prompted_teacher,
            batch_size=batch_size,
            do_sample=False,
            **greedy_kwargs,
        )
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
    `on_evaluate`, so they do not receive it; and callbacks that read `metrics` in `on_evaluate` (e.g.
    `EarlyStoppingCallback`) must come after this one in `callbacks=[...]`.

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
