#!/usr/bin/env bash
# The main job: installs into .venv if needed, then runs the offline end-to-end PromptKD demo on CPU
# (pre-built Llama teacher and student, five methods under one protocol over several seeds, answer accuracy and
# ROUGE-L, PromptKD - on-policy with a paired 95 % interval; docs/demo.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1
export TOKENIZERS_PARALLELISM=false
exec .venv/bin/promptkd demo --output_dir "${OUTPUT_DIR:-outputs/demo}" "$@"
