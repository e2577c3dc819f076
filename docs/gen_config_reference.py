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
        "argument (batch size, gradient accumulation, scheduler, `deepspeed`, `gradient_checkpointing`, ...) is the "
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
            "## Defaults that differ from TRL's GKDConfig",
            "",
            "The fields shared with `GKDConfig` keep GKD's names and meanings; these keep the paper's defaults "
            "instead of GKD's, so set them to reproduce a GKD run:",
            "",
            *table,
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
