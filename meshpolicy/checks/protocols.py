"""MP304: HTTP-only features on a service that speaks only TCP."""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Label
from ..model.types import Mesh, Service
from ..span import Span
from . import rule


def _tcp_only(svc: Service | None) -> bool:
    return svc is not None and bool(svc.ports) and all(p.protocol == "tcp" for p in svc.ports)


def _uses(mesh: Mesh, tcp: set[str]):
    """(service name, what, span) for every HTTP-only feature aimed at a tcp-only service."""
    for svc in mesh.services:
        if svc.name not in tcp:
            continue
        if svc.timeout_ms is not None:
            yield svc.name, "a request timeout", svc.at("timeout")
        if svc.retry is not None and svc.retry.attempts > 0:
            yield svc.name, "retries", svc.retry.span
        if svc.fault is not None:
            yield svc.name, "fault injection", svc.fault.span
        for holder in (svc, *svc.versions):
            if holder.balance is not None and holder.balance.header is not None:
                yield svc.name, "hashing on a header", holder.balance.span
    for route in mesh.routes:
        if route.service.name in tcp:
            yield route.service.name, "a route block", route.service.span
    for ar in mesh.auth_rules:
        if ar.target.name in tcp and (ar.methods or ar.paths):
            yield ar.target.name, "an auth rule with methods or paths", ar.span
    for lim in mesh.rate_limits:
        if lim.target.name in tcp:
            yield lim.target.name, "a rate limit", lim.span
    for a in mesh.assertions:
        if a.target.name in tcp and (a.methods or a.paths):
            yield a.target.name, "an assertion about HTTP methods or paths", a.span


def _tcp_services(mesh: Mesh) -> frozenset[tuple[str, Span]]:
    """(name, where its first port is declared) of every tcp-only service."""
    return frozenset((name, svc.ports[0].span) for name, svc in mesh.service_map.items() if _tcp_only(svc))


@rule("MP304", per_file=True, context=_tcp_services)
def http_on_tcp(mesh: Mesh, tcp_services: frozenset[tuple[str, Span]]):
    if not tcp_services:
        return
    port_at = dict(tcp_services)
    for name, what, span in _uses(mesh, port_at.keys()):
        yield diag("MP304", f"{what} needs HTTP, but service `{name}` has only tcp ports", span,
                   labels=[Label(port_at[name], "declared tcp here")])
