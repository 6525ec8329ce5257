"""Policy patterns as Envoy matchers (route matches and RBAC permissions)."""

from __future__ import annotations

import re2

from ...model.types import HeaderMatch, PathPattern
from ...semantics.patterns import pattern_regex


def string_matcher(p: PathPattern) -> dict:
    """A type.matcher.v3.StringMatcher; Envoy applies it to the path without
    the query string, and safe_regex must match the whole path, as ours does."""
    if p.kind == "exact":
        return {"exact": p.value}
    if p.kind == "prefix":
        return {"prefix": p.value}
    return {"safe_regex": {"regex": pattern_regex(p)}}


def paths_regex(paths: list[PathPattern]) -> str:
    """Several patterns as one RE2 alternation (a route has one path matcher)."""
    return "|".join(f"(?:{pattern_regex(p)})" for p in paths)


def route_path_match(paths: list[PathPattern]) -> dict:
    """The path part of a route.v3.RouteMatch. `prefix` and `path` are
    compared with the :path header; a prefix containing `?` could match into
    the query string there, so it goes through safe_regex (which excludes it)."""
    if not paths:
        return {"prefix": "/"}
    if len(paths) == 1:
        p = paths[0]
        if p.kind == "exact":
            return {"path": p.value}
        if p.kind == "prefix" and "?" not in p.value:
            return {"prefix": p.value}
    return {"safe_regex": {"regex": paths_regex(paths)}}


def methods_header(methods: list[str]) -> dict:
    if len(methods) == 1:
        return {"name": ":method", "string_match": {"exact": methods[0]}}
    return {"name": ":method", "string_match": {"safe_regex": {"regex": "|".join(re2.escape(m) for m in methods)}}}


def header_matcher(h: HeaderMatch) -> dict:
    if h.kind == "present" or (h.kind == "prefix" and not h.value):
        return {"name": h.name, "present_match": True}
    if h.kind == "absent":
        return {"name": h.name, "present_match": True, "invert_match": True}
    if h.kind == "exact":
        return {"name": h.name, "string_match": {"exact": h.value or ""}}
    if h.kind == "prefix":
        return {"name": h.name, "string_match": {"prefix": h.value or ""}}
    return {"name": h.name, "string_match": {"safe_regex": {"regex": h.value or ""}}}
