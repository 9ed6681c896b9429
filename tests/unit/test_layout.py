"""The package layout keeps to the data path. Every module of ``worker/`` belongs to one part (a top-level
module, or a folder with everything under it), and each part imports only the parts ``LAYERS`` lets it: the
ones before it on the data path, never a later one. No module is exempt; the table is the whole rule, it
has no cycles, and it names every part there is."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "worker"

# The leaves: every part may use them, and they use no other part. ``worker.amqp.names`` spells every name put
# on the wire (headers, derived queue names; arq's constants module): a part of its own inside ``amqp/``.
LEAVES = {"worker.errors", "worker.contracts", "worker.backoff", "worker.tasks", "worker.amqp.names"}

# part -> the other parts it may import (besides the leaves and itself). Read it top down as the data path.
LAYERS: dict[str, set[str]] = {
    "worker": set(),  # the package's own __init__
    "worker.tracing": set(),  # spans and W3C trace context for every stage
    "worker.dms": {"worker.tracing"},  # SAP DMS over HTTP; knows nothing of RabbitMQ or commands
    "worker.settings": {"worker.dms"},  # destinations in the settings are validated by the DMS stage's model
    "worker.amqp": {"worker.settings"},  # RabbitMQ itself: topology, connections, confirms
    "worker.commands": {"worker.dms", "worker.settings"},  # one command: parse, validate, handle
    "worker.results": {"worker.amqp", "worker.settings", "worker.tracing"},  # how a command ends
    "worker.intake": {"worker.amqp", "worker.commands", "worker.results", "worker.settings", "worker.tracing"},
    "worker.producer": {"worker.amqp", "worker.results", "worker.settings", "worker.tracing"},  # for upstream
    "worker.contract_files": {"worker.amqp", "worker.settings"},  # the files generated from the code
    # The operator console reads what the data path leaves: the DLQ, result events, the replicas' heartbeats.
    "worker.console": {"worker.amqp", "worker.intake", "worker.results", "worker.runtime", "worker.settings"},
    # An operator's procedure after the data path: empty and delete an offboarded tenant's repository.
    "worker.offboarding": {"worker.amqp", "worker.dms", "worker.results", "worker.settings"},
    "worker.runtime": {
        "worker.amqp",
        "worker.commands",
        "worker.dms",
        "worker.intake",
        "worker.results",
        "worker.settings",
        "worker.tracing",
    },
    "worker.cli_errors": {"worker.amqp", "worker.commands", "worker.producer", "worker.settings"},
    # The entry point: everything; worker.testing only inside the `demo` and `emulator` commands (checked below).
    "worker.cli": {
        "worker.amqp",
        "worker.cli_errors",
        "worker.console",
        "worker.contract_files",
        "worker.dms",  # tenant offboard builds its own DMS client (an operator's command, not the data path)
        "worker.offboarding",
        "worker.producer",
        "worker.results",
        "worker.runtime",
        "worker.settings",
        "worker.testing",
    },
    "worker.__main__": {"worker.cli"},
    # For tests and local runs: the emulator and the demo, which drives a real worker.
    "worker.testing": {
        "worker.amqp",
        "worker.dms",
        "worker.producer",
        "worker.runtime",
        "worker.settings",
    },
} | {leaf: set() for leaf in LEAVES}


def imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name == "worker" or name.startswith("worker.")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str | None:
    """The most specific part of ``LAYERS`` a module (or an imported name) belongs to."""
    for part in sorted(LAYERS, key=len, reverse=True):
        if module == part or module.startswith(part + "."):
            return part
    return None


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_part_and_the_table_has_no_cycles() -> None:
    assert {module_name(path) for path in MODULES if part_of(module_name(path)) is None} == set()
    assert {part for part in LAYERS if not any(part_of(module_name(p)) == part for p in MODULES)} == set()
    graphlib.TopologicalSorter(LAYERS).prepare()  # raises CycleError
    assert all(allowed <= LAYERS.keys() for allowed in LAYERS.values())


@pytest.mark.parametrize("path", MODULES, ids=lambda path: module_name(path))
def test_a_module_imports_only_the_parts_before_its_own(path: Path) -> None:
    own = part_of(module_name(path))
    assert own is not None
    wrong = set()
    for imported in imports(ast.parse(path.read_text())):
        part = part_of(imported)
        if imported == "worker":  # `from worker import tracing`: the names imported are checked
            continue
        if part is None or part not in {own} | LEAVES | LAYERS[own]:
            wrong.add(imported)
    assert not wrong


def test_production_code_reaches_the_testing_package_only_inside_the_cli_commands_that_run_it() -> None:
    """The production image leaves ``worker/testing`` out: no module may import it when loaded."""
    for path in MODULES:
        if part_of(module_name(path)) == "worker.testing":
            continue
        tree = ast.parse(path.read_text())
        top_level = imports(
            ast.Module(body=[n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)], type_ignores=[])
        )
        assert not any(part_of(name) == "worker.testing" for name in top_level), module_name(path)
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        if any(part_of(name) == "worker.testing" for f in functions for name in imports(f)):
            assert "worker.testing" in LAYERS[part_of(module_name(path)) or ""]


def test_the_folder_listing_tells_the_stages_and_holds_no_benchmark() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert {"amqp", "intake", "commands", "dms", "results", "offboarding", "runtime", "testing", "console"} <= folders
    assert "bench" not in folders
