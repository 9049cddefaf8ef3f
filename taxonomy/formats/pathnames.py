"""Escaped paths of names: ``Funk \\/ Soul/Afrobeat`` is ``["Funk / Soul", "Afrobeat"]``.

A path joins names from a root down the *primary* parents with ``/``; a name that contains ``/``
or ``\\`` is escaped with a backslash. Spaces around each ``/`` are stripped.
"""

from __future__ import annotations

from collections.abc import Iterable


def escape_name(name: str) -> str:
    """Escape ``\\`` and ``/`` in one name so that it can be joined into a path."""
    return name.replace("\\", "\\\\").replace("/", "\\/")


def join_path(names: Iterable[str]) -> str:
    """Join names (root first) into an escaped path: ``["Funk / Soul", "Disco"]`` → ``Funk \\/ Soul/Disco``."""
    return "/".join(escape_name(n) for n in names)


def split_path(path: str) -> list[str]:
    """Split an escaped path into names, stripping spaces around each; the inverse of :func:`join_path`.

    A backslash that escapes neither ``/`` nor ``\\`` is kept as it is.
    """
    if "\\" not in path:
        return [part.strip() for part in path.split("/")]
    names: list[str] = []
    current: list[str] = []
    i, n = 0, len(path)
    while i < n:
        ch = path[i]
        if ch == "\\" and i + 1 < n and path[i + 1] in "/\\":
            current.append(path[i + 1])
            i += 2
            continue
        if ch == "/":
            names.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    names.append("".join(current).strip())
    return names
