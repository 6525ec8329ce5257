"""Upstream clusters: one per destination version (`<svc>|<version>`), with
the version's (else the service's) circuit breaker, outlier detection and
load balancer, and mTLS presenting the caller's certificate while checking
the destination's SPIFFE ID."""

from __future__ import annotations

from ...model.types import CircuitBreaker, LoadBalancer, Outlier, Service
from ...plan import version_settings
from ...plan.hosts import upstream_host
from ...semantics.multiplexing import multiplexing_keeps
from ..port_layout import MESH_UNIQUE
from .context import Ctx
from .conventions import APP_CLUSTER, COLLECTOR_CLUSTER, INBOUND, ca_file, cluster_name, port
from .sds import tls_certificates
from .values import duration

UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
LB = {"round_robin": "ROUND_ROBIN", "least_request": "LEAST_REQUEST", "random": "RANDOM",
      "hash_header": "RING_HASH", "hash_source_ip": "RING_HASH"}


def speaks_http2(svc: Service) -> bool:
    return any(p.protocol in ("http2", "grpc") for p in svc.ports)


def sidecar_http2(ctx: Ctx, dest: Service, circuit: CircuitBreaker | None) -> bool:
    """Whether callers' sidecars speak HTTP/2 to dest's (one version's) sidecar:
    when its app does, and for any http service reached over mTLS (ALPN h2;
    dest's sidecar still speaks the app's own protocol to the app) unless a
    connection-counted circuit limit would change meaning over one
    multiplexed connection (semantics/multiplexing.py). Measured faster under
    concurrent load (docs/performance.md, "Envoy: HTTP/2 between sidecars")."""
    if speaks_http2(dest):
        return True
    return dest.http and ctx.mesh.mtls_of(dest) != "off" and multiplexing_keeps(circuit)


def endpoint(cluster: str, address: str, port_value: int) -> dict:
    return endpoints(cluster, address, [port_value])


def endpoints(cluster: str, address: str, port_values: list[int]) -> dict:
    """One locality with an endpoint per port (a destination version's instances)."""
    return {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
        "socket_address": {"address": address, "port_value": p}}}} for p in port_values]}]}


def _http2_options() -> dict:
    return {HTTP_OPTIONS_KEY: {"@type": HTTP_OPTIONS, "explicit_http_config": {"http2_protocol_options": {}}}}


def _thresholds(ctx: Ctx, dest: Service, cb: CircuitBreaker | None) -> dict | None:
    t: dict = {}
    if cb is not None:
        for ours, theirs in (("max_connections", "max_connections"), ("max_pending", "max_pending_requests"),
                             ("max_requests", "max_requests"), ("max_retries", "max_retries")):
            v = getattr(cb, ours)
            if v is not None:
                t[theirs] = v
    r = dest.retry
    if r is not None and r.attempts and r.budget_percent is not None:
        budget: dict = {"budget_percent": {"value": r.budget_percent}}
        if r.budget_min is not None:
            budget["min_retry_concurrency"] = r.budget_min
        t["retry_budget"] = budget
        if "max_retries" in t:
            ctx.report("MP721", f"`{dest.name}` has a retry budget and `circuit max_retries`;"
                                " Envoy enforces only the budget", cb.at("max_retries") if cb else r.span)
    return t or None


def _outlier(ctx: Ctx, o: Outlier) -> dict:
    # Envoy also ejects on success rate and defaults consecutive_5xx to 5;
    # both are switched off unless the policy asks, so only what is written ejects.
    out: dict = {"enforcing_success_rate": 0}
    if o.consecutive_5xx is not None:
        out["consecutive_5xx"] = o.consecutive_5xx
        out["enforcing_consecutive_5xx"] = 100
    else:
        out["enforcing_consecutive_5xx"] = 0
    if o.consecutive_gateway is not None:
        out["consecutive_gateway_failure"] = o.consecutive_gateway
        out["enforcing_consecutive_gateway_failure"] = 100
    if o.interval_ms is not None:
        out["interval"] = duration(o.interval_ms)
    if o.eject_ms is not None:
        out["base_ejection_time"] = duration(o.eject_ms)
    if o.max_percent is not None:
        if o.max_percent != int(o.max_percent):  # refused or waived: not written
            ctx.unsupported("a fractional outlier `max` percentage", o.at("max_percent"),
                            "Envoy's max_ejection_percent is a whole number", key="outlier")
        else:
            out["max_ejection_percent"] = int(o.max_percent)
    return out


def balance_of(dest: Service, version: str | None) -> LoadBalancer | None:
    return version_settings(dest, dest.version(version) if version else None)[2]


def destination_cluster(ctx: Ctx, caller: Service, dest: Service, version: str | None, dest_index: dict,
                        instance: int = 0) -> dict:
    """The cluster for one destination version, as `caller` (its instance
    k, with `replicas`) dials it: the same for every caller but for the
    caller's own certificate files."""
    key = ("cluster", dest.name, version)
    base = ctx.cache.get(key)
    if base is None:
        base = ctx.cache[key] = _shared_cluster(ctx, dest, version, dest_index)
    if ctx.mesh.mtls_of(dest) == "off":
        return base
    tls: dict = {
        **tls_certificates(ctx, caller, instance),
        "validation_context": {
            "trusted_ca": {"filename": ca_file(ctx.options.certs_dir)},
            "match_typed_subject_alt_names": [
                {"san_type": "URI", "matcher": {"exact": ctx.mesh.spiffe_id(dest)}}],
        },
    }
    if sidecar_http2(ctx, dest, version_settings(dest, dest.version(version) if version else None)[0]):
        tls["alpn_protocols"] = ["h2"]
    return {**base, "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": UPSTREAM_TLS, "common_tls_context": tls}}}


def _shared_cluster(ctx: Ctx, dest: Service, version: str | None, dest_index: dict) -> dict:
    name = cluster_name(dest.name, version)
    circuit, outlier, balance = version_settings(dest, dest.version(version) if version else None)
    targets = dest_index[name]  # the version's instances (port_layout.instances): one endpoint each
    if ctx.settings.ports == MESH_UNIQUE:  # every sidecar on this host, each on its own ports
        kind, address = "STATIC", ctx.settings.listen_address
    else:  # the destination's Service (of its version), as in a cluster; same inbound port everywhere
        kind, address = "STRICT_DNS", upstream_host(dest, version)
    c: dict = {
        "name": name,
        "type": kind,
        "connect_timeout": duration(ctx.settings.connect_timeout_ms),
        "lb_policy": LB[balance.policy] if balance else "ROUND_ROBIN",
        "load_assignment": endpoints(name, address, [port(ctx.settings, t, INBOUND) for t in targets]),
    }
    thresholds = _thresholds(ctx, dest, circuit)
    if thresholds:
        c["circuit_breakers"] = {"thresholds": [thresholds]}
    if outlier is not None:
        c["outlier_detection"] = _outlier(ctx, outlier)
    if sidecar_http2(ctx, dest, circuit):
        c["typed_extension_protocol_options"] = _http2_options()
    return c


def app_cluster(ctx: Ctx, svc: Service, app_port: int) -> dict:
    c: dict = {
        "name": APP_CLUSTER,
        "type": "STATIC",
        "connect_timeout": duration(ctx.settings.connect_timeout_ms),
        "load_assignment": endpoint(APP_CLUSTER, ctx.settings.app_address, app_port),
    }
    if speaks_http2(svc) and svc.name not in ctx.settings.http1_apps:
        c["typed_extension_protocol_options"] = _http2_options()
    return c


def collector_cluster(address: tuple[str, int]) -> dict:
    host, port_value = address
    return {"name": COLLECTOR_CLUSTER, "type": "STRICT_DNS", "connect_timeout": "1s",
            "load_assignment": endpoint(COLLECTOR_CLUSTER, host, port_value)}
