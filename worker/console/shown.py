"""What a page may show of a dead letter (pure): no file content, no signed URL's query, no secret-looking
header; and ages as people read them."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SECRET_WORDS = ("authorization", "token", "secret", "password", "cookie", "signature")


def age(when: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """``3 s``, ``4 min``, ``2 h``, ``5 d`` (pure)."""
    if when is None:
        return "-"
    seconds = max(0.0, ((now or dt.datetime.now(dt.UTC)) - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{math.floor(seconds / size)} {unit}"
    return f"{seconds:.0f} s"


def shown_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """A dead letter's headers for the page: secret-looking ones hidden (pure)."""
    return {
        key: "(not shown)" if any(word in key.lower() for word in SECRET_WORDS) else value
        for key, value in (headers or {}).items()
    }


def shown_event(body: Any) -> Any:
    """The CloudEvent without its content: ``content_base64`` as its length, ``content_url`` without its
    query or fragment (pure)."""
    if not isinstance(body, dict):
        return body
    event = dict(body)
    data = event.get("data")
    if isinstance(data, dict):
        data = dict(data)
        if "content_base64" in data:
            content = data["content_base64"]
            length = str(content).rsplit("(", 1)[-1].split(" ")[0] if "characters)" in str(content) else len(content)
            data["content_base64"] = f"(content not shown: {length} characters of base64)"
        if isinstance(data.get("content_url"), str):
            parts = urlsplit(data["content_url"])
            cut = " (query not shown)" if parts.query or parts.fragment else ""
            data["content_url"] = urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")) + cut
        event["data"] = data
    return event
