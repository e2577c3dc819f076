# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`promptkd demo` end to end at toy scale: every stage runs and writes its table, results, report and plots."""

import json

from promptkd_trainer.cli import main


def test_demo_writes_results_report_and_plots(tmp_path):
    out = tmp_path / "demo"
    main([
        "demo", "--output-dir", str(out), "--steps", "2", "--seeds", "10", "20", "--teacher-steps", "4",
        "--student-steps", "2", "--n-train", "64", "--n-test", "8", "--batch-size", "4", "--max-new-tokens", "6",
        "--teacher-size", "tiny", "--student-size", "tiny",
    ])
    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]) == {"sft", "kd", "seqkd", "onpolicy", "promptkd"}
    for method, runs in results["runs"].items():
        assert [r["seed"] for r in runs] == [10, 20], method
        for r in runs:
            assert 0.0 <= r["rougeL_sampled"] <= 100.0 and 0.0 <= r["exact_match_greedy"] <= 100.0
    # PromptKD logs every term; the regulariser weight decays linearly to 0 at the last step.
    history = [h for h in results["histories"]["promptkd"] if "loss/student" in h]
    assert history and {"loss/prompt", "loss/reg", "reg_weight"} <= set(history[0])
    assert history[-1]["reg_weight"] == 0.0
    report = (out / "report.md").read_text()
    assert "| promptkd |" in report and "![rougeL.png](rougeL.png)" in report
    for name in ("losses.png", "rougeL.png"):
        assert (out / name).stat().st_size > 1000
    assert (out / "teacher_prompt" / "adapter_model.safetensors").exists()
