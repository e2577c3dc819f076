# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The shipped launcher configs parse and are accepted by transformers/accelerate; the docs' generated pages are
up to date with the code."""

import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_launch_configs_are_valid():
    out = subprocess.run(
        [sys.executable, "docs/check_configs.py"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    checked = [line for line in out.stdout.splitlines() if line.startswith("ok ")]
    assert len(checked) >= 10, out.stdout


def test_configuration_reference_is_current():
    out = subprocess.run(
        [sys.executable, "docs/gen_config_reference.py", "--check"], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
