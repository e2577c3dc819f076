# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Token-level divergences between a trainable and a target next-token distribution, with bounded memory.

Every function takes two logit tensors of the same shape `[..., V]`:

- `logits`, the *trainable* distribution P = softmax(logits / T) (the student, or the prompted teacher while its soft
  prompt is trained);
- `target_logits`, the *target* distribution Q = softmax(target_logits / T) (the prompted teacher, or the teacher
  without prompt for PromptKD's regulariser).

Names follow the point of view of P: `"reverse_kl"` is KL(P || Q) (PromptKD's default for all three terms),
`"forward_kl"` is KL(Q || P). `"jsd"` is the generalized Jensen-Shannon divergence of GKD (Agarwal et al., 2024) and
reproduces TRL's `GKDTrainer.generalized_jsd_loss`; `"skew_forward_kl"` and `"skew_reverse_kl"` are the skew KL
divergences of DistiLLM (Ko et al., 2024).

Each divergence is summed over the vocabulary at every selected position, then summed over positions and divided by
`num_items` when given (the trainer's count of completion tokens over the whole gradient-accumulation window and all
processes), else by the number of selected positions.

The loss and its gradients are computed chunk by chunk in bounded memory by `divergence_kernels.py`.
"""

from __future__ import annotations

import functools
import math
from numbers import Number

import torch

from .divergence_kernels import ChunkedDivergence


__all__ = [
    "DIVERGENCE_TYPES",
    "divergence",
    "forward_kl",
    "generalized_jsd",
    "reverse_kl",
    "skew_forward_kl",
    "skew_reverse_kl",
]

DIVERGENCE_TYPES = ("forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl")

# Elements of one fp32 working chunk ([chunk, V]): 2**23 * 4 bytes = 32 MiB. A fixed number of positions would make the
# working set grow with the vocabulary (1024 positions x 152k vocab = 620 MB per buffer); a fixed element budget keeps
# it bounded, and small enough next to the logits gradient (benchmarks/divergence_memory.py).
DEFAULT_CHUNK_ELEMENTS = 2**23


def default_chunk_size(vocab_size: int) -> int:
    """Positions per chunk so that one fp32 `[chunk, V]` buffer holds `DEFAULT_CHUNK_ELEMENTS` values."""
    return max(1, DEFAULT_CHUNK_ELEMENTS // max(int(vocab_size), 1))

NumItems = int | float | torch.Tensor | None


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------


def _validate_and_select(logits, target_logits, mask, temperature, num_items, chunk_size):
    if not isinstance(logits, torch.Tensor) or not isinstance(target_logits, torch.Tensor):
        raise ValueError("`logits` and `target_logits` must be torch tensors.")
    if not logits.is_floating_point() or not target_logits.is_floating_point():
        raise ValueError(
            f"`logits` and `target_logits` must be floating point tensors, got {logits.dtype} and "
            f"{target_logits.dtype}."
        )
    if logits.dim() < 1:
        raise ValueError("`logits` must have a vocabulary dimension (shape [..., V]).")
    if logits.shape != target_logits.shape:
        if logits.shape[:-1] == target_logits.shape[:-1]:
            raise ValueError(
                f"`logits` and `target_logits` have different vocabulary sizes ({logits.shape[-1]} vs "
                f"{target_logits.shape[-1]}). Set `truncate_vocab=True` in PromptKDConfig or slice both to the shared "
                "vocabulary (e.g. `logits[..., :V]`) so that the same index means the same token."
            )
        raise ValueError(
            f"`logits` and `target_logits` must have the same shape, got {tuple(logits.shape)} and "
            f"{tuple(target_logits.shape)}. If only the vocabulary sizes differ, set `truncate_vocab=True` in "
            "PromptKDConfig or slice both to the shared vocabulary."
        )
    if logits.device != target_logits.device:
        raise ValueError(f"`logits` is on {logits.device} but `target_logits` is on {target_logits.device}.")
    if isinstance(temperature, bool) or not isinstance(temperature, Number) or not temperature > 0:
        raise ValueError(f"`temperature` must be a number > 0, got {temperature!r}.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be an int >= 1, got {chunk_size!r}.")

    lead_shape = logits.shape[:-1]
    if mask is None:
        flat_index = None
        num_selected = math.prod(lead_shape)
    else:
        if not isinstance(mask, torch.Tensor):
            raise ValueError(f"`mask` must be a tensor or None, got {type(mask).__name__}.")
        if mask.shape != lead_shape:
            raise ValueError(
                f"`mask` must have the shape of `logits` without its vocabulary dimension, {tuple(lead_shape)}, got "
                f"{tuple(mask.shape)}."
            )
        mask = mask.to(logits.device)
        if mask.dtype != torch.bool:
            mask = mask != 0
        flat_index = mask.reshape(-1).nonzero().squeeze(1)  # positions only: [K] int64, tiny next to [K, V]
        num_selected = flat_index.numel()

    if num_items is None:
        scale = 1.0 / max(num_selected, 1)
    elif isinstance(num_items, torch.Tensor):
        if num_items.numel() != 1:
            raise ValueError(f"`num_items` must be a number or a 0-d tensor, got shape {tuple(num_items.shape)}.")
        # Kept as a tensor: calling .item() would force a device sync on every step.
        scale = 1.0 / num_items.detach().reshape(()).to(device=logits.device, dtype=torch.float32)
    elif isinstance(num_items, Number) and not isinstance(num_items, bool):
        if num_items <= 0 and num_selected > 0:
            raise ValueError(f"`num_items` must be > 0 when positions are selected, got {num_items!r}.")
        scale = 1.0 / num_items if num_items > 0 else 0.0
    else:
        raise ValueError(f"`num_items` must be None, a number or a 0-d tensor, got {type(num_items).__name__}.")
    return flat_index, num_selected, scale


def divergence(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    loss_type: str = "reverse_kl",
    *,
    mask: torch.Tensor | None = None,
    beta: float = 0.5,
    alpha: float = 0.1,
    temperature: float = 1.0,
    num_items: NumItems = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""
    Divergence between the trainable distribution P = softmax(`logits` / T) and the target distribution
    Q = softmax(`target_logits` / T), selected by name; `"reverse_kl"` is KL(P || Q).

    The divergence is summed over the vocabulary at each selected position, summed over positions, then divided by
    `num_items` if given, else by the number of selected positions. Softmaxes run in fp32 whatever the input dtype;
    the memory is bounded by processing `chunk_size` positions at a time (see the module docstring). Both inputs may
    require gradients; their gradients come back in their own dtype. Vocabulary entries where either logit is
    infinite (e.g. padding at -inf) contribute 0.

    Args:
        logits (`torch.Tensor` of shape `[..., V]`):
            Logits of the trainable distribution P (e.g. the student). May be a non-contiguous view such as
            `logits[:, :-1, :]`; it is not copied as a whole.
        target_logits (`torch.Tensor` of shape `[..., V]`):
            Logits of the target distribution Q (e.g. the teacher). Same shape as `logits`.
        loss_type (`str`, *optional*, defaults to `"reverse_kl"`):
            One of `DIVERGENCE_TYPES`: `"forward_kl"`, `"reverse_kl"`, `"jsd"`, `"skew_forward_kl"`,
            `"skew_reverse_kl"`.
        mask (`torch.Tensor` of shape `[...]`, *optional*):
            Bool or 0/1 tensor selecting the positions to include (e.g. completion tokens). `None` selects all.
        beta (`float`, *optional*, defaults to `0.5`):
            Interpolation of `"jsd"`, in [0, 1]; see [`generalized_jsd`]. Ignored by the other types.
        alpha (`float`, *optional*, defaults to `0.1`):
            Skew of `"skew_forward_kl"` / `"skew_reverse_kl"`, in (0, 1). Ignored by the other types.
        temperature (`float`, *optional*, defaults to `1.0`):
            Both logits are divided by it before the softmax. The loss is *not* multiplied by T^2 (as in GKD and
            the official PromptKD code); scale it yourself if you want the Hinton et al. convention.
        num_items (`int`, `float` or 0-d `torch.Tensor`, *optional*):
            Denominator of the reduction. Pass the number of selected tokens of the whole gradient-accumulation
            window across processes to get a loss that does not depend on how the batch is split. `None` divides by
            the local number of selected positions (token mean).
        chunk_size (`int`, *optional*):
            Positions processed at once; by default `DEFAULT_CHUNK_ELEMENTS // V` (one fp32 chunk of ~32 MB, e.g. 166
            positions at V = 50257, which meets the benchmark's 0.25x-of-naive memory target). The extra memory is
            the gradient buffer of each input that requires grad (the size of that input) plus two to four
            `[chunk_size, V]` fp32 working buffers; smaller values use less memory, larger values fewer kernel
            launches. Results do not depend on it beyond float rounding.

    Returns:
        `torch.Tensor`: scalar loss, fp32 (fp64 for fp64 inputs). It is exactly 0 (with zero gradients) when no
        position is selected.

    Raises:
        `ValueError`: on mismatched shapes (including different vocabulary sizes), a mask of the wrong shape, an
        unknown `loss_type`, `beta` outside [0, 1], `alpha` outside (0, 1) or `temperature` <= 0.
    """
    if loss_type not in DIVERGENCE_TYPES:
        raise ValueError(f"Unknown loss_type {loss_type!r}; expected one of {', '.join(DIVERGENCE_TYPES)}.")
    if loss_type == "jsd":
        if isinstance(beta, bool) or not isinstance(beta, Number) or not 0.0 <= beta <= 1.0:
            raise ValueError(f"`beta` must be in [0, 1], got {beta!r}.")
        # GKD's special cases, so that beta in {0, 1} gives exactly the plain KLs (as TRL's implementation does).
        if beta == 0:
            kind, coef = "forward_kl", 0.0
        elif beta == 1:
            kind, coef = "reverse_kl", 0.0
        else:
            kind, coef = "jsd", float(beta)
    elif loss_type in ("skew_forward_kl", "skew_reverse_kl"):
        if isinstance(alpha, bool) or not isinstance(alpha, Number) or not 0.0 < alpha < 1.0:
            raise ValueError(f"`alpha` must be in the open interval (0, 1), got {alpha!r}.")
        kind, coef = loss_type, float(alpha)
    else:
        kind, coef = loss_type, 0.0

    if chunk_size is None and isinstance(logits, torch.Tensor) and logits.dim() >= 1:
        chunk_size = default_chunk_size(logits.shape[-1])
    flat_index, num_selected, scale = _validate_and_select(
        logits, target_logits, mask, temperature, num_items, chunk_size
    )
    # Decided here rather than from ctx.needs_input_grad, which is also True under torch.no_grad(): evaluation must
    # not pay for gradient buffers.
    grad_enabled = torch.is_grad_enabled()
    need_p = grad_enabled and logits.requires_grad
    need_q = grad_enabled and target_logits.requires_grad
    return ChunkedDivergence.apply(
        logits,
        target_logits,
        flat_index,
        num_selected,
        kind,
        coef,
        float(temperature),
        scale,
        chunk_size,
        need_p,
        need_q,
    )


_SHARED_ARGS = """
    Args:
        logits (`torch.Tensor` of shape `[..., V]`): Logits of the trainable distribution P (e.g. the student).
        target_logits (`torch.Tensor` of shape `[..., V]`): Logits of the target distribution Q (e.g. the teacher).
        **kwargs: `mask`, `temperature`, `num_items`, `chunk_size`{extra}, as in [`divergence`].

    Returns:
        `torch.Tensor`: scalar loss, fp32 (fp64 for fp64 inputs).
"""

def _alias(loss_type: str, summary: str, extra: str = "") -> functools.partial:
    """[`divergence`] with `loss_type` fixed; `summary` becomes its docstring."""
    alias = functools.partial(divergence, loss_type=loss_type)
    alias.__doc__ = f"{summary}: `divergence(..., loss_type=\"{loss_type}\")`." + _SHARED_ARGS.format(extra=extra)
    return alias


forward_kl = _alias("forward_kl", "Forward KL, KL(Q || P) = sum_v Q (log Q - log P), mode-covering for P")
reverse_kl = _alias(
    "reverse_kl", "Reverse KL, KL(P || Q) = sum_v P (log P - log Q), mode-seeking for P (PromptKD's default)"
)
skew_forward_kl = _alias(
    "skew_forward_kl", "Skew forward KL of DistiLLM (Ko et al., 2024), KL(Q || alpha Q + (1 - alpha) P)", ", `alpha`"
)
skew_reverse_kl = _alias(
    "skew_reverse_kl", "Skew reverse KL of DistiLLM (Ko et al., 2024), KL(P || alpha P + (1 - alpha) Q)", ", `alpha`"
)


def generalized_jsd(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    beta: float = 0.5,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    reduction: str = "batchmean",
    num_items: NumItems = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""
    Generalized Jensen-Shannon divergence of GKD (Agarwal et al., 2024), with the reductions of TRL's
    `GKDTrainer.generalized_jsd_loss`.

    With P = softmax(`logits` / T) the trainable distribution, Q = softmax(`target_logits` / T) the target and the
    mixture M = (1 - beta) P + beta Q, the loss is beta KL(Q || M) + (1 - beta) KL(P || M) for 0 < beta < 1, where
    KL(A || B) = sum_v A (log A - log B). The end points are special-cased as in TRL: beta = 0 gives the forward
    KL(Q || P) and beta = 1 the reverse KL(P || Q). `generalized_jsd(s, t, beta=b, mask=labels != -100,
    reduction=r, num_items=n)` equals `GKDTrainer.generalized_jsd_loss(s, t, labels, beta=b, reduction=r,
    num_items_in_batch=n)` (TRL 1.16) up to float rounding, for `r` in `"batchmean"`, `"sum"` and `"mean"`.

    Args:
        logits (`torch.Tensor` of shape `[..., V]`): Logits of the trainable distribution P (e.g. the student).
        target_logits (`torch.Tensor` of shape `[..., V]`): Logits of the target distribution Q (e.g. the teacher).
        beta (`float`, *optional*, defaults to `0.5`): Interpolation coefficient in [0, 1].
        mask (`torch.Tensor` of shape `[...]`, *optional*): Bool or 0/1 selection of positions (TRL's
            `labels != -100`); `None` selects all.
        temperature (`float`, *optional*, defaults to `1.0`): Divides both logits; no T^2 scaling of the loss.
        reduction (`str`, *optional*, defaults to `"batchmean"`):
            Used when `num_items` is `None`. `"batchmean"`: the sum over positions divided by the number of selected
            positions with a `mask`, by the size of the first dimension without (TRL's rule); `"sum"`: the sum;
            `"mean"`: the mean over selected positions and vocabulary entries. TRL's `"none"` (a per-entry tensor) is
            not offered: the chunked computation never holds it.
        num_items (`int`, `float` or 0-d `torch.Tensor`, *optional*):
            Denominator of the sum over positions (TRL's `num_items_in_batch`); takes precedence over `reduction`.
        chunk_size (`int`, *optional*): Positions processed at once (bounds the memory); default: see [`divergence`].

    Returns:
        `torch.Tensor`: scalar loss, fp32 (fp64 for fp64 inputs).
    """
    if num_items is None:
        if reduction == "sum":
            num_items = 1
        elif reduction == "batchmean":
            if mask is None:
                num_items = max(logits.shape[0], 1) if logits.dim() >= 2 else 1
        elif reduction == "mean":
            selected = math.prod(logits.shape[:-1]) if mask is None else int((mask != 0).sum())
            num_items = max(selected, 1) * logits.shape[-1]
        else:
            raise ValueError(f"`reduction` must be 'batchmean', 'sum' or 'mean', got {reduction!r}.")
    return divergence(
        logits,
        target_logits,
        "jsd",
        mask=mask,
        beta=beta,
        temperature=temperature,
        num_items=num_items,
        chunk_size=chunk_size,
    )
