"""Loaded weights, cached per file so several loader nodes (and re-runs) share one copy in memory.

One entry per kind is kept: loading another file of the same kind drops the previous one, so
memory stays bounded however many prompts switch files."""
from __future__ import annotations

import os
from typing import Any, Callable, Hashable

_CACHE: dict[str, tuple[Hashable, Any]] = {}


def file_identity(path: str) -> tuple[str, int, int]:
    """What makes a file "the same": its path, size and modification time."""
    stat = os.stat(path)
    return path, stat.st_size, stat.st_mtime_ns


def cached(kind: str, key: Hashable, load: Callable[[], Any]) -> Any:
    """The cached value of `kind` if it was loaded with `key`, else `load()` (replacing the old one)."""
    hit = _CACHE.get(kind)
    if hit is not None and hit[0] == key:
        return hit[1]
    _CACHE.pop(kind, None)
    value = load()
    _CACHE[kind] = (key, value)
    return value
