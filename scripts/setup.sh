#!/usr/bin/env bash
# Create .venv and install the project with its tested dependency set. Idempotent: re-runs only when
# pyproject.toml or constraints/ci.txt changed. torch is installed first, on its own, so that pip takes the CPU
# wheel (`torch==2.13.0`) instead of resolving a multi-GB CUDA build for the other packages (stack.md §1).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.promptkd-installed"
want=$(cat pyproject.toml constraints/ci.txt | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -c constraints/ci.txt -e ".[test,deepspeed,plots,docs]"
"$VENV/bin/python" -c "import torch; assert '+cpu' in torch.__version__ or not torch.cuda.is_available(), torch.__version__"
echo "$want" > "$stamp"
