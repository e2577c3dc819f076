# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""mkdocs hooks (registered under `hooks:` in mkdocs.yml): regenerate docs/configuration.md before every build.

If the config class cannot be imported, the page is left as it is and a warning is logged, which fails
`mkdocs build --strict`: a stale reference never ships silently.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path


log = logging.getLogger("mkdocs.hooks.promptkd")
_GENERATOR = Path(__file__).resolve().parent / "gen_config_reference.py"


def on_pre_build(config, **kwargs) -> None:
    # Offline-safe: nothing here needs the Hub, and importing trl should not print its experimental warning.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        spec = importlib.util.spec_from_file_location("promptkd_docs_gen_config_reference", _GENERATOR)
        generator = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(generator)
        target = Path(config["docs_dir"]) / "configuration.md"
        if generator.write(target):
            log.info("Regenerated %s from PromptKDConfig", target.name)
    except Exception as err:  # noqa: BLE001 - reported as a warning so that --strict fails
        log.warning("Could not regenerate configuration.md from PromptKDConfig: %r", err)
