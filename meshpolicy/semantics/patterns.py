"""Path and header patterns: the exact meaning of each kind, over RE2."""

from __future__ import annotations

from functools import lru_cache

import re2

from ..model.types import HeaderMatch, PathPattern


def glob_regex(glob: str) -> str:
    """An RE2 regex (without anchors) for a glob: `*` is one non-empty
    segment (`[^/]+`), `**` any run of characters (`.*`); all else literal."""
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]+")
            i += 1
        else:
            out.append(re2.escape(glob[i]))
            i += 1
    return "".join(out)


@lru_cache(maxsize=8192)
def _compiled(regex: str):
    return re2.compile(regex)


def pattern_regex(p: PathPattern) -> str:
    """The pattern as one RE2 regex that must match the whole path."""
    if p.kind == "exact":
        return re2.escape(p.value)
    if p.kind == "prefix":
        return re2.escape(p.value) + ".*"
    if p.kind == "glob":
        return glob_regex(p.value)
    return p.value


def path_matches(p: PathPattern, path: str) -> bool:
    if p.kind == "exact":
        return path == p.value
    if p.kind == "prefix":
        return path.startswith(p.value)
    return _compiled(pattern_regex(p)).fullmatch(path) is not None


def header_matches(h: HeaderMatch, headers: dict[str, str]) -> bool:
    value = headers.get(h.name)
    if h.kind == "absent":
        return value is None
    if value is None:
        return False
    if h.kind == "present":
        return True
    if h.kind == "exact":
        return value == h.value
    if h.kind == "prefix":
        return value.startswith(h.value or "")
    return _compiled(h.value or "").fullmatch(value) is not None
