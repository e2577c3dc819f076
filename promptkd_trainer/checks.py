# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Checks on the student / teacher pair, run by [`PromptKDTrainer`] before training: shared vocabulary and tokenizer,
causal decoders, and a `max_length` that fits both models' positions plus the prompt's virtual tokens."""

from __future__ import annotations

import os

import torch
from transformers import PreTrainedTokenizerBase
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.utils import logging

from .generation import position_limit
from .teacher import _has_tokenizer, base_model


logger = logging.get_logger(__name__)


def check_vocab(student, teacher, tokenizer: PreTrainedTokenizerBase, truncate: bool) -> int | None:
    """Check that student and teacher distributions can be compared entry by entry.

    Returns:
        `int` or `None`: the shared vocabulary size to slice both logits to (`truncate=True` and sizes that differ),
        else `None`.
    """
    s_vocab = base_model(student).config.get_text_config().vocab_size
    t_vocab = base_model(teacher).config.get_text_config().vocab_size
    shared = min(s_vocab, t_vocab)
    if len(tokenizer) > shared:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the models' shared vocabulary has {shared} rows; "
            "resize the embeddings (`model.resize_token_embeddings(len(tokenizer))`) of both models."
        )
    if s_vocab == t_vocab:
        return None
    if not truncate:
        raise ValueError(
            f"Student and teacher vocabulary sizes differ ({s_vocab} vs {t_vocab}); their distributions cannot "
            "be compared position by position. If both use the same tokenizer and the extra rows are padding "
            "(e.g. Qwen2.5 0.5B vs 7B), set `truncate_vocab=True` to compare them on the shared "
            f"{shared} entries; otherwise pick a teacher/student pair with the same tokenizer."
        )
    return shared


def check_same_tokenizer(teacher, tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse a teacher whose own tokenizer (when its folder has one) maps a token to another id than `tokenizer`.

    PromptKD compares the two distributions id by id, so the same id must mean the same token.
    """
    path = base_model(teacher).name_or_path
    if not _has_tokenizer(path) or os.path.realpath(path) == os.path.realpath(tokenizer.name_or_path or "."):
        return
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(path).get_vocab()
    ours = tokenizer.get_vocab()
    differ = [token for token, i in theirs.items() if ours.get(token) != i]
    if differ:
        raise ValueError(
            f"The teacher's tokenizer ({path}) differs from the student's `processing_class`: {len(differ)} of its "
            f"{len(theirs)} tokens have another id (e.g. {differ[0]!r}). PromptKD compares the two models' "
            "distributions token id by token id; use a teacher and a student that share a tokenizer."
        )


def check_causal(model, role: str) -> None:
    """Refuse a model that is not a causal decoder: encoder-decoders, and models whose prediction at a position
    depends on later tokens (e.g. a BERT checkpoint loaded as `BertLMHeadModel`), checked with a 3-token forward."""
    base = base_model(model)
    config = base.config.get_text_config()
    name = type(base).__name__
    advice = f"PromptKD needs causal decoder-only language models (GPT-2, OPT, Llama, Qwen, ...) as {role}."
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"The {role} ({name}) is an encoder-decoder model. {advice}")
    if is_deepspeed_zero3_enabled():  # partitioned weights: no forward before the engines exist
        return
    device = next(base.parameters()).device
    ids = torch.tensor([[1, 2, 3]], device=device) % max(int(config.vocab_size), 1)
    was_training = base.training
    base.eval()
    with torch.no_grad():
        full = base(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[0, 0].float()
        first = base(input_ids=ids[:, :1], attention_mask=torch.ones_like(ids[:, :1]), use_cache=False).logits[0, 0]
    base.train(was_training)
    # NaN weights make both NaN: that is for the non-finite loss check to report, not this one.
    if not torch.allclose(full, first.float(), rtol=1e-3, atol=1e-4, equal_nan=True):
        raise ValueError(f"The {role} ({name}) is not causal: its prediction at a position depends on later tokens. "
                         f"{advice}")


def fit_max_length(student, teacher, args) -> int | None:
    """The `max_length` that fits both models: the student reads `max_length` positions, the prompted teacher
    `max_length + num_virtual_tokens`. A larger (or `None`) `max_length` is lowered to that, with a warning, instead
    of an `IndexError` mid-training.

    Raises:
        `ValueError`: the models leave no room for a prompt and a completion.
    """
    s_limit, t_limit = position_limit(student), position_limit(teacher)
    fits = [lim for lim in (s_limit, None if t_limit is None else t_limit - args.num_virtual_tokens) if lim is not None]
    if not fits:
        return args.max_length
    fit = min(fits)
    if fit < 2:
        raise ValueError(
            f"The teacher has {t_limit} positions and the prompt takes {args.num_virtual_tokens} of them: no room is "
            "left for a prompt and a completion. Lower `num_virtual_tokens`."
        )
    if args.max_length is not None and args.max_length <= fit:
        return args.max_length
    logger.warning(
        f"max_length={args.max_length} does not fit the models: the student has {s_limit} positions and the teacher "
        f"{t_limit}, {args.num_virtual_tokens} of which hold the prompt's virtual tokens. Using max_length={fit}; "
        "set it in the config to silence this warning."
    )
    return fit


def check_models(student, teacher, tokenizer: PreTrainedTokenizerBase, args) -> int | None:
    """All the checks on the student / teacher pair before training; lowers `args.max_length` to what fits.

    Returns:
        `int` or `None`: the shared vocabulary size to compare the logits on ([`check_vocab`]).
    """
    vocab = check_vocab(student, teacher, tokenizer, args.truncate_vocab)
    check_same_tokenizer(teacher, tokenizer)
    check_causal(student, "student")
    args.max_length = fit_max_length(student, teacher, args)
    return vocab
