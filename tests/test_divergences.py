# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Tests of `promptkd_trainer.divergences` against independent references: a naive full-softmax implementation
written here, `torch.nn.functional.kl_div`, and TRL's `GKDTrainer.generalized_jsd_loss`."""

import os


os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"  # before any trl import: silences the experimental-API warning

import pytest
import torch
import torch.nn.functional as F
from conftest import GRADIENTS_FP32, GRADIENTS_FP64, SAME_MATH_FP32, SAME_MATH_FP64
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from promptkd_trainer.divergences import (
    DIVERGENCE_TYPES,
    divergence,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
)


SHAPE = (3, 7, 50)
# Chunked vs one chunk: the same float32 operations on fewer positions at a time, so only the final sum's order moves.
CHUNKED = dict(rtol=1e-6, atol=1e-7)
CHUNKED_GRADIENTS = dict(rtol=1e-6, atol=1e-8)
# Half-precision gradients vs float32 ones of the same rounded inputs: about one unit in the last place of the dtype
# (machine epsilon: bfloat16 7.8e-3, float16 9.8e-4).
HALF_GRADIENT_RTOL = {torch.bfloat16: 1e-2, torch.float16: 1e-3}
TEMPERATURES = (0.5, 1.0, 2.0)
# (loss_type, kwargs): every divergence, plus the JSD end points and other skews.
CASES = [
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("jsd", {"beta": 0.5}),
    ("jsd", {"beta": 0.0}),
    ("jsd", {"beta": 1.0}),
    ("jsd", {"beta": 0.1}),
    ("skew_forward_kl", {"alpha": 0.1}),
    ("skew_forward_kl", {"alpha": 0.7}),
    ("skew_reverse_kl", {"alpha": 0.1}),
    ("skew_reverse_kl", {"alpha": 0.7}),
]
CASE_IDS = [f"{t}-{'-'.join(f'{k}{v}' for k, v in kw.items()) or 'default'}" for t, kw in CASES]


# --------------------------------------------------------------------------------------------------------------------
# Naive reference: full softmax of both sides, sum p (log p - log q), probabilities mixed in probability space.
# --------------------------------------------------------------------------------------------------------------------


def _kl(log_a, log_b):
    """KL(A || B) per position, summed over the vocabulary; entries where A = 0 contribute 0."""
    a = log_a.exp()
    return torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a)).sum(-1)


def naive_divergence(
    logits, target_logits, loss_type, mask=None, beta=0.5, alpha=0.1, temperature=1.0, num_items=None, dtype=None
):
    """Per-position divergence with P = softmax(logits / T) and Q = softmax(target_logits / T), reduced like the
    library: sum over selected positions / (num_items or number of selected positions). Runs autograd end to end."""
    dtype = dtype or torch.float32
    logp = torch.log_softmax(logits.to(dtype) / temperature, dim=-1)
    logq = torch.log_softmax(target_logits.to(dtype) / temperature, dim=-1)
    p, q = logp.exp(), logq.exp()
    if loss_type == "forward_kl" or (loss_type == "jsd" and beta == 0):
        per = _kl(logq, logp)
    elif loss_type == "reverse_kl" or (loss_type == "jsd" and beta == 1):
        per = _kl(logp, logq)
    elif loss_type == "jsd":
        logm = ((1 - beta) * p + beta * q).log()
        per = beta * _kl(logq, logm) + (1 - beta) * _kl(logp, logm)
    elif loss_type == "skew_forward_kl":
        per = _kl(logq, (alpha * q + (1 - alpha) * p).log())
    elif loss_type == "skew_reverse_kl":
        per = _kl(logp, (alpha * p + (1 - alpha) * q).log())
    else:
        raise AssertionError(loss_type)
    if mask is not None:
        per = per[mask.bool()]
    denom = num_items if num_items is not None else max(per.numel(), 1)
    return per.sum() / denom


def _inputs(shape=SHAPE, seed=0, scale=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=g) * scale).to(dtype)
    target = (torch.randn(shape, generator=g) * scale).to(dtype)
    mask = torch.rand(shape[:-1], generator=g) > 0.3
    mask.view(-1)[0] = True  # never empty
    return logits, target, mask


# --------------------------------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize(("loss_type", "kwargs"), CASES, ids=CASE_IDS)
def test_matches_naive_reference(loss_type, kwargs, temperature):
    logits, target, mask = _inputs()
    ours = divergence(logits, target, loss_type, mask=mask, temperature=temperature, **kwargs)
    ref = naive_divergence(logits, target, loss_type, mask=mask, temperature=temperature, **kwargs)
    assert ours.dtype == torch.float32 and ours.dim() == 0
    torch.testing.assert_close(ours, ref, **SAME_MATH_FP32)


@pytest.mark.parametrize(("loss_type", "kwargs"), CASES, ids=CASE_IDS)
def test_named_functions_equal_dispatcher(loss_type, kwargs):
    logits, target, mask = _inputs(seed=1)
    named = {
        "forward_kl": forward_kl,
        "reverse_kl": reverse_kl,
        "jsd": generalized_jsd,
        "skew_forward_kl": skew_forward_kl,
        "skew_reverse_kl": skew_reverse_kl,
    }[loss_type]
    expected = divergence(logits, target, loss_type, mask=mask, temperature=1.5, **kwargs)
    torch.testing.assert_close(named(logits, target, mask=mask, temperature=1.5, **kwargs), expected, rtol=0, atol=0)


def test_default_loss_type_is_reverse_kl():
    logits, target, _ = _inputs(seed=2)
    assert DIVERGENCE_TYPES == ("forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl")
    torch.testing.assert_close(divergence(logits, target), reverse_kl(logits, target), rtol=0, atol=0)


@pytest.mark.parametrize("temperature", (1.0, 2.0))
def test_kl_directions_match_torch_kl_div(temperature):
    logits, target, mask = _inputs(seed=3)
    logp = F.log_softmax(logits / temperature, dim=-1)
    logq = F.log_softmax(target / temperature, dim=-1)
    n = mask.sum()
    # F.kl_div(input=log B, target=log A, log_target=True) is elementwise A (log A - log B), i.e. KL(A || B).
    kl_q_p = F.kl_div(logp, logq, reduction="none", log_target=True).sum(-1)[mask].sum() / n
    kl_p_q = F.kl_div(logq, logp, reduction="none", log_target=True).sum(-1)[mask].sum() / n
    torch.testing.assert_close(forward_kl(logits, target, mask=mask, temperature=temperature), kl_q_p)
    torch.testing.assert_close(reverse_kl(logits, target, mask=mask, temperature=temperature), kl_p_q)
    # Without a mask: kl_div's "batchmean" divides by the first dimension, so compare on [N, V] rows.
    rows_p, rows_q = logits.view(-1, SHAPE[-1]), target.view(-1, SHAPE[-1])
    expected = F.kl_div(
        F.log_softmax(rows_q / temperature, -1),
        F.log_softmax(rows_p / temperature, -1),
        reduction="batchmean",
        log_target=True,
    )
    torch.testing.assert_close(reverse_kl(logits, target, temperature=temperature), expected)


@pytest.mark.parametrize("temperature", (1.0, 2.0))
@pytest.mark.parametrize("beta", (0.0, 0.5, 1.0))
def test_jsd_matches_trl_gkd(beta, temperature):
    from trl.experimental.gkd import GKDTrainer

    logits, target, mask = _inputs(seed=4)
    labels = torch.where(mask, torch.tensor(1), torch.tensor(-100))
    trl_loss = GKDTrainer.generalized_jsd_loss(
        student_logits=logits, teacher_logits=target, labels=labels, beta=beta, temperature=temperature
    )
    ours = generalized_jsd(logits, target, beta=beta, mask=mask, temperature=temperature)
    torch.testing.assert_close(ours, trl_loss, **SAME_MATH_FP32)
    # TRL's num_items_in_batch normalisation is ours too.
    trl_sum = GKDTrainer.generalized_jsd_loss(
        student_logits=logits,
        teacher_logits=target,
        labels=labels,
        beta=beta,
        temperature=temperature,
        num_items_in_batch=torch.tensor(40),
    )
    n = torch.tensor(40)
    ours_sum = generalized_jsd(logits, target, beta=beta, mask=mask, temperature=temperature, num_items=n)
    torch.testing.assert_close(ours_sum, trl_sum, **SAME_MATH_FP32)


def test_jsd_gradient_matches_trl_gkd():
    from trl.experimental.gkd import GKDTrainer

    logits, target, mask = _inputs(seed=5)
    labels = torch.where(mask, torch.tensor(1), torch.tensor(-100))
    a1, a2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    GKDTrainer.generalized_jsd_loss(a1, target, labels=labels, beta=0.5).backward()
    generalized_jsd(a2, target, beta=0.5, mask=mask).backward()
    torch.testing.assert_close(a2.grad, a1.grad, **GRADIENTS_FP32)


@pytest.mark.parametrize(("loss_type", "kwargs"), CASES, ids=CASE_IDS)
def test_identical_inputs_give_zero(loss_type, kwargs):
    logits, _, mask = _inputs(seed=6)
    loss = divergence(logits, logits.clone(), loss_type, mask=mask, **kwargs)
    assert abs(loss.item()) < SAME_MATH_FP32["atol"]


@pytest.mark.parametrize("num_items", (None, 0, 17, torch.tensor(0), torch.tensor(17)))
@pytest.mark.parametrize("loss_type", DIVERGENCE_TYPES)
def test_all_masked_gives_finite_zero_and_zero_grads(loss_type, num_items):
    logits, target, _ = _inputs(seed=7)
    logits.requires_grad_()
    target.requires_grad_()
    loss = divergence(logits, target, loss_type, mask=torch.zeros(SHAPE[:-1], dtype=torch.bool), num_items=num_items)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(loss)
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    assert torch.equal(target.grad, torch.zeros_like(target))


def test_mask_accepts_0_1_integers_and_floats():
    logits, target, mask = _inputs(seed=8)
    expected = divergence(logits, target, "jsd", mask=mask)
    torch.testing.assert_close(divergence(logits, target, "jsd", mask=mask.long()), expected, rtol=0, atol=0)
    torch.testing.assert_close(divergence(logits, target, "jsd", mask=mask.float()), expected, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------------------------------


def _grads(fn, logits, target, which=(True, True)):
    a = logits.detach().clone().requires_grad_(which[0])
    b = target.detach().clone().requires_grad_(which[1])
    loss = fn(a, b)
    loss.backward()
    return loss.detach(), a.grad, b.grad


@pytest.mark.parametrize("temperature", (0.7, 2.0))
@pytest.mark.parametrize(("loss_type", "kwargs"), CASES, ids=CASE_IDS)
def test_gradients_match_autograd_of_naive_reference_fp64(loss_type, kwargs, temperature):
    logits, target, mask = _inputs(seed=9, dtype=torch.float64)
    kw = dict(mask=mask, temperature=temperature, **kwargs)
    loss, ga, gb = _grads(lambda a, b: divergence(a, b, loss_type, chunk_size=4, **kw), logits, target)
    ref, ra, rb = _grads(lambda a, b: naive_divergence(a, b, loss_type, dtype=torch.float64, **kw), logits, target)
    assert loss.dtype == torch.float64 and ga.dtype == torch.float64
    torch.testing.assert_close(loss, ref, **SAME_MATH_FP64)
    torch.testing.assert_close(ga, ra, **GRADIENTS_FP64)
    torch.testing.assert_close(gb, rb, **GRADIENTS_FP64)


@pytest.mark.parametrize(("loss_type", "kwargs"), CASES, ids=CASE_IDS)
def test_gradients_match_autograd_of_naive_reference_fp32(loss_type, kwargs):
    logits, target, mask = _inputs(seed=10)
    kw = dict(mask=mask, temperature=1.3, **kwargs)
    _, ga, gb = _grads(lambda a, b: divergence(a, b, loss_type, **kw), logits, target)
    _, ra, rb = _grads(lambda a, b: naive_divergence(a, b, loss_type, dtype=torch.float64, **kw), logits, target)
    assert ga.dtype == torch.float32 and gb.dtype == torch.float32
    torch.testing.assert_close(ga, ra.float(), **GRADIENTS_FP32)
    torch.testing.assert_close(gb, rb.float(), **GRADIENTS_FP32)


@pytest.mark.parametrize("which", ((True, False), (False, True)), ids=("logits-only", "target-only"))
@pytest.mark.parametrize("loss_type", DIVERGENCE_TYPES)
def test_gradient_of_one_side_only(loss_type, which):
    logits, target, mask = _inputs(seed=11, dtype=torch.float64)
    _, ga, gb = _grads(lambda a, b: divergence(a, b, loss_type, mask=mask), logits, target, which)
    _, ra, rb = _grads(lambda a, b: naive_divergence(a, b, loss_type, mask=mask, dtype=torch.float64), logits, target)
    if which[0]:
        assert gb is None
        torch.testing.assert_close(ga, ra, **GRADIENTS_FP64)
    else:
        assert ga is None
        torch.testing.assert_close(gb, rb, **GRADIENTS_FP64)


@pytest.mark.parametrize("loss_type", DIVERGENCE_TYPES)
def test_gradcheck(loss_type):
    logits, target, mask = _inputs(shape=(2, 3, 6), seed=12, scale=1.0, dtype=torch.float64)
    a, b = logits.requires_grad_(), target.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: divergence(a, b, loss_type, mask=mask, temperature=1.5, chunk_size=2), (a, b)
    )


def test_scaled_loss_and_retain_graph():
    logits, target, mask = _inputs(seed=13)
    a = logits.clone().requires_grad_()
    loss = divergence(a, target, "jsd", mask=mask)
    (3.0 * loss).backward(retain_graph=True)
    g3 = a.grad.clone()
    a.grad = None
    loss.backward()
    torch.testing.assert_close(g3, 3.0 * a.grad)


def test_no_gradient_buffers_under_no_grad():
    logits, target, mask = _inputs(seed=14)
    a = logits.clone().requires_grad_()
    with torch.no_grad():
        loss = divergence(a, target, mask=mask)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, divergence(logits, target, mask=mask), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------------------------
# Chunking, reduction, layouts, padding, precision
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_mask", (True, False), ids=("mask", "no-mask"))
@pytest.mark.parametrize(("loss_type", "kwargs"), CASES[:3] + CASES[6::2], ids=CASE_IDS[:3] + CASE_IDS[6::2])
def test_chunked_equals_unchunked(loss_type, kwargs, use_mask):
    logits, target, mask = _inputs(seed=15)
    mask = mask if use_mask else None
    fn = lambda chunk: lambda a, b: divergence(a, b, loss_type, mask=mask, chunk_size=chunk, **kwargs)  # noqa: E731
    ref_loss, ref_ga, ref_gb = _grads(fn(10**9), logits, target)
    for chunk in (1, 3):
        loss, ga, gb = _grads(fn(chunk), logits, target)
        torch.testing.assert_close(loss, ref_loss, **CHUNKED)
        torch.testing.assert_close(ga, ref_ga, **CHUNKED_GRADIENTS)
        torch.testing.assert_close(gb, ref_gb, **CHUNKED_GRADIENTS)


@pytest.mark.parametrize("as_tensor", (False, True), ids=("int", "tensor"))
@pytest.mark.parametrize("loss_type", DIVERGENCE_TYPES)
def test_num_items_is_the_denominator_of_the_sum(loss_type, as_tensor):
    logits, target, mask = _inputs(seed=16)
    count = int(mask.sum())
    mean_loss, mean_ga, _ = _grads(lambda a, b: divergence(a, b, loss_type, mask=mask), logits, target)
    n = torch.tensor(2 * count) if as_tensor else 2 * count
    half_loss, half_ga, _ = _grads(lambda a, b: divergence(a, b, loss_type, mask=mask, num_items=n), logits, target)
    torch.testing.assert_close(half_loss, mean_loss / 2)
    torch.testing.assert_close(half_ga, mean_ga / 2)
    ref = naive_divergence(logits, target, loss_type, mask=mask, num_items=7)
    torch.testing.assert_close(divergence(logits, target, loss_type, mask=mask, num_items=7), ref)
    # The sum is not divided by the local count: a 1-token shard with num_items=1 is that token's divergence.
    one = torch.zeros_like(mask)
    one[1, 2] = True
    torch.testing.assert_close(
        divergence(logits, target, loss_type, mask=one, num_items=1.0),
        naive_divergence(logits[1, 2], target[1, 2], loss_type),
    )


@pytest.mark.parametrize("use_mask", (True, False), ids=("mask", "no-mask"))
@pytest.mark.parametrize("loss_type", DIVERGENCE_TYPES)
def test_non_contiguous_views(loss_type, use_mask):
    g = torch.Generator().manual_seed(17)
    big_a = torch.randn(3, 10, 50, generator=g, requires_grad=True)
    big_b = torch.randn(3, 10, 50, generator=g, requires_grad=True)
    mask = (torch.rand(3, 8, generator=g) > 0.4) if use_mask else None
    mask_shift = (torch.rand(3, 9, generator=g) > 0.4) if use_mask else None
    views = [
        (lambda t: t[:, 2:, :], mask),  # soft-prompt offset: strided across batch
        (lambda t: t[:, :-1, :], mask_shift),  # next-token shift
        (lambda t: t[:, 1:-1, :].transpose(0, 1), None if mask is None else mask.T),  # permuted leading dims
        (lambda t: t[..., 1:49:2], None),  # strided vocabulary
    ]
    for view, m in views:
        a, b = view(big_a), view(big_b)
        assert not a.is_contiguous()
        loss = divergence(a, b, loss_type, mask=m, chunk_size=5)
        ga, gb = torch.autograd.grad(loss, (big_a, big_b))
        a_c = a.detach().contiguous().requires_grad_()
        b_c = b.detach().contiguous().requires_grad_()
        loss_c = divergence(a_c, b_c, loss_type, mask=m, chunk_size=5)
        loss_c.backward()
        torch.testing.assert_close(loss, loss_c, rtol=0, atol=0)
        ga_c, gb_c = torch.zeros_like(big_a), torch.zeros_like(big_b)
        view(ga_c).copy_(a_c.grad)
        view(gb_c).copy_(b_c.grad)
        torch.testing.assert_close(ga, ga_c, rtol=0, atol=0)
        torch.testing.assert_close(gb, gb_c, rtol=0, atol=0)


def test_inputs_are_not_modified():
    logits, target, mask = _inputs(seed=18)
    a, b = logits.clone().requires_grad_(), target.clone().requires_grad_()
    for loss_type in DIVERGENCE_TYPES:
        divergence(a, b, loss_type, mask=None, temperature=2.0).backward()
        divergence(a[:, 1:], b[:, 1:], loss_type, temperature=2.0).backward()
    assert torch.equal(a.detach(), logits) and torch.equal(b.detach(), target)


@pytest.mark.parametrize("temperature", (1.0, 2.0))
@pytest.mark.parametrize(("loss_type", "kwargs"), CASES, ids=CASE_IDS)
def test_inf_vocabulary_padding(loss_type, kwargs, temperature):
    logits, target, mask = _inputs(seed=19)
    pad = torch.zeros(SHAPE[-1], dtype=torch.bool)
    pad[[3, 20, 41, 49]] = True
    a = logits.masked_fill(pad, float("-inf")).requires_grad_()
    b = target.masked_fill(pad, float("-inf")).requires_grad_()
    loss = divergence(a, b, loss_type, mask=mask, temperature=temperature, chunk_size=5, **kwargs)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    # Reference on the vocabulary without the padded entries.
    keep = ~pad
    ref, ra, rb = _grads(
        lambda x, y: naive_divergence(x, y, loss_type, mask=mask, temperature=temperature, **kwargs),
        logits[..., keep],
        target[..., keep],
    )
    torch.testing.assert_close(loss.detach(), ref, **SAME_MATH_FP32)
    torch.testing.assert_close(a.grad[..., keep], ra, **GRADIENTS_FP32)
    torch.testing.assert_close(b.grad[..., keep], rb, **GRADIENTS_FP32)
    assert torch.equal(a.grad[..., pad], torch.zeros_like(a.grad[..., pad]))
    assert torch.equal(b.grad[..., pad], torch.zeros_like(b.grad[..., pad]))


@pytest.mark.parametrize("loss_type", DIVERGENCE_TYPES)
def test_inf_on_one_side_only_and_fully_padded_rows_stay_finite(loss_type):
    logits, target, _ = _inputs(seed=20)
    a = logits.clone()
    a[..., 5] = float("-inf")  # only the trainable side
    a[0, 0] = float("-inf")  # a whole row
    a.requires_grad_()
    b = target.clone().requires_grad_()
    loss = divergence(a, b, loss_type)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
@pytest.mark.parametrize(("loss_type", "kwargs"), CASES[:3] + CASES[6::2], ids=CASE_IDS[:3] + CASE_IDS[6::2])
def test_half_precision_inputs(loss_type, kwargs, dtype):
    logits, target, mask = _inputs(seed=21, dtype=dtype)
    loss, ga, gb = _grads(lambda a, b: divergence(a, b, loss_type, mask=mask, **kwargs), logits, target)
    assert loss.dtype == torch.float32
    assert ga.dtype == dtype and gb.dtype == dtype
    # The same (rounded) values in fp32: the loss must match closely since softmaxes run in fp32.
    ref, ra, rb = _grads(lambda a, b: divergence(a, b, loss_type, mask=mask, **kwargs), logits.float(), target.float())
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    tol = HALF_GRADIENT_RTOL[dtype]
    torch.testing.assert_close(ga.float(), ra, rtol=tol, atol=1e-5)
    torch.testing.assert_close(gb.float(), rb, rtol=tol, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda a, b, m: divergence(a, b[..., :40]), "truncate_vocab=True"),
        (lambda a, b, m: divergence(a, b[..., :40]), "vocabulary sizes"),
        (lambda a, b, m: divergence(a, b[:, :5]), "same shape"),
        (lambda a, b, m: divergence(a, b, mask=m[:, :5]), "`mask` must have the shape"),
        (lambda a, b, m: divergence(a, b, "kl"), "forward_kl, reverse_kl, jsd, skew_forward_kl, skew_reverse_kl"),
        (lambda a, b, m: divergence(a, b, "jsd", beta=1.5), "`beta` must be in [0, 1]"),
        (lambda a, b, m: generalized_jsd(a, b, beta=-0.1), "`beta` must be in [0, 1]"),
        (lambda a, b, m: skew_forward_kl(a, b, alpha=0.0), "`alpha` must be in the open interval (0, 1)"),
        (lambda a, b, m: skew_reverse_kl(a, b, alpha=1.0), "`alpha` must be in the open interval (0, 1)"),
        (lambda a, b, m: divergence(a, b, temperature=0.0), "`temperature` must be a number > 0"),
        (lambda a, b, m: reverse_kl(a, b, temperature=-1.0), "`temperature` must be a number > 0"),
        (lambda a, b, m: divergence(a, b, chunk_size=0), "`chunk_size` must be an int >= 1"),
        (lambda a, b, m: divergence(a, b, num_items=0), "`num_items` must be > 0"),
        (lambda a, b, m: divergence(a.long(), b.long()), "floating point"),
    ],
)
def test_invalid_arguments_raise(call, fragment):
    logits, target, mask = _inputs(seed=22)
    with pytest.raises(ValueError) as excinfo:
        call(logits, target, mask)
    assert fragment in str(excinfo.value)


# --------------------------------------------------------------------------------------------------------------------
# Memory bound
# --------------------------------------------------------------------------------------------------------------------


class _Fp32OutputSizes(TorchDispatchMode):
    """Records the number of elements of every fp32 tensor produced by an aten op (allocations and views alike)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("layout", ("contiguous", "mask", "sliced"))
@pytest.mark.parametrize("loss_type", DIVERGENCE_TYPES)
def test_no_full_size_fp32_tensor(loss_type, layout):
    # bf16 inputs: any fp32 tensor is a working buffer of ours (views of the inputs and the gradient buffers are bf16),
    # and none may be larger than one chunk.
    chunk_size, vocab = 16, 100
    g = torch.Generator().manual_seed(23)
    a = torch.randn(4, 65, vocab, generator=g).to(torch.bfloat16).requires_grad_()
    b = torch.randn(4, 65, vocab, generator=g).to(torch.bfloat16).requires_grad_()
    x, y = (a[:, 1:], b[:, 1:]) if layout == "sliced" else (a, b)
    mask = (torch.rand(x.shape[:-1], generator=g) > 0.5) if layout == "mask" else None
    with _Fp32OutputSizes() as sizes:
        loss = divergence(x, y, loss_type, mask=mask, chunk_size=chunk_size)
        loss.backward()
    assert a.grad is not None and b.grad is not None
    assert 0 < sizes.largest <= chunk_size * vocab
