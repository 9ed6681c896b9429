"""A tiny CMIS-SQL subset: ``SELECT <cols|*> FROM cmis:document [WHERE <cond> [AND <cond>]...]``.

Conditions: ``<property> = '<literal>'`` (quotes doubled to escape) and ``IN_FOLDER('<folderId>')``.
Anything else is an ``invalidArgument``, as a real server would refuse what it cannot parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from worker.testing.emulator.store import CmisFault

_STATEMENT = re.compile(
    r"^\s*SELECT\s+(?P<cols>.+?)\s+FROM\s+(?P<type>cmis:document)(?:\s+WHERE\s+(?P<where>.+?))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_EQUALS = re.compile(r"^\s*(?P<prop>[\w:]+)\s*=\s*'(?P<value>(?:[^']|'')*)'\s*", re.DOTALL)
_IN_FOLDER = re.compile(r"^\s*IN_FOLDER\s*\(\s*'(?P<value>(?:[^']|'')*)'\s*\)\s*", re.IGNORECASE)
_AND = re.compile(r"^\s*AND\s+", re.IGNORECASE)


@dataclass
class Query:
    columns: list[str] | None  # None = '*'
    equals: dict[str, str] = field(default_factory=dict)
    in_folder: str | None = None


def parse(statement: str) -> Query:
    match = _STATEMENT.match(statement)
    if match is None:
        raise CmisFault("invalidArgument", f"Unsupported or malformed query: {statement[:200]}")
    cols = match.group("cols").strip()
    query = Query(columns=None if cols == "*" else [c.strip() for c in cols.split(",")])
    rest = match.group("where") or ""
    while rest.strip():
        if m := _IN_FOLDER.match(rest):
            query.in_folder = m.group("value").replace("''", "'")
        elif m := _EQUALS.match(rest):
            query.equals[m.group("prop")] = m.group("value").replace("''", "'")
        else:
            raise CmisFault("invalidArgument", f"Unsupported condition near: {rest[:100]}")
        rest = rest[m.end() :]
        if rest.strip():
            and_match = _AND.match(rest)
            if and_match is None:
                raise CmisFault("invalidArgument", f"Expected AND near: {rest[:100]}")
            rest = rest[and_match.end() :]
    return query
