"""The package layout keeps to the data path: each stage imports only the stages before it (and the shared
top-level modules), never a later one; production code never imports ``worker.testing``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "worker"
SHARED = {"worker.settings", "worker.errors", "worker.contracts", "worker.tracing"}

# stage -> the other parts of the package it may import
ALLOWED: dict[str, set[str]] = {
    "worker.amqp": set(),
    "worker.dms": set(),
    "worker.commands": {"worker.dms"},
    "worker.results": {"worker.amqp"},
    "worker.intake": {"worker.amqp", "worker.commands", "worker.results", "worker.runtime.metrics"},
    # the operator console reads what the data path leaves: the DLQ, result events, the replicas' heartbeats
    "worker.console": {"worker.amqp", "worker.results", "worker.intake.ownership", "worker.runtime.serving"},
}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("worker.")}


def within(module: str, names: set[str]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in names)


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_a_stage_imports_only_earlier_stages(stage: str) -> None:
    folder = PACKAGE / stage.removeprefix("worker.")
    wrong = {
        f"{module_name(path)} imports {module}"
        for path in folder.rglob("*.py")
        for module in imported_modules(path)
        if not within(module, {stage} | SHARED | ALLOWED[stage])
    }
    assert not wrong


def test_production_code_never_imports_the_testing_package() -> None:
    offenders = {
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if "testing" not in path.relative_to(PACKAGE).parts[:1]
        and any(within(module, {"worker.testing"}) for module in imported_modules(path))
    }
    assert offenders == {"worker.cli"}  # lazily, for `python -m worker demo|emulator` only


def test_the_folder_listing_tells_the_stages_and_holds_no_benchmark() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert {"amqp", "intake", "commands", "dms", "results", "runtime", "testing", "console"} <= folders
    assert "bench" not in folders
