"""Shared walks over the model, so each rule module reads one topic only.

Each walk visits every place a kind of value can be written (services,
versions, route rules, auth rules, limits, assertions) in one linear pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..model.types import (
    CircuitBreaker, Fault, Mesh, Outlier, PathPattern, Retry, RouteRule, Service,
)
from ..span import Span


def _service_and_rule_settings(mesh: Mesh, field: str) -> Iterator:
    """`field` (retry or fault) as set on each service and each route rule."""
    for svc in mesh.services:
        if getattr(svc, field) is not None:
            yield getattr(svc, field)
    for route in mesh.routes:
        for r in route.rules:
            if getattr(r, field) is not None:
                yield getattr(r, field)


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
    for route in mesh.routes:
        for r in route.rules:
            yield from r.match.paths
    for ar in mesh.auth_rules:
        yield from ar.paths
    for a in mesh.assertions:
        yield from a.paths


def methods(mesh: Mesh) -> Iterator[tuple[str, Span]]:
    """Every method written, with its own span where the model keeps one."""
    for route in mesh.routes:
        for r in route.rules:
            m = r.match
            for i, name in enumerate(m.methods):
                yield name, m.spans.get(f"method.{i}", m.span)
    for ar in mesh.auth_rules:
        for i, name in enumerate(ar.methods):
            yield name, ar.spans.get(f"method.{i}", ar.span)
    for a in mesh.assertions:
        for i, name in enumerate(a.methods):
            yield name, a.spans.get(f"method.{i}", a.span)


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


def effective(mesh: Mesh) -> Iterator[Effective]:
    """One entry per forwarding route rule, and one per route-less service."""
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
            s = svc.settings_for(r)
            t_span = r.at("timeout") if r.timeout_ms is not None else svc.spans.get("timeout")
            yield Effective(svc, r, s.timeout_ms, t_span, s.retry, s.fault)
    for svc in mesh.services:
        if svc.name not in routed:
            yield Effective(svc, None, svc.timeout_ms, svc.spans.get("timeout"), svc.retry, svc.fault)
