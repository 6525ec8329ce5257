"""MP305: a service named as both caller and callee."""

from __future__ import annotations

from ..codes import diag
from ..model.types import Mesh
from . import rule


def _pairs(mesh: Mesh):
    """(caller name, callee name, span of the caller, what) everywhere a call is named."""
    for ar in mesh.auth_rules:
        for s in ar.sources:
            if s.kind == "service":
                yield s.name, ar.target.name, s.span, f"{ar.effect} rule"
    for lim in mesh.rate_limits:
        for s in lim.sources:
            if s.kind == "service":
                yield s.name, lim.target.name, s.span, "rate limit"
    for route in mesh.routes:
        for r in route.rules:
            for ref in r.match.sources:
                yield ref.name, route.service.name, ref.span, "route rule"
    for a in mesh.assertions:
        if a.source is not None:
            yield a.source.name, a.target.name, a.source.span, "assertion"
        for s in a.sources:
            if s.kind == "service":
                yield s.name, a.target.name, s.span, "assertion"


@rule("MP305", per_file=True)
def self_reference(mesh: Mesh):
    for caller, callee, span, what in _pairs(mesh):
        if caller == callee:
            yield diag("MP305", f"this {what} has `{caller}` calling itself", span)
