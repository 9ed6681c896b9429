"""Service bindings as SAP BTP hands them to an app: ``VCAP_SERVICES`` (Cloud Foundry) and a
servicebinding.io directory under ``SERVICE_BINDING_ROOT`` (Kyma, as the SAP BTP service operator writes it).

Finds the DMS binding (label/type ``sdm``) and the Destination service binding (``destination``) and turns
their credentials into ``Destination`` objects, whose secrets stay ``SecretStr``. The values come in through
the settings; this module reads the binding files, never the process environment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from worker.dms.destinations import Destination

log = structlog.get_logger(__name__)

DMS_LABEL = "sdm"
DESTINATION_LABEL = "destination"

# What ``discover`` has said in this process: each finding once, not again on every try of a start-up that
# waits for the broker (each try discovers afresh); a binding that appears later is said when it does.
_reported: set[tuple[bool, bool]] = set()


@dataclass(frozen=True)
class Bindings:
    dms: Destination | None = None
    destination_service: Destination | None = None

    def __repr__(self) -> str:  # the destinations hide their secrets; say only what was found
        return f"Bindings(dms={self.dms is not None}, destination_service={self.destination_service is not None})"


def _destination(credentials: Any, name: str, where: str) -> Destination | None:
    if not isinstance(credentials, dict):
        return None
    try:
        return Destination.model_validate({**credentials, "name": name})
    except ValidationError as exc:
        # Only the field locations: the input holds the secrets.
        fields = sorted({".".join(str(p) for p in e["loc"]) or "binding" for e in exc.errors()})
        log.warning("service_binding_unusable", binding=name, source=where, fields=fields)
        return None


def from_vcap_services(text: str) -> Bindings:
    """The first usable ``sdm`` and ``destination`` entries of Cloud Foundry's ``VCAP_SERVICES``."""
    try:
        services = json.loads(text)
    except ValueError:
        log.warning("vcap_services_unreadable")
        return Bindings()
    if not isinstance(services, dict):
        return Bindings()

    def first(label: str) -> Destination | None:
        entries = [e for e in services.get(label) or [] if isinstance(e, dict)]
        # Services bound through a user-provided service or another label carry the label in the entry.
        entries += [
            e
            for key, group in services.items()
            if key != label and isinstance(group, list)
            for e in group
            if isinstance(e, dict) and e.get("label") == label
        ]
        for entry in entries:
            found = _destination(entry.get("credentials"), str(entry.get("name") or label), "VCAP_SERVICES")
            if found is not None:
                return found
        return None

    return Bindings(dms=first(DMS_LABEL), destination_service=first(DESTINATION_LABEL))


def _read_binding_directory(directory: Path) -> dict[str, Any]:
    """One file per key; values the operator marks as JSON (``.metadata``), or that look like it, are parsed."""
    json_keys: set[str] = set()
    metadata = directory / ".metadata"
    if metadata.is_file():
        try:
            described = json.loads(metadata.read_text())
            for prop in [*described.get("credentialProperties", []), *described.get("metaDataProperties", [])]:
                if prop.get("format") == "json":
                    json_keys.add(str(prop.get("name")))
        except (ValueError, AttributeError, TypeError):
            pass
    values: dict[str, Any] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        text = path.read_text().strip()
        if path.name in json_keys or text.startswith("{"):
            try:
                values[path.name] = json.loads(text)
                continue
            except ValueError:
                pass
        values[path.name] = text
    return values


def from_binding_root(root: Path) -> Bindings:
    """The first usable ``sdm`` and ``destination`` bindings under a servicebinding.io root (by directory name)."""
    if not root.is_dir():
        log.warning("service_binding_root_missing", path=str(root))
        return Bindings()
    found: dict[str, Destination] = {}
    for directory in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        values = _read_binding_directory(directory)
        kind = str(values.get("type") or values.get("label") or "").strip()
        if kind in {DMS_LABEL, DESTINATION_LABEL} and kind not in found:
            destination = _destination(values, directory.name, "SERVICE_BINDING_ROOT")
            if destination is not None:
                found[kind] = destination
    return Bindings(dms=found.get(DMS_LABEL), destination_service=found.get(DESTINATION_LABEL))


def discover(vcap_services: str | None, binding_root: Path | None) -> Bindings:
    """Cloud Foundry's ``VCAP_SERVICES`` first, then ``SERVICE_BINDING_ROOT``, per kind of binding. Logs what it
    found (``service_bindings``) the first time it finds that in this process."""
    vcap = from_vcap_services(vcap_services) if vcap_services else Bindings()
    mounted = from_binding_root(binding_root) if binding_root is not None else Bindings()
    bindings = Bindings(
        dms=vcap.dms or mounted.dms,
        destination_service=vcap.destination_service or mounted.destination_service,
    )
    found = (bindings.dms is not None, bindings.destination_service is not None)
    if found not in _reported:
        _reported.add(found)
        log.info("service_bindings", dms=found[0], destination_service=found[1])
    return bindings
