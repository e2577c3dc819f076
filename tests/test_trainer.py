# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""End-to-end behaviour of PromptKDTrainer on tiny local models (CPU, fp32, no network)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    AFTER_STEPS_FP32,
    SAME_MATH_FP32,
    build_model,
    build_tokenizer,
    load,
    make_messages_dataset,
    make_prompt_completion_dataset,
)
from datasets import Dataset
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from promptkd_trainer import PromptKDConfig, PromptKDTrainer
from promptkd_trainer.sampling import with_completions
from promptkd_trainer.teacher import (
    build_prompted_teacher,
    generate_with_prompt,
    prompt_init_token_ids,
    prompt_parameter,
    prompted_teacher_logits,
)


# float32 logits (magnitudes up to ~10, where one ulp is ~1e-6) of the same forward by two code paths (PEFT's or the
# trainer's prompt prepending; a row batched or alone).
LOGITS_FP32 = dict(rtol=1e-5, atol=1e-5)
# The trainer's logged loss (token sums over the window, divided once) vs a naive per-token KL mean: float32 sums of
# vocabulary-wide terms in another order.
LOSS_VS_NAIVE_RTOL = 1e-4


def config(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-2,
        teacher_learning_rate=1e-2,
        lr_scheduler_type="constant",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        max_new_tokens=8,
        max_length=64,
        train_sampling_strategy="sequential",
        disable_tqdm=True,
        seed=0,
    )
    defaults.update(kwargs)
    return PromptKDConfig(**defaults)


def make_trainer(tiny_dir, tmp_path, family="gpt2", dataset=None, **kwargs):
    tok = AutoTokenizer.from_pretrained(tiny_dir / f"{family}-student")
    return PromptKDTrainer(
        model=load(tiny_dir, f"{family}-student"),
        teacher_model=load(tiny_dir, f"{family}-teacher"),
        args=config(tmp_path, **kwargs),
        train_dataset=dataset if dataset is not None else make_messages_dataset(16),
        processing_class=tok,
    )


def fake_generation(trainer, record=None):
    """Deterministic stand-in for sampling: each prompt's completion is a function of its tokens only, so that
    differently shaped batches see identical sequences (sampling order otherwise depends on batch shape)."""
    eos, pad = trainer.processing_class.eos_token_id, trainer.processing_class.pad_token_id
    vocab = len(trainer.processing_class)

    def generate(model, batch, source):
        rows = []
        for ids, mask in zip(batch["prompts"], batch["prompt_attention_mask"]):
            real = ids[mask.bool()].tolist()
            h = sum((i + 1) * t for i, t in enumerate(real))
            k = 1 + h % 5
            rows.append([4 + (h * (j + 3)) % (vocab - 4) for j in range(k)] + [eos])
        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        if record is not None:
            record.append((batch, out))
        return out

    trainer._generate_completions = generate
    return trainer


def snapshot(trainer):
    return (
        {n: p.detach().clone() for n, p in trainer.model.named_parameters()},
        prompt_parameter(trainer.teacher).detach().clone(),
        {n: p.detach().clone() for n, p in trainer.teacher.get_base_model().named_parameters()},
    )


# ---------------------------------------------------------------------------------------------------------- prompt


def test_prompt_initialised_from_text(tiny_dir, tmp_path):
    trainer = make_trainer(tiny_dir, tmp_path)
    tok = trainer.processing_class
    ids = tok("Suppose you are a student.")["input_ids"]
    expected_ids = (ids * math.ceil(7 / len(ids)))[:7]
    assert prompt_init_token_ids(tok, "Suppose you are a student.", 7) == expected_ids
    wte = trainer.teacher.get_base_model().get_input_embeddings().weight
    torch.testing.assert_close(prompt_parameter(trainer.teacher), wte[expected_ids].float())
    assert prompt_parameter(trainer.teacher).shape == (7, wte.shape[1])
    # Only the prompt is trainable on the teacher.
    trainable = [n for n, p in trainer.teacher.named_parameters() if p.requires_grad]
    assert trainable == ["prompt_encoder.default.embedding.weight"]


def test_prompt_init_without_tokenizer_on_disk(tiny_dir, tokenizer):
    teacher = build_model("gpt2", tokenizer, n_layer=2, seed=3)  # in memory: no path to a tokenizer
    prompted = build_prompted_teacher(teacher, tokenizer, num_virtual_tokens=3, prompt_init_text="the cat sat on mat")
    ids = tokenizer("the cat sat on mat")["input_ids"][:3]
    torch.testing.assert_close(prompt_parameter(prompted), teacher.get_input_embeddings().weight[ids].float())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_prompted_logits_line_up_with_student(tiny_dir, tmp_path, family):
    trainer = make_trainer(tiny_dir, tmp_path, family=family)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    student_logits = trainer.model(input_ids=ids, attention_mask=mask).logits
    with torch.no_grad():
        ours = prompted_teacher_logits(trainer.teacher, ids, mask)
        # Independent reference: PEFT's own prompt-tuning forward, which returns n + L positions.
        peft_logits = trainer.teacher(input_ids=ids, attention_mask=mask).logits
    n = trainer.args.num_virtual_tokens
    assert peft_logits.shape[1] == ids.shape[1] + n
    assert ours.shape == student_logits.shape
    torch.testing.assert_close(ours, peft_logits[:, n:], **LOGITS_FP32)
    # Position t of both predicts token t + 1 of the same sequence: the argmax "next tokens" are comparable, and a
    # real token's logits do not depend on right padding appended after it.
    row = ids[:1, : int(mask[0].sum())]
    with torch.no_grad():
        alone = prompted_teacher_logits(trainer.teacher, row, torch.ones_like(row))
    torch.testing.assert_close(alone[0], ours[0, : row.shape[1]], **LOGITS_FP32)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_prompted_generation_matches_no_cache_reference(tiny_dir, tmp_path, family):
    trainer = make_trainer(tiny_dir, tmp_path, family=family)
    tok = trainer.processing_class
    prompt = tok("<|user|>the cat sat on the mat\n<|assistant|>", return_tensors="pt", add_special_tokens=False)
    ids, mask = prompt["input_ids"], prompt["attention_mask"]
    n_new = 12
    fast = generate_with_prompt(
        trainer.teacher, ids, mask, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, use_cache=True
    )
    # Reference: greedy decoding with a full forward of the PEFT model at each step (no cache involved).
    seq = ids
    with torch.no_grad():
        for _ in range(n_new):
            logits = trainer.teacher(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[:, -1]
            logits[:, tok.eos_token_id] = -float("inf")  # as min_new_tokens does
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    assert fast.shape == (1, n_new)
    assert fast.tolist() == seq[:, ids.shape[1] :].tolist()


# ------------------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("order", ["paper", "joint"])
def test_prompt_and_student_change_teacher_frozen(tiny_dir, tmp_path, family, order):
    trainer = make_trainer(tiny_dir, tmp_path, family=family, update_order=order)
    student0, prompt0, teacher0 = snapshot(trainer)
    trainer.train()
    student1, prompt1, teacher1 = snapshot(trainer)
    assert not torch.allclose(prompt0, prompt1), "the soft prompt did not train"
    changed = [n for n in student0 if not torch.equal(student0[n], student1[n])]
    assert len(changed) == len(student0), f"student parameters that did not change: {set(student0) - set(changed)}"
    for n in teacher0:
        assert torch.equal(teacher0[n], teacher1[n]), f"teacher weight {n} changed"
    logs = trainer.state.log_history[0]
    for key in ("loss/student", "loss/prompt", "loss/reg", "reg_weight", "completion_length", "on_policy_fraction"):
        assert key in logs and math.isfinite(logs[key])
    assert logs["on_policy_fraction"] == 1.0
    # w(t) = reg_coef * (1 - t / T), t the 1-based optimizer step (official code), T = max_steps = 2.
    assert logs["reg_weight"] == pytest.approx(0.5)


def _naive_kl(p_logits, q_logits, mask):
    """KL(P || Q) per position with full fp32 softmaxes, token mean over `mask`."""
    logp, logq = F.log_softmax(p_logits.float(), -1), F.log_softmax(q_logits.float(), -1)
    per_pos = (logp.exp() * (logp - logq)).sum(-1)
    return (per_pos * mask).sum() / mask.sum()


def test_paper_order_step_equals_reference(tiny_dir, tmp_path):
    lr_s, lr_p = 0.5, 3e-2
    # SGD for the student: Adam would turn float noise on gradients that are analytically 0 (e.g. attention key
    # biases) into full-size steps. The prompt keeps its AdamW, as in the trainer.
    trainer = make_trainer(
        tiny_dir, tmp_path, max_steps=4, learning_rate=lr_s, teacher_learning_rate=lr_p, max_grad_norm=0.0, optim="sgd"
    )
    record = []
    fake_generation(trainer, record)
    # Fresh copies from disk: a deepcopy of a model the Trainer has prepared keeps calling the original's forward.
    student_ref = load(tiny_dir, "gpt2-student")
    teacher_ref = build_prompted_teacher(load(tiny_dir, "gpt2-teacher"), trainer.processing_class)

    after_first = {}

    class Snap(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 1:
                after_first["student"] = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
                after_first["prompt"] = prompt_parameter(trainer.teacher).detach().clone()

    trainer.add_callback(Snap())
    trainer.train()

    # Hand-written reference of the official order on the same sampled sequences (official code @ 383182f4,
    # train_promptkd.py L312-392: prompt loss, backward, prompt step, then the student loss with the updated prompt).
    batch, completions = record[0]
    pad = trainer.processing_class.pad_token_id
    eos = trainer.processing_class.eos_token_id
    rows, label_rows = [], []
    for ids, mask, comp in zip(batch["prompts"], batch["prompt_attention_mask"], completions):
        p = ids[mask.bool()].tolist()
        c = comp.tolist()
        c = c[: c.index(eos) + 1]
        rows.append(p + c)
        label_rows.append([0] * len(p) + [1] * len(c))
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    attn = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    is_label = torch.tensor([r + [0] * (width - len(r)) for r in label_rows])
    mask = is_label[:, 1:].float()
    n = trainer.args.num_virtual_tokens
    w = 1.0 * (1 - 1 / 4)

    prompt = prompt_parameter(teacher_ref)
    opt_p = torch.optim.AdamW([prompt], lr=lr_p, weight_decay=0.01)
    opt_s = torch.optim.SGD(student_ref.parameters(), lr=lr_s)
    with torch.no_grad():
        s_target = student_ref(input_ids=ids, attention_mask=attn).logits[:, :-1]
        t_plain = teacher_ref.get_base_model()(input_ids=ids, attention_mask=attn).logits[:, :-1]
    t_prompted = teacher_ref(input_ids=ids, attention_mask=attn).logits[:, n:][:, :-1]
    loss_t = _naive_kl(t_prompted, s_target, mask) + w * _naive_kl(t_prompted, t_plain, mask)
    loss_t.backward()
    opt_p.step()
    with torch.no_grad():
        t_updated = teacher_ref(input_ids=ids, attention_mask=attn).logits[:, n:][:, :-1]
    s_logits = student_ref(input_ids=ids, attention_mask=attn).logits[:, :-1]
    _naive_kl(s_logits, t_updated, mask).backward()
    opt_s.step()

    # Adam's first step moves every prompt element by ~lr_p; a wrong order or target shows at that scale.
    torch.testing.assert_close(after_first["prompt"], prompt.detach(), rtol=1e-4, atol=5e-5)
    for name, param in student_ref.named_parameters():
        torch.testing.assert_close(after_first["student"][name], param.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("order", ["paper", "joint"])
def test_gradient_accumulation_invariance(tiny_dir, tmp_path, order):
    results = []
    for bs, ga in ((4, 1), (1, 4)):
        trainer = make_trainer(
            tiny_dir,
            tmp_path / f"{bs}x{ga}",
            update_order=order,
            per_device_train_batch_size=bs,
            gradient_accumulation_steps=ga,
            max_steps=2,
            # Plain SGD for the student: Adam's normalisation turns float noise on ~0 gradients (padded batch of 4 vs
            # unpadded batch of 1) into full-size steps, which would hide the accumulation logic under test.
            optim="sgd",
            learning_rate=0.5,
            teacher_learning_rate=1e-2,
        )
        fake_generation(trainer)
        trainer.train()
        student, prompt, _ = snapshot(trainer)
        results.append((student, prompt, trainer.state.log_history[0]))
    (s_a, p_a, log_a), (s_b, p_b, log_b) = results
    torch.testing.assert_close(p_a, p_b, **AFTER_STEPS_FP32)
    for name in s_a:
        torch.testing.assert_close(s_a[name], s_b[name], **AFTER_STEPS_FP32)
    for key in ("loss/student", "loss/prompt", "loss/reg"):
        assert log_a[key] == pytest.approx(log_b[key], rel=AFTER_STEPS_FP32["rtol"])


def test_off_policy_uses_dataset_completions(tiny_dir, tmp_path):
    trainer = make_trainer(tiny_dir, tmp_path, lmbda=0.0, dataset=make_prompt_completion_dataset(8))
    calls = []
    trainer._generate_completions = lambda *a: calls.append(a)  # must never be called
    trainer.train()
    assert not calls
    assert trainer.state.log_history[0]["on_policy_fraction"] == 0.0


def test_student_emits_eos_at_once(tiny_dir, tmp_path):
    trainer = make_trainer(tiny_dir, tmp_path)
    eos = trainer.processing_class.eos_token_id

    def eos_only(model, batch, source):
        # pad == eos after the first EOS is what generate returns for a sequence that ended at once.
        return torch.full((batch["prompts"].shape[0], 5), eos, dtype=torch.long)

    trainer._generate_completions = eos_only
    student0, prompt0, _ = snapshot(trainer)
    trainer.train()
    logs = trainer.state.log_history[0]
    # Defined behaviour: the EOS itself is the one completion token of each sample (it is trained on).
    assert logs["completion_length"] == 1.0
    assert math.isfinite(logs["loss/student"]) and logs["loss/student"] > 0
    assert not torch.allclose(prompt0, prompt_parameter(trainer.teacher))


def test_completion_masking_after_first_eos(tiny_dir, tmp_path):
    trainer = make_trainer(tiny_dir, tmp_path)
    tok = trainer.processing_class
    eos = tok.eos_token_id
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    comps = torch.tensor([[10, 11, eos, 12, eos], [13, eos, eos, eos, eos], [14, 15, 16, 17, 18]])
    out = with_completions(batch, comps, [eos], tok.pad_token_id, trainer.args.max_length)
    n_labels = (out["labels"] != -100).sum(1).tolist()
    assert n_labels == [3, 2, 5]
    # Sample 3 hit the cap without EOS: its last token is replaced by EOS (official code).
    last = out["labels"][2][out["labels"][2] != -100]
    assert last.tolist() == [14, 15, 16, 17, eos]
    # Right padding: every row starts with its real prompt tokens at position 0.
    for row, (p, m) in zip(out["input_ids"], zip(batch["prompts"], batch["prompt_attention_mask"])):
        real = p[m.bool()]
        assert row[: len(real)].tolist() == real.tolist()


# ------------------------------------------------------------------------------------------------ saving, resume


def test_save_reload_and_resume(tiny_dir, tmp_path):
    kwargs = dict(max_steps=4, save_strategy="steps", save_steps=2, learning_rate=1e-3)
    full = fake_generation(make_trainer(tiny_dir, tmp_path / "full", **kwargs))
    full.train()
    ckpt = tmp_path / "full" / "out" / "checkpoint-2"
    for f in ("model.safetensors", "config.json", "teacher_prompt/adapter_model.safetensors",
              "teacher_prompt/adapter_config.json", "optimizer.pt", "prompt_optimizer.pt", "prompt_scheduler.pt"):
        assert (ckpt / f).exists(), f
    full.save_model(str(tmp_path / "final"))

    # Reload: the student is a plain HF model, the prompt a PEFT adapter on the original teacher.
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    for name, param in student.named_parameters():
        torch.testing.assert_close(param, dict(full.model.named_parameters())[name])
    teacher = PeftModel.from_pretrained(load(tiny_dir, "gpt2-teacher"), tmp_path / "final" / "teacher_prompt")
    torch.testing.assert_close(prompt_parameter(teacher), prompt_parameter(full.teacher))

    # Resume from step 2 ends where the uninterrupted run ended: student, prompt and both optimizers restored.
    resumed = fake_generation(make_trainer(tiny_dir, tmp_path / "full", **kwargs))
    resumed.train(resume_from_checkpoint=str(ckpt))
    s_full, p_full, _ = snapshot(full)
    s_res, p_res, _ = snapshot(resumed)
    # Bit-identical on CPU: the same operations on exactly restored states (measured; a tolerance would hide a drift).
    torch.testing.assert_close(p_res, p_full, rtol=0, atol=0)
    for name in s_full:
        torch.testing.assert_close(s_res[name], s_full[name], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- formats and args


@pytest.mark.parametrize("make", [make_messages_dataset, make_prompt_completion_dataset])
def test_dataset_formats(tiny_dir, tmp_path, make):
    trainer = make_trainer(tiny_dir, tmp_path, dataset=make(8), max_steps=1)
    row = trainer.train_dataset[0]
    assert row["prompt_ids"] and row["completion_ids"][-1] == trainer.processing_class.eos_token_id
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss/student"])


def test_prompt_only_dataset_needs_on_policy(tiny_dir, tmp_path):
    ds = Dataset.from_list([{"prompt": "the cat"}, {"prompt": "a dog"}])
    trainer = make_trainer(tiny_dir, tmp_path, dataset=ds, max_steps=1, per_device_train_batch_size=2)
    trainer.train()
    with pytest.raises(ValueError, match="prompt-only"):
        make_trainer(tiny_dir, tmp_path, dataset=ds, lmbda=0.5)


def test_user_args_not_mutated(tiny_dir, tmp_path):
    args = config(tmp_path)
    before = copy.deepcopy(args.to_dict())
    PromptKDTrainer(
        model=load(tiny_dir, "gpt2-student"), teacher_model=load(tiny_dir, "gpt2-teacher"), args=args,
        train_dataset=make_messages_dataset(4), processing_class=AutoTokenizer.from_pretrained(tiny_dir / "tokenizer"),
    )
    assert args.to_dict() == before


def test_args_none_and_string_models(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = PromptKDTrainer(
        model=str(tiny_dir / "gpt2-student"), teacher_model=str(tiny_dir / "gpt2-teacher"),
        train_dataset=make_messages_dataset(4),
    )
    assert isinstance(trainer.args, PromptKDConfig)
    assert trainer.args.output_dir.endswith("gpt2-student-PromptKD")
    assert trainer.args.num_virtual_tokens == 7 and trainer.args.update_order == "paper"


# ----------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lmbda": 1.5}, "lmbda"),
        ({"beta": -0.1}, "beta"),
        ({"num_virtual_tokens": -1}, "num_virtual_tokens"),
        ({"reg_coef": -1.0}, "reg_coef"),
        ({"student_loss_type": "kl"}, "student_loss_type"),
        ({"prompt_loss_type": "mse"}, "prompt_loss_type"),
        ({"update_order": "random"}, "update_order"),
        ({"temperature": 0.0}, "temperature"),
        ({"loss_temperature": -1.0}, "loss_temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"skew_alpha": 1.0}, "skew_alpha"),
        ({"teacher_learning_rate": -1e-5}, "teacher_learning_rate"),
        ({"packing": True}, "packing"),
    ],
)
def test_invalid_config(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **kwargs)


def test_vocab_mismatch(tiny_dir, tmp_path, tokenizer):
    teacher = build_model("gpt2", tokenizer, n_layer=2, seed=1, vocab_size=len(tokenizer) + 16)
    common = dict(
        model=load(tiny_dir, "gpt2-student"), train_dataset=make_messages_dataset(4), processing_class=tokenizer
    )
    with pytest.raises(ValueError, match="truncate_vocab=True"):
        PromptKDTrainer(teacher_model=teacher, args=config(tmp_path), **common)
    trainer = PromptKDTrainer(teacher_model=teacher, args=config(tmp_path, truncate_vocab=True, max_steps=1), **common)
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss/student"])


def test_tokenizer_without_pad_token_uses_eos(tiny_dir, tmp_path):
    tok = build_tokenizer(tmp_path / "nopad", with_pad=False)
    assert tok.pad_token is None
    student = build_model("gpt2", tok, n_layer=1, seed=2)
    teacher = build_model("gpt2", tok, n_layer=2, seed=1)
    trainer = PromptKDTrainer(
        model=student, teacher_model=teacher, args=config(tmp_path, max_steps=1),
        train_dataset=make_messages_dataset(4), processing_class=tok,
    )
    assert trainer.processing_class.pad_token_id == trainer.processing_class.eos_token_id
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss/student"])


def test_empty_dataset(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        make_trainer(tiny_dir, tmp_path, dataset=Dataset.from_list([]).add_column("prompt", []))


def test_dataset_missing_columns(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="messages"):
        make_trainer(tiny_dir, tmp_path, dataset=Dataset.from_list([{"question": "a", "answer": "b"}]))


def test_prompt_longer_than_max_length(tiny_dir, tmp_path):
    long = Dataset.from_list([{"prompt": "the cat " * 100, "completion": "dog"}, {"prompt": "a", "completion": "b"}])
    with pytest.raises(ValueError, match="max_length=32"):
        make_trainer(tiny_dir, tmp_path, dataset=long, max_length=32)


def test_teacher_with_existing_prompt_adapter(tiny_dir, tmp_path):
    first = make_trainer(tiny_dir, tmp_path / "a", max_steps=1)
    first.train()
    first.save_model(str(tmp_path / "a" / "final"))
    teacher = PeftModel.from_pretrained(load(tiny_dir, "gpt2-teacher"), tmp_path / "a" / "final" / "teacher_prompt")
    second = PromptKDTrainer(
        model=load(tiny_dir, "gpt2-student"), teacher_model=teacher, args=config(tmp_path / "b", max_steps=1),
        train_dataset=make_messages_dataset(8), processing_class=first.processing_class,
    )
    torch.testing.assert_close(prompt_parameter(second.teacher), prompt_parameter(first.teacher))
    before = prompt_parameter(second.teacher).detach().clone()
    second.train()  # the loaded prompt keeps training
    assert not torch.allclose(before, prompt_parameter(second.teacher))
    with pytest.raises(ValueError, match="num_virtual_tokens=7"):
        PromptKDTrainer(
            model=load(tiny_dir, "gpt2-student"), teacher_model=teacher,
            args=config(tmp_path / "c", num_virtual_tokens=5), train_dataset=make_messages_dataset(4),
            processing_class=first.processing_class,
        )


def test_teacher_gradient_checkpointing_same_update(tiny_dir, tmp_path):
    """Checkpointing the teacher recomputes its blocks in the backward to the prompt, and changes nothing else."""
    prompts, calls = [], []
    for gc in (False, True):
        trainer = fake_generation(
            make_trainer(tiny_dir, tmp_path / str(gc), max_steps=1, teacher_gradient_checkpointing=gc)
        )
        # A submodule of the block: transformers checkpoints `forward`, so the block's own hooks do not re-run.
        attn = trainer.teacher.get_base_model().transformer.h[0].attn
        handle = attn.register_forward_hook(lambda *a: calls.append(gc))
        trainer.train()
        handle.remove()
        prompts.append(prompt_parameter(trainer.teacher).detach().clone())
    torch.testing.assert_close(prompts[0], prompts[1], **SAME_MATH_FP32)
    # Paper order with w(1) = 0 at max_steps=1: prompted (grad) and prompted (after the update) = 2 teacher forwards,
    # plus 1 recomputation in the backward with checkpointing.
    assert calls.count(False) == 2 and calls.count(True) == 3


def test_seq_kd_samples_from_prompted_teacher(tiny_dir, tmp_path):
    trainer = make_trainer(tiny_dir, tmp_path, lmbda=0.0, seq_kd=True, max_steps=1)
    sources = []
    original = trainer._generate_completions

    def spy(model, batch, source):
        sources.append(source)
        return original(model, batch, source)

    trainer._generate_completions = spy
    trainer.train()
    assert sources == ["teacher"]
    logs = trainer.state.log_history[0]
    assert logs["on_policy_fraction"] == 0.0 and 1 <= logs["completion_length"] <= trainer.args.max_new_tokens


def test_load_best_model_at_end_restores_best_prompt(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    trainer = PromptKDTrainer(
        model=load(tiny_dir, "gpt2-student"),
        teacher_model=load(tiny_dir, "gpt2-teacher"),
        args=config(
            tmp_path, max_steps=3, eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1,
            # "Greater is better" on the eval loss: the student learns, so an early checkpoint wins, and the test
            # can tell the best checkpoint's prompt from the last one.
            load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=True,
        ),
        train_dataset=make_messages_dataset(12),
        eval_dataset=make_messages_dataset(4, seed=1),
        processing_class=AutoTokenizer.from_pretrained(tiny_dir / "tokenizer"),
    )
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best is not None and not best.endswith("checkpoint-3"), "pick a setting where the last step is not best"
    saved = load_file(f"{best}/teacher_prompt/adapter_model.safetensors")
    (saved_prompt,) = saved.values()
    torch.testing.assert_close(prompt_parameter(trainer.teacher), saved_prompt)
    student = load_file(f"{best}/model.safetensors")
    params = dict(trainer.model.named_parameters())
    for name, value in student.items():
        torch.testing.assert_close(params[name], value)


@pytest.mark.parametrize("order", ["paper", "joint"])
def test_no_prompt_is_plain_on_policy_distillation(tiny_dir, tmp_path, order):
    """num_virtual_tokens=0: the student is distilled from the plain teacher; nothing else trains or is saved."""
    trainer = fake_generation(make_trainer(tiny_dir, tmp_path, num_virtual_tokens=0, update_order=order, max_steps=1))
    assert not isinstance(trainer.teacher, PeftModel)
    teacher0 = {n: p.detach().clone() for n, p in trainer.teacher.named_parameters()}
    student0 = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    record = []
    original = trainer.sample_window

    def spy(model, window):
        original(model, window)
        record.extend(window.batches)

    trainer.sample_window = spy
    trainer.train()
    logs = trainer.state.log_history[0]
    assert "loss/prompt" not in logs and "loss/reg" not in logs
    # The logged student loss is KL(student || teacher) of the initial models on the sampled sequences.
    batch = record[0]
    student = load(tiny_dir, "gpt2-student")
    teacher = load(tiny_dir, "gpt2-teacher")
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    mask = (batch["labels"][:, 1:] != -100).float()
    assert logs["loss/student"] == pytest.approx(_naive_kl(s, t, mask).item(), rel=LOSS_VS_NAIVE_RTOL)
    for n, p in trainer.teacher.named_parameters():
        assert torch.equal(p, teacher0[n])
    assert any(not torch.equal(p, student0[n]) for n, p in trainer.model.named_parameters())
    trainer.save_model(str(tmp_path / "final"))
    assert (tmp_path / "final" / "model.safetensors").exists()
    assert not (tmp_path / "final" / "teacher_prompt").exists()


def test_real_gpt2_tokenizer(gpt2_tokenizer_dir, tmp_path):
    """The real GPT-2 vocabulary (50257, pad = EOS as in the official code), from a directory holding only vocab.json
    and merges.txt, which AutoTokenizer cannot load: the prompt's TEXT init must use the in-memory tokenizer."""
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_dir)
    assert len(tok) == 50257 and tok.pad_token is None
    student = build_model("gpt2", tok, n_layer=1, hidden=32, seed=2)
    teacher = build_model("gpt2", tok, n_layer=2, hidden=32, seed=1)
    trainer = PromptKDTrainer(
        model=student, teacher_model=teacher, args=config(tmp_path, max_steps=1, per_device_train_batch_size=2),
        train_dataset=make_prompt_completion_dataset(4), processing_class=tok,
    )
    assert tok.pad_token_id == tok.eos_token_id == 50256
    ids = tok("Suppose you are a student.")["input_ids"]
    expected = (ids * math.ceil(7 / len(ids)))[:7]
    torch.testing.assert_close(prompt_parameter(trainer.teacher), teacher.get_input_embeddings().weight[expected])
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss/student"])
