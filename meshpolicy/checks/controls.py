"""MP214: no string of the policy holds a control character.

Every string and path is copied into proxy configs and onto the wire: a
control character there splits a header or a YAML line, is dropped or
rewritten by one reader and not another, or makes a target reject the
config. One definition, here, for every place a string can be written; the
checks of each place (paths, header names and values, labels, the trust
domain, redirects) leave such values to this one, so each gets one
diagnostic.

Controls are C0 (U+0000-U+001F), DEL, C1 (U+0080-U+009F, NEL among them),
the line and paragraph separators U+2028/U+2029, surrogates and the
non-characters U+FFFE/U+FFFF. A header value may hold a tab (HTTP allows
it); a response body may hold tabs and line breaks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ..codes import diag
from ..model.types import Mesh
from ..span import Span
from . import rule
from ._walk import cors_policies, jwt_requirements, paths, route_rules

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
HEADER_VALUE_ALLOWS = "\t"
BODY_ALLOWS = "\t\n\r"


def control_char(value: str | None, allowed: str = "") -> str | None:
    """The first control character of value that is not allowed there, or None."""
    if not value or CONTROL.search(value) is None:
        return None
    return next((ch for ch in CONTROL.findall(value) if ch not in allowed), None)


def _strings(mesh: Mesh) -> Iterator[tuple[str, str, Span, str]]:
    """(what, value, span, allowed controls) for every string written in the policy. `what` is a
    string, or (template, names...) formatted only for a finding (most strings have none)."""
    for m in mesh.mesh_blocks:
        yield "the trust domain", m.trust_domain, m.at("trust_domain"), ""
    for svc in mesh.services:
        for holder in (svc, *svc.versions):
            if holder.balance is not None and holder.balance.header is not None:
                yield "the hash header name", holder.balance.header, holder.balance.at("header"), ""
        for v in svc.versions:
            for key, value in v.labels.items():
                span = v.spans.get(f"label.{key}", v.at("name"))
                yield ("a label key of version `{}`", v.name), key, span, ""
                yield ("label `{}` of version `{}`", key, v.name), value, span, ""
    for p in paths(mesh):
        yield ("a {} path", p.kind), p.value, p.span, ""
    for r in route_rules(mesh):
        for h in r.match.headers:
            yield "a header name", h.name, h.span, ""
            yield ("the value for header `{}`", h.name), h.value, h.span, HEADER_VALUE_ALLOWS
        for q in r.match.queries:
            yield "a query parameter name", q.name, q.span, ""
            yield ("the value for query parameter `{}`", q.name), q.value, q.span, ""
        for op in r.headers:
            yield "a header name", op.name, op.at("name"), ""
            yield ("the value set for header `{}`", op.name), op.value, op.span, HEADER_VALUE_ALLOWS
        if r.rewrite is not None:
            yield "the rewritten path", r.rewrite.path, r.rewrite.at("path"), ""
            yield "the rewritten host", r.rewrite.host, r.rewrite.at("host"), ""
        a = r.action
        if a.kind == "redirect":
            yield "the redirect target", a.uri, a.span, ""
        elif a.kind == "respond":
            yield "the response body", a.body, a.span, BODY_ALLOWS
    for c in cors_policies(mesh):
        for key in ("origins", "headers", "expose"):
            for i, value in enumerate(getattr(c, key)):
                what = "a CORS origin" if key == "origins" else "a CORS header name"
                yield what, value, c.spans.get(f"{key}.{i}", c.span), ""
    for p in mesh.jwt_providers:
        for field, what in (("issuer", "the issuer"), ("jwks_file", "the JWKS file"), ("jwks_uri", "the JWKS URI")):
            yield what, getattr(p, field), p.at(field), ""
        for a in p.audiences:
            yield "an audience", a, p.at("audiences"), ""
        for loc in p.token_from:
            yield ("the token {} name", loc.kind), loc.name, loc.at("name"), ""
            yield "the token prefix", loc.prefix, loc.at("prefix"), HEADER_VALUE_ALLOWS
    for g in mesh.ingresses:
        for i, h in enumerate(g.hosts):
            yield "a host", h, g.spans.get(f"host.{i}", g.span), ""
        for ls in g.listeners:
            yield "the certificate file", ls.cert_file, ls.at("cert"), ""
            yield "the key file", ls.key_file, ls.at("key"), ""
    for e in mesh.externals:
        for i, h in enumerate(e.hosts):
            yield "a host", h, e.spans.get(f"host.{i}", e.span), ""
    for req in jwt_requirements(mesh):
        for t in req.claims:
            yield "a claim name", t.claim, t.at("claim"), ""
            yield ("the value for claim `{}`", t.claim), t.value, t.at("value"), ""
    for lim in mesh.rate_limits:
        if lim.key is not None:
            yield ("the {} name of a limit key", lim.key.kind), lim.key.name, lim.key.at("name"), ""


def _shown(s: str) -> str:
    return CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", s)


@rule("MP214", per_file=True)
def control_characters(mesh: Mesh):
    for what, value, span, allowed in _strings(mesh):
        ch = control_char(value, allowed)
        if ch is not None:
            if isinstance(what, tuple):
                what = what[0].format(*(_shown(str(a)) for a in what[1:]))
            yield diag("MP214", f"{what} holds the control character U+{ord(ch):04X}", span)
