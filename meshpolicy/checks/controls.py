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
from ._walk import paths

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
HEADER_VALUE_ALLOWS = "\t"
BODY_ALLOWS = "\t\n\r"


def control_char(value: str | None, allowed: str = "") -> str | None:
    """The first control character of value that is not allowed there, or None."""
    if not value or CONTROL.search(value) is None:
        return None
    return next((ch for ch in CONTROL.findall(value) if ch not in allowed), None)


def _strings(mesh: Mesh) -> Iterator[tuple[str, str, Span, str]]:
    """(what, value, span, allowed controls) for every string written in the policy."""
    for m in mesh.mesh_blocks:
        yield "the trust domain", m.trust_domain, m.at("trust_domain"), ""
    for svc in mesh.services:
        for holder in (svc, *svc.versions):
            if holder.balance is not None and holder.balance.header is not None:
                yield "the hash header name", holder.balance.header, holder.balance.at("header"), ""
        for v in svc.versions:
            for key, value in v.labels.items():
                span = v.spans.get(f"label.{key}", v.at("name"))
                yield f"a label key of version `{v.name}`", key, span, ""
                yield f"label `{_shown(key)}` of version `{v.name}`", value, span, ""
    for p in paths(mesh):
        yield f"a {p.kind} path", p.value, p.span, ""
    for route in mesh.routes:
        for r in route.rules:
            for h in r.match.headers:
                yield "a header name", h.name, h.span, ""
                yield f"the value for header `{_shown(h.name)}`", h.value, h.span, HEADER_VALUE_ALLOWS
            a = r.action
            if a.kind == "redirect":
                yield "the redirect target", a.uri, a.span, ""
            elif a.kind == "respond":
                yield "the response body", a.body, a.span, BODY_ALLOWS


def _shown(s: str) -> str:
    return CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", s)


@rule("MP214", per_file=True)
def control_characters(mesh: Mesh):
    for what, value, span, allowed in _strings(mesh):
        ch = control_char(value, allowed)
        if ch is not None:
            yield diag("MP214", f"{what} holds the control character U+{ord(ch):04X}", span)
