"""MP204: path and header regexes must compile as RE2, the engine Envoy
and Istio use (Python's `re` accepts lookaround and backreferences that
RE2 rejects, so it cannot be the judge). MP215: and be small enough for
the proxies to accept (semantics/regex_size.py)."""

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


@rule("MP215", per_file=True)
def oversized_regexes(mesh: Mesh):
    from ..semantics.regex_size import RE2_PROGRAM_SIZE_LIMIT, program_size

    for pattern, span, what in _regexes(mesh):
        size = program_size(pattern)
        if size is not None and size > RE2_PROGRAM_SIZE_LIMIT:
            yield diag("MP215", f"{what} compiles to an RE2 program of size {size}, over the "
                                f"{RE2_PROGRAM_SIZE_LIMIT} Envoy and Istio's sidecars accept", span)
