"""MP210: header names in matches, hash balancing, header operations, CORS
lists, keyed limits and token locations must be HTTP tokens."""

from __future__ import annotations

import re

from ..codes import diag
from ..model.types import Mesh
from . import rule
from ._walk import cors_policies, route_rules
from .controls import control_char

# RFC 9110 token; a leading `:` names an HTTP/2 pseudo-header such as `:authority`.
_HEADER = re.compile(r":?[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _names(mesh: Mesh):
    for r in route_rules(mesh):
        for h in r.match.headers:
            yield h.name, h.span
        for op in r.headers:
            yield op.name, op.at("name")
    for c in cors_policies(mesh):
        for key in ("headers", "expose"):
            for i, name in enumerate(getattr(c, key)):
                if name != "*":
                    yield name, c.spans.get(f"{key}.{i}", c.span)
    for lim in mesh.rate_limits:
        if lim.key is not None and lim.key.kind == "header":
            yield lim.key.name or "", lim.key.at("name")
    for p in mesh.jwt_providers:
        for loc in p.token_from:
            if loc.kind == "header":
                yield loc.name, loc.at("name")
    for svc in mesh.services:
        for holder in (svc, *svc.versions):
            b = holder.balance
            if b is not None and b.header is not None:
                yield b.header, b.at("header")


@rule("MP210", per_file=True)
def invalid_headers(mesh: Mesh):
    for name, span in _names(mesh):
        if not name:
            yield diag("MP210", "the header name is empty", span)
        elif control_char(name):
            continue  # MP214
        elif not _HEADER.fullmatch(name):
            bad = next((ch for ch in name if not _HEADER.fullmatch(ch) and ch != ":"), ":")
            yield diag("MP210", f"header name `{name}` contains `{bad}`, which HTTP does not allow in names", span)
