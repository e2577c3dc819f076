# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Chunked, closed-form-gradient kernels behind [`~promptkd_trainer.divergences.divergence`].

Memory: the loss is computed by a `torch.autograd.Function` that walks over the selected positions in chunks of
`chunk_size` rows, upcasts one chunk at a time to fp32 (fp64 inputs stay fp64) and computes that chunk's loss and its
closed-form gradients at once, writing the gradients into buffers shaped like the inputs (the Liger-Kernel
approach). No full `[N, V]` fp32 copy of either distribution is ever held: the only full-size allocation is the
gradient buffer, which has the size (and the dtype) of the logits gradient that autograd would materialise anyway.
The per-chunk working set is a few `[chunk_size, V]` fp32 buffers, so `chunk_size` should be well below the number
of positions for the chunking to pay off.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.autograd.function import once_differentiable


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


def _masked_(t: torch.Tensor, invalid: torch.Tensor | None) -> torch.Tensor:
    if invalid is not None:
        t.masked_fill_(invalid, 0.0)
    return t


def _mixture_log_probs(logp: torch.Tensor, logq: torch.Tensor, w_p: float, w_q: float) -> torch.Tensor:
    """log(w_p * p + w_q * q), computed in log space so that underflowing probabilities stay exact."""
    t_p = logp + math.log(w_p)
    t_q = logq + math.log(w_q)
    return torch.logaddexp(t_p, t_q, out=t_p)


# Each kernel is called with `load`, a function that computes the chunk's two log-probability tensors (fp32 private
# copies) and the mask of invalid entries. Loading them inside the kernel leaves the kernel the only owner of those
# buffers, so it can turn them into probabilities in place and free the ones it no longer needs: together with the
# `out=` / in-place ops this keeps the peak at two to four [C, V] buffers. Kernels return `(loss_sum, g, h, p, q)`,
# where g and p are set when `need_p`, h and q when `need_q`; g and h are fresh buffers that the caller may overwrite.


def _chunk_reverse_kl(load, need_p, need_q, coef):
    # KL(P || Q): l = p (log p - log q); g = l + p; h = -p.
    logp, logq, invalid = load()
    ell = logp - logq
    q = logq.exp_() if need_q else None
    del logq
    p = logp.exp_()
    ell = _masked_(ell.mul_(p), invalid)
    loss = ell.sum()
    h = _masked_(p.neg() if need_p else p.neg_(), invalid) if need_q else None  # p itself is only needed for g
    g = _masked_(ell.add_(p), invalid) if need_p else None
    return loss, g, h, (p if need_p else None), q


def _chunk_forward_kl(load, need_p, need_q, coef):
    # KL(Q || P) is the reverse KL with the roles of P and Q exchanged: l = q (log q - log p); g = -q; h = l + q.
    def swapped():
        logp, logq, invalid = load()
        return logq, logp, invalid

    loss, h, g, q, p = _chunk_reverse_kl(swapped, need_q, need_p, coef)
    return loss, g, h, p, q


def _chunk_jsd(load, need_p, need_q, coef):
    # M = (1 - beta) P + beta Q; L = beta KL(Q || M) + (1 - beta) KL(P || M).
    # dL/dlog m = -m cancels the "+1" of each KL's own derivative, leaving g = (1 - beta) p (log p - log m) and
    # h = beta q (log q - log m), whose sum is exactly the per-entry loss.
    beta = coef
    logp, logq, invalid = load()
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


def _skew_kl(load, need_p, need_q, alpha, reverse):
    # Shared by both skew KLs. With S the skewed side (Q for the forward one, P for the reverse one), O the other
    # side and M = alpha S + (1 - alpha) O, L = KL(S || M) = sum s (log s - log m). With r = (1 - alpha) p q / m:
    # dL/dlog s = l + r and dL/dlog o = -r.
    logp, logq, invalid = load()
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


_CHUNK_KERNELS = {
    "forward_kl": _chunk_forward_kl,
    "reverse_kl": _chunk_reverse_kl,
    "jsd": _chunk_jsd,
    # M = alpha Q + (1 - alpha) P; L = KL(Q || M).
    "skew_forward_kl": functools.partial(_skew_kl, reverse=False),
    # M = alpha P + (1 - alpha) Q; L = KL(P || M).
    "skew_reverse_kl": functools.partial(_skew_kl, reverse=True),
}


def _log_softmax_(chunk: torch.Tensor, fresh: bool, temperature: float, dtype: torch.dtype) -> torch.Tensor:
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

    def read(self, start: int, end: int, flat_index: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
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


def _write_rows(buf_rows: torch.Tensor, start: int, end: int, flat_index: torch.Tensor | None, grad: torch.Tensor):
    if flat_index is None:
        buf_rows[start:end].copy_(grad)  # copy_ casts to the buffer's dtype without a temporary
    else:
        buf_rows.index_copy_(0, flat_index[start:end], grad.to(buf_rows.dtype))


class ChunkedDivergence(torch.autograd.Function):
    """Loss and gradients of a divergence computed chunk by chunk in the forward pass; backward only rescales."""

    @staticmethod
    def forward(
        ctx,
        logits: torch.Tensor,
        target_logits: torch.Tensor,
        flat_index: torch.Tensor | None,
        num_selected: int,
        kind: str,
        coef: float,
        temperature: float,
        scale: float | torch.Tensor,
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

            def load(start=start, end=end):
                logp = _log_softmax_(*reader_p.read(start, end, flat_index), temperature, dtype)
                logq = _log_softmax_(*reader_q.read(start, end, flat_index), temperature, dtype)
                # -inf log-probs come from -inf logits (or rows that are -inf throughout, see _log_softmax_).
                invalid = torch.isneginf(logp).logical_or_(torch.isneginf(logq)) if has_neg_inf else None
                return logp, logq, invalid

            loss, g, h, p, q = kernel(load, need_p, need_q, coef)
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
            del g, h, p, q

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
