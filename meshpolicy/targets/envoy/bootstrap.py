"""One Envoy v3 static bootstrap per workload, as a plain dict."""

from __future__ import annotations

from ...model.types import Service
from .access_log import access_log_cluster, add_inbound_access_log
from .clusters import app_cluster, collector_cluster, destination_cluster
from .context import Ctx
from .conventions import ADMIN, APP, FIRST_TCP, INBOUND, OUTBOUND, Workload, cluster_name, local_address, port
from .egress import egress_clusters, egress_http_filters, egress_vhosts, tcp_externals, tcp_listener_filters
from .jwt_authn import remote_jwks_cluster, validating
from .l7 import cors_filter, uses_cors
from .inbound import PATH_NORMALIZATION, HCM, TCP_PROXY, inbound_listener, router, socket
from .outbound import FAULT, FAULT_FILTER, clusters_used, virtual_host
from .tracing import collector, hcm_tracing
from .runtime import layered_runtime


def _tcp_listener(ctx: Ctx, dest: Service, port_value: int) -> dict:
    if ctx.mesh.route_map.get(dest.name) is not None:
        ctx.unsupported("a route for a tcp service", ctx.mesh.route_map[dest.name].span,
                        "a tcp proxy cannot match requests; it forwards whole connections")
    versions = sorted(v.name for v in dest.versions) or [None]
    proxy: dict = {"@type": TCP_PROXY, "stat_prefix": f"outbound_{dest.name}"}
    if len(versions) == 1:
        proxy["cluster"] = cluster_name(dest.name, versions[0])
    else:
        proxy["weighted_clusters"] = {"clusters": [{"name": cluster_name(dest.name, v), "weight": 1}
                                                   for v in versions]}
    return {"name": f"outbound|tcp|{dest.name}", "address": socket(local_address(ctx.settings), port_value),
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}]}]}


def _outbound_listener(ctx: Ctx, svc: Service, vhosts: list[dict], port_value: int) -> dict:
    filters = egress_http_filters(vhosts)
    if uses_cors(vhosts):
        # First, as Istio orders them: a preflight it answers meets no fault
        # and reaches neither the destination nor its authorization.
        filters.append(cors_filter())
    if any(FAULT_FILTER in r.get("typed_per_filter_config", {}) for vh in vhosts for r in vh["routes"]):
        # No fault of its own: each route's typed_per_filter_config replaces it.
        filters.append({"name": FAULT_FILTER, "typed_config": {"@type": FAULT}})
    filters.append(router())
    hcm: dict = {"@type": HCM, "stat_prefix": "outbound", "codec_type": "AUTO", **PATH_NORMALIZATION,
                 "route_config": {"name": "outbound", "virtual_hosts": vhosts},
                 "http_filters": filters}
    tracing = hcm_tracing(ctx, svc.name)
    if tracing:
        hcm["tracing"] = tracing
    # OUTBOUND makes Envoy's spans here client spans (egress), as meshproxy's
    # are: without it the caller's hop was reported as a second server span.
    return {"name": "outbound", "address": socket(local_address(ctx.settings), port_value),
            "traffic_direction": "OUTBOUND",
            "filter_chains": [{"filters": [
                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}


def tcp_destinations(ctx: Ctx, svc: Service) -> list:
    """What takes an outbound tcp listener: tcp services, then external tcp ports."""
    return [d for d in ctx.callable_from(svc) if not d.http] + tcp_externals(ctx, svc)


def bootstrap(ctx: Ctx, w: Workload, index: dict[str, list[Workload]], scoped: bool = True) -> dict:
    """The bootstrap of workload w. `scoped=False` gives every service a
    route and clusters (only for measuring what scoping saves)."""
    svc = w.service
    st = ctx.settings
    dests = ctx.callable_from(svc) if scoped else sorted(ctx.mesh.service_map.values(),
                                                                   key=lambda s: s.name)
    http_dests = [d for d in dests if d.http]
    tcp_dests = [d for d in dests if not d.http]
    vhosts = [virtual_host(ctx, svc, d) for d in http_dests] + egress_vhosts(ctx, svc)
    listeners = [inbound_listener(ctx, svc, port(st, w, INBOUND), w.instance),
                 _outbound_listener(ctx, svc, vhosts, port(st, w, OUTBOUND))]
    listeners += [_tcp_listener(ctx, d, port(st, w, FIRST_TCP + k)) for k, d in enumerate(tcp_dests)]
    for k, (ext, ext_port) in enumerate(tcp_externals(ctx, svc), start=len(tcp_dests)):
        proxy = tcp_listener_filters(ctx, ext, ext_port)
        if proxy is not None:
            listeners.append({"name": f"outbound|tcp|{ext.name}|{ext_port}",
                              "address": socket(local_address(st), port(st, w, FIRST_TCP + k)),
                              "filter_chains": [{"filters": [proxy]}]})
    clusters = [app_cluster(ctx, svc, port(st, w, APP))]
    for d in dests:
        for v in sorted(v.name for v in d.versions) or [None]:
            clusters.append(destination_cluster(ctx, svc, d, v, index, w.instance))
    clusters += egress_clusters(ctx, svc)
    used = set().union(*(clusters_used(vh) for vh in vhosts)) if vhosts else set()
    known = {c["name"] for c in clusters}
    for name in sorted(used - known):  # a route names a version its service lacks (checks report it)
        ctx.report("MP702", f"a route of `{svc.name}`'s sidecar names unknown cluster `{name}`", None)
    for prov in validating(ctx.mesh, svc.name):
        jc = remote_jwks_cluster(ctx, prov)
        if jc is not None:
            clusters.append(jc)
    c = collector(ctx)
    if c is not None:
        clusters.append(collector_cluster(c))
    als = access_log_cluster(ctx)
    if als is not None:  # callee-side figures with the caller's identity (access_log.py)
        add_inbound_access_log(ctx, w.cluster, listeners[0])
        clusters.append(als)
    out: dict = {
        "node": {"id": w.node_id, "cluster": svc.name},
        "admin": {"address": socket("127.0.0.1", port(st, w, ADMIN))},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    if not ctx.mesh.settings.metrics:
        out["stats_config"] = {"stats_matcher": {"reject_all": True}}
    out["overload_manager"] = overload_manager(st.max_downstream_connections)
    out["layered_runtime"] = layered_runtime(st.runtime)
    return out


DOWNSTREAM_CONNECTIONS = ("type.googleapis.com/envoy.extensions.resource_monitors."
                          "downstream_connections.v3.DownstreamConnectionsConfig")


def overload_manager(max_connections: int) -> dict:
    """A bound on open downstream connections (Envoy warns at start without
    one, and a flood would otherwise exhaust file descriptors)."""
    return {"resource_monitors": [{
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {"@type": DOWNSTREAM_CONNECTIONS, "max_active_downstream_connections": max_connections}}]}
