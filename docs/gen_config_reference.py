# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Generate docs/configuration.md from the fields of `PromptKDConfig`, so the reference cannot drift from the code.

    python docs/gen_config_reference.py           # (re)write docs/configuration.md
    python docs/gen_config_reference.py --check   # exit 1 if docs/configuration.md is stale

The mkdocs hook `docs/hooks.py` runs `write()` before every build. Only the fields that `PromptKDConfig` itself
declares are listed (its own fields and the defaults it overrides); everything else is `trl.SFTConfig` /
`transformers.TrainingArguments`. Sections come from the `> ...` headings of the class docstring.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import re
import sys
import types
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = ROOT / "promptkd_trainer"
OUTPUT = Path(__file__).resolve().parent / "configuration.md"
OVERRIDES_SECTION = "Defaults overridden from SFTConfig / TrainingArguments"

# What differs from TRL's DistillationTrainer on purpose; tests/test_distillation_compat.py ports TRL's tests and
# names each of these `test_<TRL test>_by_design`.
DISTILLATION_DIFFERENCES = """\
## Differences from TRL's DistillationTrainer

`PromptKDTrainer(model, teacher_model, args, train_dataset, eval_dataset, processing_class, callbacks, optimizers,
quantization_config=..., peft_config=..., tools=...)` takes `DistillationTrainer`'s arguments, and `PromptKDConfig`
every `DistillationConfig` field (TRL 1.16). TRL's own DistillationTrainer tests are ported to tiny local models in
`tests/test_distillation_compat.py`; TRL's `trl/scripts/distillation.py` (what `trl distillation` runs) trains with
only its imports changed, from the command line and from a `trl distillation --config` YAML, and `promptkd train
--config` takes the same YAML. Of TRL's 58 test functions, 39 pass as ported, 14 assert a difference by design
and 5 are skipped (QLoRA and DoRA need bitsandbytes and CUDA, fp16 an accelerator, one a Hub model with custom code,
one spawned DataLoader workers beyond the CPU test budget). What differs by design:

- **Objective.** The target is the *prompted* teacher, whose soft prompt trains every step; with
  `num_virtual_tokens=0` the student term is DistillationTrainer's objective (tested against the same full-logit
  reference as TRL's, for `beta` 0, 0.25 and 1).
- **`temperature`** is the sampling temperature only (as in GKD); `loss_temperature` divides the loss's logits.
- **Refused, with the reason:** `use_vllm=True` (vLLM student sampling is not implemented: it would need a GPU run to
  check; the `vllm_*` fields are accepted and warn that they are unused), `tools` and `max_tool_calling_iterations`
  (PromptKD samples single-turn completions), prompt-learning adapters on the student (the soft prompt is the
  teacher's), processors and vision-language models (text only).
- **Losses on logits**, chunked over token positions, not on hidden states times `lm_head`: logit scaling,
  soft-capping and an `lm_head` bias come with the model's forward. A LoRA on `lm_head` is refused (by `SFTTrainer`).
- **Datasets are tokenized and checked when the trainer is built**, so `trainer.train_dataset` is the prepared
  dataset; with streamed datasets `dispatch_batches` and `dataloader_num_workers` are left as set (each step's
  batches are sampled after they are fetched). `max_length` (512, which DistillationConfig does not have) caps
  prompt + completion.
- **Evaluation.** A prompt-only eval set (DistillationTrainer's layout) is measured on completions the student
  samples for it, seeded per batch (the same student gives the same `eval_loss`; the training random state is not
  touched); a set with completions on those completions (GKD's evaluation); `eval_on_policy=True` samples for every
  set. A set that mixes both is refused, at construction for a `Dataset` and at the first offending batch for a
  streamed one. `evaluate(eval_dataset=...)` takes raw sets of every type.
- **Logged metrics**: `loss/student`, `loss/prompt`, `loss/reg`, `reg_weight`, `completion_length`,
  `on_policy_fraction` (and `eval_completion_length` for sampled evaluations), not TRL's `entropy` and
  `completions/*`. `log_completions` writes the same per-step parquet files as TRL.
- **Defaults** (table above): the paper's `learning_rate`, `max_new_tokens`, `max_length`; `beta` 1.0,
  `disable_dropout` False and `shuffle_dataset` True as in DistillationConfig.
- **`promptkd train`** takes TRL's `ScriptArguments`, `ModelConfig` and config keys, not `DatasetMixtureConfig`'s
  `datasets:` list (an unknown key is an error): give it `dataset_name`.
"""


def load_config_class():
    """Import `PromptKDConfig`; fall back to importing the module file alone if the package `__init__` is broken."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        module = importlib.import_module("promptkd_trainer.promptkd_config")
        return module.PromptKDConfig
    except Exception as first_error:  # noqa: BLE001 - e.g. another module of the package is being edited
        for name in [n for n in sys.modules if n == "promptkd_trainer" or n.startswith("promptkd_trainer.")]:
            del sys.modules[name]
        # A bare package object: its submodules import by path, without running promptkd_trainer/__init__.py.
        package = types.ModuleType("promptkd_trainer")
        package.__path__ = [str(PACKAGE_DIR)]
        sys.modules["promptkd_trainer"] = package
        spec = importlib.util.spec_from_file_location(
            "promptkd_trainer.promptkd_config", PACKAGE_DIR / "promptkd_config.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as second_error:
            raise RuntimeError(
                f"Cannot import PromptKDConfig: package import failed ({first_error!r}), and the module alone too "
                f"({second_error!r})."
            ) from second_error
        return module.PromptKDConfig


def _sections(docstring: str) -> dict[str, str]:
    """Map each parameter documented in the class docstring to its `> ...` section heading."""
    sections, current = {}, None
    for line in (docstring or "").splitlines():
        stripped = line.strip()
        if stripped.startswith("> "):
            current = stripped[2:].strip()
            continue
        match = re.match(r"^\s{8}(\w+) \(", line)
        if match and current:
            sections[match.group(1)] = current
    return sections


def _cell(text: str) -> str:
    """One table cell: whitespace collapsed, pipes escaped outside code spans (Python-Markdown keeps them inside)."""
    parts = " ".join(str(text).split()).split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts))


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    return f"`{value!r}`"


def _gkd_table(docstring: str) -> list[str]:
    """The docstring's table of defaults that differ from TRL's GKDConfig, and the paragraph after it."""
    lines = inspect.cleandoc(docstring or "").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| field |")), None)
    if start is None:
        return []
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    after = end + 1
    paragraph = []
    while after < len(lines) and lines[after].strip():
        paragraph.append(lines[after].strip())
        after += 1
    return lines[start:end] + ([""] + [" ".join(paragraph)] if paragraph else [])


def render(config_cls) -> str:
    own = list(config_cls.__dict__.get("__annotations__", {}))
    all_fields = config_cls.__dataclass_fields__
    names = [n for n in own if n in all_fields and all_fields[n]._field_type is dataclasses._FIELD]
    sections = _sections(config_cls.__doc__)
    parent = config_cls.__mro__[1]
    parent_fields = getattr(parent, "__dataclass_fields__", {})

    grouped: dict[str, list[str]] = {}
    for name in names:
        section = sections.get(name, OVERRIDES_SECTION if name in parent_fields else "Other parameters")
        grouped.setdefault(section, []).append(name)
    order = [OVERRIDES_SECTION] + [s for s in dict.fromkeys(sections.values())] + ["Other parameters"]

    out = [
        "<!-- Generated by docs/gen_config_reference.py from promptkd_trainer/promptkd_config.py. Do not edit: "
        "the docs build regenerates it. -->",
        "",
        "# Configuration reference",
        "",
        f"`{config_cls.__name__}` subclasses `trl.{parent.__name__}` (itself a `transformers.TrainingArguments`). "
        "This page lists the fields it declares: the PromptKD fields and the defaults it overrides. Every other "
        "argument (batch size, gradient accumulation, scheduler, `deepspeed`, ...) is the "
        "parent's; see the TRL and transformers documentation.",
        "",
        "Scripts that parse the config with `transformers.HfArgumentParser` or `trl.TrlParser` take the field names "
        "as command-line flags (`--num_virtual_tokens 7`) and as keys of a YAML config file (see [CLI](cli.md)). "
        "`__post_init__` validates the values and raises `ValueError` naming the allowed range.",
        "",
        "The columns come from the dataclass fields: `type` is the annotation, `help` the field's help text; "
        "\"official code\" is gmkim-ai/PromptKD at commit 383182f.",
    ]
    table = _gkd_table(config_cls.__doc__)
    if table:
        out += [
            "",
            "## Defaults that differ from TRL's GKDConfig and DistillationConfig",
            "",
            "The fields shared with `GKDConfig` and `DistillationConfig` keep TRL's names and meanings; these keep "
            "the paper's defaults instead of TRL's, so set them to reproduce a TRL run:",
            "",
            *table,
            "",
            *DISTILLATION_DIFFERENCES.rstrip("\n").splitlines(),
        ]
    for section in order:
        if section not in grouped:
            continue
        heading = f"## {section[0].upper()}{section[1:]}"
        out += ["", heading, "", "| name | type | default | help |", "|---|---|---|---|"]
        for name in grouped[section]:
            field = all_fields[name]
            help_text = field.metadata.get("help", "")
            if name in parent_fields:
                parent_default = _default(parent_fields[name])
                if parent_default != _default(field):
                    help_text += f" (Parent default: {parent_default.strip('`')}.)"
            out.append(f"| `{name}` | {_cell(f'`{field.type}`')} | {_cell(_default(field))} | {_cell(help_text)} |")
    return "\n".join(out) + "\n"


def write(path: Path = OUTPUT) -> bool:
    """Regenerate `path`; return True if its content changed (unchanged files are not touched, for `mkdocs serve`)."""
    text = render(load_config_class())
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def main(argv: list[str]) -> int:
    if "--check" in argv:
        text = render(load_config_class())
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run python docs/gen_config_reference.py", file=sys.stderr)
            return 1
        return 0
    changed = write()
    print(f"{OUTPUT.relative_to(ROOT)} {'written' if changed else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
