"""Shared walks over the model, so each rule module reads one topic only.

Each walk visits every place a kind of value can be written (services,
versions, route rules, ingress rules, external services, auth rules, limits,
assertions) in one linear pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..model.types import (
    CircuitBreaker, Cors, Fault, JwtRequirement, Mesh, Outlier, PathPattern, Retry, RouteRule, Service, Source,
)
from ..span import Span


def route_rules(mesh: Mesh) -> Iterator[RouteRule]:
    """Every rule written with the route grammar: those of `route` blocks,
    then those of `ingress` blocks (whose destinations name services)."""
    for route in mesh.routes:
        yield from route.rules
    for g in mesh.ingresses:
        yield from g.rules


def _service_and_rule_settings(mesh: Mesh, field: str) -> Iterator:
    """`field` (retry or fault) as set on each service, route or ingress rule and external service."""
    for svc in mesh.services:
        if getattr(svc, field) is not None:
            yield getattr(svc, field)
    for r in route_rules(mesh):
        if getattr(r, field) is not None:
            yield getattr(r, field)
    for e in mesh.externals:
        if getattr(e, field, None) is not None:
            yield getattr(e, field)


def retries(mesh: Mesh) -> Iterator[Retry]:
    return _service_and_rule_settings(mesh, "retry")


def faults(mesh: Mesh) -> Iterator[Fault]:
    return _service_and_rule_settings(mesh, "fault")


def outliers_and_circuits(mesh: Mesh) -> Iterator[Outlier | CircuitBreaker]:
    for svc in mesh.services:
        for holder in (svc, *svc.versions):
            if holder.outlier is not None:
                yield holder.outlier
            if holder.circuit is not None:
                yield holder.circuit


def paths(mesh: Mesh) -> Iterator[PathPattern]:
    for r in route_rules(mesh):
        yield from r.match.paths
    for ar in mesh.auth_rules:
        yield from ar.paths
    for a in mesh.assertions:
        yield from a.paths


def methods(mesh: Mesh) -> Iterator[tuple[str, Span]]:
    """Every method written, with its own span where the model keeps one."""
    for r in route_rules(mesh):
        m = r.match
        for i, name in enumerate(m.methods):
            yield name, m.spans.get(f"method.{i}", m.span)
    for c in cors_policies(mesh):
        for i, name in enumerate(c.methods):
            yield name, c.spans.get(f"methods.{i}", c.span)
    for ar in mesh.auth_rules:
        for i, name in enumerate(ar.methods):
            yield name, ar.spans.get(f"method.{i}", ar.span)
    for a in mesh.assertions:
        for i, name in enumerate(a.methods):
            yield name, a.spans.get(f"method.{i}", a.span)


def cors_policies(mesh: Mesh) -> Iterator[Cors]:
    """Every `cors` written: on services, then on route and ingress rules."""
    for svc in mesh.services:
        if svc.cors is not None:
            yield svc.cors
    for r in route_rules(mesh):
        if r.cors is not None:
            yield r.cors


def internet_sources(mesh: Mesh) -> Iterator[tuple[str, Source]]:
    """(what it is in, source) for every `internet` source of a rule, limit or `only` assertion."""
    for ar in mesh.auth_rules:
        for s in ar.sources:
            if s.kind == "internet":
                yield f"{ar.effect} rule #{ar.index + 1}", s
    for lim in mesh.rate_limits:
        for s in lim.sources:
            if s.kind == "internet":
                yield f"the limit on `{lim.target.name}`", s
    for a in mesh.assertions:
        for s in a.sources:
            if s.kind == "internet":
                yield f"`assert {a.kind}`", s


def jwt_requirements(mesh: Mesh) -> Iterator[JwtRequirement]:
    """Every `with jwt ...` written: on internet sources and on assertions' `internet` source."""
    for _, s in internet_sources(mesh):
        if s.jwt is not None:
            yield s.jwt
    for a in mesh.assertions:
        if a.source_jwt is not None:
            yield a.source_jwt


@dataclass(frozen=True)
class Effective:
    """The resilience settings that apply to the requests one route rule
    forwards (rule is None: a service without a route block). A rule's own
    timeout, retry and fault replace the service's (docs/semantics.md)."""

    service: Service
    rule: RouteRule | None
    timeout_ms: int | None
    timeout_span: Span | None
    retry: Retry | None
    fault: Fault | None

    @property
    def retries_on(self) -> bool:
        return self.retry is not None and self.retry.attempts > 0

    @property
    def where(self) -> str:
        if self.rule is None:
            return f"service `{self.service.name}`"
        return f"rule {self.rule.index + 1} of route `{self.service.name}`"


def effective(mesh: Mesh, retrying: bool = False) -> Iterator[Effective]:
    """One entry per forwarding route rule, and one per route-less service.
    `retrying`: only those whose retry makes attempts (`Effective.retries_on`),
    skipped before anything else is looked up (the language server runs
    this on every edit; most rules of the bench mesh do not retry)."""
    routed: set[str] = set()
    known = mesh.service_map
    for route in mesh.routes:
        svc = known.get(route.service.name)
        if svc is None:
            continue
        routed.add(svc.name)
        for r in route.rules:
            if r.action.kind != "forward":
                continue  # redirects and direct responses never reach the service
            if retrying:
                retry = r.retry if r.retry is not None else svc.retry  # as settings_for
                if retry is None or retry.attempts <= 0:
                    continue
            s = svc.settings_for(r)
            t_span = r.at("timeout") if r.timeout_ms is not None else svc.spans.get("timeout")
            yield Effective(svc, r, s.timeout_ms, t_span, s.retry, s.fault)
    for svc in mesh.services:
        if svc.name not in routed:
            if retrying and (svc.retry is None or svc.retry.attempts <= 0):
                continue
            yield Effective(svc, None, svc.timeout_ms, svc.spans.get("timeout"), svc.retry, svc.fault)
