"""An ingress gateway's bootstrap (docs/semantics.md, "Ingress, tokens and
egress", item 1; docs/targets/envoy.md, "Ingress gateways").

Two hops inside one Envoy. The front listeners (one per `listen`, TLS from
the policy's certificate files for `https`) check tokens (jwt_authn: an
invalid token is 401, a missing one passes), match the ingress's hosts (any
other host: Envoy's 404) and rules in order (no match: 404), apply the
rule's rewrite and header operations, and pick a service, naming it in a
selector header. The request then goes over loopback to the gateway's mesh
hop, which holds every destination service's own route rules, exactly as a
sidecar's outbound listener does (versions, splits, retries, timeouts,
faults, mirrors): those rules must see the rewritten request, and Envoy
cannot route twice in one pass. The hop drops the selector header and calls
the service's workloads over mTLS with the gateway's own identity.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from ...model.types import Ingress, Listener, RouteRule
from ...semantics.evaluate import forward_weights
from ...semantics.ingress import forwards_to
from ...semantics.identity_names import PEER, XFCC, spellings
from .bootstrap import overload_manager
from .clusters import destination_cluster, endpoint
from .context import Ctx
from .conventions import ADMIN, OUTBOUND, Gateway, gateway_port, listener_port, local_address
from .inbound import DOWNSTREAM_TLS, HCM, PATH_NORMALIZATION, router, socket
from .jwt_authn import AUDIENCE_401, accepted, authn_filter, remote_jwks_cluster
from .l7 import CORS_FILTER, cors_filter, cors_policy, header_fields, per_path, rewrite_fields, uses_cors
from .ratelimit import CLIENT_IP
from .outbound import FAULT, FAULT_FILTER, _match, _redirect, virtual_host
from .values import duration, integer_weights
from .runtime import layered_runtime

# Names the service a front route chose; set (never appended) by the gateway
# on every forwarded request, so a client's copy never survives, and removed
# by the mesh hop before the request leaves the gateway.
SELECTOR = "x-meshc-ingress-service"
HOP_CLUSTER = "ingress|mesh"


def local_file(g: Ingress, written: str) -> str:
    """A certificate or key path as written, relative to the declaring .mesh
    file's directory, made absolute (Envoy resolves relative paths against
    its own working directory)."""
    p = Path(written)
    return os.path.abspath(p if p.is_absolute() else Path(g.file).parent / p)


def _front_tls(g: Ingress, ls: Listener) -> dict:
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": DOWNSTREAM_TLS, "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": local_file(g, ls.cert_file or "")},
                                  "private_key": {"filename": local_file(g, ls.key_file or "")}}],
            "alpn_protocols": ["h2", "http/1.1"]}}}


def _select(service: str) -> dict:
    return {"header": {"key": SELECTOR, "value": service}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def _front_route(ctx: Ctx, g: Ingress, rule: RouteRule, suffix: str = "") -> dict:
    where = f"in rule {rule.index + 1} of ingress `{g.name}`"
    r: dict = {"name": f"rule-{rule.index}{suffix}", "match": _match(rule, ctx, where)}
    a = rule.action
    if a.kind == "redirect":
        r["redirect"] = _redirect(ctx, rule)
        return r
    if a.kind == "respond":
        resp: dict = {"status": a.status}
        if a.body is not None:
            resp["body"] = {"inline_string": a.body}
        r["direct_response"] = resp
        return r
    for what, value in (("retry", rule.retry), ("fault", rule.fault), ("mirror", a.mirror)):
        if value is not None:
            # The destination service's own route carries these (at the mesh hop).
            ctx.unsupported(f"`{what}` {where}", value.span, "an ingress rule picks the service; that service's "
                            "own route rules retry, inject faults and mirror")
    live = [(s, w) for s, w in forward_weights(rule).items() if w > 0] or list(forward_weights(rule).items())[:1]
    # The rule's own timeout bounds the whole exchange; none written: none here
    # (the service's route, at the mesh hop, has its own).
    action: dict = {"timeout": duration(rule.timeout_ms) if rule.timeout_ms is not None else "0s"}
    if len(live) == 1:
        action["cluster"] = HOP_CLUSTER
    else:
        ints = integer_weights([w for _, w in live])
        if ints is None:
            ctx.unsupported("a split weight with more than six decimals", rule.span, "Envoy weights are integers")
            ints = [max(1, int(w)) for _, w in live]
        # One hop cluster per service so each weight carries its own selector.
        action["weighted_clusters"] = {"clusters": [
            {"name": f"{HOP_CLUSTER}|{s}", "weight": n, "request_headers_to_add": [_select(s)]}
            for (s, _), n in zip(live, ints)]}
    r["route"] = action
    r.update(header_fields(ctx, rule, where))
    action.update(rewrite_fields(ctx, rule, where))
    adds = r.setdefault("request_headers_to_add", [])
    # After the rule's own operations, so none of them can replace these.
    adds.append({"header": {"key": CLIENT_IP, "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
                 "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
    if len(live) == 1:
        adds.append(_select(live[0][0]))
    if rule.cors is not None:
        r["typed_per_filter_config"] = {CORS_FILTER: cors_policy(rule.cors)}
    return r


def destinations(g: Ingress) -> list[str]:
    """The services the gateway's rules forward to (semantics/ingress.py), sorted."""
    return sorted(forwards_to(g))


def _front_listener(ctx: Ctx, gw: Gateway, i: int, routes: list[dict]) -> dict:
    g = gw.ingress
    ls = g.listeners[i]
    filters = []
    providers = accepted(ctx.mesh, g)
    if providers:
        filters.append(authn_filter(ctx, providers))
    vh = {"name": g.name, "domains": sorted(set(g.hosts)), "routes": routes}
    if uses_cors([vh]):
        filters.append(cors_filter())
    filters.append(router())
    hcm: dict = {
        "@type": HCM, "stat_prefix": f"ingress_{ls.port}", "codec_type": "AUTO", **PATH_NORMALIZATION,
        # The edge: the client's address is the TCP peer's (per source_ip
        # limits, X-Forwarded-For), and `Host: a.example:8443` is host a.example.
        "use_remote_address": True,
        "strip_any_host_port": True,
        "strip_trailing_host_dot": True,
        # Identity headers from outside mean nothing: drop them.
        "forward_client_cert_details": "SANITIZE",
        **(AUDIENCE_401 if providers else {}),
        "route_config": {"name": "ingress",
                         "request_headers_to_remove": [n for n in spellings(PEER) + spellings(XFCC) if n != XFCC],
                         "virtual_hosts": [vh]},
        "http_filters": filters,
    }
    chain: dict = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
    if ls.protocol == "https":
        chain["transport_socket"] = _front_tls(g, ls)
    return {"name": f"ingress|{ls.port}", "address": socket(ctx.settings.listen_address, listener_port(ctx.settings, gw, i)),
            "filter_chains": [chain]}


def _hop_listener(ctx: Ctx, g: Ingress, port_value: int) -> tuple[dict, set[str]]:
    """The mesh hop: each destination's own routes, chosen by the selector."""
    from .outbound import clusters_used

    routes, used = [], set()
    for name in destinations(g):
        svc = ctx.mesh.service_map.get(name)
        if svc is None:
            continue  # the checks report an ingress destination that is no service
        vh = virtual_host(ctx, g, svc)
        used |= clusters_used(vh)
        for r in vh["routes"]:
            r = copy.deepcopy(r)
            r["name"] = f"{name}|{r['name']}"
            r["stat_prefix"] = f"{name}|{r['stat_prefix']}"  # one virtual host for all: the destination in the name
            r["match"].setdefault("headers", []).insert(0, {"name": SELECTOR, "string_match": {"exact": name}})
            routes.append(r)
    vhosts = [{"name": "mesh", "domains": ["*"], "routes": routes}]
    filters = []
    if uses_cors(vhosts):
        filters.append(cors_filter())
    if any(FAULT_FILTER in r.get("typed_per_filter_config", {}) for r in routes):
        filters.append({"name": FAULT_FILTER, "typed_config": {"@type": FAULT}})
    filters.append(router())
    hcm = {"@type": HCM, "stat_prefix": "ingress_mesh", "codec_type": "AUTO", **PATH_NORMALIZATION,
           "route_config": {"name": "mesh", "request_headers_to_remove": [SELECTOR], "virtual_hosts": vhosts},
           "http_filters": filters}
    listener = {"name": "ingress|mesh", "address": socket(local_address(ctx.settings), port_value),
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}
    return listener, used


def ingress_bootstrap(ctx: Ctx, gw: Gateway, index: dict) -> dict:
    g = gw.ingress
    st = ctx.settings
    hop_port = gateway_port(st, gw, OUTBOUND)
    routes = [_front_route(ctx, g, variant, sfx) for rule in g.rules for sfx, variant in per_path(rule)]
    listeners = [_front_listener(ctx, gw, i, routes) for i in range(len(g.listeners))]
    hop, used = _hop_listener(ctx, g, hop_port)
    listeners.append(hop)
    hop_address = local_address(st)
    clusters = [{"name": HOP_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": endpoint(HOP_CLUSTER, hop_address, hop_port)}]
    split = sorted({c["name"] for r in routes for c in r.get("route", {}).get("weighted_clusters", {}).get("clusters", [])})
    clusters += [{"name": n, "type": "STATIC", "connect_timeout": "1s",
                  "load_assignment": endpoint(n, hop_address, hop_port)} for n in split]
    for name in destinations(g):
        svc = ctx.mesh.service_map.get(name)
        if svc is None:
            continue
        for v in sorted(v.name for v in svc.versions) or [None]:
            clusters.append(destination_cluster(ctx, g, svc, v, index))
    known = {c["name"] for c in clusters}
    for name in sorted(used - known):
        ctx.report("MP702", f"a route of ingress `{g.name}` names unknown cluster `{name}`", None)
    for p in accepted(ctx.mesh, g):
        c = remote_jwks_cluster(ctx, p)
        if c is not None:
            clusters.append(c)
    out: dict = {
        "node": {"id": gw.node_id, "cluster": g.name},
        "admin": {"address": socket("127.0.0.1", gateway_port(st, gw, ADMIN))},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    if not ctx.mesh.settings.metrics:
        out["stats_config"] = {"stats_matcher": {"reject_all": True}}
    out["overload_manager"] = overload_manager(st.max_downstream_connections)
    out["layered_runtime"] = layered_runtime(st.runtime)
    return out
