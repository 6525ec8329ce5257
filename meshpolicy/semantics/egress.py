"""Egress: which host a request names, and whether the caller's sidecar lets
it out (docs/semantics.md, "Ingress, tokens and egress")."""

from __future__ import annotations

from ..model.types import ExternalService, Mesh, Source
from . import admission
from .hosts import host_matches, host_of


def service_hosts(name: str, namespace: str) -> list[str]:
    """The names a mesh service answers to (plan/hosts.py `name_hosts`)."""
    from ..plan.hosts import name_hosts

    return name_hosts(name, namespace)


def external_for_host(mesh: Mesh, host: str) -> ExternalService | None:
    """The external service declaring `host` (first in declaration order;
    a `*.suffix` entry admits subdomains as an ingress's hosts do)."""
    h = host_of(host)
    for ext in mesh.external_map.values():
        if any(host_matches(p, h) for p in ext.hosts):
            return ext
    return None


def destination_for_host(mesh: Mesh, host: str) -> str:
    """The destination a request for `host` names, as the reference
    evaluator takes it: a mesh service (by any of its host names), else an
    external service (by its hosts), else the host itself (an undeclared
    host: the mesh's `egress` stance decides)."""
    h = host_of(host)
    for svc in mesh.service_map.values():
        if h in service_hosts(svc.name, svc.namespace):
            return svc.name
    ext = external_for_host(mesh, h)
    return ext.name if ext is not None else h


def undeclared_host_passes(mesh: Mesh) -> bool:
    """`egress allow_any`: a host that is neither a mesh service nor an
    external's host passes the caller's sidecar unchecked (no L7 policy);
    `registry_only` (the default): it is refused there."""
    return mesh.settings.egress == "allow_any"


def caller_source_matches(mesh: Mesh, s: Source, caller: str | None) -> bool:
    """Does a rule source match the caller of an egress request? Decided at
    the caller's own sidecar, which knows its workload's identity (no mTLS
    is involved): `*` matches anyone; `authenticated`, a service and a
    namespace match a mesh workload by its identity, as east-west;
    `internet` never matches (an ingress sends only to services). A caller
    with no mesh identity has no sidecar: only `*` matches it."""
    if s.kind == "any":
        return True
    if s.kind == "internet" or not admission.caller_has_identity(mesh, caller):
        return False
    if s.kind == "authenticated":
        return True
    if s.kind == "service":
        return admission.same_identity(mesh, s.name, caller)
    return admission.namespace_of(mesh, caller) == s.name
