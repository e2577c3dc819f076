# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Scoring one model on the held-out prompts: ROUGE-L, exact match and answer accuracy, sampled and greedy.

Decoding is the papers' ([`~promptkd_trainer.generation.paper_generation_kwargs`]: temperature 1, no top-k/top-p)
with the demo's answer length. Each prompt gets `samples` sampled answers (one batched call: the prompt list repeated)
and one greedy answer. ROUGE-L and exact match are the package's ([`promptkd_trainer.evaluation`], the official
`rouge_metric.py` computation, best over the references); answer accuracy is [`~promptkd_trainer.demo.answers`].
"""

from __future__ import annotations

import statistics

from ..evaluation import exact_match, rouge_l
from ..generation import generate_answers, paper_generation_kwargs
from .answers import answer_correct
from .results import Scores


GENERATION_BATCH_SIZE = 128
"""Answers per generation call: the demo's models are small enough that larger batches only cost memory."""

EXAMPLES = 4
"""Prompts whose answers the report shows."""


def score_model(
    tokenizer, test, *, seed: int, samples: int, max_new_tokens: int, model=None, prompted_teacher=None
) -> Scores:
    """[`Scores`] of `model` (or of `prompted_teacher`) on `test` (`prompt`, `references`, `family`, `answer`).

    Sampling is seeded with `seed` (reproducible on one machine; CPU kernels differ between machines).
    """
    prompts, refs = list(test["prompt"]), list(test["references"])
    families, truths, n = list(test["family"]), list(test["answer"]), len(prompts)
    decoding = {**paper_generation_kwargs(), "max_new_tokens": max_new_tokens}
    generate = dict(prompted_teacher=prompted_teacher, batch_size=GENERATION_BATCH_SIZE)
    sampled = generate_answers(
        model, tokenizer, [p for p in prompts for _ in range(samples)], seed=seed, **generate,
        **{**decoding, "do_sample": True},
    )
    greedy_kwargs = {k: v for k, v in decoding.items() if k not in ("do_sample", "temperature", "top_k", "top_p")}
    greedy = generate_answers(model, tokenizer, prompts, do_sample=False, **generate, **greedy_kwargs)

    def per_prompt(score) -> list[float]:
        return [statistics.fmean(score(i, a) for a in sampled[i * samples : (i + 1) * samples]) for i in range(n)]

    rouge = per_prompt(lambda i, a: rouge_l(a, refs[i]))
    accuracy = per_prompt(lambda i, a: 100.0 * answer_correct(families[i], a, truths[i]))
    em = per_prompt(lambda i, a: exact_match(a, refs[i]))
    greedy_right = [100.0 * answer_correct(f, a, t) for f, a, t in zip(families, greedy, truths)]
    by_family = {
        f: statistics.fmean(r for r, g in zip(greedy_right, families) if g == f) for f in dict.fromkeys(families)
    }
    return Scores(
        rougeL_sampled=statistics.fmean(rouge),
        answer_accuracy_sampled=statistics.fmean(accuracy),
        exact_match_sampled=statistics.fmean(em),
        rougeL_greedy=statistics.fmean(rouge_l(a, r) for a, r in zip(greedy, refs)),
        answer_accuracy_greedy=statistics.fmean(greedy_right),
        exact_match_greedy=statistics.fmean(exact_match(a, r) for a, r in zip(greedy, refs)),
        samples=samples,
        answer_accuracy_greedy_by_family=by_family,
        per_prompt_rougeL_sampled=rouge,
        per_prompt_answer_accuracy_sampled=accuracy,
        examples=[
            {"prompt": prompts[i], "references": refs[i], "answer": truths[i], "sampled": sampled[i * samples],
             "greedy": greedy[i]}
            for i in range(min(EXAMPLES, len(prompts)))
        ],
    )
