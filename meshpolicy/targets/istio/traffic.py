"""DestinationRule: subsets and connection-level traffic policy, per service."""

from __future__ import annotations

from ...model.types import CircuitBreaker, LoadBalancer, Outlier, Retry, Service
from .context import Lowering
from .names import duration, fqdn, percent

_SIMPLE_LB = {"round_robin": "ROUND_ROBIN", "least_request": "LEAST_REQUEST", "random": "RANDOM"}


def load_balancer(lb: LoadBalancer) -> dict:
    if lb.policy in _SIMPLE_LB:
        return {"simple": _SIMPLE_LB[lb.policy]}
    if lb.policy == "hash_header":
        return {"consistentHash": {"httpHeaderName": lb.header or ""}}
    return {"consistentHash": {"useSourceIp": True}}


def service_retries(lw: Lowering, svc: Service) -> list[Retry]:
    out = [svc.retry] if svc.retry is not None else []
    route = lw.mesh.route_map.get(svc.name)
    for rule in route.rules if route else []:
        if rule.retry is not None:
            out.append(rule.retry)
    return out


def connection_pool(lw: Lowering, svc: Service, c: CircuitBreaker) -> dict:
    tcp: dict = {}
    http: dict = {}
    # Istio reads 0 as "unset" (no limit); the checks reject 0 except for
    # max_retries, which is exact only when nothing ever retries.
    for name, into, key in (("max_connections", tcp, "maxConnections"),
                            ("max_pending", http, "http1MaxPendingRequests"),
                            ("max_requests", http, "http2MaxRequests"),
                            ("max_retries", http, "maxRetries")):
        v = getattr(c, name)
        if v is None:
            continue
        if v == 0:
            if name == "max_retries" and all(r.attempts == 0 for r in service_retries(lw, svc)):
                continue  # nothing retries: no limit and a zero limit mean the same
            lw.unsupported(f"circuit `{name} 0`", c.at(name),
                           "Istio reads 0 as unset (no limit); with retries configured this would change meaning",
                           key="circuit")
            continue
        into[key] = v
    out: dict = {}
    if tcp:
        out["tcp"] = tcp
    if http:
        out["http"] = http
    return out


def outlier_detection(lw: Lowering, o: Outlier) -> dict:
    out: dict = {}
    if o.consecutive_5xx is not None:
        out["consecutive5xxErrors"] = o.consecutive_5xx
    if o.consecutive_gateway is not None:
        out["consecutiveGatewayErrors"] = o.consecutive_gateway
    if o.interval_ms is not None:
        out["interval"] = duration(o.interval_ms)
    if o.eject_ms is not None:
        out["baseEjectionTime"] = duration(o.eject_ms)
    if o.max_percent is not None:
        if o.max_percent != int(o.max_percent):  # refused or waived: not written
            lw.unsupported(f"outlier `max {o.max_percent}%`", o.at("max_percent"),
                           "Istio's maxEjectionPercent is a whole percent", key="outlier")
        else:
            out["maxEjectionPercent"] = int(o.max_percent)
    return out


def policy(lw: Lowering, svc: Service, holder) -> dict:
    out: dict = {}
    if holder.balance is not None:
        out["loadBalancer"] = load_balancer(holder.balance)
    if holder.circuit is not None:
        pool = connection_pool(lw, svc, holder.circuit)
        if pool:
            out["connectionPool"] = pool
    if holder.outlier is not None:
        out["outlierDetection"] = outlier_detection(lw, holder.outlier)
    return out


def retry_budget(lw: Lowering, svc: Service) -> dict | None:
    """Envoy keeps one retry budget per cluster: service-wide, never per rule."""
    budget = svc.retry if svc.retry is not None and svc.retry.budget_percent is not None else None
    route = lw.mesh.route_map.get(svc.name)
    for rule in route.rules if route else []:
        r = rule.retry
        if r is not None and r.budget_percent is not None and (
                budget is None or (r.budget_percent, r.budget_min) != (budget.budget_percent, budget.budget_min)):
            lw.unsupported("a retry `budget` on a route rule", r.at("budget_percent"),
                           "Istio keeps one retry budget per destination (DestinationRule), "
                           "so it must be the service's own", key="retry-budget")
    if budget is None:
        return None
    if svc.circuit is not None and svc.circuit.max_retries is not None:
        if lw.unsupported("a retry `budget` together with circuit `max_retries`", budget.at("budget_percent"),
                          "Envoy ignores max_retries when a retry budget is set", key="retry-budget"):
            return None  # waived: the budget is left out, max_retries holds
    out: dict = {"percent": percent(budget.budget_percent)}
    if budget.budget_min is not None:
        out["minRetryConcurrency"] = budget.budget_min
    return out


def destination_rule(lw: Lowering, svc: Service) -> dict:
    tp = policy(lw, svc, svc)
    budget = retry_budget(lw, svc)
    if budget is not None:
        tp["retryBudget"] = budget
    # Callers originate Istio mTLS unless the destination has it off.
    tp["tls"] = {"mode": "DISABLE" if lw.mesh.mtls_of(svc) == "off" else "ISTIO_MUTUAL"}
    spec: dict = {"host": fqdn(svc), "trafficPolicy": tp}
    subsets = []
    for v in svc.versions:
        sub: dict = {"name": v.name}
        if v.labels:  # a version without labels is every pod of the service
            sub["labels"] = dict(sorted(v.labels.items()))
        vp = policy(lw, svc, v)
        if vp:
            sub["trafficPolicy"] = vp
        subsets.append(sub)
    if subsets:
        spec["subsets"] = subsets
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": svc.name, "namespace": svc.namespace},
        "spec": spec,
    }
