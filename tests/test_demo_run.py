# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`promptkd demo` end to end at toy scale: every stage runs, writes its outputs, caches its models and stays quiet."""

import json
import sys

import pytest

from promptkd_trainer.cli import main


TINY = [
    "--steps", "2", "--seeds", "10", "20", "--teacher_pretrain_steps", "2", "--student_pretrain_steps", "2",
    "--teacher_sft_steps", "2", "--student_sft_steps", "2", "--n_train", "48", "--n_labelled", "8", "--n_prompts",
    "16", "--n_test", "6", "--eval_samples", "2", "--batch_size", "4", "--max_new_tokens", "5", "--teacher_size",
    "tiny", "--student_size", "tiny", "--vocab_size", "600", "--kl_probe_prompts", "4", "--block_size", "32",
    "--exposure_bias_prompts", "4", "--extra_comparison_seeds", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    main(["demo", "--output_dir", str(root / "out"), "--cache_dir", str(root / "cache"), *TINY, "--workers", "2"])
    return root, json.loads((root / "out" / "results.json").read_text())


def test_demo_writes_results_report_and_plots(first_run):
    root, results = first_run
    out = root / "out"
    assert set(results["summary"]) == {"sft", "kd", "seqkd", "onpolicy", "promptkd"}
    for method, runs in results["runs"].items():
        # onpolicy and promptkd also ran on the extra comparison seed, max(seeds) + 10.
        assert [r["seed"] for r in runs] == ([10, 20, 30] if method in ("onpolicy", "promptkd") else [10, 20]), method
        for r in runs:
            for metric in ("rougeL_sampled", "answer_accuracy_sampled", "exact_match_greedy"):
                assert 0.0 <= r["scores"][metric] <= 100.0
            assert len(r["scores"]["per_prompt_rougeL_sampled"]) == 6
    # PromptKD logs every term; the regulariser weight decays linearly to 0 at the last step.
    history = [h for h in results["runs"]["promptkd"][0]["history"] if "loss/student" in h]
    assert history and {"loss/prompt", "loss/reg", "reg_weight"} <= set(history[0])
    assert history[-1]["reg_weight"] == 0.0
    report = (out / "report.md").read_text()
    assert "| promptkd |" in report and "![kl.png](kl.png)" in report and "What the prompt learned" in report
    assert "PromptKD - on-policy" in report and "Exposure bias" in report
    for name in ("losses.png", "scores.png", "kl.png"):
        assert (out / name).stat().st_size > 1000
    assert (out / "teacher_prompt" / "adapter_model.safetensors").exists()  # the first seed's trained prompt


def test_demo_checks_are_computed_from_the_runs(first_run):
    _, results = first_run
    checks, runs, ref = results["checks"], results["runs"], results["reference"]
    for metric, key in (("rougeL_sampled", "rougeL_sampled"), ("answer_accuracy_sampled", "answer_accuracy")):
        paired = [p["scores"][metric] - o["scores"][metric] for p, o in zip(runs["promptkd"], runs["onpolicy"])]
        stats = checks["promptkd_minus_onpolicy_paired"][key]
        assert stats["values"] == pytest.approx(paired)
        assert stats["ci95_low"] <= stats["mean"] <= stats["ci95_high"]
        assert len(paired) == 3 and stats["mean"] == pytest.approx(sum(paired) / 3)
    first_reg = [next(h for h in r["history"] if "loss/reg" in h)["loss/reg"] for r in runs["promptkd"]]
    assert checks["loss_reg_step1"]["values"] == pytest.approx(first_reg)
    assert checks["loss_reg_step1"]["mean"] == pytest.approx(sum(first_reg) / 3)
    assert checks["teacher_answer_accuracy_greedy"] == ref["teacher"]["answer_accuracy_greedy"]
    assert checks["student_init_answer_accuracy_greedy"] == ref["student_init"]["answer_accuracy_greedy"]

    def mean(method, metric):
        return sum(r["scores"][metric] for r in runs[method]) / len(runs[method])

    best = checks["best_baseline"]
    assert best == max(("kd", "seqkd", "onpolicy"), key=lambda m: mean(m, "answer_accuracy_greedy"))
    for metric, key in (("answer_accuracy_greedy", "best_baseline_answer_accuracy_gain_over_sft"),
                        ("answer_accuracy_sampled", "best_baseline_answer_accuracy_sampled_gain_over_sft")):
        assert checks[key] == pytest.approx(mean(best, metric) - mean("sft", metric))
    gain = mean(best, "rougeL_sampled") - mean("sft", "rougeL_sampled")
    assert checks["best_baseline_gain_over_sft"] == pytest.approx(gain)
    assert results["timings_s"]["total_s"] > 0


def test_demo_runs_the_same_in_one_process_as_in_worker_processes(first_run):
    """first_run ran its (method, seed) jobs in 2 spawned workers; in-process, one after the other, every run trains
    and scores the same, bit for bit."""
    root, parallel = first_run
    out = root / "sequential"
    main(["demo", "--output_dir", str(out), "--cache_dir", str(root / "cache"), *TINY, "--workers", "1",
          "--methods", "sft", "onpolicy", "promptkd"])
    sequential = json.loads((out / "results.json").read_text())
    timing = ("train_runtime", "train_samples_per_second", "train_steps_per_second")
    for method in ("sft", "onpolicy", "promptkd"):
        for seq, par in zip(sequential["runs"][method], parallel["runs"][method], strict=True):
            assert seq["scores"] == par["scores"], (method, seq["seed"])
            strip = [[{k: v for k, v in h.items() if k not in timing} for h in r["history"]] for r in (seq, par)]
            assert strip[0] == strip[1], (method, seq["seed"])
    assert sequential["exposure_bias"]["promptkd"] == parallel["exposure_bias"]["promptkd"]
    assert sequential["prompt"] == parallel["prompt"]


def test_a_run_that_fails_in_a_worker_stops_the_demo_with_its_error(first_run):
    from pathlib import Path

    from promptkd_trainer.demo.build import DemoModels, make_data
    from promptkd_trainer.demo.run import StepProgress, _run_jobs_in_processes, parse_args

    root, results = first_run
    cfg = parse_args([*TINY, "--output_dir", str(root / "failed")])
    data = make_data(cfg)
    models = DemoModels(Path(results["models"]["path"]), {}, cached=True)
    jobs = [(seed, "no_such_method") for seed in (10, 20, 30)]
    with pytest.raises(ValueError, match="Unknown method 'no_such_method'"):
        _run_jobs_in_processes(cfg, models, {"no_such_method": data["prompts"]}, data["test"], jobs, 2,
                               StepProgress(len(jobs), "failing", close_at_train_end=False))


def test_demo_exposure_bias_for_sft_onpolicy_promptkd(first_run):
    _, results = first_run
    exposure = results["exposure_bias"]
    assert set(exposure) == {"sft", "onpolicy", "promptkd"}
    for method, per_seed in exposure.items():
        assert [r["seed"] for r in per_seed] == [10, 20]
        for r in per_seed:
            assert len(r["exaccerr"]) == len(r["lengths"]) == len(r["regret_student_samples"])


def test_demo_prompt_analysis(first_run):
    from transformers import AutoTokenizer

    root, results = first_run
    tokenizer = AutoTokenizer.from_pretrained(results["models"]["path"] + "/teacher")
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
    assert results["models"]["cached"] and results["models"]["path"] == first["models"]["path"]
    assert results["reference"]["teacher"] == first["reference"]["teacher"]  # same cached teacher, same answers
    assert not list(out.glob("*.png")) and (out / "report.md").exists()
    printed = capsys.readouterr().out
    assert "| sft |" in printed and "{'loss'" not in printed  # a table, not per-step log dicts


def test_demo_ablations_are_paired_with_promptkd(first_run):
    root, _ = first_run
    out = root / "ablations"
    main(["demo", "--output_dir", str(out), "--cache_dir", str(root / "cache"), *TINY, "--methods", "promptkd",
          "--ablations", "--exposure_bias_prompts", "0"])
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert set(results["ablations"]) == {"promptkd_reg0", "promptkd_random_init", "promptkd_prompt_lr_x10",
                                         "promptkd_20_tokens"}
    for name, row in results["ablations"].items():
        pairs = zip(runs[name], runs["promptkd"])
        diffs = [a["scores"]["rougeL_sampled"] - p["scores"]["rougeL_sampled"] for a, p in pairs]
        assert row["rougeL_sampled"]["values"] == pytest.approx(diffs)
    # Each ablation changed its setting: no regulariser term, or a 20-token prompt.
    assert all(h.get("reg_weight", 0.0) == 0.0 for h in runs["promptkd_reg0"][0]["history"] if "loss/student" in h)
    assert "| promptkd_20_tokens |" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "bad, match",
    [({"kl_probe_prompts": 0}, "kl_probe_prompts"), ({"workers": -1}, "workers"), ({"seeds": [10, 10]}, "distinct"),
     ({"extra_comparison_seeds": -1}, "extra_comparison_seeds"),
     ({"teacher_preamble_fraction": 2.0}, "teacher_preamble_fraction")],
)  # fmt: skip
def test_demo_config_refuses_settings_that_would_fail_mid_run(bad, match):
    from promptkd_trainer.demo.defaults import DemoConfig

    with pytest.raises(ValueError, match=match):
        DemoConfig(**bad)


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
    from promptkd_trainer.demo.build import cache_path, make_data, model_key
    from promptkd_trainer.demo.defaults import DemoConfig

    cfg = DemoConfig(cache_dir=str(tmp_path), n_train=20, n_labelled=4, n_prompts=8, n_test=2)
    data = make_data(cfg)
    key = cache_path(cfg, data)
    assert key.parent == tmp_path and key.name == model_key(cfg, data)
    assert key == cache_path(DemoConfig(**cfg.to_dict()), make_data(cfg))
    # A model setting, or different training texts under the same settings, is a new entry; a distillation one is not.
    assert cache_path(DemoConfig(**{**cfg.to_dict(), "teacher_sft_steps": 1}), data) != key
    assert cache_path(cfg, {**data, "train": data["train"].select(range(10))}) != key
    assert cache_path(DemoConfig(**{**cfg.to_dict(), "steps": 1}), data) == key
    with pytest.raises(ValueError, match="n_labelled <= n_prompts"):
        make_data(DemoConfig(n_train=20, n_labelled=10, n_prompts=8, n_test=2))


def test_rebuild_models_writes_prebuilt_models_that_learned_and_are_used(tmp_path, monkeypatch):
    from promptkd_trainer.demo import build

    monkeypatch.setattr(build, "PREBUILT_DIR", tmp_path / "prebuilt")
    sizes = [*TINY, "--teacher_sft_steps", "30", "--methods", "sft", "--seeds", "10", "--exposure_bias_prompts", "0"]
    main(["demo", "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), "--rebuild_models",
          *sizes])
    info = json.loads((tmp_path / "prebuilt" / "info.json").read_text())
    for role in ("teacher", "student"):
        assert (tmp_path / "prebuilt" / role / "model.safetensors").exists()
        assert (tmp_path / "prebuilt" / role / "tokenizer.json").exists()
    # It learns: the teacher's SFT loss falls (30 steps on the task rows), and pretraining's too.
    for stage in ("teacher SFT", "teacher pretraining"):
        losses = info["losses"][stage]
        assert losses[-1] < losses[0], (stage, losses)
    assert not (tmp_path / "cache").exists()  # written to the pre-built folder, not to the cache
    # A run with the same settings uses them, without building anything.
    main(["demo", "--output_dir", str(tmp_path / "out2"), "--cache_dir", str(tmp_path / "cache"), *sizes])
    results = json.loads((tmp_path / "out2" / "results.json").read_text())
    assert results["models"]["source"] == "prebuilt" and not (tmp_path / "cache").exists()


def test_the_shipped_models_match_the_default_settings():
    """A change to the tasks, the presets or a model setting must come with `promptkd demo --rebuild_models`:
    otherwise the default demo would ignore the shipped models and build its own (about 20 minutes)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptkd_trainer.demo.build import PREBUILT_DIR, make_data, model_key
    from promptkd_trainer.demo.defaults import DemoConfig

    cfg = DemoConfig()
    info = json.loads((PREBUILT_DIR / "info.json").read_text())
    assert info["key"] == model_key(cfg, make_data(cfg))
    tokenizer = AutoTokenizer.from_pretrained(PREBUILT_DIR / "teacher")
    for role in ("teacher", "student"):
        model = AutoModelForCausalLM.from_pretrained(PREBUILT_DIR / role)
        assert model.config.vocab_size == len(tokenizer) == info["vocab_size"]
        assert sum(p.numel() for p in model.parameters()) == info[f"{role}_parameters"]
