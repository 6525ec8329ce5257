"""MP505: path patterns written with spelling a normalized path never has.

Every matcher sees the normalized path (docs/semantics.md), so a pattern
whose literal text holds `//`, a `.` or `..` segment, `.;x`, an escape of an
unreserved character (`%61`), a lower-case escape, `%2F`/`%5C`, a backslash,
`?` or `#` can never match: the rule part it stands for is dead, and the
request its author meant is decided by other rules. Read from the pattern's
text alone (each literal run between wildcards must appear in every string
the pattern matches), so no solver is involved; regexes are left to the
general emptiness findings (MP504, MP510).
"""

from __future__ import annotations

import re

from ..codes import diag
from ..diagnostics import Diagnostic, Label
from ..model.types import AuthRule, Mesh, PathPattern, RouteRule
from ..semantics.evaluate import Request, source_matches
from ..semantics.patterns import normalize_path
from .witness import as_dict

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# tricks a literal run cannot hold anywhere in a normalized path
_CLOSED = re.compile(r"//|/\.{1,2}(?:;[^/]*)?/|%(?![0-9A-F]{2})|\\|\?|#")


def _escape_trick(text: str) -> str | None:
    for m in re.finditer(r"%([0-9A-Fa-f]{2})", text):
        hexd = m.group(1)
        ch = chr(int(hexd, 16))
        if ch in "/\\":
            return f"`%{hexd}` (an escaped slash or backslash is refused with 400)"
        if ch in _UNRESERVED:
            return f"`%{hexd}` (it is decoded to `{ch}`)"
        if hexd != hexd.upper():
            return f"`%{hexd}` (escapes are upper-cased to `%{hexd.upper()}`)"
    return None


def trick(p: PathPattern) -> str | None:
    """Why pattern p can never match a normalized path, or None."""
    if p.kind == "regex" or not p.value.startswith("/"):
        return None  # regexes: MP504/MP510; a relative path: the checks (MP2xx)
    if p.kind == "exact":
        if normalize_path(p.value) == p.value:
            return None
        runs, closed_end = [p.value], True
    elif p.kind == "prefix":
        runs, closed_end = [p.value], False
    else:
        runs = [r for r in re.split(r"\*+", p.value)]
        closed_end = not p.value.endswith("*")
    for i, run in enumerate(runs):
        esc = _escape_trick(run)
        if esc:
            return esc
        m = _CLOSED.search(run)
        if m:
            return f"`{m.group(0)}`" + (" (runs of `/` are merged)" if m.group(0) == "//" else
                                        " (`.` and `..` segments are removed)" if m.group(0).startswith("/.") else
                                        " (refused or cut before matching)")
        last = i == len(runs) - 1
        if last and closed_end and re.search(r"/\.{1,2}(?:;[^/]*)?\Z", run):
            return "a trailing `.` or `..` segment (it is removed)"
    if p.kind == "exact":
        return "its spelling (normalization rewrites it)"
    return None


def _example(p: PathPattern) -> str:
    """A raw path the pattern matches (what its author had in mind)."""
    if p.kind in ("exact", "prefix"):
        return p.value
    return p.value.replace("**", "x").replace("*", "x")


def findings(mesh: Mesh) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    stmts: list[tuple[str, AuthRule | RouteRule, list[PathPattern], str]] = []
    for r in mesh.auth_rules:
        stmts.append((f"this {r.effect} rule for `{r.target.name}`", r, r.paths, r.target.name))
    for route in mesh.routes:
        for rr in route.rules:
            stmts.append((f"route rule {rr.index + 1} of `{route.service.name}`", rr, rr.match.paths,
                          route.service.name))
    for what, stmt, paths, dest in stmts:
        dead = [(p, why) for p in paths if (why := trick(p))]
        for p, why in dead:
            raw = _example(p)
            norm = normalize_path(raw)
            whole = len(dead) == len(paths)
            src = _source_name(mesh, stmt, dest)
            method = stmt.methods[0] if isinstance(stmt, AuthRule) and stmt.methods else (
                stmt.match.methods[0] if isinstance(stmt, RouteRule) and stmt.match.methods else "GET")
            wit = as_dict(Request(src, dest, method, raw))
            wit["normalized_path"] = norm
            seen = (f"normalized to `{norm}`" if norm is not None else "refused with 400")
            out.append(diag(
                "MP505",
                f"path `{p.value}` of {what} can never match: it holds {why}; a request for `{raw}` is "
                f"{seen} before any rule sees it, so "
                + ("the rule matches no request" if whole else "this part of the rule is dead"),
                p.span or stmt.span,
                labels=[Label(stmt.span, "the rule")] if p.span and p.span != stmt.span else [],
                witness=wit))
    return out


def _source_name(mesh: Mesh, stmt, dest: str) -> str | None:
    """A caller the rule is written for, admitted by the destination."""
    if isinstance(stmt, RouteRule):
        return stmt.match.sources[0].name if stmt.match.sources else next(
            (s.name for s in mesh.services if s.name != dest), None)
    for svc in mesh.services:
        req = Request(svc.name, dest)
        if svc.name != dest and any(source_matches(mesh, s, req) for s in stmt.sources):
            return svc.name
    return None


def wholly_dead(paths: list[PathPattern]) -> bool:
    """Every path pattern of a rule is MP505's: it reports the rule (not MP504/MP510)."""
    return bool(paths) and all(trick(p) for p in paths)
