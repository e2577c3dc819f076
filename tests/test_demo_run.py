# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`promptkd demo` end to end at toy scale: every stage runs, writes its outputs, caches its models and stays quiet."""

import json
import sys

import pytest

from promptkd_trainer.cli import main


TINY = [
    "--steps", "2", "--seeds", "10", "20", "--teacher_pretrain_steps", "2", "--student_pretrain_steps", "2",
    "--teacher_sft_steps", "2", "--student_sft_steps", "2", "--n_train", "48", "--n_labelled", "8", "--n_test", "6",
    "--batch_size", "4", "--max_new_tokens", "5", "--teacher_size", "tiny", "--student_size", "tiny",
    "--vocab_size", "600", "--kl_probe_prompts", "4", "--block_size", "32",
]  # fmt: skip


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    main(["demo", "--output_dir", str(root / "out"), "--cache_dir", str(root / "cache"), *TINY])
    return root, json.loads((root / "out" / "results.json").read_text())


def test_demo_writes_results_report_and_plots(first_run):
    root, results = first_run
    out = root / "out"
    assert set(results["summary"]) == {"sft", "kd", "seqkd", "onpolicy", "promptkd"}
    for method, runs in results["runs"].items():
        assert [r["seed"] for r in runs] == [10, 20], method
        for r in runs:
            assert 0.0 <= r["rougeL_sampled"] <= 100.0 and 0.0 <= r["exact_match_greedy"] <= 100.0
    # PromptKD logs every term; the regulariser weight decays linearly to 0 at the last step.
    history = [h for h in results["runs"]["promptkd"][0]["history"] if "loss/student" in h]
    assert history and {"loss/prompt", "loss/reg", "reg_weight"} <= set(history[0])
    assert history[-1]["reg_weight"] == 0.0
    report = (out / "report.md").read_text()
    assert "| promptkd |" in report and "![kl.png](kl.png)" in report and "What the prompt learned" in report
    for name in ("losses.png", "rougeL.png", "kl.png"):
        assert (out / name).stat().st_size > 1000
    assert (out / "teacher_prompt" / "adapter_model.safetensors").exists()  # the first seed's trained prompt


def test_demo_checks_are_computed_from_the_runs(first_run):
    _, results = first_run
    checks, runs = results["checks"], results["runs"]
    paired = [p["rougeL_sampled"] - o["rougeL_sampled"] for p, o in zip(runs["promptkd"], runs["onpolicy"])]
    assert checks["promptkd_minus_onpolicy_paired"]["values"] == pytest.approx(paired)
    first_reg = [next(h for h in r["history"] if "loss/reg" in h)["loss/reg"] for r in runs["promptkd"]]
    assert checks["loss_reg_step1"]["values"] == pytest.approx(first_reg)
    ref = results["reference"]
    assert checks["teacher_student_gap_sampled"] == pytest.approx(
        ref["teacher"]["rougeL_sampled"] - ref["student_init"]["rougeL_sampled"]
    )
    assert checks["capacity_ratio"] == pytest.approx(
        results["models"]["teacher_non_embedding_parameters"] / results["models"]["student_non_embedding_parameters"]
    )


def test_demo_prompt_analysis(first_run):
    from transformers import AutoTokenizer

    root, results = first_run
    tokenizer = AutoTokenizer.from_pretrained(results["models"]["cache"] + "/teacher")
    init_tokens = tokenizer.convert_ids_to_tokens(tokenizer("Suppose you are a student.")["input_ids"])
    for analysis in results["prompt"]:
        # TEXT init copies the init text's embeddings: each virtual token's nearest token is its own init token.
        expected = (init_tokens * 7)[:7]
        assert [t[0] for t in analysis["nearest_tokens_init"]] == expected
        assert len(analysis["nearest_tokens_final"]) == 7 and analysis["drift"] > 0.0
        for when in ("kl_before", "kl_after"):
            assert all(v >= 0.0 and v == v for v in analysis[when].values())


def test_demo_second_run_uses_the_cache_and_runs_without_matplotlib(first_run, monkeypatch, capsys):
    root, first = first_run
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    out = root / "second"
    main(["demo", "--output_dir", str(out), "--cache_dir", str(root / "cache"), *TINY, "--methods", "sft"])
    results = json.loads((out / "results.json").read_text())
    assert results["models"]["cached"] and results["models"]["cache"] == first["models"]["cache"]
    assert results["reference"]["teacher"] == first["reference"]["teacher"]  # same cached teacher, same answers
    assert not list(out.glob("*.png")) and (out / "report.md").exists()
    printed = capsys.readouterr().out
    assert "| sft |" in printed and "{'loss'" not in printed  # a table, not per-step log dicts


def test_kl_probe_is_zero_against_itself(tmp_path):
    from conftest import build_model, build_tokenizer

    from promptkd_trainer.demo.analysis import kl_probe
    from promptkd_trainer.teacher import build_prompted_teacher

    tok = build_tokenizer(tmp_path)
    model = build_model("llama", tok, n_layer=1, hidden=32).eval()
    prompted = build_prompted_teacher(model, tok, 4, "Suppose you are a student.")
    kls = kl_probe(model, prompted, tok, ["the cat sat on", "a big red"], max_new_tokens=4, seed=0)
    # The student is the teacher itself: KL(teacher || student) is 0, while the prompt changes the distribution.
    assert kls["kl_teacher_student"] == pytest.approx(0.0, abs=1e-6)
    assert kls["kl_prompted_teacher_student"] > 1e-4


def test_cache_key_follows_settings_and_texts(tmp_path):
    from promptkd_trainer.demo.build import cache_path, make_data
    from promptkd_trainer.demo.defaults import DemoConfig

    cfg = DemoConfig(cache_dir=str(tmp_path), n_train=20, n_labelled=4, n_test=2)
    data = make_data(cfg)
    key = cache_path(cfg, data)
    assert key.parent == tmp_path and key == cache_path(DemoConfig(**cfg.to_dict()), make_data(cfg))
    # A model setting, or different training texts under the same settings, is a new entry; a distillation one is not.
    assert cache_path(DemoConfig(**{**cfg.to_dict(), "teacher_sft_steps": 1}), data) != key
    assert cache_path(cfg, {**data, "train": data["train"].select(range(10))}) != key
    assert cache_path(DemoConfig(**{**cfg.to_dict(), "steps": 1}), data) == key
