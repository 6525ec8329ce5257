"""MP101 unknown services, MP102 unknown versions, MP103 duplicate names, MP104 namespaces.

Services, ingresses, jwt providers and external services share one name
space (a clash is MP103). An auth rule or a limit may name an external
service as its callee (an egress rule); assertions may name `internet` as
their source."""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Label
from ..model.types import Mesh, Ref
from . import rule
from ._names import suggest


@rule("MP103")
def duplicate_names(mesh: Mesh):
    def dupes(items, kind: str, key, name_span):
        first = {}
        for item in items:
            k = key(item)
            if k in first:
                yield diag("MP103", f"{kind} `{k}` is declared twice", name_span(item),
                           labels=[Label(name_span(first[k]), "first declared here")])
            else:
                first[k] = item

    yield from dupes(mesh.services, "service", lambda s: s.name, lambda s: s.at("name"))
    yield from dupes(mesh.jwt_providers, "jwt provider", lambda s: s.name, lambda s: s.at("name"))
    yield from dupes(mesh.ingresses, "ingress", lambda s: s.name, lambda s: s.at("name"))
    yield from dupes(mesh.externals, "external service", lambda s: s.name, lambda s: s.at("name"))
    # One name space across kinds: `orders` cannot be a service and an ingress.
    kinds = [("service", mesh.service_map), ("ingress", mesh.ingress_map), ("jwt provider", mesh.provider_map),
             ("external service", mesh.external_map)]
    for i, (kind, items) in enumerate(kinds):
        for name, item in items.items():
            for other_kind, others in kinds[:i]:
                if name in others:
                    yield diag("MP103", f"{kind} `{name}` has the name of a {other_kind}", item.at("name"),
                               labels=[Label(others[name].at("name"), f"the {other_kind} is declared here")])
                    break
    yield from dupes(mesh.routes, "route for", lambda r: r.service.name, lambda r: r.service.span)
    yield from dupes(mesh.mesh_blocks, "mesh block", lambda m: "mesh", lambda m: m.at("name"))
    for svc in mesh.services:
        yield from dupes(svc.versions, f"version of `{svc.name}`", lambda v: v.name, lambda v: v.at("name"))


def _unknown(known: frozenset[str], ref: Ref, what: str, kind: str = "service"):
    hint, fixes = suggest(ref.name, known, ref.span)
    return diag("MP101", f"{what} `{ref.name}` is not a declared {kind}{hint}", ref.span, fixes=fixes)


def _declared_names(mesh: Mesh) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(services, external services, ingresses and jwt providers): sets, so a
    suggestion does not depend on their order."""
    return (frozenset(mesh.service_map), frozenset(mesh.external_map),
            frozenset(mesh.ingress_map) | frozenset(mesh.provider_map))


@rule("MP101", per_file=True, context=_declared_names)
def unknown_services(mesh: Mesh, names: tuple[frozenset[str], frozenset[str], frozenset[str]]):
    known, externals, others = names
    callees = known | externals  # an auth rule or limit to an external is an egress rule
    for route in mesh.routes:
        if route.service.name not in known:
            yield _unknown(known, route.service, "route for")
        for r in route.rules:
            for src in r.match.sources:
                if src.name not in known:
                    yield _unknown(known, src, "caller")
    for ar in mesh.auth_rules:
        for s in ar.sources:
            if s.kind == "service" and s.name not in known:
                yield _unknown(known, Ref.make(name=s.name, span=s.span), "caller")
        if ar.target.name not in callees:
            yield _unknown(callees, ar.target, "callee", "service or external service")
    for lim in mesh.rate_limits:
        for s in lim.sources:
            if s.kind == "service" and s.name not in known:
                yield _unknown(known, Ref.make(name=s.name, span=s.span), "caller")
        if lim.target.name not in callees:
            yield _unknown(callees, lim.target, "callee", "service or external service")
    for g in mesh.ingresses:  # an ingress forwards to services (another kind of name is MP231)
        for r in g.rules:
            if r.action.kind != "forward":
                continue
            refs = [d.version for d in r.action.destinations]
            refs += [r.action.mirror.version] if r.action.mirror is not None else []
            for ref in refs:
                if ref.name not in known and ref.name not in externals and ref.name not in others:
                    yield _unknown(known, ref, f"ingress `{g.name}` forwards to")
            for src in r.match.sources:
                if src.name not in known:
                    yield _unknown(known, src, "caller")
    for a in mesh.assertions:
        if a.target.name not in callees:
            yield _unknown(callees, a.target, "assertion names", "service or external service")
        refs = [a.source] if a.source and not (a.source.name == "internet" and a.kind in ("never", "can")) else []
        refs += [Ref.make(name=s.name, span=s.span) for s in a.sources if s.kind == "service"]
        for ref in refs:
            if ref.name not in known:
                yield _unknown(known, ref, "assertion names")


@rule("MP102")
def unknown_versions(mesh: Mesh):
    for route in mesh.routes:
        svc = mesh.service(route.service.name)
        if svc is None:
            continue
        names = [v.name for v in svc.versions]
        for r in route.rules:
            if r.action.kind != "forward":
                continue
            refs = [d.version for d in r.action.destinations]
            if r.action.mirror:
                refs.append(r.action.mirror.version)
            for ref in refs:
                if ref.name not in names:
                    hint, fixes = suggest(ref.name, names, ref.span)
                    declared = ", ".join(f"`{n}`" for n in names) or "none"
                    yield diag("MP102", f"service `{svc.name}` has no version `{ref.name}`{hint}", ref.span,
                               labels=[Label(svc.at("name"), f"declared versions: {declared}")], fixes=fixes)


def _namespaces(mesh: Mesh) -> frozenset[str]:
    return frozenset(s.namespace for s in mesh.services)


@rule("MP104", per_file=True, context=_namespaces)
def unknown_namespaces(mesh: Mesh, namespaces: frozenset[str]):
    sources = [s for r in mesh.auth_rules for s in r.sources]
    sources += [s for r in mesh.rate_limits for s in r.sources]
    sources += [s for a in mesh.assertions for s in a.sources]
    for s in sources:
        if s.kind == "namespace" and s.name not in namespaces:
            hint, fixes = suggest(s.name, namespaces, s.span)
            yield diag("MP104", f"no service lives in namespace `{s.name}`{hint}", s.span, fixes=fixes)
