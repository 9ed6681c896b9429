"""Saves and loads the emulator's metadata as one JSON file beside the content directory."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from worker.testing.emulator.store import DmsState, Repository, Version, VersionSeries

STATE_FILE = "state.json"


def save(state: DmsState, directory: Path) -> None:
    payload = [_repo_to_json(repo) for repo in state.repositories.values()]
    tmp = directory / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, directory / STATE_FILE)


def load(state: DmsState, directory: Path) -> None:
    path = directory / STATE_FILE
    if not path.exists():
        return
    for raw in json.loads(path.read_text()):
        repo = _repo_from_json(raw)
        state.repositories[repo.id] = repo


def _repo_to_json(repo: Repository) -> dict[str, Any]:
    fields = {f.name: getattr(repo, f.name) for f in dataclasses.fields(repo)}
    fields.pop("objects")
    fields["series_by_name"] = [dataclasses.asdict(s) for s in repo.series_by_name.values()]
    fields["recycle_bin"] = [dataclasses.asdict(s) for s in repo.recycle_bin]
    return fields


def _series_from_json(raw: dict[str, Any]) -> VersionSeries:
    pwc = raw.get("pwc")
    return VersionSeries(
        series_id=raw["series_id"],
        name=raw["name"],
        versions=[Version(**v) for v in raw["versions"]],
        pwc=Version(**pwc) if pwc else None,
        checked_out_by=raw.get("checked_out_by"),
    )


def _repo_from_json(raw: dict[str, Any]) -> Repository:
    series_list = [_series_from_json(s) for s in raw.pop("series_by_name")]
    recycle = [_series_from_json(s) for s in raw.pop("recycle_bin")]
    repo = Repository(**raw, recycle_bin=recycle)
    for series in series_list:
        repo.series_by_name[series.name] = series
        for version in [*series.versions, *([series.pwc] if series.pwc else [])]:
            repo.objects[version.object_id] = (series, version)
    return repo
