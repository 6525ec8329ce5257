"""Path rewrite: the one definition of "replace the matched part"
(docs/semantics.md, "Ingress, tokens and egress"). Pure strings, no model:
the reference evaluator, the targets and meshproxy all call it."""

from __future__ import annotations

from collections.abc import Iterable


def fixed_part(kind: str, value: str) -> str | None:
    """The part of a path a pattern's match replaces, as a literal prefix:
    a prefix pattern's prefix; a glob's text before its first `*`; an exact
    pattern's whole path. None for a regex (the checker refuses `rewrite` on
    a regex path: what it matched is not one literal string)."""
    if kind == "prefix" or kind == "exact":
        return value
    if kind == "glob":
        star = value.find("*")
        return value if star < 0 else value[:star]
    return None


def rewrite_path(kind: str, value: str, path: str, replacement: str) -> str:
    """The path after `rewrite replacement`, for a request whose (normalized)
    `path` matched the pattern (kind, value).

    prefix `/api/` + rewrite `/`: `/api/orders` -> `/orders`; glob
    `/api/**` + rewrite `/v2/`: `/api/x/y` -> `/v2/x/y`; exact: the whole path
    becomes the replacement. A plain string replacement, as Envoy's
    `prefix_rewrite` and Istio's `rewrite.uri`: write the slashes you mean
    (prefix `/api` + rewrite `/` turns `/api/x` into `//x`). `path` carries
    no query (the caller keeps the query as it came and appends it after).
    A path the pattern does not start with (the rule did not match it) is
    returned unchanged."""
    fixed = fixed_part(kind, value)
    if fixed is None:
        raise ValueError("a regex path match cannot be rewritten (the checker refuses it)")
    if kind == "exact":
        return replacement if path == value else path
    if not path.startswith(fixed):
        return path
    return replacement + path[len(fixed):]


def rewrite_for(patterns: Iterable[tuple[str, str]], matched: "callable", path: str, replacement: str) -> str:
    """The rewritten path for a rule whose match lists `patterns` (kind, value)
    in written order: the first pattern that matches the path (`matched(kind,
    value, path)`) decides what is replaced. A rule with no path patterns
    (it matches every path) replaces the whole path, as Istio does when a
    rewrite has no URI match to take a prefix from."""
    for kind, value in patterns:
        if matched(kind, value, path):
            return rewrite_path(kind, value, path, replacement)
    return replacement
