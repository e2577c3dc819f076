# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Griffe extension (mkdocs.yml, mkdocstrings `extensions`): HF doc-builder cross-references in docstrings.

The package's docstrings follow transformers / TRL and write references as ``[`~module.Name`]`` (shown as `Name`) or
``[`Name`]``. mkdocs does not know that syntax, so each one is rewritten before rendering:

- a name of this package, resolved from the docstring's scope, becomes an autorefs link ``[`Name`][full.path]``;
- a name of transformers / TRL / PEFT / accelerate / datasets becomes a link to its documentation page when it is in
  `EXTERNAL`, else plain code;
- anything else stays plain code, so that a stale reference never breaks the build silently: it renders as code.
"""

from __future__ import annotations

import re

import griffe


REF = re.compile(r"\[`(~?)([A-Za-z_][A-Za-z0-9_.]*)`\](?![\[(])")
PACKAGE = "promptkd_trainer"
HF_DOCS = "https://huggingface.co/docs"
EXTERNAL = {
    "transformers.Trainer": f"{HF_DOCS}/transformers/main_classes/trainer#transformers.Trainer",
    "transformers.TrainingArguments": f"{HF_DOCS}/transformers/main_classes/trainer#transformers.TrainingArguments",
    "transformers.GenerationConfig": (
        f"{HF_DOCS}/transformers/main_classes/text_generation#transformers.GenerationConfig"
    ),
    "trl.SFTConfig": f"{HF_DOCS}/trl/sft_trainer#trl.SFTConfig",
    "trl.SFTTrainer": f"{HF_DOCS}/trl/sft_trainer#trl.SFTTrainer",
    "trl.experimental.gkd.GKDTrainer": f"{HF_DOCS}/trl/gkd_trainer",
}


def _resolve(obj: griffe.Object, name: str) -> str | None:
    """Full path of `name` as seen from `obj`'s scope, if it belongs to this package."""
    if name.startswith(PACKAGE + "."):
        return name
    first, _, rest = name.partition(".")
    scope = obj
    while scope is not None:
        try:
            path = scope.resolve(first)
        except (griffe.NameResolutionError, AttributeError, KeyError):
            path = None
        if path is None and scope.is_class and first in scope.members:
            path = scope.members[first].path
        if path is not None:
            full = f"{path}.{rest}" if rest else path
            return full if full.startswith(PACKAGE + ".") else None
        scope = scope.parent
    return None


def rewrite(obj: griffe.Object, text: str) -> str:
    def replace(match: re.Match) -> str:
        short, name = match.group(1), match.group(2)
        label = name.rsplit(".", 1)[-1] if short else name
        if name.split(".")[0] in ("transformers", "trl", "peft", "accelerate", "datasets", "torch"):
            url = EXTERNAL.get(name)
            return f"[`{label}`]({url})" if url else f"`{label}`"
        target = _resolve(obj, name)
        return f"[`{label}`][{target}]" if target else f"`{label}`"

    return REF.sub(replace, text)


class HFCrossReferences(griffe.Extension):
    """Rewrite the cross-references of every docstring once the whole package is loaded (names resolve then)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        seen = set()
        stack = [pkg]
        while stack:
            obj = stack.pop()
            if obj.path in seen or obj.is_alias:
                continue
            seen.add(obj.path)
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj, obj.docstring.value)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
