"""A run's recorded history, checked the way Jepsen checks one: what the producer published (in order), what
DMS holds at the end (the emulator's own record: every version with the marker of the command that wrote it)
and every result event. Shared by the fault tests; a verdict lists what broke, not only counts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.commands.known_documents import MARKER_PREFIX, command_marker
from worker.contracts import Command, DeleteCommand
from worker.results.following import is_outcome
from worker.testing.emulator.store import DmsState, Version


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # command id -> error code of its failed outcome
    succeeded: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        failed = f", failed: {sorted(set(self.failed.values()))}" if self.failed else ""
        return f"{self.succeeded} succeeded, {len(self.failed)} failed{failed}; problems: {self.problems or 'none'}"


def _marker(version: Version) -> str | None:
    for text in (version.comment, version.description):
        if text and text.startswith(MARKER_PREFIX):
            return text
    return None


def check_history(
    commands: Sequence[Command], events: Sequence[dict[str, Any]], state: DmsState, zone: str = "default-zone"
) -> Verdict:
    """``commands`` in publish order. Checks: exactly one outcome per command (a repeat of the same outcome is
    allowed, two different ones are not); per document, DMS's versions are the succeeded uploads since its last
    succeeded delete, in publish order, one version each, labelled 1.0, 2.0, ...; a success event names the
    version DMS holds for it; no working copy is left behind."""
    verdict = Verdict()
    outcomes: dict[str, set[tuple[str, Any]]] = {}
    for event in (e for e in events if is_outcome(e)):
        data = event["data"]
        outcomes.setdefault(data["command_id"], set()).add((event["type"], data.get("version_label")))
        if event["type"].endswith(".failed"):
            verdict.failed[data["command_id"]] = data["error"]["code"]
    expected: dict[tuple[uuid.UUID, uuid.UUID], list[tuple[str, Command]]] = {}
    for command in commands:
        seen = outcomes.get(command.id, set())
        if not seen:
            verdict.problems.append(f"{command.id}: no outcome")
            continue
        if len(seen) > 1:
            verdict.problems.append(f"{command.id}: conflicting outcomes {sorted(seen)}")
        kind, _label = next(iter(seen))
        if not kind.endswith(".succeeded"):
            continue
        verdict.succeeded += 1
        history = expected.setdefault((command.data.tenant_id, command.data.document_id), [])
        if isinstance(command, DeleteCommand):
            history.clear()
        else:
            history.append((command_marker(command.source, command.id), command))
    repositories = {r.external_id: r for r in state.zone_repositories(zone)}
    for (tenant, document), history in expected.items():
        repo = repositories.get(str(tenant))
        series = repo.series_by_name.get(str(document)) if repo else None
        versions = series.versions if series else []
        stored = [_marker(v) for v in versions]
        wanted = [marker for marker, _ in history]
        if stored != wanted:
            verdict.problems.append(
                f"document {document}: versions by command {_short(stored)}, published order {_short(wanted)}"
            )
        labels = [v.label for v in versions]
        if labels != [f"{n}.0" for n in range(1, len(labels) + 1)]:
            verdict.problems.append(f"document {document}: labels {labels}")
        if series is not None and series.pwc is not None:
            verdict.problems.append(f"document {document}: a working copy is left behind")
        by_marker = {_marker(v): v.label for v in versions}
        for marker, command in history:
            reported = {label for kind, label in outcomes[command.id] if kind.endswith(".succeeded")}
            if marker in by_marker and reported != {by_marker[marker]}:
                verdict.problems.append(f"{command.id}: reported {reported}, DMS holds {by_marker[marker]}")
    return verdict


def _short(markers: Sequence[str | None]) -> list[str]:
    return [(m or "no marker")[-6:] for m in markers]
