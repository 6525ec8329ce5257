"""The `internet` source: MP235 (no token on an administrative path), MP236
(a provider no ingress that reaches the callee accepts), MP237 (no ingress
reaches the callee), MP238 (`per claim` without a token).

Which ingresses reach a service, and which providers an ingress accepts, are
read from meshpolicy/semantics/ingress.py, the definition every consumer uses."""

from __future__ import annotations

import re

from ..codes import diag
from ..model.types import AuthRule, Mesh, PathPattern
from ..semantics.ingress import ingresses_to, providers_admitted
from . import rule


# A path segment that names an administrative surface (Spring's actuator, /debug/pprof...).
ADMIN_SEGMENTS = ("admin", "internal", "debug", "actuator")
_ADMIN = re.compile(r"(?:^|/)(?:" + "|".join(ADMIN_SEGMENTS) + r")(?=/|\*|$)", re.IGNORECASE)


def is_admin_path(p: PathPattern) -> bool:
    """Does the pattern name an administrative segment (`/admin/**`, `prefix "/internal"`, `/debug`)?"""
    return _ADMIN.search(p.value) is not None


def _admin_paths_to(mesh: Mesh, service: str) -> list[PathPattern]:
    """Administrative paths written in the service's route and in ingress rules forwarding to it."""
    out = []
    route = mesh.route_map.get(service)
    if route is not None:
        out += [p for r in route.rules for p in r.match.paths if is_admin_path(p)]
    for g in mesh.ingresses:
        for r in g.rules:
            if r.action.kind == "forward" and any(d.version.name == service for d in r.action.destinations):
                out += [p for p in r.match.paths if is_admin_path(p)]
    return out


def _admin_without_token(mesh: Mesh, ar: AuthRule):
    if ar.effect != "allow" or not any(s.kind == "internet" and s.jwt is None for s in ar.sources):
        return
    if ar.paths:
        hits = [p for p in ar.paths if is_admin_path(p)]
        if hits:
            yield diag("MP235", f"`allow internet` lets requests without a token reach `{hits[0].value}` of "
                                f"`{ar.target.name}`", hits[0].span)
        return
    hits = _admin_paths_to(mesh, ar.target.name)
    if hits:
        yield diag("MP235", f"`allow internet` names no paths, so requests without a token reach every path of "
                            f"`{ar.target.name}`, `{hits[0].value}` among them", ar.span)


@rule("MP235", "MP236", "MP237")
def internet_rules(mesh: Mesh):
    externals = mesh.external_map
    for ar in mesh.auth_rules:
        if ar.target.name in externals:
            continue  # MP243
        yield from _admin_without_token(mesh, ar)
        internet = [s for s in ar.sources if s.kind == "internet"]
        if not internet or ar.effect != "allow":
            continue
        gateways = [mesh.ingress_map[n] for n in ingresses_to(mesh, ar.target.name)]
        if not gateways:
            why = "the mesh declares no ingress" if not mesh.ingresses else "no ingress forwards to it"
            yield diag("MP237", f"this rule lets `internet` call `{ar.target.name}`, but {why}", internet[0].span)
            continue
        for s in internet:
            if s.jwt is not None and s.jwt.provider is not None and s.jwt.provider.name in mesh.provider_map:
                if all(providers_admitted(mesh, s, g) is None for g in gateways):
                    names = ", ".join(f"`{g.name}`" for g in gateways)
                    yield diag("MP236", f"no ingress that reaches `{ar.target.name}` ({names}) accepts tokens of "
                                        f"`{s.jwt.provider.name}`: this source never matches", s.jwt.provider.span)


@rule("MP238", per_file=True)
def per_claim_needs_token(mesh: Mesh):
    for lim in mesh.rate_limits:
        if lim.key is None or lim.key.kind != "claim":
            continue
        bad = [s for s in lim.sources if s.kind != "internet" or s.jwt is None]
        if bad:
            yield diag("MP238", f"this limit is keyed `per claim \"{lim.key.name}\"`, but its source "
                                f"`{bad[0].name or bad[0].kind}` carries no validated token", bad[0].span)


