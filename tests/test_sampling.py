# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The window of micro-batches and the positions whose logits the losses read (`promptkd_trainer.sampling`)."""

import random
from types import SimpleNamespace

import pytest
import torch
from conftest import build_model, build_tokenizer, make_messages_dataset

from promptkd_trainer import PromptKDConfig, PromptKDTrainer
from promptkd_trainer.sampling import Window, align_logits, logits_to_keep, loss_mask


# Random label masks compared with the previous rule, as commit 585bccd was checked: enough shapes and densities to
# hit every branch (no label at all, a label at position 0, rows without labels next to rows with them).
RANDOM_MASKS = 3000
SINGLE_PROCESS = SimpleNamespace(num_processes=1, device=torch.device("cpu"))


def labels_from(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, torch.arange(mask.numel()).reshape(mask.shape) % 50, torch.tensor(-100))


def logits_to_keep_two_syncs(labels: torch.Tensor) -> int:
    """The rule before commit 585bccd (two device syncs: `bool(rows.any())`, then the `int`)."""
    has_label = labels != -100
    rows = has_label.any(dim=1)
    first = int(has_label.float().argmax(dim=1)[rows].min()) if bool(rows.any()) else 1
    return has_label.shape[1] - max(first, 1) + 1


# ---------------------------------------------------------------------------------------------------- logits_to_keep


def test_logits_to_keep_starts_one_before_the_earliest_label():
    labels = torch.tensor([[-100, -100, -100, 5, 6, -100], [-100, -100, 7, 8, -100, -100]])
    batch = {"labels": labels}
    # Earliest label at index 2: its logits sit at index 1, so positions 1..5 are kept, k = 5.
    assert logits_to_keep(batch) == 5
    assert batch["logits_to_keep"] == 5  # cached in the batch: later calls make no device sync
    batch["labels"] = torch.full_like(labels, -100)
    assert logits_to_keep(batch) == 5


@pytest.mark.parametrize(
    "labels, k",
    [
        ([[3, 4, -100]], 3),  # a label at position 0 cannot be predicted: every position is kept
        ([[-100, -100, -100], [-100, -100, -100]], 3),  # no label anywhere: every position (no loss is read)
        ([[-100, -100, -100], [-100, -100, 9]], 2),  # rows without a label do not count
    ],
)
def test_logits_to_keep_edges(labels, k):
    assert logits_to_keep({"labels": torch.tensor(labels)}) == k


def test_logits_to_keep_equals_the_two_sync_rule_on_random_masks():
    rng = torch.Generator().manual_seed(0)
    for _ in range(RANDOM_MASKS):
        rows, length = (int(torch.randint(1, 6, (1,), generator=rng)), int(torch.randint(1, 20, (1,), generator=rng)))
        density = float(torch.rand(1, generator=rng))
        mask = torch.rand(rows, length, generator=rng) < density
        labels = labels_from(mask)
        assert logits_to_keep({"labels": labels}) == logits_to_keep_two_syncs(labels), labels


def test_kept_positions_hold_every_predictable_label():
    """Whatever the masks, the kept logits see every label after position 0 (the causal shift leaves that one out)."""
    rng = torch.Generator().manual_seed(1)
    for _ in range(200):
        mask = torch.rand(3, 12, generator=rng) < float(torch.rand(1, generator=rng))
        batch = {"labels": labels_from(mask)}
        k = logits_to_keep(batch)
        assert loss_mask(batch).shape == (3, k - 1)
        assert int(loss_mask(batch).sum()) == int(mask[:, 1:].sum())


def test_align_logits_matches_full_and_kept_logits():
    """Logits over all L positions and over only the last k give the same k - 1 aligned positions."""
    labels = torch.tensor([[-100, -100, -100, 5, 6, 7], [-100, -100, -100, -100, 8, -100]])
    batch = {"labels": labels}
    k = logits_to_keep(batch)
    full = torch.randn(2, 6, 11)
    aligned = align_logits(full, batch)
    assert aligned.shape == (2, k - 1, 11)
    assert torch.equal(aligned, full[:, 6 - k : 5])
    assert torch.equal(align_logits(full[:, 6 - k :], batch), aligned)
    # Position i of the aligned logits predicts label i + 1 of the last k: the mask marks exactly the labels.
    assert loss_mask(batch).tolist() == (labels[:, 6 - k + 1 :] != -100).tolist()


# ------------------------------------------------------------------------------------------------------------ Window


def test_window_position_is_by_identity_not_equality():
    first, second = {"x": torch.tensor([1])}, {"x": torch.tensor([2])}
    window = Window([first, second])
    assert window.position(first) == 0 and window.position(second) == 1
    assert window.position(dict(second)) is None  # an equal copy is not one of the fetched micro-batches
    assert window.position({"x": torch.tensor([1])}) is None


def test_window_stats_sum_detached_and_reduce():
    window = Window([{}])
    value = torch.tensor(1.5, requires_grad=True)
    window.add("loss/student", value * 2)
    window.add("loss/student", torch.tensor(0.5))
    window.add("loss/prompt", torch.tensor(2, dtype=torch.int64))
    assert not window.stats["loss/student"].requires_grad
    assert window.stats["loss/prompt"].dtype == torch.float32
    reduced = window.reduced_stats(SINGLE_PROCESS, extra={"completion_length": torch.tensor(4.0)})
    assert reduced == {"completion_length": 4.0, "loss/prompt": 2.0, "loss/student": 3.5}
    assert list(reduced) == sorted(reduced)


def test_trainer_passes_the_fetched_micro_batches_to_training_step(tmp_path):
    """The window lookup needs the Trainer to pass `training_step` the very dicts `get_batch_samples` returned
    (`raw is inputs`); if a transformers release copied them, every micro-batch would become a window of its own and
    be sampled (and, in paper order, trained on by the prompt) separately. Checked on transformers 5.24.0 (the
    version pinned in constraints/ci.txt); this test fails if that changes."""
    tok = build_tokenizer(tmp_path / "tok")
    accumulation, steps = 3, 2
    config = PromptKDConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, gradient_accumulation_steps=accumulation,
        max_steps=steps, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
        save_strategy="no", max_new_tokens=4, max_length=48,
    )
    trainer = PromptKDTrainer(
        model=build_model("gpt2", tok, n_layer=1, seed=0), teacher_model=build_model("gpt2", tok, n_layer=1, seed=1),
        args=config, train_dataset=make_messages_dataset(16), processing_class=tok,
    )
    positions, windows_sampled = [], []
    lookup, sample = Window.position, trainer.sample_window

    def position(window, inputs):
        positions.append(lookup(window, inputs))
        return positions[-1]

    def sample_window(model, window):
        windows_sampled.append(len(window.raw))
        return sample(model, window)

    trainer.sample_window = sample_window
    Window.position = position
    try:
        trainer.train()
    finally:
        Window.position = lookup
    assert positions == list(range(accumulation)) * steps
    assert windows_sampled == [accumulation] * steps


def test_draw_on_policy_is_a_function_of_seed_step_and_micro_step():
    from promptkd_trainer.sampling import draw_on_policy

    draws = [draw_on_policy(0.5, 42, step, micro, SINGLE_PROCESS) for step in range(50) for micro in range(4)]
    assert draws == [draw_on_policy(0.5, 42, step, micro, SINGLE_PROCESS) for step in range(50) for micro in range(4)]
    assert 0.35 < sum(draws) / len(draws) < 0.65  # 200 draws at p = 0.5: 3 standard deviations is +-0.106
    other_seed = [draw_on_policy(0.5, 43, step, micro, SINGLE_PROCESS) for step in range(50) for micro in range(4)]
    assert draws != other_seed
    assert all(draw_on_policy(1.0, 0, s, 0, SINGLE_PROCESS) for s in range(10))
    random.seed(0)
    expected = random.random()
    random.seed(0)
    draw_on_policy(0.5, 42, 3, 1, SINGLE_PROCESS)
    assert random.random() == expected  # the draw has its own generator: the global one is left as it was
