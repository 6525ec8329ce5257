"""Query parameters as route matches see them. Pure strings, no model
(meshproxy reads its JSON config with the same functions)."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import unquote_plus

import re2


def parse_query(target: str) -> dict[str, list[str]]:
    """The decoded parameters of a request target (`/p?a=1&b&a=2` ->
    {"a": ["1", "2"], "b": [""]}): the part after the first `?`, split on `&`,
    each name and value percent-decoded with `+` as a space (form encoding,
    as Envoy's query matcher decodes). A parameter without `=` has the value
    "". Empty pieces (`a=1&&b=2`) are skipped. Never used to build a request
    line: the proxy forwards the query as it came."""
    _, sep, query = target.partition("?")
    out: dict[str, list[str]] = {}
    if not sep:
        return out
    for piece in query.split("#", 1)[0].split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        out.setdefault(unquote_plus(name), []).append(unquote_plus(value))
    return out


@lru_cache(maxsize=4096)
def _rx(regex: str):
    return re2.compile(regex)


def query_matches_raw(name: str, kind: str, value: str | None, params: dict[str, list[str]]) -> bool:
    """Does the request's query pass one test? Only the parameter's FIRST
    value is tested when it repeats (as Envoy's query_parameters matcher).
    exact: equal; prefix: starts with; regex: RE2 over the whole value;
    present: the parameter occurs (with any value, even empty)."""
    values = params.get(name)
    if not values:
        return False
    if kind == "present":
        return True
    v = values[0]
    if kind == "exact":
        return v == value
    if kind == "prefix":
        return v.startswith(value or "")
    if kind == "regex":
        return _rx(value or "").fullmatch(v) is not None
    raise ValueError(f"unknown query test {kind!r}")
