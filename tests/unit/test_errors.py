"""The exception tree drawn in ``worker.errors``'s docstring is the one the code defines."""

from __future__ import annotations

import inspect
import re

from worker import errors


def test_the_drawn_tree_matches_the_classes_and_their_codes() -> None:
    drawn: dict[str, tuple[str | None, str]] = {}
    parents: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^([*+| ]*?)[*+] (\w+)\s+(\w+)", line)
        if not match:
            continue
        depth = len(match.group(1)) // 2
        name, code = match.group(2), match.group(3)
        del parents[depth:]
        drawn[name] = (parents[-1] if parents else None, code)
        parents.append(name)
    defined = {
        name: (None if cls is errors.WorkerError else cls.__bases__[0].__name__, cls.code)
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.WorkerError)
    }
    assert drawn == defined
