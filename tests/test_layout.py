"""The package's import rules, read from the source (ast), so the layout cannot rot.

docs/architecture.md explains them: steps -> parts -> records -> core, one way."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cxml"

STEPS = {
    "cxml.train",
    "cxml.evaluate",
    "cxml.run",
    "cxml.init",
    "cxml.redeploy",
    "cxml.gate.step",
    "cxml.report.step",
    "cxml.serve.step",
    "cxml.repro",
    "cxml.host",
}
"""Modules whose main() is a step; only the front doors (cli, run, __main__) import them."""

FRONT_DOORS = {"cxml.cli", "cxml.run", "cxml.action", "cxml.__main__"}

HEAVY = ("torch", "torchvision")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[tuple[str, bool]]:
    """(imported module, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top_level
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                # `from cxml.core import files` imports the module cxml.core.files
                candidate = f"{node.module}.{alias.name}"
                name = candidate if _is_module(candidate) else node.module
                yield name, id(node) in top_level


def _is_module(name: str) -> bool:
    if not name.startswith("cxml."):
        return False
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative).is_dir()


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def cxml_imports(module: str) -> set[str]:
    return {name for name, _ in imports_of(MODULES[module]) if name.startswith("cxml")}


def in_part(module: str, part: str) -> bool:
    return module == f"cxml.{part}" or module.startswith(f"cxml.{part}.")


def test_the_package_has_the_documented_parts() -> None:
    for part in ("core", "records", "ml", "tracking", "gate", "report", "deploy", "serve"):
        assert (PACKAGE / part / "__init__.py").exists(), part
    for step in STEPS:
        assert step in MODULES, f"step module {step} is missing"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if in_part(m, "core")))
def test_core_imports_nothing_else_of_cxml(module: str) -> None:
    others = {name for name in cxml_imports(module) if not in_part(name, "core") and name != "cxml"}
    assert not others, f"{module} (core) imports {sorted(others)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if in_part(m, "records")))
def test_records_import_only_core(module: str) -> None:
    others = {
        name
        for name in cxml_imports(module)
        if not (in_part(name, "core") or in_part(name, "records") or name == "cxml")
    }
    assert not others, f"{module} (records) imports {sorted(others)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_nothing_imports_a_step(module: str) -> None:
    if module in FRONT_DOORS or module.endswith(".__main__"):
        return
    steps = cxml_imports(module) & STEPS
    assert not steps, f"{module} imports the step(s) {sorted(steps)}; move what it needs to a part"


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if any(in_part(m, p) for p in ("report", "deploy", "gate")))
)
def test_report_deploy_and_gate_never_import_ml_or_torch(module: str) -> None:
    names = {name for name, _ in imports_of(MODULES[module])}
    ml = {n for n in names if in_part(n, "ml")}
    torch = {n for n in names if n.split(".")[0] in HEAVY}
    assert not ml and not torch, f"{module} imports {sorted(ml | torch)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if in_part(m, "deploy.host")))
def test_the_host_side_imports_only_core_records_and_serve(module: str) -> None:
    allowed = ("core", "records", "serve", "deploy.host")
    others = {
        name
        for name in cxml_imports(module)
        if name != "cxml" and not any(in_part(name, part) for part in allowed)
    }
    assert not others, f"{module} (host side) imports {sorted(others)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_ml_imports_torch_at_module_level(module: str) -> None:
    if in_part(module, "ml"):
        return
    top = {name for name, top_level in imports_of(MODULES[module]) if top_level}
    heavy = {name for name in top if name.split(".")[0] in (*HEAVY, "mlflow", "dvc", "sklearn")}
    assert not heavy, f"{module} imports {sorted(heavy)} at module level; import it where used"


def test_a_broken_rule_is_caught(tmp_path: Path) -> None:
    """The reader must see through `from cxml.x import y` and lazy imports alike."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from cxml.core import files\ndef f():\n    import torch\n    from cxml.ml import models\n",
        encoding="utf-8",
    )
    found = dict(imports_of(sample))
    assert found == {"cxml.core.files": True, "torch": False, "cxml.ml.models": False}
