"""L7 options of route and ingress rules: MP250 (rewrite with a regex path),
MP251 (a rewrite path that is not a path, or a rewrite on a rule that does
not forward), MP252 (header operations on headers that belong to the
connection, to `rewrite host`, or to the mesh), MP253 (header operations or
CORS on a rule that answers itself: they apply to forwarded requests only,
docs/semantics.md), MP254 (CORS on a rule whose methods leave out the
preflight's OPTIONS).

The headers refused in operations: HTTP/2 pseudo-headers (`:path`...), `host`
(`rewrite host` changes it coherently for routing and TLS), the hop-by-hop
headers of RFC 9110 7.6.1 and the framing headers (a proxy recomputes them;
a written value would desynchronise the message), and the mesh's identity
header `x-forwarded-client-cert` on requests (a callee trusts it to name the
caller)."""

from __future__ import annotations

from ..codes import diag
from ..model.types import Mesh
from . import rule
from ._walk import route_rules

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                        "upgrade", "content-length"})
IDENTITY_HEADERS = frozenset({"x-forwarded-client-cert"})


def forbidden_header(side: str, name: str) -> str | None:
    """Why a header operation may not touch this header, or None."""
    if name.startswith(":"):
        return "is a pseudo-header"
    if name == "host":
        return "is the request's authority; use `rewrite host`"
    if name in HOP_BY_HOP:
        return "belongs to the connection, not the message"
    if side == "request" and name in IDENTITY_HEADERS:
        return "carries the caller's identity, which only the sidecar sets"
    return None


@rule("MP250", "MP251", "MP252", "MP253", "MP254", per_file=True)
def rule_options(mesh: Mesh):
    for r in route_rules(mesh):
        rw = r.rewrite
        if rw is not None:
            if rw.path is not None and any(p.kind == "regex" for p in r.match.paths):
                yield diag("MP250", "this rule rewrites the path but matches it by regex: no fixed part to replace",
                           rw.at("path"))
            if rw.path is not None and not rw.path.startswith("/"):
                yield diag("MP251", f"rewrite path `{rw.path}` does not start with `/`", rw.at("path"))
            if r.action.kind != "forward":
                yield diag("MP251", f"this rule answers with `{r.action.kind}`: a rewrite has nothing to change",
                           rw.span)
        for op in r.headers:
            why = forbidden_header(op.side, op.name)
            if why:
                yield diag("MP252", f"`{op.op} {op.side} header \"{op.name}\"`: `{op.name}` {why}", op.at("name"))
        if r.action.kind != "forward":
            unused = [x for x in (*r.headers, r.cors) if x is not None]
            if unused:
                what = "`cors`" if unused[0] is r.cors else "header operations"
                yield diag("MP253", f"this rule answers with `{r.action.kind}`: its {what} never apply",
                           unused[0].span)
        elif r.cors is not None and r.match.methods and "OPTIONS" not in r.match.methods:
            yield diag("MP254", f"this rule has `cors` but matches only {', '.join(r.match.methods)}: a browser's "
                                "OPTIONS preflight goes to another rule", r.cors.span)
