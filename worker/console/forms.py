"""The console's forms read into what the dead-letter code takes (pure): a bad field is named."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from worker.results.dead_letters import Selection, age_seconds


class BadInput(ValueError):
    """A form field the console cannot use; the message names it (shown on a 400 page)."""


def uuid_field(value: str, what: str) -> uuid.UUID | None:
    if not value.strip():
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise BadInput(f"{what} {value!r} is not a UUID") from None


def _age(value: str, what: str) -> float | None:
    if not value.strip():
        return None
    try:
        return age_seconds(value)
    except ValueError:
        raise BadInput(f"{what} {value!r} is not an age like 90s, 15m, 2h or 1d") from None


FILTER_FIELDS = ("error_code", "tenant", "document", "type", "newer_than", "older_than", "text")


def selection_from(params: Mapping[str, Any], picked: list[str] | None = None) -> Selection:
    """The filter form's fields (and picked message ids) as a ``Selection``; ``BadInput`` names a bad field."""

    def text(name: str) -> str:
        value = params.get(name, "")
        return value.strip() if isinstance(value, str) else ""

    kind = text("type")
    if kind and kind not in {"dms.upload", "dms.delete"}:
        raise BadInput(f"type {kind!r} is neither dms.upload nor dms.delete")
    return Selection(
        tenant_id=uuid_field(text("tenant"), "tenant"),
        document_id=uuid_field(text("document"), "document"),
        error_code=text("error_code") or None,
        older_than_s=_age(text("older_than"), "older than"),
        newer_than_s=_age(text("newer_than"), "newer than"),
        command_type=kind or None,
        text=text("text") or None,
        message_ids=frozenset(picked) if picked else None,
    )


def filter_query(params: Mapping[str, Any], **changes: Any) -> str:
    values = {name: params.get(name, "") for name in FILTER_FIELDS} | changes
    return urlencode({k: v for k, v in values.items() if v})
