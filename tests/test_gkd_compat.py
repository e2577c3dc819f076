# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""TRL's own GKD tests (huggingface/trl, tests/experimental/test_gkd_trainer.py), ported to PromptKDTrainer on local
tiny models, plus what a GKD user's script relies on (GKD's attributes, `compute_metrics`, TRL's callbacks, the loss
outside training, collators, the generation config).

Where PromptKD differs from GKD by design, the port checks PromptKD's behaviour instead, and says so:

- no `generate_on_policy_outputs` static method: sampling is `sampling.generate` + `sampling.with_completions`, which
  keep each sample up to its first EOS and right-pad prompt + completion (the prompted teacher needs right padding);
- `generalized_jsd` has no `reduction="none"`: the chunked computation never holds the per-entry tensor;
- no Liger path (TRL's three Liger tests): the divergences are chunked with closed-form gradients instead;
- `lmbda`, `beta`, `temperature`, `seq_kd` are read-only views of the config, not copies that can be reassigned;
- the tiny models' 256 positions: `max_length` (default 512) is lowered to 256 - 7 virtual tokens, with a warning.
"""

import os

import pytest
import torch
import torch.nn.functional as F
from conftest import NORMALISED_TWO_WAYS, SAME_MATH_FP32, load, make_messages_dataset, make_prompt_completion_dataset
from datasets import Dataset
from transformers import AutoTokenizer, GenerationConfig

from promptkd_trainer import PromptKDConfig, PromptKDTrainer, generalized_jsd
from promptkd_trainer.sampling import generate, with_completions


def gkd_like_config(tmp_path, **kwargs):
    """A config as TRL's tests write a GKDConfig (defaults otherwise), on CPU."""
    defaults = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, disable_tqdm=True)
    defaults.update(kwargs)
    return PromptKDConfig(**defaults)


def make(tiny_dir, tmp_path, train=None, eval_dataset=None, **kwargs):
    tok = AutoTokenizer.from_pretrained(tiny_dir / "gpt2-student")
    return PromptKDTrainer(
        model=str(tiny_dir / "gpt2-student"),
        teacher_model=str(tiny_dir / "gpt2-teacher"),
        args=gkd_like_config(tmp_path, **kwargs),
        train_dataset=train if train is not None else make_messages_dataset(8),
        eval_dataset=eval_dataset,
        processing_class=tok,
    )


def collated(trainer, n=2):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


# ------------------------------------------------------------------------------- TestGKDTrainerGenerateOnPolicy


@pytest.fixture
def prompts_batch(tiny_dir):
    tok = AutoTokenizer.from_pretrained(tiny_dir / "gpt2-student")
    tok.padding_side = "left"
    enc = tok(["the cat sat on the red mat", "a dog"], return_tensors="pt", padding=True)
    return tok, {"prompts": enc["input_ids"], "prompt_attention_mask": enc["attention_mask"]}


def sample(model, tok, batch, **gen):
    config = GenerationConfig(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **gen)
    completions = generate(model, batch, config)
    return with_completions(batch, completions, [tok.eos_token_id], tok.pad_token_id, max_length=None)


def test_generate_on_policy_outputs_deterministic(tiny_dir, prompts_batch):
    tok, batch = prompts_batch
    model = load(tiny_dir, "gpt2-student")
    a = sample(model, tok, batch, max_new_tokens=12, do_sample=False)
    b = sample(model, tok, batch, max_new_tokens=12, do_sample=False)
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(a[key], b[key])
    # Each sequence starts with its prompt (right-padded here, where GKD keeps the left padding).
    for row, prompt, mask in zip(a["input_ids"], batch["prompts"], batch["prompt_attention_mask"]):
        real = prompt[mask.bool()]
        assert row[: len(real)].tolist() == real.tolist()


def test_generate_on_policy_outputs_shapes(tiny_dir, prompts_batch):
    tok, batch = prompts_batch
    out = sample(load(tiny_dir, "gpt2-student"), tok, batch, max_new_tokens=6, do_sample=True)
    assert out["input_ids"].shape == out["attention_mask"].shape == out["labels"].shape
    assert out["input_ids"].shape[0] == 2


def test_generate_on_policy_outputs_masks_prompt(tiny_dir, prompts_batch):
    tok, batch = prompts_batch
    out = sample(load(tiny_dir, "gpt2-student"), tok, batch, max_new_tokens=8, min_new_tokens=4, do_sample=False)
    for labels, mask in zip(out["labels"], batch["prompt_attention_mask"]):
        n_prompt = int(mask.sum())
        assert (labels[:n_prompt] == -100).all(), "prompt positions are not masked"
        assert (labels[n_prompt:] != -100).sum() >= 4, "completion tokens were masked"


# --------------------------------------------------------------------------------------- TestGeneralizedJSDLoss


def trl_generalized_jsd(student, teacher, labels=None, beta=0.5, temperature=1.0, reduction="batchmean", n=None):
    from trl.experimental.gkd import GKDTrainer

    return GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta, temperature, reduction, n)


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(2, 3, 5), torch.randn(2, 3, 5)


def test_uniform_distribution():
    uniform = torch.ones(1, 1, 5)
    assert generalized_jsd(uniform, uniform).item() == pytest.approx(0.0, abs=1e-6)


def test_generalized_jsd_loss_edge_cases():
    student = torch.log(torch.tensor([[0.1, 0.9]])).unsqueeze(0)
    teacher = torch.log(torch.tensor([[0.9, 0.1]])).unsqueeze(0)
    expected_1 = F.kl_div(F.log_softmax(teacher, dim=-1), F.softmax(student, dim=-1), reduction="batchmean")
    expected_0 = F.kl_div(F.log_softmax(student, dim=-1), F.softmax(teacher, dim=-1), reduction="batchmean")
    assert generalized_jsd(student, teacher, beta=1).item() == pytest.approx(expected_1.item(), abs=1e-5)
    assert generalized_jsd(student, teacher, beta=0).item() == pytest.approx(expected_0.item(), abs=1e-5)


def test_output_shape_beta_and_temperature(logits):
    s, t = logits
    assert generalized_jsd(s, t).shape == torch.Size([])
    assert generalized_jsd(s, t, beta=0) != generalized_jsd(s, t, beta=1)
    assert generalized_jsd(s, t, temperature=1.0) != generalized_jsd(s, t, temperature=2.0)


@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean"])
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_reductions_equal_trl(logits, reduction, beta, with_labels):
    """TRL's reductions, including its normalisation without labels (by the batch size)."""
    s, t = logits
    labels = torch.tensor([[5, -100, 7], [-100, -100, 2]]) if with_labels else None
    mask = None if labels is None else labels != -100
    ours = generalized_jsd(s, t, beta=beta, mask=mask, temperature=2.0, reduction=reduction)
    theirs = trl_generalized_jsd(s, t, labels, beta=beta, temperature=2.0, reduction=reduction)
    torch.testing.assert_close(ours, theirs, **SAME_MATH_FP32)


def test_num_items_takes_precedence_as_in_trl(logits):
    s, t = logits
    ours = generalized_jsd(s, t, beta=0.5, reduction="mean", num_items=4)
    torch.testing.assert_close(ours, trl_generalized_jsd(s, t, beta=0.5, reduction="mean", n=4), rtol=1e-5, atol=0)


def test_reduction_none_is_refused(logits):
    with pytest.raises(ValueError, match="reduction"):
        generalized_jsd(*logits, reduction="none")


def test_symmetry_and_identical_inputs(logits):
    s, t = logits
    assert generalized_jsd(s, t, beta=0.1) != generalized_jsd(t, s, beta=0.1)
    torch.testing.assert_close(generalized_jsd(s, t, beta=0.5), generalized_jsd(t, s, beta=0.5))
    assert generalized_jsd(s, s.clone()).item() == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------------------ TestGKDTrainer


def test_gkd_trainer(tiny_dir, tmp_path):
    trainer = make(
        tiny_dir, tmp_path, eval_dataset=make_messages_dataset(4, seed=1), dataloader_drop_last=True,
        eval_strategy="steps", max_steps=4, eval_steps=2, save_steps=2, per_device_train_batch_size=2,
        per_device_eval_batch_size=2, max_new_tokens=8,
    )
    trainer.train()
    assert trainer.state.log_history[-1]["train_loss"] > 0  # a KL between two different models (NaN fails too)
    assert any("eval_loss" in log for log in trainer.state.log_history)
    assert "model.safetensors" in os.listdir(tmp_path / "checkpoint-2")


def test_generation_config_init(tiny_dir, tmp_path):
    """`eos_token_id` stays an int when the model's is an int (it became `[1]`)."""
    trainer = make(tiny_dir, tmp_path)
    model_config = load(tiny_dir, "gpt2-student").generation_config
    assert isinstance(model_config.eos_token_id, int)
    assert trainer.generation_config.pad_token_id == trainer.processing_class.pad_token_id
    assert trainer.generation_config.eos_token_id == model_config.eos_token_id
    assert trainer.generation_config.max_new_tokens == trainer.args.max_new_tokens
    assert trainer.generation_config.temperature == trainer.args.temperature
    assert trainer.generation_config.top_k == 0


def test_generation_config_keeps_every_end_token(tiny_dir, tmp_path):
    student = load(tiny_dir, "gpt2-student")
    student.generation_config.eos_token_id = [student.generation_config.eos_token_id, 5]
    trainer = PromptKDTrainer(
        model=student, teacher_model=load(tiny_dir, "gpt2-teacher"), args=gkd_like_config(tmp_path),
        train_dataset=make_messages_dataset(4), processing_class=AutoTokenizer.from_pretrained(tiny_dir / "tokenizer"),
    )
    assert trainer.generation_config.eos_token_id == student.generation_config.eos_token_id


def test_evaluate_returns_eval_loss(tiny_dir, tmp_path):
    trainer = make(tiny_dir, tmp_path, eval_dataset=make_messages_dataset(4, seed=1), per_device_eval_batch_size=2)
    result = trainer.evaluate()
    assert result["eval_loss"] > 0


@pytest.mark.parametrize("kind", ["dict", "none"])
def test_eval_dataset_types(tiny_dir, tmp_path, kind):
    evals = {"a": make_messages_dataset(2, seed=1), "b": make_prompt_completion_dataset(2)} if kind == "dict" else None
    trainer = make(
        tiny_dir, tmp_path, eval_dataset=evals, max_steps=1, per_device_train_batch_size=2, max_new_tokens=4
    )
    trainer.train()
    if kind == "dict":
        result = trainer.evaluate()
        assert result["eval_a_loss"] > 0 and result["eval_b_loss"] > 0


def perturbed_teacher(trainer):
    """As TRL's tests do: move the teacher away from the student so that divergences are well above round-off."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in trainer.teacher_model.parameters():
            p.add_(0.5 * torch.randn_like(p))


def test_loss_normalizes_by_num_items_in_batch(tiny_dir, tmp_path):
    """In eval mode, `compute_loss` divides by `num_items_in_batch` (it was ignored: 2x the expected)."""
    trainer = make(tiny_dir, tmp_path, per_device_train_batch_size=2, max_length=64)
    perturbed_teacher(trainer)
    batch = collated(trainer)
    num_valid = (batch["labels"] != -100).sum()
    trainer.model.eval()
    with torch.no_grad():
        loss_mean = trainer.compute_loss(trainer.model, batch)
        loss_global = trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_valid)
        loss_double = trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_valid * 2)
    torch.testing.assert_close(loss_global, loss_mean, **NORMALISED_TWO_WAYS)
    torch.testing.assert_close(loss_double, loss_mean / 2, **NORMALISED_TWO_WAYS)


def test_loss_covers_all_completion_tokens_with_variable_length_prompts(tiny_dir, tmp_path):
    dataset = Dataset.from_dict({"messages": [
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "the cat sat on the mat"}],
        [{"role": "user", "content": "the big red dog ran fast to the tree"}, {"role": "assistant", "content": "ok"}],
    ]})
    trainer = make(tiny_dir, tmp_path, train=dataset, per_device_train_batch_size=2, max_length=64)
    perturbed_teacher(trainer)
    batch = collated(trainer)
    assert batch["prompt_attention_mask"].sum(1).tolist()[0] < batch["prompts"].shape[1]
    num_valid = (batch["labels"] != -100).sum()
    trainer.model.eval()
    with torch.no_grad():
        loss_mean = trainer.compute_loss(trainer.model, batch)
        loss_global = trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_valid)
    torch.testing.assert_close(loss_global, loss_mean, **NORMALISED_TWO_WAYS)


# ------------------------------------------------------------------------------ what a GKD user's script relies on


def test_teacher_model_and_gkd_attributes(tiny_dir, tmp_path):
    """`trainer.teacher_model` and the GKD hyper-parameters as attributes (AttributeError before)."""
    trainer = make(tiny_dir, tmp_path, lmbda=0.5, beta=0.3, temperature=0.7, seq_kd=True, max_length=64)
    assert trainer.teacher_model is trainer.teacher
    assert (trainer.lmbda, trainer.beta, trainer.temperature, trainer.seq_kd) == (0.5, 0.3, 0.7, True)
    with pytest.raises(AttributeError):
        trainer.lmbda = 0.1  # read-only: the config is the one source
    # Changing the teacher through `teacher_model` (as TRL's tests do) changes what the losses see.
    batch = collated(trainer)
    trainer.model.eval()
    with torch.no_grad():
        before = trainer.compute_loss(trainer.model, batch)
        perturbed_teacher(trainer)
        after = trainer.compute_loss(trainer.model, batch)
    assert not torch.allclose(before, after)


def test_compute_metrics_and_preprocess_logits_are_called(tiny_dir, tmp_path):
    """`compute_metrics` and `preprocess_logits_for_metrics` are called (both were accepted and silently never
    called)."""
    seen = {}

    def preprocess(logits, labels):
        seen["preprocess"] = (tuple(logits.shape), tuple(labels.shape))
        return logits.argmax(-1)

    def metrics(pred):
        seen["metrics"] = pred.predictions.shape
        mask = pred.label_ids[:, 1:] != -100
        return {"token_accuracy": float((pred.predictions[:, :-1] == pred.label_ids[:, 1:])[mask].mean())}

    tok = AutoTokenizer.from_pretrained(tiny_dir / "gpt2-student")
    trainer = PromptKDTrainer(
        model=load(tiny_dir, "gpt2-student"), teacher_model=load(tiny_dir, "gpt2-teacher"),
        args=gkd_like_config(tmp_path, per_device_eval_batch_size=2, max_length=64),
        train_dataset=make_messages_dataset(4), eval_dataset=make_messages_dataset(4, seed=1), processing_class=tok,
        compute_metrics=metrics, preprocess_logits_for_metrics=preprocess,
    )
    result = trainer.evaluate()
    assert "preprocess" in seen and "metrics" in seen
    (b, length, vocab), labels_shape = seen["preprocess"]
    assert vocab == len(tok) and labels_shape == (b, length)
    assert 0.0 <= result["eval_token_accuracy"] <= 1.0 and result["eval_loss"] > 0


def test_log_completions_callback_reads_the_eval_prompts(tiny_dir, tmp_path):
    """TRL's LogCompletionsCallback (added by gkd.py whenever eval is on) needs the eval set's `prompt`."""
    from trl.trainer.callbacks import LogCompletionsCallback

    trainer = make(
        tiny_dir, tmp_path, eval_dataset=make_messages_dataset(4, seed=1), eval_strategy="steps", eval_steps=1,
        max_steps=1, per_device_train_batch_size=2, per_device_eval_batch_size=2, max_new_tokens=4, max_length=64,
    )
    callback = LogCompletionsCallback(
        trainer,
        GenerationConfig(max_new_tokens=3, do_sample=False, pad_token_id=trainer.processing_class.pad_token_id),
        num_prompts=2,
    )
    trainer.add_callback(callback)
    trainer.train()
    assert len(callback.table) == 2 and all(isinstance(row[2], str) for row in callback.table)


def test_compute_loss_outside_train_in_paper_order(tiny_dir, tmp_path):
    """`compute_loss` outside `train` (`'NoneType' object has no attribute 'step'` before) computes the student
    loss and moves nothing."""
    trainer = make(tiny_dir, tmp_path, update_order="paper", max_length=64)
    batch = collated(trainer)
    params = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    prompt = trainer.teacher.prompt_encoder["default"].embedding.weight.detach().clone()
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    assert loss.requires_grad and loss.item() > 0
    for n, p in trainer.model.named_parameters():
        assert torch.equal(p, params[n])
    assert torch.equal(trainer.teacher.prompt_encoder["default"].embedding.weight, prompt)


def test_training_step_outside_train_in_paper_order(tiny_dir, tmp_path):
    """A micro-batch given to `training_step` directly is a window of its own: sampled, prompt step, student loss."""
    trainer = make(tiny_dir, tmp_path, update_order="paper", max_length=64, max_new_tokens=4)
    prompt = trainer.teacher.prompt_encoder["default"].embedding.weight.detach().clone()
    loss = trainer.training_step(trainer.model, collated(trainer))
    assert loss.item() > 0
    assert not torch.equal(trainer.teacher.prompt_encoder["default"].embedding.weight, prompt)


def with_collator(tiny_dir, tmp_path, collator):
    return PromptKDTrainer(
        model=load(tiny_dir, "gpt2-student"), teacher_model=load(tiny_dir, "gpt2-teacher"),
        args=gkd_like_config(tmp_path), train_dataset=make_messages_dataset(4),
        processing_class=AutoTokenizer.from_pretrained(tiny_dir / "gpt2-student"), data_collator=collator,
    )


def test_explicit_chatml_collator_is_refused_clearly(tiny_dir, tmp_path):
    """A ChatML collator passed explicitly is refused before training (`KeyError: 'messages'` from the middle of
    training before)."""
    from trl.experimental.utils import DataCollatorForChatML

    tok = AutoTokenizer.from_pretrained(tiny_dir / "gpt2-student")
    with pytest.raises(ValueError, match="DataCollatorForChatML.*Pass no `data_collator`"):
        with_collator(tiny_dir, tmp_path, DataCollatorForChatML(tokenizer=tok, max_length=64))


def test_a_collator_that_cannot_collate_prepared_rows_is_refused(tiny_dir, tmp_path):
    def ids_only(rows):
        return {"input_ids": torch.tensor([r["prompt_ids"][:1] for r in rows])}

    with pytest.raises(ValueError, match="has no prompts, prompt_attention_mask"):
        with_collator(tiny_dir, tmp_path, ids_only)
