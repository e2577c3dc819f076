# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Greedy generation and scoring (exact match, ROUGE-L) for the synthetic tasks.

ROUGE-L is the package's [`promptkd_trainer.evaluation.rouge_l`] (the PromptKD/MiniLLM metric: `rouge_score`
ROUGE-L F-measure with stemming, x100, max over references). Its tokenizer lower-cases and drops punctuation, so it
is lenient on case and formatting; [`strict_exact_match`] is not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from transformers.utils import logging

from ..evaluation import rouge_l


logger = logging.get_logger(__name__)

__all__ = ["evaluate_model", "generate_completions", "normalize_answer", "rouge_l", "score_predictions",
           "strict_exact_match"]


def normalize_answer(text: str) -> str:
    """Collapse whitespace (newlines included) and strip; case and punctuation are kept."""
    return " ".join(text.split())


def strict_exact_match(prediction: str, references: Sequence[str]) -> float:
    """100.0 if the whitespace-normalised `prediction` equals a whitespace-normalised reference, else 0.0.

    Stricter than [`promptkd_trainer.evaluation.exact_match`] (the official normalisation, which lower-cases and
    drops punctuation): on these tasks case and commas are the answer (`uppercase`, `commas`, `numbered`).
    """
    pred = normalize_answer(prediction)
    return 100.0 * float(any(pred == normalize_answer(ref) for ref in references))


@torch.no_grad()
def generate_completions(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    **generate_kwargs,
) -> list[str]:
    """Greedy-decode a completion for each prompt.

    Prompts are left-padded in batches (the tokenizer's `padding_side` is restored afterwards), decoding stops at
    EOS, and the decoded text has special tokens removed and surrounding whitespace stripped.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            Causal LM (put in eval mode during the call, then restored).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Its tokenizer; needs a pad token.
        prompts (`Sequence[str]`):
            Formatted prompts (e.g. the `prompt` column of [`~promptkd_trainer.demo.tasks.make_dataset`]).
        max_new_tokens (`int`, *optional*, defaults to `32`):
            Generation budget per prompt.
        batch_size (`int`, *optional*, defaults to `64`):
            Prompts per `generate` call.
        **generate_kwargs:
            Passed to `model.generate` (e.g. `do_sample=True`).

    Returns:
        `list[str]`: One completion per prompt, in order.
    """
    was_training = model.training
    model.eval()
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    kwargs = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    kwargs.update(generate_kwargs)
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True)
            batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            generated = model.generate(**batch, **kwargs)
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            outputs.extend(text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return outputs


def score_predictions(
    predictions: Sequence[str], references: Sequence[Sequence[str]], families: Sequence[str] | None = None
) -> dict:
    """Strict exact match ([`strict_exact_match`]) and ROUGE-L, overall and per task family.

    Args:
        predictions (`Sequence[str]`): One generated answer per example.
        references (`Sequence[Sequence[str]]`): Acceptable answers per example.
        families (`Sequence[str]`, *optional*): Task family per example, for the per-family breakdown.

    Returns:
        `dict`: `{"exact_match": float, "rougeL": float, "n": int, "per_family": {family: {"exact_match", "rougeL",
        "n"}}}`, scores in percent (0-100).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists.")
    families = list(families) if families is not None else ["all"] * len(predictions)
    em = [strict_exact_match(p, r) for p, r in zip(predictions, references)]
    rl = [rouge_l(p, r) for p, r in zip(predictions, references)]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, family in enumerate(families):
        groups[family].append(i)

    def summary(indices: Sequence[int]) -> dict:
        n = len(indices)
        return {
            "exact_match": sum(em[i] for i in indices) / max(n, 1),
            "rougeL": sum(rl[i] for i in indices) / max(n, 1),
            "n": n,
        }

    result = summary(range(len(predictions)))
    result["per_family"] = {family: summary(idx) for family, idx in sorted(groups.items())}
    return result


def evaluate_model(model, tokenizer, dataset, *, max_new_tokens: int = 32, batch_size: int = 64) -> dict:
    """Greedy-decode `dataset["prompt"]` and score against `dataset["references"]` per `dataset["family"]`.

    Returns:
        `dict`: [`score_predictions`]'s result plus `"predictions"` (the generated strings).
    """
    predictions = generate_completions(
        model, tokenizer, list(dataset["prompt"]), max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    result = score_predictions(predictions, list(dataset["references"]), list(dataset["family"]))
    result["predictions"] = predictions
    return result
