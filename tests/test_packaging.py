# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Packaging: the license ships, and the declared dependencies are exactly what the package imports."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "promptkd_trainer"
# Imported only on an optional path, each declared as an extra: `deepspeed` (ZeRO), `matplotlib` (demo plots).
OPTIONAL = {"deepspeed": "deepspeed", "matplotlib": "plots"}
# Imported only when the user names that logger in `report_to` (log_completions), which transformers' own
# integration callbacks already require installed: not a dependency of this package, nor an extra.
REPORTERS = {"wandb", "trackio"}


def pyproject():
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")


def imported_distributions() -> dict[str, set[str]]:
    """Distribution name -> the package files that import it (absolute imports of third-party modules)."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    dists = packages_distributions()
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in stdlib or top == "promptkd_trainer":
                    continue
                for dist in dists.get(top, [top]):
                    found.setdefault(dist.lower().replace("_", "-"), set()).add(path.relative_to(ROOT).as_posix())
    return found


def test_license_file_is_the_apache_2_text():
    text = (ROOT / "LICENSE").read_text()
    assert pyproject()["project"]["license"] == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "LICENSE" in pyproject()["project"]["license-files"]


def test_core_dependencies_are_what_the_package_imports():
    project = pyproject()["project"]
    declared = {requirement_name(r) for r in project["dependencies"]}
    imported = imported_distributions()
    needed = {d for d in imported if d not in OPTIONAL and d not in REPORTERS}
    missing = needed - declared
    assert not missing, {d: sorted(imported[d]) for d in missing}
    unused = declared - set(imported)
    assert not unused, f"declared but never imported by the package: {sorted(unused)}"
    assert "evaluate" not in declared and "pyyaml" not in declared
    for dist, extra in OPTIONAL.items():
        assert dist in {requirement_name(r) for r in project["optional-dependencies"][extra]}


def test_tests_get_pyyaml_from_the_test_extra():
    test_extra = {requirement_name(r) for r in pyproject()["project"]["optional-dependencies"]["test"]}
    assert "pyyaml" in test_extra


def test_pyproject_has_lower_bounds_only_and_constraints_pin_every_dependency():
    project = pyproject()["project"]
    requirements = project["dependencies"] + [r for reqs in project["optional-dependencies"].values() for r in reqs]
    for req in requirements:
        assert not re.search(r"==|<|~=|!=", req), req
    pins = {}
    for line in (ROOT / "constraints" / "ci.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[requirement_name(name)] = version
    assert all(pins.values()), pins
    core = {requirement_name(r) for r in project["dependencies"]}
    assert core <= set(pins), core - set(pins)


def test_lower_bounds_are_the_pins_of_the_minimum_set():
    """Every lower bound in pyproject.toml is the version that constraints/min.txt pins and scripts/test.sh runs the
    core tests against: a floor that was never run is not a supported version."""
    from packaging.version import Version

    project = pyproject()["project"]
    pins = {}
    for line in (ROOT / "constraints" / "min.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[requirement_name(name)] = Version(version)
    extras = [r for reqs in project["optional-dependencies"].values() for r in reqs]
    requirements = project["dependencies"] + [r for r in extras if requirement_name(r) in pins]
    assert {requirement_name(r) for r in project["dependencies"]} <= set(pins)
    for req in requirements:
        name = requirement_name(req)
        floor = re.search(r">=\s*([\w.]+)", req)
        assert floor, f"{req}: no lower bound"
        assert Version(floor.group(1)) == pins[name], f"{req} but constraints/min.txt pins {name}=={pins[name]}"
