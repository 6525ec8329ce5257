"""MP204: path and header regexes must compile as RE2, the engine Envoy
and Istio use (Python's `re` accepts lookaround and backreferences that
RE2 rejects, so it cannot be the judge)."""

from __future__ import annotations

from ..codes import diag
from ..model.types import Mesh
from . import rule
from ._walk import paths, route_rules


def _regexes(mesh: Mesh):
    for p in paths(mesh):
        if p.kind == "regex":
            yield p.value, p.span, "path regex"
    for r in route_rules(mesh):
        for h in r.match.headers:
            if h.kind == "regex":
                yield h.value or "", h.span, f"regex for header `{h.name}`"
        for q in r.match.queries:
            if q.kind == "regex":
                yield q.value or "", q.span, f"regex for query parameter `{q.name}`"


def re2_error(pattern: str) -> str | None:
    """RE2's complaint about `pattern`, or None when it compiles."""
    import re2

    opts = re2.Options()
    opts.log_errors = False  # RE2 would otherwise print to stderr
    try:
        re2.compile(pattern, opts)
    except re2.error as exc:
        msg = exc.args[0] if exc.args else str(exc)
        return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
    return None


@rule("MP204", per_file=True)
def invalid_regexes(mesh: Mesh):
    for pattern, span, what in _regexes(mesh):
        err = re2_error(pattern)
        if err is not None:
            yield diag("MP204", f"{what} is not valid RE2: {err}", span)
