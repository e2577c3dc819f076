# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Faults and bad inputs: writes that stay inside output_dir, damaged checkpoint and data files, resume mismatches,
message layouts, preemption signals and a stalled rank. Each error is checked for what it names and says to do."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import load, make_messages_dataset
from test_trainer import config, fake_generation, make_trainer, snapshot
from transformers import TrainerCallback

from promptkd_trainer.checkpointing import PROMPT_ADAPTER_DIR
from promptkd_trainer.files import CHECKPOINT_DAMAGED, DamagedFileError, read_jsonl


CKPT = dict(max_steps=2, save_strategy="steps", save_steps=1, learning_rate=1e-3)


@pytest.fixture(scope="module")
def two_checkpoints(tiny_dir, tmp_path_factory):
    """A 2-step run saving checkpoint-1 and checkpoint-2."""
    root = tmp_path_factory.mktemp("ckpt")
    fake_generation(make_trainer(tiny_dir, root, **CKPT)).train()
    return root / "out"


def copy_out(two_checkpoints, tmp_path):
    shutil.copytree(two_checkpoints, tmp_path / "out")
    return tmp_path / "out"


def outside_dir(tmp_path):
    """A folder outside output_dir holding one file that must survive untouched."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("untouched")
    return outside


def assert_untouched(outside):
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert (outside / "keep.txt").read_text() == "untouched"


# ------------------------------------------------------------------------------------ writes stay inside output_dir


def test_model_card_refuses_readme_link_outside(tiny_dir, tmp_path):
    outside = outside_dir(tmp_path)
    trainer = make_trainer(tiny_dir, tmp_path, max_steps=1)
    os.makedirs(trainer.args.output_dir, exist_ok=True)
    os.symlink(outside / "keep.txt", tmp_path / "out" / "README.md")
    with pytest.raises(ValueError, match=r"README\.md: it is a symbolic link to .*keep\.txt, outside output_dir"):
        trainer.create_model_card(model_name="student")
    with pytest.raises(ValueError, match=r"README\.md: it is a symbolic link"):
        trainer.train()  # refused before the first step
    assert trainer.state.global_step == 0
    assert_untouched(outside)


def test_save_model_refuses_teacher_prompt_link_outside(tiny_dir, tmp_path):
    outside = outside_dir(tmp_path)
    trainer = make_trainer(tiny_dir, tmp_path, max_steps=1)
    os.makedirs(trainer.args.output_dir, exist_ok=True)
    os.symlink(outside, tmp_path / "out" / PROMPT_ADAPTER_DIR, target_is_directory=True)
    with pytest.raises(ValueError, match=rf"{PROMPT_ADAPTER_DIR}: it is a symbolic link to .*elsewhere"):
        trainer.save_model()
    assert not (tmp_path / "out" / "model.safetensors").exists()  # refused before anything was written
    assert_untouched(outside)


def test_checkpoint_link_outside_is_refused_before_training(tiny_dir, tmp_path):
    outside = outside_dir(tmp_path)
    trainer = fake_generation(make_trainer(tiny_dir, tmp_path, **CKPT))
    os.makedirs(trainer.args.output_dir, exist_ok=True)
    os.symlink(outside, tmp_path / "out" / "checkpoint-1", target_is_directory=True)
    with pytest.raises(ValueError, match=r"checkpoint-1: it is a symbolic link to .*elsewhere.*Remove the link"):
        trainer.train()
    assert trainer.state.global_step == 0
    assert_untouched(outside)


def test_checkpoint_link_planted_during_training_is_refused_at_save(tiny_dir, tmp_path):
    """A link that appears after `train()` started is refused by the save itself, before it writes."""
    outside = outside_dir(tmp_path)

    class Plant(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # runs before the step's checkpoint is saved
            if state.global_step == 2:
                os.symlink(outside, tmp_path / "out" / "checkpoint-2", target_is_directory=True)

    trainer = fake_generation(make_trainer(tiny_dir, tmp_path, **CKPT))
    trainer.add_callback(Plant())
    with pytest.raises(ValueError, match=r"checkpoint-2: it is a symbolic link"):
        trainer.train()
    assert (tmp_path / "out" / "checkpoint-1" / "model.safetensors").exists()
    assert_untouched(outside)


@pytest.mark.parametrize("name", ["completions", "model.safetensors", "checkpoint-3"])
def test_every_trainer_write_through_a_link_out_is_refused(tmp_path, name):
    """What the trainer writes besides the card, the prompt and the checkpoints: `log_completions`' tables and the
    student's files at the top level. A linked folder it never writes (`runs/` for TensorBoard) is left alone."""
    from promptkd_trainer.checkpointing import check_saves_stay_inside

    outside = outside_dir(tmp_path)
    (tmp_path / "out").mkdir()
    os.symlink(outside, tmp_path / "out" / "runs", target_is_directory=True)
    check_saves_stay_inside(str(tmp_path / "out"))
    target = outside / "keep.txt" if "." in name else outside
    os.symlink(target, tmp_path / "out" / name)
    with pytest.raises(ValueError, match=rf"{name}: it is a symbolic link"):
        check_saves_stay_inside(str(tmp_path / "out"))


def test_links_inside_output_dir_are_accepted(tiny_dir, tmp_path):
    trainer = make_trainer(tiny_dir, tmp_path, max_steps=1)
    os.makedirs(tmp_path / "out" / "cards")
    os.symlink(tmp_path / "out" / "cards" / "README.md", tmp_path / "out" / "README.md")
    trainer.create_model_card(model_name="student")
    assert "PeftModel.from_pretrained" in (tmp_path / "out" / "cards" / "README.md").read_text()


# ------------------------------------------------------------------------------------ damaged checkpoint files


def truncate(path, keep=None):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


@pytest.mark.parametrize("name, keep", [
    (f"{PROMPT_ADAPTER_DIR}/adapter_config.json", None),  # cut mid-string
    (f"{PROMPT_ADAPTER_DIR}/teacher_identity.json", None),
    (f"{PROMPT_ADAPTER_DIR}/adapter_model.safetensors", None),
    (f"{PROMPT_ADAPTER_DIR}/adapter_model.safetensors", 0),  # empty
    ("model.safetensors", None),  # the student's weights, loaded by the Trainer
    ("trainer_state.json", None),
    ("optimizer.pt", None),
    ("prompt_optimizer.pt", None),
    ("rng_state.pth", 0),
])
def test_damaged_checkpoint_file_is_named(tiny_dir, tmp_path, two_checkpoints, name, keep):
    out = copy_out(two_checkpoints, tmp_path)
    damaged = out / "checkpoint-1" / name
    truncate(damaged, keep)
    trainer = fake_generation(make_trainer(tiny_dir, tmp_path, **CKPT))
    with pytest.raises(DamagedFileError) as err:
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-1"))
    assert str(damaged) in str(err.value) and CHECKPOINT_DAMAGED in str(err.value)
    assert trainer.state.global_step == 0


def test_teacher_identity_without_its_entries_is_named(tiny_dir, tmp_path, two_checkpoints):
    out = copy_out(two_checkpoints, tmp_path)
    path = out / "checkpoint-1" / PROMPT_ADAPTER_DIR / "teacher_identity.json"
    path.write_text(json.dumps({"name_or_path": "x"}))
    trainer = fake_generation(make_trainer(tiny_dir, tmp_path, **CKPT))
    with pytest.raises(DamagedFileError, match=r"teacher_identity\.json is damaged \(no 'architecture'"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-1"))


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b", "compl\n{"prompt": "c"}\n')
    with pytest.raises(DamagedFileError, match=rf"{path}, line 3, is not valid JSON .*fix or remove that line"):
        list(read_jsonl(path))
    path.write_text('{"prompt": "a"}\n[1, 2]\n')
    with pytest.raises(DamagedFileError, match=r"line 2, is a JSON list, not an object"):
        list(read_jsonl(path))


# ------------------------------------------------------------------------------------ resume mismatches


def test_resume_with_another_prompt_length_names_both(tiny_dir, tmp_path, two_checkpoints):
    out = copy_out(two_checkpoints, tmp_path)
    trainer = fake_generation(make_trainer(tiny_dir, tmp_path, num_virtual_tokens=5, **CKPT))
    ckpt = out / "checkpoint-1"
    with pytest.raises(ValueError, match=rf"Cannot resume from {ckpt} with num_virtual_tokens=5: it was trained with "
                                         r"num_virtual_tokens=7 .*Set `num_virtual_tokens=7`"):
        trainer.train(resume_from_checkpoint=str(ckpt))
    plain = fake_generation(make_trainer(tiny_dir, tmp_path, num_virtual_tokens=0, **CKPT))
    with pytest.raises(ValueError, match=r"with num_virtual_tokens=0: it was trained with num_virtual_tokens=7"):
        plain.train(resume_from_checkpoint=str(ckpt))


def test_resume_without_rng_state_warns_not_reproducible(tiny_dir, tmp_path, two_checkpoints, caplog):
    out = copy_out(two_checkpoints, tmp_path)
    (out / "checkpoint-1" / "rng_state.pth").unlink()
    trainer = fake_generation(make_trainer(tiny_dir, tmp_path, **CKPT))
    with caplog.at_level(logging.WARNING, logger="promptkd_trainer"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-1"))
    assert trainer.state.global_step == 2
    assert any("has no rng_state.pth" in r.message and "will not be reproducible" in r.message
               for r in caplog.records)


# ------------------------------------------------------------------------------------ damaged data files


def test_eval_set_with_malformed_line_names_file_and_line(tmp_path):
    from promptkd_trainer.evaluation import load_eval_set

    (tmp_path / "dolly").mkdir()
    path = tmp_path / "dolly" / "valid.jsonl"
    path.write_text('{"prompt": "a", "output": "b"}\n{"prompt": "c", "outp\n')
    with pytest.raises(DamagedFileError, match=rf"{path}, line 2, is not valid JSON"):
        load_eval_set(tmp_path, "dolly")
    assert load_eval_set(tmp_path, "dolly", max_examples=1) == [{"prompt": "a", "references": ["b"]}]


def test_promptkd_eval_with_malformed_line_names_file_and_line(tiny_dir, tmp_path):
    from promptkd_trainer.eval_cli import main

    (tmp_path / "data" / "dolly").mkdir(parents=True)
    path = tmp_path / "data" / "dolly" / "valid.jsonl"
    path.write_text('{"prompt": "a", "output": "b"}\n\n{"prompt": "c", "outp\n')
    with pytest.raises(DamagedFileError, match=rf"{path}, line 3, is not valid JSON"):
        main(["--model", str(tiny_dir / "gpt2-student"), "--data_dir", str(tmp_path / "data"), "--sets", "dolly",
              "--output_dir", str(tmp_path / "eval"), "--seeds", "10", "--max_new_tokens", "2"])


def test_training_jsonl_with_malformed_line_names_file_and_line(tmp_path):
    from promptkd_trainer.formats import load_dataset_any

    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "compl\n')
    with pytest.raises(DamagedFileError, match=rf"{path}, line 2, is not valid JSON"):
        load_dataset_any(path, cache_dir=str(tmp_path / "cache"))


def test_damaged_adapter_config_is_named_by_promptkd_eval(tmp_path):
    import argparse

    from promptkd_trainer.eval_cli import _load_model

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text('{"peft_type": "LO')
    with pytest.raises(DamagedFileError, match=r"adapter_config\.json is damaged .*save the adapter again"):
        _load_model(str(tmp_path / "adapter"), argparse.Namespace(dtype="float32", trust_remote_code=False))


def test_damaged_dataset_dict_json_is_named(tmp_path):
    from promptkd_trainer.cli import _local_split_exists

    (tmp_path / "dataset_dict.json").write_text('{"splits": ["tra')
    with pytest.raises(DamagedFileError, match=r"dataset_dict\.json is damaged .*save the dataset again"):
        _local_split_exists(str(tmp_path), "train")


# ------------------------------------------------------------------------------------ preemption signals

SIGNALLED = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from transformers import TrainerCallback
from test_trainer import fake_generation, make_trainer

class SendSignal(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == {at}:  # in the middle of step {at} + 1: the signal waits for its end
            os.kill(os.getpid(), {signum})

trainer = fake_generation(make_trainer(Path({tiny!r}), Path({root!r}), **{kwargs!r}))
trainer.add_callback(SendSignal())
trainer.train()
print("train() returned")
"""

SIGNAL_RUN = dict(max_steps=4, learning_rate=1e-3)


def run_signalled(tiny_dir, root, signum, at, **kwargs):
    tests = os.path.dirname(os.path.abspath(__file__))
    code = SIGNALLED.format(tests=tests, tiny=str(tiny_dir), root=str(root), at=at, signum=int(signum),
                            kwargs={**SIGNAL_RUN, **kwargs})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(tests), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("signum, order", [(signal.SIGTERM, "paper"), (signal.SIGINT, "joint")])
def test_signal_saves_checkpoint_and_resume_is_exact(tiny_dir, tmp_path, signum, order):
    """A real SIGTERM / SIGINT during step 2 of 4: the process saves checkpoint-2 at the end of that step and exits
    with 128 + the signal; `resume_from_checkpoint=True` then ends exactly where an uninterrupted run ends."""
    proc = run_signalled(tiny_dir, tmp_path / "stopped", signum, at=1, update_order=order)
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert "train() returned" not in proc.stdout
    assert f"Stopped by {signal.Signals(signum).name} after step 2" in proc.stderr
    out = tmp_path / "stopped" / "out"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (out / "checkpoint-2" / "promptkd_complete.json").exists()

    resumed = fake_generation(make_trainer(tiny_dir, tmp_path / "stopped", update_order=order, **SIGNAL_RUN))
    resumed.train(resume_from_checkpoint=True)
    full = fake_generation(make_trainer(tiny_dir, tmp_path / "full", update_order=order, **SIGNAL_RUN))
    full.train()
    assert resumed.state.global_step == full.state.global_step == 4
    (s_res, p_res, _), (s_full, p_full, _) = snapshot(resumed), snapshot(full)
    diff = max([(p_res - p_full).abs().max().item()] + [(s_res[n] - s_full[n]).abs().max().item() for n in s_full])
    assert diff == 0.0, f"max |diff| {diff}"


def test_signal_handling_off_dies_without_saving(tiny_dir, tmp_path):
    proc = run_signalled(tiny_dir, tmp_path, signal.SIGTERM, at=1, save_on_signal=False)
    assert proc.returncode == -signal.SIGTERM  # killed by the signal, Python's default
    assert not list((tmp_path / "out").glob("checkpoint-*"))


def test_signal_handlers_are_restored_after_train(tiny_dir, tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    trainer = fake_generation(make_trainer(tiny_dir, tmp_path, max_steps=1))
    trainer.train()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert not any(type(cb).__name__ == "SignalCheckpoint" for cb in trainer.callback_handler.callbacks)


# ------------------------------------------------------------------------------------ message content layouts


def messages_rows(assistant_content, user_content="red cat"):
    return [
        {"messages": [{"role": "user", "content": "big dog"}, {"role": "assistant", "content": "sat on mat"}]},
        {"messages": [{"role": "user", "content": user_content}, {"role": "assistant", "content": assistant_content}]},
    ]


def test_assistant_content_none_names_the_row(tiny_dir, tmp_path):
    from datasets import Dataset

    with pytest.raises(ValueError, match=r"Row 1 of the train dataset: the assistant message has no content"):
        make_trainer(tiny_dir, tmp_path, dataset=Dataset.from_list(messages_rows(None)))


def test_text_parts_are_read_as_text(tokenizer):
    from datasets import Dataset

    from promptkd_trainer.data import prepare_dataset

    def parts(text):
        return [{"type": "text", "text": text}]

    as_parts = [{"messages": [{"role": m["role"], "content": parts(m["content"])} for m in row["messages"]]}
                for row in messages_rows("the answer")]
    got = prepare_dataset(Dataset.from_list(as_parts), tokenizer, 64)
    expected = prepare_dataset(Dataset.from_list(messages_rows("the answer")), tokenizer, 64)
    assert got["prompt_ids"] == expected["prompt_ids"] and got["completion_ids"] == expected["completion_ids"]
    assert "type" not in tokenizer.decode(got[1]["prompt_ids"])  # not the Python repr of the list
    split = [{"messages": [{"role": "user", "content": parts("red ") + parts("cat")},
                           {"role": "assistant", "content": parts("the answer")}]}]
    assert prepare_dataset(Dataset.from_list(split), tokenizer, 64)[0]["prompt_ids"] == expected[1]["prompt_ids"]


def test_non_text_parts_are_refused(tokenizer):
    from datasets import Dataset

    from promptkd_trainer.data import prepare_dataset

    rows = messages_rows("x")
    rows[1]["messages"][0]["content"] = [{"type": "image", "text": None}, {"type": "text", "text": "what is it"}]
    rows[0]["messages"][0]["content"] = [{"type": "text", "text": "big dog"}]
    rows[0]["messages"][1]["content"] = [{"type": "text", "text": "sat"}]
    rows[1]["messages"][1]["content"] = [{"type": "text", "text": "x"}]
    with pytest.raises(ValueError, match=r"Row 1 of the train dataset: the user message's content has non-text parts "
                                         r"\(image\); PromptKD trains text-only"):
        prepare_dataset(Dataset.from_list(rows), tokenizer, 64)


# ------------------------------------------------------------------------------------ prompts and positions


def test_streamed_prompt_longer_than_positions_is_named(tiny_dir, tmp_path):
    """The models have 256 positions and the prompt takes 7: max_length (1024 configured) is lowered to 249, and a
    streamed row longer than that is named when it is read (it was an `IndexError` inside the embedding)."""
    from datasets import Dataset

    prompts = ["red cat", "red cat sat on the mat " * 60, "big dog", "a star"]
    rows = [{"prompt": p, "completion": " sat"} for p in prompts]
    streamed = Dataset.from_list(rows).to_iterable_dataset()
    trainer = fake_generation(make_trainer(tiny_dir, tmp_path, dataset=streamed, max_length=1024, max_steps=1))
    assert trainer.args.max_length == 249
    with pytest.raises(ValueError, match=r"Row 1 of the train dataset has a prompt of \d+ tokens, at least "
                                         r"max_length=249 tokens.*raising it cannot help"):
        trainer.train()


def test_virtual_tokens_that_take_the_positions_say_so(tiny_dir, tmp_path):
    with pytest.raises(ValueError) as err:
        make_trainer(tiny_dir, tmp_path, num_virtual_tokens=250, max_length=1024)
    message = str(err.value)
    assert "at least max_length=6 tokens" in message and "raising it cannot help" in message
    assert "Lower `num_virtual_tokens` (the virtual tokens take 250 of those positions)" in message
    assert "Raise `max_length`" not in message


# ------------------------------------------------------------------------------------ a BERT teacher


def test_bert_teacher_object_gets_the_not_causal_error(tiny_dir, tmp_path, tokenizer):
    from transformers import BertConfig, BertForMaskedLM

    from promptkd_trainer import PromptKDTrainer

    bert = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=256))
    bert.save_pretrained(tmp_path / "bert")
    not_causal = r"The teacher \(Bert\w+\) is not causal: its prediction at a position depends on later tokens"
    for teacher in (str(tmp_path / "bert"), bert):  # from a folder, and as an object
        with pytest.raises(ValueError, match=not_causal):
            PromptKDTrainer(model=load(tiny_dir, "gpt2-student"), teacher_model=teacher,
                            args=config(tmp_path, max_steps=1), train_dataset=make_messages_dataset(4),
                            processing_class=tokenizer)


# ------------------------------------------------------------------------------------ a stalled rank

STALL_TIMEOUT_S = 10  # ddp_timeout of the test: short, but above the ranks' start-up skew on 2 loaded cores
# After ddp_timeout: the check that names the rank (min(ddp_timeout, 30 s) = 10 s) plus exiting and slack.
STALL_MARGIN_S = 20


def test_stalled_rank_ends_the_run_and_is_named(tiny_dir, tmp_path):
    """Rank 1 of 2 is SIGSTOPped after step 2 (alive, never answering): rank 0 ends within ddp_timeout + the margin
    with an error naming rank 1. Before, a CPU run got gloo's 30-minute default whatever `ddp_timeout` said.

    The two ranks are started here, as torchrun would start them; the test then kills the stopped rank, as torchrun
    does (after its 30 s SIGTERM grace, which a stopped process cannot use)."""
    import socket
    import time

    tests = os.path.dirname(os.path.abspath(__file__))
    spec = tmp_path / "spec.json"
    run = {"name": "S", "max_steps": 40, "batch_size": 2, "stop_rank1_at_step": 2, "ddp_timeout": STALL_TIMEOUT_S}
    spec.write_text(json.dumps({"models": str(tiny_dir), "out": str(tmp_path), "backend": "ddp", "runs": [run]}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(tests), os.environ.get("PYTHONPATH", "")]),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    ranks = []
    for rank in (0, 1):
        log = open(tmp_path / f"rank{rank}.log", "w")
        ranks.append(subprocess.Popen(
            [sys.executable, os.path.join(tests, "distributed_worker.py"), str(spec)],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, stdout=log, stderr=subprocess.STDOUT,
        ))
    try:
        ranks[0].wait(timeout=240)
        ended = time.time()
    finally:
        for proc in ranks:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = (tmp_path / "rank0.log").read_text()
    stalled = tmp_path / "S" / "stalled"
    assert stalled.exists(), output[-3000:]
    took = ended - float(stalled.read_text())
    assert ranks[0].returncode != 0
    assert "StalledRankError: Rank 1 stopped answering: rank 0 waited `ddp_timeout`=10 s" in output, output[-3000:]
    assert took < STALL_TIMEOUT_S + STALL_MARGIN_S, f"rank 0 ended {took:.1f} s after rank 1 stalled"
    print(f"rank 0 ended {took:.1f} s after rank 1 stalled (ddp_timeout {STALL_TIMEOUT_S} s)")
