#!/usr/bin/env bash
# The test suite, as CI runs it: installs into .venv if needed, then runs ruff and pytest (distributed tests included),
# then, without arguments, the core tests again against the lowest supported versions (constraints/min.txt, in
# .venv-min; MIN_VERSIONS=0 skips them), and builds the docs in strict mode. Offline: nothing is fetched from the
# Hugging Face Hub.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The tests that need no extra (no deepspeed, matplotlib, mkdocs or gguf): they cover the trainer, its losses,
# configs, data, checkpoints, evaluation, CLI, reliability and the TRL drop-ins.
MIN_TESTS=(
  tests/test_trainer.py tests/test_trainer_checks.py tests/test_divergences.py tests/test_config_validation.py
  tests/test_data.py tests/test_formats.py tests/test_checkpointing.py tests/test_evaluation.py
  tests/test_gkd_compat.py tests/test_distillation_compat.py tests/test_cli.py tests/test_examples.py
  tests/test_packaging.py tests/test_sampling.py tests/test_reliability.py
)
run_min=${MIN_VERSIONS:-$([[ $# -eq 0 ]] && echo 1 || echo 0)}
if [[ "$run_min" == 1 ]]; then
  bash scripts/setup.sh --min
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1
export TOKENIZERS_PARALLELISM=false
# The test models are tiny: one intra-op thread is as fast, and immune to OpenMP contention with the test's own
# subprocesses (two threads made small ops up to 90x slower under load on a 2-core machine).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# DeepSpeed JIT-builds its CPU communication op on first use (~30 s); keep it with the venv.
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.venv/torch_extensions}
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
if [[ "$run_min" == 1 ]]; then
  echo "== core tests against the minimum supported versions (constraints/min.txt, .venv-min) =="
  .venv-min/bin/python -m pytest "${MIN_TESTS[@]}"
fi
.venv/bin/mkdocs build --strict --site-dir "${TMPDIR:-/tmp}/promptkd-site"
