"""Rate limits: Envoy's local rate limit filter, enforced at each caller.

Istio has no rate-limit resource, so each `limit` becomes an EnvoyFilter on
the calling workload's sidecar: the local_ratelimit HTTP filter on its
outbound listeners, switched on only for the destination's virtual host
with that pair's token bucket. Enforcing at the caller is what makes the
limit per source exact (a destination-side local limit cannot tell callers
apart); the bucket belongs to each caller instance (pod).
"""

from __future__ import annotations

import math

from ...model.types import RateLimit, Service, Source
from ...plan import plan_of
from .context import Lowering
from .names import fqdn, selector

FILTER = "envoy.filters.http.local_ratelimit"
FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
TYPED_STRUCT = "type.googleapis.com/udpa.type.v1.TypedStruct"
MIN_FILL_NS = 50_000_000  # Envoy refuses fill intervals under 50ms


def _callers(lw: Lowering, s: Source, dest: Service) -> list[Service] | None:
    """Services a source matches (semantics: only with a visible identity)."""
    if lw.mesh.mtls_of(dest) == "off":
        return []  # no caller identity is visible, so no source but `*` matches
    every, by_name, by_ns = _services(lw)
    if s.kind == "service":
        return [o for o in by_name.get(s.name, ()) if o is not dest]
    if s.kind == "namespace":
        return [o for o in by_ns.get(s.name, ()) if o is not dest]
    if s.kind == "authenticated":
        return [o for o in every if o is not dest]
    return None


def _services(lw: Lowering) -> tuple[list[Service], dict[str, list[Service]], dict[str, list[Service]]]:
    """The mesh's services (duplicates left out), in declaration order, also
    by name and by namespace: built once, not per limit (quadratic at 10,000
    services)."""
    got = lw.cache.get("ratelimit.services")
    if got is None:
        mesh = lw.mesh
        every = [o for o in mesh.services if mesh.service(o.name) is o]
        by_name: dict[str, list[Service]] = {}
        by_ns: dict[str, list[Service]] = {}
        for o in every:
            by_name.setdefault(o.name, []).append(o)
            by_ns.setdefault(o.namespace, []).append(o)
        got = lw.cache["ratelimit.services"] = (every, by_name, by_ns)
    return got


def _gateways_matched(lw: Lowering, s: Source, dest: Service) -> list[str]:
    """The ingresses forwarding to `dest` whose identity the source matches
    (an ingress is an authenticated caller, of its namespace)."""
    if lw.mesh.mtls_of(dest) == "off" or s.kind not in ("authenticated", "namespace"):
        return []
    plan = plan_of(lw.mesh)
    return [name for name, ip in plan.ingresses.items()
            if dest.name in ip.callees and (s.kind == "authenticated" or ip.namespace == s.name)]


def _seconds(ns: int) -> str:
    whole, frac = divmod(ns, 1_000_000_000)
    return f"{whole}.{frac:09d}".rstrip("0").rstrip(".") + "s"


def token_bucket(lw: Lowering, lim: RateLimit) -> dict | None:
    """N per period as `tokens_per_fill` every `fill_interval`, with a whole
    number of nanoseconds so the rate is exact, and at least 50ms apart."""
    period_ns = lim.per_seconds * 1_000_000_000
    n = lim.requests
    capacity = lim.burst if lim.burst is not None else n
    t = max(1, math.ceil(MIN_FILL_NS * n / period_ns))
    while (period_ns * t) % n:
        t += 1
    if t > capacity:
        lw.unsupported(f"the rate limit burst {capacity}", lim.at("burst"),
                       f"Envoy refills at most every 50ms, which at {n}/{lim.per} needs a burst of at least {t}")
        return None
    return {"max_tokens": capacity, "tokens_per_fill": t, "fill_interval": _seconds(period_ns * t // n)}


def _http_port(lw: Lowering, dest: Service, lim: RateLimit) -> int | None:
    ports = [p.number for p in dest.ports if p.protocol != "tcp"]
    if len(ports) != 1:
        lw.unsupported(f"the rate limit to `{dest.name}`", lim.span,
                       "the limit is attached to the destination's one HTTP port, "
                       f"and `{dest.name}` has {len(ports)}")
        return None
    return ports[0]


def envoy_filters(lw: Lowering) -> list[dict]:
    mesh = lw.mesh
    per_caller: dict[str, dict[str, tuple[RateLimit, dict, int]]] = {}
    for lim in mesh.rate_limits:
        dest = mesh.service(lim.target.name)
        if dest is None:
            continue
        if lim.key is not None:
            lw.unsupported(f"`per {lim.key.kind}` on the rate limit on `{dest.name}`", lim.key.span,
                           "Envoy's local rate limit keeps a bucket per descriptor value only in a bounded cache "
                           "that forgets buckets (max_dynamic_descriptors), not one per distinct value")
            continue
        callers: list[Service] = []
        for s in lim.sources:
            if s.kind == "internet":
                lw.unsupported("a rate limit from `internet`", s.span,
                               "Istio's rate limits are enforced at the caller's sidecar, and meshc does not yet "
                               "patch the ingress gateway's Envoy")
                continue
            gateways = _gateways_matched(lw, s, dest)
            if gateways:
                lw.unsupported(f"a rate limit whose source `{s.name or s.kind}` matches the ingress `{gateways[0]}`",
                               s.span, "Istio's rate limits are enforced at the caller's sidecar, and meshc does "
                                       "not patch the ingress gateway's Envoy")
                continue
            got = _callers(lw, s, dest)
            if got is None:
                lw.unsupported("a rate limit from `*`", s.span,
                               "callers outside the mesh have no sidecar to enforce it; name the callers")
                continue
            callers.extend(got)
        if not callers:
            continue
        bucket = token_bucket(lw, lim)
        port = _http_port(lw, dest, lim)
        if bucket is None or port is None:
            continue
        for caller in callers:
            pairs = per_caller.setdefault(caller.name, {})
            if dest.name in pairs:
                if pairs[dest.name][0] is not lim:
                    lw.unsupported(f"a second rate limit from `{caller.name}` to `{dest.name}`", lim.span,
                                   "Envoy applies one local rate limit per caller and destination")
                continue
            pairs[dest.name] = (lim, bucket, port)
    out = []
    for caller_name in sorted(per_caller):
        caller = mesh.service(caller_name)
        patches: list[dict] = [{
            "applyTo": "HTTP_FILTER",
            "match": {"context": "SIDECAR_OUTBOUND", "listener": {"filterChain": {"filter": {
                "name": "envoy.filters.network.http_connection_manager",
                "subFilter": {"name": "envoy.filters.http.router"}}}}},
            "patch": {"operation": "INSERT_BEFORE", "value": {"name": FILTER, "typed_config": {
                "@type": TYPED_STRUCT, "type_url": FILTER_TYPE,
                "value": {"stat_prefix": "meshc_local_rate_limit"}}}},
        }]
        for dest_name, (lim, bucket, port) in sorted(per_caller[caller_name].items()):
            dest = mesh.service(dest_name)
            on = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
            patches.append({
                "applyTo": "VIRTUAL_HOST",
                "match": {"context": "SIDECAR_OUTBOUND",
                          "routeConfiguration": {"vhost": {"name": f"{fqdn(dest)}:{port}"}}},
                "patch": {"operation": "MERGE", "value": {"typed_per_filter_config": {FILTER: {
                    "@type": TYPED_STRUCT, "type_url": FILTER_TYPE,
                    "value": {
                        "stat_prefix": "meshc_local_rate_limit",
                        "token_bucket": bucket,
                        "filter_enabled": {"runtime_key": "meshc_rate_limit_enabled", **on},
                        "filter_enforced": {"runtime_key": "meshc_rate_limit_enforced", **on},
                    }}}}},
            })
        out.append({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": {"name": f"{caller.name}-ratelimit", "namespace": caller.namespace},
            "spec": {"workloadSelector": {"labels": selector(caller)["matchLabels"]}, "configPatches": patches},
        })
    return out
