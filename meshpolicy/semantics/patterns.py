"""Path and header patterns: the exact meaning of each kind, over RE2."""

from __future__ import annotations

from functools import lru_cache

import re2

from ..model.types import HeaderMatch, PathPattern, QueryMatch
from .query import query_matches_raw


def glob_regex(glob: str, escape=re2.escape) -> str:
    """An RE2 regex (without anchors) for a glob: `*` is one non-empty
    segment (`[^/]+`), `**` any run of characters (`.*`); all else literal,
    written by `escape` (targets may prefer a more readable escaping)."""
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
            out.append(escape(glob[i]))
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
    return _compiled_pattern(p.kind, p.value).fullmatch(path) is not None


@lru_cache(maxsize=16384)
def _compiled_pattern(kind: str, value: str):
    """A glob's or regex's compiled RE2, built once per pattern text."""
    return _compiled(pattern_regex(PathPattern.make(kind=kind, value=value)))


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


def query_matches(q: QueryMatch, params: dict[str, list[str]]) -> bool:
    """A route's query test over the decoded parameters (semantics/query.py)."""
    return query_matches_raw(q.name, q.kind, q.value, params)


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def normalize_path(raw: str) -> str | None:
    """The path every matcher sees (docs/semantics.md, "Paths"), or None when
    the request must be refused: the query is dropped, escapes of unreserved
    characters are decoded (`%61` -> `a`) and other escapes upper-cased, runs
    of `/` merged and `.`/`..` segments removed (RFC 3986, 5.2.4), a segment
    `..;x` or `.;x` counting as `..` or `.` (as Envoy does: servlet containers
    drop `;x`, so `/a/..;/admin` is `/admin` to them). An escaped slash or
    backslash (`%2F`, `%5C`), a raw backslash or a fragment (`#`: no request
    target has one; Envoy answers 400) is refused, since proxies disagree on
    what it means."""
    path = raw.split("?", 1)[0]
    if not path.startswith("/") or "\\" in path or "#" in raw:
        return None
    out = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "%":
            hexd = path[i + 1:i + 3]
            if len(hexd) < 2 or any(c not in "0123456789abcdefABCDEF" for c in hexd):
                return None
            char = chr(int(hexd, 16))
            if char in "/\\":
                return None
            out.append(char if char in _UNRESERVED else "%" + hexd.upper())
            i += 3
        else:
            out.append(ch)
            i += 1
    segments: list[str] = []
    parts = "".join(out).split("/")
    for seg in parts[1:]:
        seg_dots = seg.split(";", 1)[0] if seg.startswith(".") else seg
        if seg_dots in ("", "."):
            continue
        if seg_dots == "..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    trailing = (parts[-1] in ("", ".", "..") or parts[-1].split(";", 1)[0] in (".", "..")) and len(parts) > 2
    result = "/" + "/".join(segments)
    return result + "/" if trailing and segments else result
