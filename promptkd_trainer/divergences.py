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

Memory: the loss is computed by a `torch.autograd.Function` that walks over the selected positions in chunks of
`chunk_size` rows, upcasts one chunk at a time to fp32 (fp64 inputs stay fp64) and computes that chunk's loss and its
closed-form gradients at once, writing the gradients into buffers shaped like the inputs (the Liger-Kernel
approach). No full `[N, V]` fp32 copy of either distribution is ever held: the only full-size allocation is the
gradient buffer, which has the size (and the dtype) of the logits gradient that autograd would materialise anyway.
The per-chunk working set is a few `[chunk_size, V]` fp32 buffers, so `chunk_size` should be well below the number
of positions for the chunking to pay off.
"""

from __future__ import annotations

import math
from numbers import Number
from typing import Optional, Union

import torch
from torch.autograd.function import once_differentiable


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

NumItems = Optional[Union[int, float, torch.Tensor]]


# --------------------------------------------------------------------------------------------------------------------
# Per-chunk closed forms
# --------------------------------------------------------------------------------------------------------------------
#
# For a row loss L(log p, log q) written as a function of the two log-probability vectors, with g = dL/dlog p and
# h = dL/dlog q taken elementwise, the chain rule through log_softmax gives
#     dL/da = g - p * sum(g),    dL/db = h - q * sum(h)
# where a = logits / T and b = target_logits / T. Each kernel below returns the chunk's loss sum and g and/or h; the
# caller turns them into logit gradients. Working in closed form avoids keeping an autograd graph of a chunk alive and
# lets most intermediate tensors be updated in place, which is what keeps the per-chunk peak at a few [C, V] buffers.
#
# Vocabulary entries where either side's logit is infinite (vocabulary padding set to -inf) contribute nothing, like
# the official PromptKD code's `masked_fill(torch.isinf(logits), 0)`. Intermediate values there are NaN (0 * -inf,
# -inf - -inf); they are overwritten by `masked_fill_` before any reduction, and as no autograd graph runs through
# them they cannot leak NaN into a gradient either.


def _masked_(t: torch.Tensor, invalid: Optional[torch.Tensor]) -> torch.Tensor:
    if invalid is not None:
        t.masked_fill_(invalid, 0.0)
    return t


def _mixture_log_probs(logp: torch.Tensor, logq: torch.Tensor, w_p: float, w_q: float) -> torch.Tensor:
    """log(w_p * p + w_q * q), computed in log space so that underflowing probabilities stay exact."""
    t_p = logp + math.log(w_p)
    t_q = logq + math.log(w_q)
    return torch.logaddexp(t_p, t_q, out=t_p)


# Kernels take ownership of the two log-probability chunks (passed in a list that they empty) so that they can turn
# them into probabilities in place and drop the ones they no longer need: together with the `out=` / in-place ops this
# keeps the peak at two to four [C, V] buffers. They return `(loss_sum, g, h, p, q)`, where g and p are set when
# `need_p`, h and q when `need_q`; g and h are fresh buffers that the caller may overwrite.


def _chunk_reverse_kl(logs, invalid, need_p, need_q, coef):
    # KL(P || Q): l = p (log p - log q); g = l + p; h = -p.
    logp, logq = logs
    logs.clear()
    ell = logp - logq
    q = logq.exp_() if need_q else None
    del logq
    p = logp.exp_()
    ell = _masked_(ell.mul_(p), invalid)
    loss = ell.sum()
    h = _masked_(p.neg(), invalid) if need_q else None
    g = _masked_(ell.add_(p), invalid) if need_p else None
    return loss, g, h, (p if need_p else None), q


def _chunk_forward_kl(logs, invalid, need_p, need_q, coef):
    # KL(Q || P): l = q (log q - log p); g = -q; h = l + q.
    logp, logq = logs
    logs.clear()
    ell = logq - logp
    p = logp.exp_() if need_p else None
    del logp
    q = logq.exp_()
    ell = _masked_(ell.mul_(q), invalid)
    loss = ell.sum()
    h = _masked_(ell.add_(q), invalid) if need_q else None
    g = None
    if need_p:
        g = _masked_(q.neg() if need_q else q.neg_(), invalid)
    return loss, g, h, p, (q if need_q else None)


def _chunk_jsd(logs, invalid, need_p, need_q, coef):
    # M = (1 - beta) P + beta Q; L = beta KL(Q || M) + (1 - beta) KL(P || M).
    # dL/dlog m = -m cancels the "+1" of each KL's own derivative, leaving g = (1 - beta) p (log p - log m) and
    # h = beta q (log q - log m), whose sum is exactly the per-entry loss.
    beta = coef
    logp, logq = logs
    logs.clear()
    logm = _mixture_log_probs(logp, logq, 1.0 - beta, beta)
    g = logp - logm
    h = torch.sub(logq, logm, out=logm)  # log m is not needed any more: reuse its buffer
    del logm
    p = logp.exp_()
    del logp
    g = _masked_(g.mul_(p).mul_(1.0 - beta), invalid)
    q = logq.exp_()
    del logq
    h = _masked_(h.mul_(q).mul_(beta), invalid)
    loss = g.sum() + h.sum()
    if need_p:
        return loss, g, (h if need_q else None), p, (q if need_q else None)
    return loss, None, (h if need_q else None), None, (q if need_q else None)


def _skew_kl(logs, invalid, need_p, need_q, alpha, reverse):
    # Shared by both skew KLs. With S the skewed side (Q for the forward one, P for the reverse one), O the other
    # side and M = alpha S + (1 - alpha) O, L = KL(S || M) = sum s (log s - log m). With r = (1 - alpha) p q / m:
    # dL/dlog s = l + r and dL/dlog o = -r.
    logp, logq = logs
    logs.clear()
    logs_, logo = (logp, logq) if reverse else (logq, logp)
    logm = _mixture_log_probs(logs_, logo, alpha, 1.0 - alpha)
    need_s, need_o = (need_p, need_q) if reverse else (need_q, need_p)
    r = None
    if need_s or need_o:
        # In log space: p and q may both underflow to 0 where m does too.
        r = _masked_((logp + logq).sub_(logm).exp_().mul_(1.0 - alpha), invalid)
    del logp, logq
    ell = torch.sub(logs_, logm, out=logm)
    del logm
    s = logs_.exp_()
    del logs_
    o = logo.exp_() if need_o else None
    del logo
    ell = _masked_(ell.mul_(s), invalid)
    loss = ell.sum()
    grad_s = ell.add_(r) if need_s else None
    grad_o = (r.neg() if need_s else r.neg_()) if need_o else None
    s = s if need_s else None
    if reverse:
        return loss, grad_s, grad_o, s, o
    return loss, grad_o, grad_s, o, s


def _chunk_skew_forward_kl(logs, invalid, need_p, need_q, coef):
    # M = alpha Q + (1 - alpha) P; L = KL(Q || M).
    return _skew_kl(logs, invalid, need_p, need_q, coef, reverse=False)


def _chunk_skew_reverse_kl(logs, invalid, need_p, need_q, coef):
    # M = alpha P + (1 - alpha) Q; L = KL(P || M).
    return _skew_kl(logs, invalid, need_p, need_q, coef, reverse=True)


_CHUNK_KERNELS = {
    "forward_kl": _chunk_forward_kl,
    "reverse_kl": _chunk_reverse_kl,
    "jsd": _chunk_jsd,
    "skew_forward_kl": _chunk_skew_forward_kl,
    "skew_reverse_kl": _chunk_skew_reverse_kl,
}


def _log_softmax_(chunk: torch.Tensor, temperature: float, fresh: bool, dtype: torch.dtype) -> torch.Tensor:
    """log_softmax of one chunk in `dtype` (fp32, or fp64 for fp64 inputs), in place on a private copy."""
    # `fresh` chunks (from index_select / advanced indexing) are already private copies; a sliced view of an input
    # already in `dtype` is not, so it must be copied before the in-place ops below.
    x = chunk.to(dtype, copy=not fresh)
    if temperature != 1.0:
        x.div_(temperature)
    lse = torch.logsumexp(x, dim=-1, keepdim=True)
    # A row that is entirely -inf has lse = -inf; using 0 instead keeps its log-probs at -inf (all masked below)
    # rather than NaN, so such a row contributes nothing instead of poisoning the sum.
    lse.masked_fill_(torch.isneginf(lse), 0.0)
    return x.sub_(lse)


# --------------------------------------------------------------------------------------------------------------------
# Chunked autograd function
# --------------------------------------------------------------------------------------------------------------------


class _RowReader:
    """Reads chunks of positions of a `[..., V]` tensor as `[C, V]` rows, without copying the whole tensor."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self.lead_shape = x.shape[:-1]
        try:
            # A view exists for contiguous inputs and for many slices (e.g. `logits[:, 7:, :]` with batch size 1).
            self.rows = x.view(-1, x.shape[-1])
        except RuntimeError:
            # E.g. `logits[:, :-1, :]` with batch > 1: rows are gathered by multi-dimensional advanced indexing,
            # which copies only the chunk.
            self.rows = None

    def read(self, start: int, end: int, flat_index: Optional[torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """Rows `start:end` of the selected positions; returns `(chunk, fresh)` where `fresh` means a private copy."""
        if flat_index is None:
            if self.rows is not None:
                return self.rows[start:end], False
            flat_index = torch.arange(start, end, device=self.x.device)
        else:
            flat_index = flat_index[start:end]
        if self.rows is not None:
            return self.rows.index_select(0, flat_index), True
        return self.x[torch.unravel_index(flat_index, self.lead_shape)], True


def _write_rows(buf_rows: torch.Tensor, start: int, end: int, flat_index: Optional[torch.Tensor], grad: torch.Tensor):
    if flat_index is None:
        buf_rows[start:end].copy_(grad)  # copy_ casts to the buffer's dtype without a temporary
    else:
        buf_rows.index_copy_(0, flat_index[start:end], grad.to(buf_rows.dtype))


class _ChunkedDivergence(torch.autograd.Function):
    """Loss and gradients of a divergence computed chunk by chunk in the forward pass; backward only rescales."""

    @staticmethod
    def forward(
        ctx,
        logits: torch.Tensor,
        target_logits: torch.Tensor,
        flat_index: Optional[torch.Tensor],
        num_selected: int,
        kind: str,
        coef: float,
        temperature: float,
        scale: Union[float, torch.Tensor],
        chunk_size: int,
        need_p: bool,
        need_q: bool,
    ) -> torch.Tensor:
        device = logits.device
        kernel = _CHUNK_KERNELS[kind]
        # fp32 whatever the input precision (bf16/fp16 softmaxes over 50k+ entries lose too much), but fp64 inputs
        # are not downcast, which keeps float64 gradient checks meaningful.
        dtype = torch.float64 if torch.float64 in (logits.dtype, target_logits.dtype) else torch.float32
        vocab = logits.shape[-1]
        # Gradient buffers, in the inputs' dtypes: the same size as the gradient autograd would build anyway. Without
        # a mask every row gets written, so the buffers need no zero fill.
        new = torch.empty if flat_index is None else torch.zeros
        grad_p = new(logits.shape, dtype=logits.dtype, device=device) if need_p else None
        grad_q = new(target_logits.shape, dtype=target_logits.dtype, device=device) if need_q else None
        grad_p_rows = grad_p.view(-1, vocab) if need_p else None
        grad_q_rows = grad_q.view(-1, vocab) if need_q else None
        # d(loss)/d(logits) = d(sum)/d(a) * scale / T: scale in fp32 before casting, as autograd would.
        factor = scale / temperature

        # Entry masks are only built when some logit is -inf (vocabulary padding). One min reduction over each input
        # (a read, no copy) is cheaper than testing every chunk, and costs one host sync instead of one per chunk.
        # +inf logits cannot be told apart from NaN after the softmax and propagate as NaN, like any invalid input.
        has_neg_inf = num_selected > 0 and bool(torch.isneginf(torch.minimum(logits.amin(), target_logits.amin())))

        reader_p, reader_q = _RowReader(logits), _RowReader(target_logits)
        total = torch.zeros((), dtype=dtype, device=device)
        for start in range(0, num_selected, chunk_size):
            end = min(start + chunk_size, num_selected)
            chunk_p, fresh_p = reader_p.read(start, end, flat_index)
            logp = _log_softmax_(chunk_p, temperature, fresh_p, dtype)
            del chunk_p
            chunk_q, fresh_q = reader_q.read(start, end, flat_index)
            logq = _log_softmax_(chunk_q, temperature, fresh_q, dtype)
            del chunk_q

            # -inf log-probs come from -inf logits (or rows that are -inf throughout, see _log_softmax_).
            invalid = torch.isneginf(logp).logical_or_(torch.isneginf(logq)) if has_neg_inf else None

            logs = [logp, logq]
            del logp, logq  # the kernel owns them now (see above)
            loss, g, h, p, q = kernel(logs, invalid, need_p, need_q, coef)
            total += loss
            if need_p:
                g.addcmul_(p, g.sum(dim=-1, keepdim=True), value=-1.0).mul_(factor)
                p = None
                _write_rows(grad_p_rows, start, end, flat_index, g)
                g = None
            if need_q:
                h.addcmul_(q, h.sum(dim=-1, keepdim=True), value=-1.0).mul_(factor)
                q = None
                _write_rows(grad_q_rows, start, end, flat_index, h)
            del invalid, g, h, p, q

        # save_for_backward (rather than attributes on ctx) lets the engine free the buffers as soon as this node's
        # backward has run, instead of keeping them alive until the whole graph is released.
        ctx.save_for_backward(grad_p, grad_q)
        if num_selected == 0:
            # Nothing selected: 0, not 0 / 0 (num_items may legitimately be 0 for an empty accumulation window).
            return total
        return total * scale

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        grad_p, grad_q = ctx.saved_tensors
        # The usual case, a loss backpropagated as is, returns the buffers themselves: no second full-size tensor,
        # and autograd can adopt them as `.grad` of leaf inputs. Otherwise scale out of place, so that a graph kept
        # with retain_graph=True can be backpropagated again.
        if not bool(grad_output == 1):
            grad_p = grad_p * grad_output if grad_p is not None else None
            grad_q = grad_q * grad_output if grad_q is not None else None
        return grad_p, grad_q, None, None, None, None, None, None, None, None, None


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
    mask: Optional[torch.Tensor] = None,
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
            positions at V = 50257, which meets the benchmark's 0.25x-of-naive memory target). The extra memory is the gradient buffer of each input that requires grad
            (the size of that input) plus two to four `[chunk_size, V]` fp32 working buffers; smaller values use
            less memory, larger values fewer kernel launches. Results do not depend on it beyond float rounding.

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
    return _ChunkedDivergence.apply(
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


def forward_kl(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    mask: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
    num_items: NumItems = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""
    Forward KL, KL(Q || P) = sum_v Q (log Q - log P), with P = softmax(`logits` / T) the trainable distribution and
    Q = softmax(`target_logits` / T) the target. Mode-covering for P.

    Args:
        logits (`torch.Tensor` of shape `[..., V]`): Logits of the trainable distribution P (e.g. the student).
        target_logits (`torch.Tensor` of shape `[..., V]`): Logits of the target distribution Q (e.g. the teacher).
        mask (`torch.Tensor` of shape `[...]`, *optional*): Bool or 0/1 selection of positions; `None` selects all.
        temperature (`float`, *optional*, defaults to `1.0`): Divides both logits; no T^2 scaling of the loss.
        num_items (`int`, `float` or 0-d `torch.Tensor`, *optional*):
            Denominator of the sum over positions; defaults to the number of selected positions.
        chunk_size (`int`, *optional*): Positions processed at once (bounds the memory); default: see [`divergence`].

    Returns:
        `torch.Tensor`: scalar loss, fp32 (fp64 for fp64 inputs).
    """
    return divergence(
        logits,
        target_logits,
        "forward_kl",
        mask=mask,
        temperature=temperature,
        num_items=num_items,
        chunk_size=chunk_size,
    )


def reverse_kl(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    mask: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
    num_items: NumItems = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""
    Reverse KL, KL(P || Q) = sum_v P (log P - log Q), with P = softmax(`logits` / T) the trainable distribution and
    Q = softmax(`target_logits` / T) the target. Mode-seeking for P; PromptKD's default for all its terms.

    Args:
        logits (`torch.Tensor` of shape `[..., V]`): Logits of the trainable distribution P (e.g. the student).
        target_logits (`torch.Tensor` of shape `[..., V]`): Logits of the target distribution Q (e.g. the teacher).
        mask (`torch.Tensor` of shape `[...]`, *optional*): Bool or 0/1 selection of positions; `None` selects all.
        temperature (`float`, *optional*, defaults to `1.0`): Divides both logits; no T^2 scaling of the loss.
        num_items (`int`, `float` or 0-d `torch.Tensor`, *optional*):
            Denominator of the sum over positions; defaults to the number of selected positions.
        chunk_size (`int`, *optional*): Positions processed at once (bounds the memory); default: see [`divergence`].

    Returns:
        `torch.Tensor`: scalar loss, fp32 (fp64 for fp64 inputs).
    """
    return divergence(
        logits,
        target_logits,
        "reverse_kl",
        mask=mask,
        temperature=temperature,
        num_items=num_items,
        chunk_size=chunk_size,
    )


def generalized_jsd(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    beta: float = 0.5,
    mask: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
    num_items: NumItems = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""
    Generalized Jensen-Shannon divergence of GKD (Agarwal et al., 2024), identical to TRL's
    `GKDTrainer.generalized_jsd_loss(student_logits=logits, teacher_logits=target_logits, beta=beta)`.

    With P = softmax(`logits` / T) the trainable distribution, Q = softmax(`target_logits` / T) the target and the
    mixture M = (1 - beta) P + beta Q, the loss is beta KL(Q || M) + (1 - beta) KL(P || M) for 0 < beta < 1, where
    KL(A || B) = sum_v A (log A - log B). The end points are special-cased as in TRL: beta = 0 gives the forward
    KL(Q || P) and beta = 1 the reverse KL(P || Q).

    Args:
        logits (`torch.Tensor` of shape `[..., V]`): Logits of the trainable distribution P (e.g. the student).
        target_logits (`torch.Tensor` of shape `[..., V]`): Logits of the target distribution Q (e.g. the teacher).
        beta (`float`, *optional*, defaults to `0.5`): Interpolation coefficient in [0, 1].
        mask (`torch.Tensor` of shape `[...]`, *optional*): Bool or 0/1 selection of positions; `None` selects all.
        temperature (`float`, *optional*, defaults to `1.0`): Divides both logits; no T^2 scaling of the loss.
        num_items (`int`, `float` or 0-d `torch.Tensor`, *optional*):
            Denominator of the sum over positions (TRL's `num_items_in_batch`); defaults to the number of selected
            positions (TRL's `reduction="batchmean"` with `labels`).
        chunk_size (`int`, *optional*): Positions processed at once (bounds the memory); default: see [`divergence`].

    Returns:
        `torch.Tensor`: scalar loss, fp32 (fp64 for fp64 inputs).
    """
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


def skew_forward_kl(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    alpha: float = 0.1,
    mask: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
    num_items: NumItems = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""
    Skew forward KL of DistiLLM (Ko et al., 2024), KL(Q || alpha Q + (1 - alpha) P), with P = softmax(`logits` / T)
    the trainable distribution and Q = softmax(`target_logits` / T) the target. Stays finite where P vanishes.

    Args:
        logits (`torch.Tensor` of shape `[..., V]`): Logits of the trainable distribution P (e.g. the student).
        target_logits (`torch.Tensor` of shape `[..., V]`): Logits of the target distribution Q (e.g. the teacher).
        alpha (`float`, *optional*, defaults to `0.1`): Skew in (0, 1), the weight of Q in the mixture (DistiLLM).
        mask (`torch.Tensor` of shape `[...]`, *optional*): Bool or 0/1 selection of positions; `None` selects all.
        temperature (`float`, *optional*, defaults to `1.0`): Divides both logits; no T^2 scaling of the loss.
        num_items (`int`, `float` or 0-d `torch.Tensor`, *optional*):
            Denominator of the sum over positions; defaults to the number of selected positions.
        chunk_size (`int`, *optional*): Positions processed at once (bounds the memory); default: see [`divergence`].

    Returns:
        `torch.Tensor`: scalar loss, fp32 (fp64 for fp64 inputs).
    """
    return divergence(
        logits,
        target_logits,
        "skew_forward_kl",
        mask=mask,
        alpha=alpha,
        temperature=temperature,
        num_items=num_items,
        chunk_size=chunk_size,
    )


def skew_reverse_kl(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    alpha: float = 0.1,
    mask: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
    num_items: NumItems = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""
    Skew reverse KL of DistiLLM (Ko et al., 2024), KL(P || alpha P + (1 - alpha) Q), with P = softmax(`logits` / T)
    the trainable distribution and Q = softmax(`target_logits` / T) the target.

    Args:
        logits (`torch.Tensor` of shape `[..., V]`): Logits of the trainable distribution P (e.g. the student).
        target_logits (`torch.Tensor` of shape `[..., V]`): Logits of the target distribution Q (e.g. the teacher).
        alpha (`float`, *optional*, defaults to `0.1`): Skew in (0, 1), the weight of P in the mixture (DistiLLM).
        mask (`torch.Tensor` of shape `[...]`, *optional*): Bool or 0/1 selection of positions; `None` selects all.
        temperature (`float`, *optional*, defaults to `1.0`): Divides both logits; no T^2 scaling of the loss.
        num_items (`int`, `float` or 0-d `torch.Tensor`, *optional*):
            Denominator of the sum over positions; defaults to the number of selected positions.
        chunk_size (`int`, *optional*): Positions processed at once (bounds the memory); default: see [`divergence`].

    Returns:
        `torch.Tensor`: scalar loss, fp32 (fp64 for fp64 inputs).
    """
    return divergence(
        logits,
        target_logits,
        "skew_reverse_kl",
        mask=mask,
        alpha=alpha,
        temperature=temperature,
        num_items=num_items,
        chunk_size=chunk_size,
    )
