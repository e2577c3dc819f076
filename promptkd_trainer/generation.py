# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Answer generation for evaluation: one function for a plain model and for a teacher through its soft prompt.

[`generate_answers`] is the package's only evaluation generation path; `promptkd eval`, [`RougeEvalCallback`] and
`promptkd demo` all call it. [`generate_completions`] is the same generation before decoding (token ids), used by
[`~promptkd_trainer.evaluation.exposure_bias`].

The module also holds the one definition of the papers' decoding ([`PAPER_SAMPLING`], [`PAPER_GENERATION`]), of the
tokens that end an answer ([`end_token_ids`], also used by the trainer's sampling) and of a model's position limit
([`position_limit`], also used by the trainer's checks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging
from trl.trainer.utils import pad

from .teacher import base_model, generate_with_prompt, prepend_prompt


logger = logging.get_logger(__name__)

# The papers' sampling: temperature 1 with top-k (0) and top-p (1.0) off, the official `arguments.py` defaults
# (gmkim-ai/PromptKD @ 383182f4, `add_gen_args`), used by its evaluation and by its exposure-bias measurement.
PAPER_SAMPLING: Mapping[str, Any] = MappingProxyType({"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0})

# The papers' evaluation decoding: the sampling above, no repeated 6-gram (`--no-repeat-ngram-size 6`, the same
# defaults) and 256 new tokens (official `max_length` 512 with prompts left-padded to 256).
PAPER_GENERATION: Mapping[str, Any] = MappingProxyType(
    {**PAPER_SAMPLING, "no_repeat_ngram_size": 6, "max_new_tokens": 256}
)

# Config attributes that hold a model's number of positions, in the order they are looked up.
POSITION_LIMIT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def paper_generation_kwargs() -> dict[str, Any]:
    """Decoding of the papers' evaluation ([`PAPER_GENERATION`], a fresh dict): sampling at temperature 1, top-k 0
    (off), top-p 1, no 6-gram repeats, and 256 new tokens."""
    return dict(PAPER_GENERATION)


def position_limit(model) -> int | None:
    """The model's number of positions ([`POSITION_LIMIT_KEYS`] of its text config, under any PEFT wrapper), if its
    config has one."""
    config = base_model(model).config.get_text_config()
    for key in POSITION_LIMIT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def end_token_ids(tokenizer: PreTrainedTokenizerBase, model) -> list[int]:
    """The token ids that end a generated answer: the tokenizer's EOS first (the token forced at a length cap), then
    the other end-of-turn tokens of the model's generation config, without repeats."""
    ids: list[int] = []
    gen_eos = getattr(getattr(base_model(model), "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, gen_eos):
        if value is None:
            continue
        for v in [value] if isinstance(value, int) else list(value):
            if int(v) not in ids:
                ids.append(int(v))
    return ids


def max_prompt_length(limit: int | None, max_new_tokens: int, reserved: int = 0) -> int | None:
    """Prompt tokens that fit in `limit` positions next to `max_new_tokens` new tokens and `reserved` virtual tokens
    (`None` when the model has no position limit).

    Raises:
        `ValueError`: no room is left for a prompt.
    """
    if limit is None:
        return None
    if limit - max_new_tokens - reserved < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} (+{reserved} virtual tokens) leaves no room for a prompt within the "
            f"model's {limit} positions; lower max_new_tokens."
        )
    return limit - max_new_tokens - reserved


def _generate_prompted(prompted, input_ids, attention_mask, pad_id, gen_kwargs) -> torch.Tensor:
    """New tokens of the prompted teacher, via [`promptkd_trainer.teacher.generate_with_prompt`].

    With `no_repeat_ngram_size`, `generate` is also handed the token ids: with `inputs_embeds` alone it applies the
    constraint to the new tokens only (transformers 5.x warns so), while the papers' evaluation (token ids) bans
    n-grams of the prompt too. Decoder-only `generate` accepts `input_ids` next to `inputs_embeds` (embeddings feed
    the first step, ids feed the logits processors), so the ids go in with `pad_id` under the virtual tokens, exactly
    like left padding.
    """
    if not gen_kwargs.get("no_repeat_ngram_size"):
        return generate_with_prompt(prompted, input_ids, attention_mask, **gen_kwargs)
    embeds, mask = prepend_prompt(prompted, input_ids, attention_mask)
    placeholders = input_ids.new_full((input_ids.shape[0], embeds.shape[1] - input_ids.shape[1]), pad_id)
    full_ids = torch.cat([placeholders, input_ids], dim=1)
    base = prompted.get_base_model()
    out = base.generate(input_ids=full_ids, inputs_embeds=embeds, attention_mask=mask, **gen_kwargs)
    return out[:, full_ids.shape[1] :]


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    add_special_tokens: bool = True,
    max_prompt_len: int | None = None,
    limit_note: str = "",
) -> list[list[int]]:
    """Token ids of `prompts`, each cut from the left to `max_prompt_len` tokens (with one warning naming
    `limit_note`, the reason for the limit).

    Raises:
        `ValueError`: a prompt tokenizes to no tokens.
    """
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens, verbose=False)["input_ids"] for p in prompts]
    if max_prompt_len is not None:
        truncated = [i for i, ids in enumerate(encoded) if len(ids) > max_prompt_len]
        if truncated:
            logger.warning(
                f"{len(truncated)} of {len(encoded)} prompts are longer than {max_prompt_len} tokens ({limit_note}); "
                f"they were truncated from the left (first: index {truncated[0]})."
            )
            encoded = [ids[-max_prompt_len:] for ids in encoded]
    if any(len(ids) == 0 for ids in encoded):
        raise ValueError("A prompt tokenizes to no tokens; pass non-empty prompts.")
    return encoded


def pad_token_id(tokenizer: PreTrainedTokenizerBase, end_ids: Sequence[int]) -> int:
    """The tokenizer's pad token, else its first end token (GPT-2, official code)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if not end_ids:
        raise ValueError("The tokenizer has neither a pad nor an EOS token; set `tokenizer.pad_token`.")
    return end_ids[0]


@torch.no_grad()
def generate_completions(
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],
    *,
    prompted_teacher=None,
    batch_size: int = 8,
    max_new_tokens: int = PAPER_GENERATION["max_new_tokens"],
    do_sample: bool = PAPER_SAMPLING["do_sample"],
    temperature: float = PAPER_SAMPLING["temperature"],
    top_k: int = PAPER_SAMPLING["top_k"],
    top_p: float = PAPER_SAMPLING["top_p"],
    no_repeat_ngram_size: int | None = None,
    seed: int = 10,
    show_progress: bool = False,
    progress_desc: str | None = None,
) -> list[list[int]]:
    """New token ids for already tokenized prompts, each kept up to and including its first end token
    ([`end_token_ids`]).

    The generation of [`generate_answers`], before decoding: prompts are left-padded per batch
    (`trl.trainer.utils.pad`), decoded with the KV cache, and the whole call runs after `torch.manual_seed(seed)`
    inside `torch.random.fork_rng` (reproducible, and the caller's RNG state is restored afterwards). The prompts
    must already fit the model's positions (see [`encode_prompts`], [`max_prompt_length`]).

    Args:
        show_progress (`bool`, defaults to `False`):
            Show a tqdm bar over the prompts (the Trainer's `disable_tqdm` turns it off in the callback).
        progress_desc (`str`, *optional*):
            The bar's label.

    See [`generate_answers`] for the other arguments.
    """
    if prompted_teacher is None and model is None:
        raise ValueError("Pass `model`, or `prompted_teacher` to generate with a prompted teacher.")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}.")
    module = prompted_teacher if prompted_teacher is not None else model
    gen_model = prompted_teacher.get_base_model() if prompted_teacher is not None else model
    end_ids = end_token_ids(tokenizer, gen_model)
    pad_id = pad_token_id(tokenizer, end_ids)

    gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "pad_token_id": pad_id}
    if end_ids:
        gen_kwargs["eos_token_id"] = end_ids if len(end_ids) > 1 else end_ids[0]
    if do_sample:
        # Passed explicitly so that a checkpoint's generation_config (e.g. top_k=50) cannot change the protocol.
        gen_kwargs.update(temperature=temperature, top_k=top_k, top_p=top_p)
    if no_repeat_ngram_size:
        gen_kwargs["no_repeat_ngram_size"] = no_repeat_ngram_size

    device = next(gen_model.parameters()).device
    was_training = module.training
    module.eval()
    completions: list[list[int]] = []
    end_set = set(end_ids)
    cuda_devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    bar = tqdm(total=len(prompt_ids), desc=progress_desc, unit="prompt", disable=not show_progress, leave=False)
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            for start in range(0, len(prompt_ids), batch_size):
                rows = [torch.tensor(ids) for ids in prompt_ids[start : start + batch_size]]
                input_ids = pad(rows, padding_value=pad_id, padding_side="left").to(device)
                attention_mask = pad([torch.ones_like(r) for r in rows], padding_side="left").to(device)
                if prompted_teacher is not None:
                    new_tokens = _generate_prompted(prompted_teacher, input_ids, attention_mask, pad_id, gen_kwargs)
                else:
                    out = gen_model.generate(input_ids=input_ids, attention_mask=attention_mask, **gen_kwargs)
                    new_tokens = out[:, input_ids.shape[1] :]
                for ids in new_tokens.tolist():
                    cut = next((i + 1 for i, t in enumerate(ids) if t in end_set), len(ids))
                    completions.append(ids[:cut])
                bar.update(len(rows))
    finally:
        bar.close()
        module.train(was_training)
    return completions


def generate_answers(
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    prompted_teacher=None,
    batch_size: int = 8,
    max_new_tokens: int = PAPER_GENERATION["max_new_tokens"],
    do_sample: bool = PAPER_SAMPLING["do_sample"],
    temperature: float = PAPER_SAMPLING["temperature"],
    top_k: int = PAPER_SAMPLING["top_k"],
    top_p: float = PAPER_SAMPLING["top_p"],
    no_repeat_ngram_size: int | None = None,
    seed: int = 10,
    add_special_tokens: bool = True,
    show_progress: bool = False,
    progress_desc: str | None = None,
) -> list[str]:
    """Generate one answer per prompt.

    Prompts are tokenized (with special tokens, as the official `PromptDataset` and TRL do), left-padded per batch
    (`trl.trainer.utils.pad`) and decoded with the KV cache ([`generate_completions`]). Each answer is cut at its
    first EOS, decoded with `skip_special_tokens=True` and stripped. Each call runs `torch.manual_seed(seed)` inside
    `torch.random.fork_rng`: a call is reproducible, and the caller's RNG state (e.g. a trainer's, when a callback
    evaluates mid-training) is restored afterwards.

    Args:
        model (`PreTrainedModel`, *optional*):
            The causal LM to generate with (student or any model). Ignored, and may be `None`, when
            `prompted_teacher` is given.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer. Without a pad token, EOS pads (GPT-2, official code).
        prompts (`list[str]`):
            Prompt strings, e.g. the `prompt` field of [`~promptkd_trainer.evaluation.load_eval_set`] rows.
        prompted_teacher (`peft.PeftModel`, *optional*):
            A teacher carrying a PEFT prompt-tuning adapter; generation then goes through
            [`promptkd_trainer.teacher.generate_with_prompt`] (`PeftModel.generate` re-inserts the virtual tokens at
            every cached decoding step on transformers 5.x + peft 0.21, which is wrong).
        batch_size (`int`, defaults to `8`), max_new_tokens (`int`, defaults to `256`):
            Batch size and answer length cap.
        do_sample, temperature, top_k, top_p, no_repeat_ngram_size:
            Decoding; the defaults sample as the papers do ([`PAPER_SAMPLING`]). `top_k=0` disables top-k.
        seed (`int`, defaults to `10`):
            Passed to `torch.manual_seed` (in a forked RNG) before generating.
        add_special_tokens (`bool`, defaults to `True`):
            Whether prompts get the tokenizer's special tokens (BOS for Llama/OPT).
        show_progress (`bool`, defaults to `False`), progress_desc (`str`, *optional*):
            A tqdm bar over the prompts, and its label.

    Returns:
        `list[str]`, aligned with `prompts`.

    Prompts longer than the model's position limit minus `max_new_tokens` (minus the virtual tokens of a prompted
    teacher) are truncated from the left, with a warning.
    """
    if prompted_teacher is None and model is None:
        raise ValueError("Pass `model`, or `prompted_teacher` to generate with a prompted teacher.")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}.")
    gen_model = prompted_teacher.get_base_model() if prompted_teacher is not None else model
    reserved = prompted_teacher.active_peft_config.num_virtual_tokens if prompted_teacher is not None else 0
    limit = position_limit(gen_model)
    note = f"the model's {limit} positions minus max_new_tokens={max_new_tokens}, minus {reserved} virtual tokens"
    encoded = encode_prompts(
        tokenizer, prompts, add_special_tokens, max_prompt_length(limit, max_new_tokens, reserved), note
    )
    completions = generate_completions(
        model,
        tokenizer,
        encoded,
        prompted_teacher=prompted_teacher,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        no_repeat_ngram_size=no_repeat_ngram_size,
        seed=seed,
        show_progress=show_progress,
        progress_desc=progress_desc,
    )
    end_set = set(end_token_ids(tokenizer, gen_model))
    answers = []
    for ids in completions:
        ids = ids[:-1] if ids and ids[-1] in end_set else ids
        answers.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return answers
