#!/usr/bin/env bash
# The test suite, as CI runs it: installs into .venv if needed, then runs pytest (distributed tests included)
# and builds the docs in strict mode. Offline: nothing is fetched from the Hugging Face Hub.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1
export TOKENIZERS_PARALLELISM=false
# The test models are tiny: one intra-op thread is as fast, and immune to OpenMP contention with the test's own
# subprocesses (two threads made small ops up to 90x slower under load on a 2-core machine).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# DeepSpeed JIT-builds its CPU communication op on first use (~30 s); keep it with the venv.
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.venv/torch_extensions}
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
.venv/bin/mkdocs build --strict --site-dir "${TMPDIR:-/tmp}/promptkd-site"
