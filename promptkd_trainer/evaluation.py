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
import json
import os
import statistics
import string
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from peft import PeftModel, PromptTuningConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.utils import logging
from trl.trainer.utils import pad

from .checks import check_vocab
from .formats import alpaca_prompt
from .generation import (
    encode_prompts,
    end_token_ids,
    generate_answers,
    generate_completions,
    max_prompt_length,
    pad_token_id,
    paper_generation_kwargs,
    position_limit,
)
from .teacher import accepts_logits_to_keep, base_model, num_virtual_tokens, prompted_teacher_logits


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
    show_progress: bool = True,
    progress_desc: str | None = None,
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
        show_progress (`bool`, defaults to `True`):
            A tqdm bar per seed (and for the greedy run), as the Trainer shows for its evaluation loop.
        progress_desc (`str`, *optional*):
            Label of the bars (e.g. the set's name), followed by the seed.

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
        generate_answers,
        model,
        tokenizer,
        prompts,
        prompted_teacher=prompted_teacher,
        batch_size=batch_size,
        show_progress=show_progress,
    )
    label = f"{progress_desc} " if progress_desc else ""
    if seeds:
        sampled = {**kwargs, "do_sample": kwargs.get("do_sample", True)}
        rouge, em = {}, {}
        for seed in seeds:
            answers = generate(seed=seed, progress_desc=f"{label}seed {seed}", **sampled)
            result["answers"][f"seed{seed}"] = answers
            rouge[str(seed)] = compute_rouge_l(answers, refs)
            em[str(seed)] = compute_exact_match(answers, refs)
            logger.info(f"seed {seed}: ROUGE-L {rouge[str(seed)]:.4f}, exact match {em[str(seed)]:.4f}")
        result["rougeL"], result["exact_match"] = rouge, em
        result["rougeL_mean"], result["rougeL_std"] = mean_std(list(rouge.values()))
        result["exact_match_mean"], result["exact_match_std"] = mean_std(list(em.values()))
    if greedy:
        greedy_kwargs = {k: v for k, v in kwargs.items() if k not in ("do_sample", "temperature", "top_k", "top_p")}
        answers = generate(do_sample=False, progress_desc=f"{label}greedy", **greedy_kwargs)
        result["answers"]["greedy"] = answers
        result["greedy_rougeL"] = compute_rouge_l(answers, refs)
        result["greedy_exact_match"] = compute_exact_match(answers, refs)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Exposure bias
# ---------------------------------------------------------------------------------------------------------------------


def _prompted_teacher(teacher) -> PeftModel | None:
    """`teacher` when it carries a soft prompt (PEFT prompt tuning), else `None`."""
    if not isinstance(teacher, PeftModel) or not teacher.active_peft_config.is_prompt_learning:
        return None
    if not isinstance(teacher.active_peft_config, PromptTuningConfig):
        raise ValueError(
            f"The teacher carries a {type(teacher.active_peft_config).__name__} adapter; exposure_bias reads a soft "
            "prompt of PEFT prompt tuning only. Pass the plain teacher, or one with a PromptTuningConfig adapter."
        )
    return teacher


def _logits(model, input_ids, attention_mask, keep: int, prompted: bool) -> torch.Tensor:
    """Logits of the last `keep` positions, `[B, keep, V]`, for a plain model or a prompted teacher (aligned with the
    text positions)."""
    cut = keep if accepts_logits_to_keep(model) else 0
    if prompted:
        logits = prompted_teacher_logits(model, input_ids, attention_mask, logits_to_keep=cut)
    else:
        kwargs = {"logits_to_keep": cut} if cut else {}
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs).logits
    return logits[:, -keep:]


@torch.no_grad()
def response_kls(
    teacher: PreTrainedModel | PeftModel,
    student: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
) -> list[torch.Tensor]:
    """Per-token KL(P_T || P_S) along each response, at the positions that ExAccErr counts.

    For a sequence `prompt + (r_1, ..., r_n)`, entry `j` (0-based) is the KL between the teacher's and the student's
    next-token distributions after `r_{j+1}`, and the entries stop at the first `r_{j+1}` that is an end token
    ([`~promptkd_trainer.generation.end_token_ids`]). This is the official code's alignment (gmkim-ai/PromptKD @
    383182f4, `evaluate_exposure_bias.py`, `calc_batch`): it slices `logits[:, prompt_len:]` and masks with
    `full_ids != pad_token_id`, where GPT-2's pad is its EOS. The distribution of `r_1` itself is not counted; it
    depends on the prompt alone, so it would be the same on any model's samples.

    Sequences are right-padded (`trl.trainer.utils.pad`), so that the prompted teacher sees its virtual tokens
    right before the prompt ([`~promptkd_trainer.teacher.prompted_teacher_logits`]). The KL is computed in fp32 on
    the vocabulary entries both models share ([`~promptkd_trainer.checks.check_vocab`]).

    Args:
        teacher (`PreTrainedModel` or `peft.PeftModel`):
            The teacher; with a prompt-tuning adapter, its distributions are those of the prompted teacher.
        student (`PreTrainedModel` or `peft.PeftModel`):
            The student.
        tokenizer (`PreTrainedTokenizerBase`):
            The tokenizer both models share.
        prompt_ids (`list[list[int]]`), completion_ids (`list[list[int]]`):
            Token ids of the prompts and of their responses, aligned.
        batch_size (`int`, defaults to `8`):
            Sequences per forward.

    Returns:
        `list[torch.Tensor]`: one float64 CPU tensor per sequence, of length `n - 1` when the response ends with an
        end token, else `n`.
    """
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions.")
    prompted = _prompted_teacher(teacher)
    end_ids = list(dict.fromkeys(end_token_ids(tokenizer, student) + end_token_ids(tokenizer, teacher)))
    end_set, pad_id = set(end_ids), pad_token_id(tokenizer, end_ids)
    vocab = check_vocab(student, teacher, tokenizer, truncate=True)
    s_device = next(base_model(student).parameters()).device
    t_device = next(base_model(teacher).parameters()).device
    modes = (student.training, teacher.training)
    student.eval()
    teacher.eval()
    kls: list[torch.Tensor] = []
    try:
        for start in range(0, len(prompt_ids), batch_size):
            prompts = [list(p) for p in prompt_ids[start : start + batch_size]]
            completions = [list(c) for c in completion_ids[start : start + batch_size]]
            counted = [next((j for j, t in enumerate(c) if t in end_set), len(c)) for c in completions]
            rows = [torch.tensor(p + c, dtype=torch.long) for p, c in zip(prompts, completions)]
            input_ids = pad(rows, padding_value=pad_id, padding_side="right")
            attention_mask = pad([torch.ones_like(r) for r in rows], padding_value=0, padding_side="right")
            # Logits from the shortest prompt's last token on: every counted position is among them.
            first = min(len(p) for p in prompts)
            keep = input_ids.shape[1] - first
            if keep == 0 or not any(counted):
                kls.extend(torch.zeros(0, dtype=torch.float64) for _ in prompts)
                continue
            s_logits = _logits(student, input_ids.to(s_device), attention_mask.to(s_device), keep, prompted=False)
            t_logits = _logits(
                teacher, input_ids.to(t_device), attention_mask.to(t_device), keep, prompted=prompted is not None
            ).to(s_device)
            for i, (p, n) in enumerate(zip(prompts, counted)):
                offset = len(p) - first
                log_s = torch.log_softmax(s_logits[i, offset : offset + n, :vocab].float(), dim=-1)
                log_t = torch.log_softmax(t_logits[i, offset : offset + n, :vocab].float(), dim=-1)
                p_t = log_t.exp()
                kl = torch.where(p_t > 0, p_t * (log_t - log_s), torch.zeros_like(p_t)).sum(-1)
                kls.append(kl.double().cpu())
    finally:
        student.train(modes[0])
        teacher.train(modes[1])
    return kls


@dataclass
class ExposureBiasResult:
    """ExAccErr and the regrets behind it, at each response length `l` of `lengths`.

    Args:
        lengths (`list[int]`):
            Response lengths `l` (position `l - 1` of the official curves: the official log reports `l = 16`).
        exaccerr (`list[float]`):
            `(R(l) - E(l)) / E(l) * 100` (percent): the extra error accumulated on the student's own samples over the
            error on the teacher's. `nan` where `E(l) = 0` (e.g. the student is the teacher).
        regret_student_samples (`list[float]`):
            `R(l)`: the cumulative per-token KL(P_T || P_S) over the first `l` counted positions of the student's
            samples (nats), averaged over samples per prompt, then over prompts (official `mean_R`).
        regret_teacher_samples (`list[float]`):
            `E(l)`: the same on the teacher's samples (official `mean_eps`).
        regret_student_samples_std (`list[float]`), regret_teacher_samples_std (`list[float]`):
            Standard deviation over prompts of the two (official `std_R`, `std_eps`; Bessel-corrected).
        num_prompts (`int`), num_samples (`int`), max_new_tokens (`int`), seed (`int`):
            The measurement's size and seed.
        generation_kwargs (`dict`):
            The decoding the samples were drawn with.
        per_prompt_student (`list[list[float]]`, *optional*), per_prompt_teacher (`list[list[float]]`, *optional*):
            With `keep_per_prompt=True`: each prompt's cumulative regrets at `lengths` (e.g. to bootstrap an
            interval over prompts).
    """

    lengths: list[int]
    exaccerr: list[float]
    regret_student_samples: list[float]
    regret_teacher_samples: list[float]
    regret_student_samples_std: list[float] = field(default_factory=list)
    regret_teacher_samples_std: list[float] = field(default_factory=list)
    num_prompts: int = 0
    num_samples: int = 1
    max_new_tokens: int = 0
    seed: int = 0
    generation_kwargs: dict[str, Any] = field(default_factory=dict)
    per_prompt_student: list[list[float]] | None = None
    per_prompt_teacher: list[list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-serialisable dict (`nan` stays a float)."""
        return asdict(self)


def _cumulative_regret(kls_per_sample: list[list[torch.Tensor]], num_prompts: int, width: int) -> torch.Tensor:
    """Per prompt, the cumulative sum over positions of the per-position KL averaged over the samples that reach the
    position, `[num_prompts, width]` (official `calc_batch`: `cumsum(sum(err * mask) / sum(mask))` over samples)."""
    total = torch.zeros(num_prompts, width, dtype=torch.float64)
    count = torch.zeros(num_prompts, width, dtype=torch.float64)
    for kls in kls_per_sample:
        for i, kl in enumerate(kls):
            total[i, : len(kl)] += kl
            count[i, : len(kl)] += 1
    # The official code divides by `count + 1e-3` to avoid 0 / 0 where no sample reaches a position; dividing by
    # max(count, 1) gives the exact mean there and 0 where the official gives 0.
    return torch.cumsum(total / count.clamp(min=1), dim=1)


def exposure_bias(
    teacher: PreTrainedModel | PeftModel,
    student: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    lengths: Sequence[int] | None = None,
    num_samples: int = 1,
    batch_size: int = 8,
    seed: int = 0,
    show_progress: bool = True,
    generation_kwargs: dict[str, Any] | None = None,
    add_special_tokens: bool = True,
    keep_per_prompt: bool = False,
) -> ExposureBiasResult:
    """The exposure-bias metric of PromptKD's analysis, ExAccErr, as the official code measures it.

    Official code: gmkim-ai/PromptKD @ 383182f4, `evaluate_exposure_bias.py` (`calc_batch`, `evaluate`); the metric
    is MiniLLM's (Gu et al., 2024, "excess accumulated error"). For each prompt, the student and then the teacher
    sample `num_samples` responses. On every response, the per-token KL(P_T || P_S) between the teacher's and the
    student's next-token distributions is taken at each position ([`response_kls`]); per prompt it is averaged over
    the samples that reach the position and summed over the first `l` positions. Averaged over prompts, this is
    `R(l)` on the student's samples and `E(l)` on the teacher's, and

        ExAccErr(l) = (R(l) - E(l)) / E(l) * 100.

    `E(l)` is the error a student makes on the teacher's own text (no exposure bias); `R(l) - E(l)` is what it adds
    when it continues its own text, as at test time. PromptKD reports it to show that its student-friendly teacher
    reduces exposure bias during training.

    Sampling is the official's: the papers' decoding ([`~promptkd_trainer.generation.paper_generation_kwargs`]:
    temperature 1, top-k 0, top-p 1 and `no_repeat_ngram_size=6`, the defaults of the official `arguments.py`), with
    `max_new_tokens` new tokens. Prompts are cut from the left to fit both models' positions (and the prompted
    teacher's virtual tokens), so that both samplers continue the same prompts.

    Args:
        teacher (`PreTrainedModel` or `peft.PeftModel`):
            The teacher. With a PEFT prompt-tuning adapter, the prompted teacher both samples and gives P_T (the
            official `--teacher-peft-path`).
        student (`PreTrainedModel` or `peft.PeftModel`):
            The student.
        tokenizer (`PreTrainedTokenizerBase`):
            The tokenizer both share.
        prompts (`list[str]`):
            Prompt strings, e.g. the `prompt` field of [`load_eval_set`] rows.
        max_new_tokens (`int`):
            Length cap of the samples; the curves have this many positions.
        lengths (`list[int]`, *optional*):
            The `l` to report, each in `[1, max_new_tokens]`; defaults to all of them.
        num_samples (`int`, defaults to `1`):
            Samples per prompt and per model (official `--eb-sample-times`, default 3). Sample `k` is drawn with seed
            `seed + k`.
        batch_size (`int`, defaults to `8`):
            Prompts per `generate` call and sequences per forward.
        seed (`int`, defaults to `0`):
            Seed of the first sample of each model (both models draw with the same seeds).
        show_progress (`bool`, defaults to `True`):
            A tqdm bar per model and sample.
        generation_kwargs (`dict`, *optional*):
            Decoding overrides on top of the papers' (e.g. `{"no_repeat_ngram_size": None}`).
        add_special_tokens (`bool`, defaults to `True`):
            Whether prompts get the tokenizer's special tokens.
        keep_per_prompt (`bool`, defaults to `False`):
            Also return each prompt's regrets at `lengths`.

    Returns:
        [`ExposureBiasResult`].
    """
    if not prompts:
        raise ValueError("exposure_bias needs at least one prompt.")
    if max_new_tokens < 1 or num_samples < 1 or batch_size < 1:
        raise ValueError(
            f"max_new_tokens, num_samples and batch_size must be >= 1, got {max_new_tokens}, {num_samples} and "
            f"{batch_size}."
        )
    lengths = list(range(1, max_new_tokens + 1)) if lengths is None else [int(n) for n in lengths]
    if not lengths or any(not 1 <= n <= max_new_tokens for n in lengths):
        raise ValueError(f"`lengths` must be response lengths in [1, max_new_tokens={max_new_tokens}], got {lengths}.")
    prompted = _prompted_teacher(teacher)
    reserved = num_virtual_tokens(prompted) if prompted is not None else 0
    s_limit, t_limit = position_limit(student), position_limit(teacher)
    room = [
        max_prompt_length(limit, max_new_tokens, extra)
        for limit, extra in ((s_limit, 0), (t_limit, reserved))
        if limit is not None
    ]
    note = (
        f"the student's {s_limit} and the teacher's {t_limit} positions minus max_new_tokens={max_new_tokens}, "
        f"minus {reserved} virtual tokens"
    )
    encoded = encode_prompts(tokenizer, prompts, add_special_tokens, min(room) if room else None, note)
    kwargs = {**paper_generation_kwargs(), **(generation_kwargs or {}), "max_new_tokens": max_new_tokens}
    curves = {}
    for who in ("student", "teacher"):
        sampler = {"model": student} if who == "student" else {"model": teacher, "prompted_teacher": prompted}
        kls_per_sample = []
        for k in range(num_samples):
            completions = generate_completions(
                tokenizer=tokenizer,
                prompt_ids=encoded,
                batch_size=batch_size,
                seed=seed + k,
                show_progress=show_progress,
                progress_desc=f"exposure bias: {who} samples ({k + 1}/{num_samples})",
                **sampler,
                **kwargs,
            )
            kls = response_kls(teacher, student, tokenizer, encoded, completions, batch_size=batch_size)
            kls_per_sample.append(kls)
        per_prompt = _cumulative_regret(kls_per_sample, len(encoded), max_new_tokens)
        curves[who] = per_prompt[:, [n - 1 for n in lengths]]
    mean_r, mean_e = curves["student"].mean(0), curves["teacher"].mean(0)
    single = len(encoded) == 1  # one prompt: no spread over prompts (torch.std would give nan)
    exaccerr = [float("nan") if e == 0 else float((r - e) / e * 100) for r, e in zip(mean_r.tolist(), mean_e.tolist())]
    result = ExposureBiasResult(
        lengths=lengths,
        exaccerr=exaccerr,
        regret_student_samples=mean_r.tolist(),
        regret_teacher_samples=mean_e.tolist(),
        regret_student_samples_std=[0.0] * len(lengths) if single else curves["student"].std(0).tolist(),
        regret_teacher_samples_std=[0.0] * len(lengths) if single else curves["teacher"].std(0).tolist(),
        num_prompts=len(encoded),
        num_samples=num_samples,
        max_new_tokens=max_new_tokens,
        seed=seed,
        generation_kwargs=kwargs,
    )
    if keep_per_prompt:
        result.per_prompt_student = curves["student"].tolist()
        result.per_prompt_teacher = curves["teacher"].tolist()
    logger.info(
        f"exposure bias over {len(encoded)} prompts x {num_samples} samples: ExAccErr(l={lengths[-1]}) = "
        f"{exaccerr[-1]:.2f} %"
    )
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
