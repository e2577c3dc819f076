#!/usr/bin/env bash
# The test suite, as CI runs it: installs into .venv if needed, then runs pytest (distributed tests included)
# and builds the docs in strict mode. Offline: nothing is fetched from the Hugging Face Hub.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1
export TOKENIZERS_PARALLELISM=false
# DeepSpeed JIT-builds its CPU communication op on first use (~30 s); keep it with the venv.
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.venv/torch_extensions}
.venv/bin/python -m pytest "$@"
.venv/bin/mkdocs build --strict --site-dir "${TMPDIR:-/tmp}/promptkd-site"
