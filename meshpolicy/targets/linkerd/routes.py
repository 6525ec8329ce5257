"""Outbound routing as Linkerd reads it: an HTTPRoute per service port
attached to the Service (parentRef), the per-version Services it splits
over, and retries as the annotations Linkerd reads on a route
(`retry.linkerd.io/http|grpc`, `/limit`, `/timeout`), which hold for all
of a route's rules. The rules themselves are http_routes.py's."""

from __future__ import annotations

from ...model.types import Retry
from ...plan import ServicePlan
from ..envoy.outbound import DEFAULT_RETRY_ON
from ..http_routes import Dialect, duration, http_rules, version_services
from ..kube import APP_LABEL

HTTP_CONDITIONS = {"5xx": "5xx", "gateway-error": "gateway-error"}
GRPC_CONDITIONS = ("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")


def needs_route(sp: ServicePlan) -> bool:
    return sp.routed or bool(sp.service.versions) or any(rp.timeout_ms is not None or rp.retry is not None
                                                         for rp in sp.rule_plans)


def retry_annotations(sp: ServicePlan, grpc: bool, d: Dialect) -> dict[str, str] | None:
    """The one retry policy of a route; None after an MP701."""
    forwarded = [rp for rp in sp.rule_plans if rp.kind in ("forward", "default")]
    live = [rp for rp in forwarded if rp.retry is not None and rp.retry.attempts > 0]
    if not live:
        return {}
    if len({(r.attempts, r.per_try_ms, tuple(r.on), r.non_idempotent) for r in (rp.retry for rp in live)}) > 1 \
            or len(live) != len(forwarded):
        rp = live[0]
        if not d.drop("retry", f"`retry {rp.retry.attempts}` (one of different retries on route `{sp.name}`)",
                      rp.retry.span, "Linkerd reads one retry policy per route, from its annotations"):
            return None
        # waived: the route retries nothing; each retry left out is reported
        for r in {x.retry.span: x.retry for x in live if x.retry.span != rp.retry.span}.values():
            d.waived("retry", f"`retry {r.attempts}` (one of different retries on route `{sp.name}`)", r.span)
        return {}
    r: Retry = live[0].retry
    # Without `on`, the conditions every target retries on by default (docs/targets/envoy.md).
    on = list(r.on) or list(DEFAULT_RETRY_ON)
    if grpc:
        bad = [c for c in on if c not in GRPC_CONDITIONS]
    else:
        bad = [c for c in on if c not in HTTP_CONDITIONS]
    if bad:
        waived = d.drop("retry", f"retry on `{', '.join(bad)}` on `{sp.name}`", r.at("on"),
                        "Linkerd retries on " + ("gRPC statuses " + ", ".join(GRPC_CONDITIONS) if grpc
                                                 else "`5xx` and `gateway-error`"))
        return {} if waived else None
    out = {"retry.linkerd.io/limit": str(r.attempts)}
    out["retry.linkerd.io/grpc" if grpc else "retry.linkerd.io/http"] = ",".join(on)
    if r.per_try_ms is not None:
        out["retry.linkerd.io/timeout"] = duration(r.per_try_ms)
    return out


def http_route(sp: ServicePlan, api_version: str, d: Dialect, retries: bool) -> tuple[list[dict], bool]:
    """The route documents of one service (one per http-family port) and
    whether all of it could be written."""
    svc = sp.service
    ports = [p for p in svc.ports if p.protocol != "tcp"]
    docs, ok = [], True
    for p in ports:
        rules = http_rules(sp, p.number, d)
        ann = retry_annotations(sp, p.protocol == "grpc", d) if retries else {}
        if rules is None or ann is None:
            ok = False
            continue
        meta: dict = {"name": svc.name if len(ports) == 1 else f"{svc.name}-{p.number}", "namespace": svc.namespace}
        if ann:
            meta["annotations"] = ann
        docs.append({
            "apiVersion": api_version,
            "kind": "HTTPRoute",
            "metadata": meta,
            "spec": {"parentRefs": [{"group": "core", "kind": "Service", "name": svc.name, "port": p.number}],
                     "rules": rules},
        })
    return docs, ok


def services_for_versions(sp: ServicePlan) -> list[dict]:
    return version_services(sp, APP_LABEL)
