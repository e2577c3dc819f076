# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Saved artefacts (prompt adapter, teacher identity, completion marker, model card), resume, mixed precision."""

import json
import math
import os
import shutil

import pytest
import torch
from conftest import build_model, load, make_messages_dataset
from peft import PeftModel
from test_trainer import config, fake_generation, make_trainer, snapshot
from transformers import AutoTokenizer, TrainerCallback

from promptkd_trainer import PromptKDTrainer
from promptkd_trainer.checkpointing import (
    COMPLETE_MARKER_NAME,
    PROMPT_ADAPTER_DIR,
    check_prompt_matches_teacher,
    last_complete_checkpoint,
    load_prompt_adapter,
    save_prompt,
)
from promptkd_trainer.teacher import build_prompted_teacher, prompt_parameter


# ------------------------------------------------------------------------------------ the saved prompt reloads


@pytest.mark.parametrize("tokenizer_on_disk", [False, True])
def test_saved_prompt_reloads_with_from_pretrained(tiny_dir, tmp_path, tokenizer_on_disk):
    """The saved adapter reloads with `PeftModel.from_pretrained(teacher, path)` whether the prompt was initialised
    from an in-memory tokenizer or from a tokenizer on disk, and does not need that tokenizer any more."""
    teacher_dir = tmp_path / "teacher"
    shutil.copytree(tiny_dir / "gpt2-teacher", teacher_dir)
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = load(tmp_path, "teacher")
    if not tokenizer_on_disk:
        tok.name_or_path = ""  # as a tokenizer built in memory
        teacher.name_or_path = ""
        teacher.config._name_or_path = ""
    prompted = build_prompted_teacher(
        teacher, tok, num_virtual_tokens=7, prompt_init_text="Suppose you are a student."
    )
    ids = (tok("Suppose you are a student.")["input_ids"] * 7)[:7]
    torch.testing.assert_close(prompt_parameter(prompted), teacher.get_input_embeddings().weight[ids].float())
    save_prompt(prompted, str(tmp_path / "out"))
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the folder the TEXT init read moves away
        (teacher_dir / name).unlink(missing_ok=True)

    reloaded = PeftModel.from_pretrained(load(tmp_path, "teacher"), tmp_path / "out" / PROMPT_ADAPTER_DIR)
    torch.testing.assert_close(prompt_parameter(reloaded), prompt_parameter(prompted))
    saved = json.loads((tmp_path / "out" / PROMPT_ADAPTER_DIR / "adapter_config.json").read_text())
    assert saved["prompt_tuning_init"] == "RANDOM" and saved["prompt_tuning_init_text"] == "Suppose you are a student."


# ---------------------------------------------------------------------------------------------------------- resume

RESUME = dict(max_steps=6, save_strategy="steps", save_steps=2, learning_rate=1e-3)


@pytest.fixture(scope="module")
def full_run(tiny_dir, tmp_path_factory):
    """An uninterrupted 6-step run saving checkpoints 2, 4 and 6; returns (run dir, final snapshot)."""
    root = tmp_path_factory.mktemp("full")
    trainer = fake_generation(make_trainer(tiny_dir, root, **RESUME))
    trainer.train()
    return root, snapshot(trainer)


def copy_run(full_run, tmp_path):
    root, _ = full_run
    shutil.copytree(root / "out", tmp_path / "out")
    return tmp_path / "out"


def test_checkpoints_carry_identity_and_marker(full_run):
    root, _ = full_run
    for step in (2, 4, 6):
        ckpt = root / "out" / f"checkpoint-{step}"
        assert json.loads((ckpt / COMPLETE_MARKER_NAME).read_text())["global_step"] == step
        identity = json.loads((ckpt / PROMPT_ADAPTER_DIR / "teacher_identity.json").read_text())
        assert identity["name_or_path"].endswith("gpt2-teacher")
        assert identity["architecture"]["model_type"] == "gpt2" and identity["embedding_shape"] == [400, 64]


@pytest.mark.parametrize("missing", ["prompt_optimizer.pt", "prompt_scheduler.pt"])
def test_resume_refuses_missing_prompt_optimizer_state(tiny_dir, tmp_path, full_run, missing):
    out = copy_run(full_run, tmp_path)
    (out / "checkpoint-4" / missing).unlink()
    trainer = fake_generation(make_trainer(tiny_dir, tmp_path, **RESUME))
    with pytest.raises(FileNotFoundError, match=missing):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-4"))


def test_resume_refuses_another_teacher(tiny_dir, tmp_path, full_run):
    out = copy_run(full_run, tmp_path)
    tok = AutoTokenizer.from_pretrained(tiny_dir / "gpt2-student")
    other = build_model("gpt2", tok, n_layer=2, seed=7)  # same shapes as gpt2-teacher, other weights
    trainer = fake_generation(
        PromptKDTrainer(
            model=load(tiny_dir, "gpt2-student"), teacher_model=other, args=config(tmp_path, **RESUME),
            train_dataset=make_messages_dataset(16), processing_class=tok,
        )
    )
    with pytest.raises(ValueError, match="trained for the teacher .*gpt2-teacher"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-4"))


def test_resume_true_falls_back_to_last_complete_checkpoint(tiny_dir, tmp_path, full_run):
    """A save killed after the student's weights (checkpoint-6 holds only them) is skipped: the run resumes from
    checkpoint-4 and ends where the uninterrupted run ended."""
    out = copy_run(full_run, tmp_path)
    partial = out / "checkpoint-6"
    for entry in partial.iterdir():
        if entry.name not in ("model.safetensors", "config.json", "generation_config.json"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    found, skipped = last_complete_checkpoint(str(out))
    assert found == str(out / "checkpoint-4")
    assert [path for path, _ in skipped] == [str(partial)] and COMPLETE_MARKER_NAME in skipped[0][1]

    resumed = fake_generation(make_trainer(tiny_dir, tmp_path, **RESUME))
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    s_full, p_full, _ = full_run[1]
    s_res, p_res, _ = snapshot(resumed)
    torch.testing.assert_close(p_res, p_full, rtol=1e-5, atol=1e-7)
    for name in s_full:
        torch.testing.assert_close(s_res[name], s_full[name], rtol=1e-5, atol=1e-7)
    # The re-saved checkpoint-6 is complete again.
    assert (partial / COMPLETE_MARKER_NAME).exists()


KILLED_DURING_SAVE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import promptkd_trainer.checkpointing as checkpointing
from test_trainer import fake_generation, make_trainer
from test_checkpointing import RESUME

save = checkpointing.save_prompt_optimizer
def save_then_die(optimizer, scheduler, output_dir):
    if output_dir.endswith("checkpoint-4"):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the save
    save(optimizer, scheduler, output_dir)
checkpointing.save_prompt_optimizer = save_then_die
fake_generation(make_trainer(Path({tiny!r}), Path({root!r}), **RESUME)).train()
"""


def test_kill_during_save_then_resume_true(tiny_dir, tmp_path, full_run):
    """A process SIGKILLed while saving checkpoint-4 (after the student's weights and the prompt, before the prompt's
    optimizer state): `resume_from_checkpoint=True` resumes from checkpoint-2 and ends where the uninterrupted run
    ended."""
    import subprocess
    import sys

    tests = os.path.dirname(os.path.abspath(__file__))
    code = KILLED_DURING_SAVE.format(tests=tests, tiny=str(tiny_dir), root=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(tests), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    partial = tmp_path / "out" / "checkpoint-4"
    assert (partial / "model.safetensors").exists() and not (partial / COMPLETE_MARKER_NAME).exists()

    resumed = fake_generation(make_trainer(tiny_dir, tmp_path, **RESUME))
    resumed.train(resume_from_checkpoint="true")  # as `promptkd train --resume_from_checkpoint true` passes it
    s_full, p_full, _ = full_run[1]
    s_res, p_res, _ = snapshot(resumed)
    torch.testing.assert_close(p_res, p_full, rtol=1e-5, atol=1e-7)
    for name in s_full:
        torch.testing.assert_close(s_res[name], s_full[name], rtol=1e-5, atol=1e-7)


def test_resume_true_without_complete_checkpoint_says_what_to_do(tmp_path):
    for step in (3, 5):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-5" / "trainer_state.json").write_text("{}")
    with pytest.raises(ValueError, match="checkpoint-5: no completion marker.*checkpoint-3: missing trainer_state"):
        last_complete_checkpoint(str(tmp_path), required=True)
    assert last_complete_checkpoint(str(tmp_path / "none")) == (None, [])


# -------------------------------------------------------------------------- the eval-time check of prompt vs teacher


def test_check_prompt_matches_teacher(tiny_dir, tmp_path, tokenizer):
    teacher = load(tiny_dir, "gpt2-teacher")
    prompted = build_prompted_teacher(teacher, tokenizer, 7, "Suppose you are a student.")
    save_prompt(prompted, str(tmp_path))
    adapter = str(tmp_path / PROMPT_ADAPTER_DIR)

    check_prompt_matches_teacher(load(tiny_dir, "gpt2-teacher"), adapter)  # the same teacher: accepted
    check_prompt_matches_teacher(prompted, adapter)  # with its prompt on: accepted
    check_prompt_matches_teacher(load(tiny_dir, "gpt2-teacher").to(torch.bfloat16), adapter)  # bf16 copy: accepted

    same_shape = build_model("gpt2", tokenizer, n_layer=2, seed=11)
    with pytest.raises(ValueError, match="input embeddings differ"):
        check_prompt_matches_teacher(same_shape, adapter)
    other_size = build_model("gpt2", tokenizer, n_layer=2, hidden=32, seed=1)
    with pytest.raises(ValueError, match="hidden size 64.*hidden size 32"):
        check_prompt_matches_teacher(other_size, adapter)

    # The call for `promptkd eval`: check, then load.
    torch.testing.assert_close(
        prompt_parameter(load_prompt_adapter(load(tiny_dir, "gpt2-teacher"), adapter)), prompt_parameter(prompted)
    )
    with pytest.raises(ValueError, match="input embeddings differ"):
        load_prompt_adapter(build_model("gpt2", tokenizer, n_layer=2, seed=11), adapter)
    with pytest.raises(FileNotFoundError, match="No PEFT adapter"):
        check_prompt_matches_teacher(same_shape, str(tmp_path / "nowhere"))
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(target_modules=["c_attn"], fan_in_fan_out=True)
    get_peft_model(build_model("gpt2", tokenizer, n_layer=2), lora).save_pretrained(tmp_path / "lora")
    with pytest.raises(ValueError, match="LORA adapter, not a prompt-tuning one"):
        check_prompt_matches_teacher(same_shape, str(tmp_path / "lora"))

    # An adapter saved before identities were recorded: the shape is still checked, the rest only warned about.
    os.remove(os.path.join(adapter, "teacher_identity.json"))
    check_prompt_matches_teacher(same_shape, adapter)
    with pytest.raises(ValueError, match="hidden size 64.*hidden size 32"):
        check_prompt_matches_teacher(other_size, adapter)


# ------------------------------------------------------------------------------------------------------- precision


def test_prompt_master_weights_stay_fp32(tiny_dir, tmp_path, tokenizer):
    first = build_prompted_teacher(load(tiny_dir, "gpt2-teacher"), tokenizer, 7, "Suppose you are a student.")
    cast = first.to(torch.bfloat16)  # a bf16 teacher with its prompt, e.g. `PeftModel.from_pretrained(...).to(bf16)`
    assert prompt_parameter(cast).dtype == torch.bfloat16
    trainer = PromptKDTrainer(
        model=load(tiny_dir, "gpt2-student"), teacher_model=cast, args=config(tmp_path, max_steps=1),
        train_dataset=make_messages_dataset(8), processing_class=tokenizer,
    )
    assert prompt_parameter(trainer.teacher).dtype == torch.float32
    assert trainer.teacher.get_base_model().get_input_embeddings().weight.dtype == torch.bfloat16


def test_bf16_end_to_end_on_cpu(tiny_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_dir / "gpt2-student")
    trainer = fake_generation(
        PromptKDTrainer(
            model=load(tiny_dir, "gpt2-student"),
            teacher_model=load(tiny_dir, "gpt2-teacher").to(torch.bfloat16),
            args=config(tmp_path, bf16=True, max_steps=2),
            train_dataset=make_messages_dataset(8), processing_class=tok,
        )
    )
    before_student, before_prompt, _ = snapshot(trainer)
    trainer.train()
    after_student, after_prompt, _ = snapshot(trainer)
    assert trainer.accelerator.mixed_precision == "bf16"
    assert prompt_parameter(trainer.teacher).dtype == torch.float32
    assert not torch.equal(before_prompt, after_prompt)
    assert any(not torch.equal(before_student[n], after_student[n]) for n in before_student)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all(math.isfinite(entry[k]) for entry in logs for k in ("loss", "loss/prompt"))


class SpyScaler(torch.amp.GradScaler):
    """A real CPU GradScaler recording what it scales and which optimizers it unscales / steps."""

    def __init__(self, init_scale):
        super().__init__("cpu", init_scale=init_scale)
        self.scaled, self.unscaled, self.stepped = [], [], []

    def scale(self, outputs):
        self.scaled.append(outputs.detach().clone())
        return super().scale(outputs)

    def unscale_(self, optimizer):
        self.unscaled.append(optimizer)
        return super().unscale_(optimizer)

    def step(self, optimizer, *args, **kwargs):
        self.stepped.append(optimizer)
        return super().step(optimizer, *args, **kwargs)


def run_with_scaler(tiny_dir, tmp_path, order, scaler):
    """One fp16 step on CPU: accelerate leaves fp16 off on a CPU (no autocast, no scaler), so the test turns on what
    it sets up on a GPU, fp16 autocast (which torch runs on CPU) and a GradScaler: `train()` prepares the student's
    optimizer with that scaler, and `accelerator.backward` scales the student's loss with it."""
    trainer = fake_generation(
        make_trainer(tiny_dir, tmp_path, max_steps=1, update_order=order, max_grad_norm=1.0, fp16=True)
    )
    trainer.accelerator.native_amp = True
    trainer.accelerator.scaler = scaler
    before = snapshot(trainer)
    trainer.train()
    return trainer, before


@pytest.mark.parametrize("order", ["paper", "joint"])
def test_prompt_gradient_goes_through_the_loss_scaler(tiny_dir, tmp_path, order):
    """fp16 logic on CPU with a real GradScaler: the prompt's loss is scaled like the student's, its gradient is
    unscaled before clipping (same norm as without scaling), and an overflowing step is skipped for both."""
    plain, _ = run_with_scaler(tiny_dir, tmp_path / "plain", order, SpyScaler(init_scale=1.0))
    scaler = SpyScaler(init_scale=2.0**12)  # a power of two: scaling and unscaling are exact in fp32
    scaled, _ = run_with_scaler(tiny_dir, tmp_path / "scaled", order, scaler)
    assert scaled.prompt_optimizer in scaler.unscaled and scaled.prompt_optimizer in scaler.stepped
    if order == "paper":  # its own backward: one scaled loss more than the student's micro-batches
        assert len(scaler.scaled) == 2
    norm = lambda t: next(e["prompt_grad_norm"] for e in t.state.log_history if "prompt_grad_norm" in e)  # noqa: E731
    assert norm(scaled) == pytest.approx(norm(plain), rel=1e-4)
    torch.testing.assert_close(prompt_parameter(scaled.teacher), prompt_parameter(plain.teacher), rtol=1e-4, atol=1e-6)

    # Overflow (an infinite scale): every scaled gradient is inf/NaN, so the update is skipped for the prompt as for
    # the student; the two schedules stay in step.
    overflow = SpyScaler(init_scale=math.inf)
    trainer, (student0, prompt0, _) = run_with_scaler(tiny_dir, tmp_path / "overflow", order, overflow)
    torch.testing.assert_close(prompt_parameter(trainer.teacher), prompt0, rtol=0, atol=0)
    for name, value in trainer.model.named_parameters():
        torch.testing.assert_close(value, student0[name], rtol=0, atol=0)
    assert trainer.prompt_scheduler.last_epoch == trainer.lr_scheduler.last_epoch


def test_gpu_check_script_runs_on_cpu(capsys):
    """`benchmarks/gpu_check.py` is the fp16/bf16 check for a machine with a GPU; its bf16 half runs here."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--cpu", "--precisions", "bf16", "--orders", "paper", "--steps", "2"]) == 0
    assert "bf16 paper on cpu, 2 steps: ok" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- model card, logs


def test_model_card_mentions_teacher_and_prompt(tiny_dir, tmp_path):
    trainer = make_trainer(tiny_dir, tmp_path, max_steps=1)
    trainer.create_model_card(model_name="student-promptkd")
    card = (tmp_path / "out" / "README.md").read_text()
    assert str(tiny_dir / "gpt2-teacher") in card
    assert f"`{PROMPT_ADAPTER_DIR}/`" in card and "PeftModel.from_pretrained" in card
    assert "2402.12842" in card  # TRL's own card is kept


def test_metrics_added_in_on_evaluate_reach_the_loggers(tiny_dir, tmp_path):
    """A metric a callback adds in `on_evaluate` (e.g. `eval_rougeL`) reaches every `on_log` (report_to)."""
    seen = []

    class Recorder(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(dict(logs))

    class AddRouge(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            metrics["eval_rougeL"] = 12.5

    tok = AutoTokenizer.from_pretrained(tiny_dir / "gpt2-student")
    trainer = PromptKDTrainer(
        model=load(tiny_dir, "gpt2-student"), teacher_model=load(tiny_dir, "gpt2-teacher"),
        args=config(tmp_path), train_dataset=make_messages_dataset(8), eval_dataset=make_messages_dataset(4, seed=1),
        processing_class=tok, callbacks=[Recorder(), AddRouge()],
    )
    metrics = trainer.evaluate()
    assert metrics["eval_rougeL"] == 12.5
    assert [entry["eval_rougeL"] for entry in seen if "eval_rougeL" in entry] == [12.5]
    assert trainer.state.log_history[-1]["eval_rougeL"] == 12.5
    assert sum("eval_loss" in entry for entry in seen) == 1  # the loss is not logged twice
