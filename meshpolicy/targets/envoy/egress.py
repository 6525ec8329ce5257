"""Egress at the caller's sidecar (docs/semantics.md, "Ingress, tokens and
egress", item 4; docs/targets/envoy.md, "Egress").

For each external service the plan lets a workload call
(`Plan.external_callees`), its outbound listener gets a virtual host per
http/tls port answering to the external's hosts (`host:port`, and the bare
host for the port a bare host names: wire/evaluate.py `external_port`);
a `tls` port's cluster originates TLS with SNI = the host and verifies the
server's certificate for that host against `egress_ca`. The egress rules
(`allow|deny X -> EXT [methods paths]`) are decided there, on the way out:
the caller is this workload, so each rule's sources are resolved now
(semantics/egress.py `caller_source_matches`) and what is left is a
per-route RBAC override (deny, then allow unless the mesh allows by
default). A `tcp` port is an outbound tcp listener of its own.

An undeclared host: under `egress registry_only` a catch-all virtual host
refuses it with 403, the reference evaluator's answer (so does a mesh
service the caller may not call, whose own sidecar would refuse it);
under `allow_any` a catch-all virtual host sends it through the dynamic
forward proxy as plain HTTP to the Host's host:port (80 by default),
unchecked. A declared external's host is never "undeclared": where the
rules keep this workload from it, its hosts answer 403 under `allow_any`
too (and have no virtual host under `registry_only`).
"""

from __future__ import annotations

from ...model.types import AuthRule, ExternalService, Service
from ...plan import plan_of
from ...semantics.egress import caller_source_matches
from ...wire.evaluate import external_port
from .clusters import UPSTREAM_TLS, endpoint
from .context import Ctx
from .outbound import retry_policy
from .rbac import RBAC_HTTP, permission
from .values import duration

RBAC_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
EGRESS_DENY, EGRESS_ALLOW = "meshc.egress.deny", "meshc.egress.allow"
DFP_FILTER = "type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig"
DFP_CLUSTER_TYPE = "type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig"
ANY_HOST_CLUSTER = "egress|any"
REFUSED_BODY = "egress: the host is not a destination of this workload (egress registry_only)"
DNS_CACHE = {"name": "egress_any", "dns_lookup_family": "V4_PREFERRED", "max_hosts": 1024}


def externals_of(ctx: Ctx, caller: Service) -> list[ExternalService]:
    """The external services the plan lets caller reach, by name."""
    return [ctx.mesh.external_map[n] for n in plan_of(ctx.mesh).external_callees(caller.name)]


def cluster_of(ext: ExternalService, host: str, port: int) -> str:
    return f"external|{ext.name}|{host}|{port}"


def _port_dict(ext: ExternalService) -> dict:
    return {"ports": [{"port": p.number, "protocol": p.protocol} for p in ext.ports]}


def _usable_hosts(ctx: Ctx, ext: ExternalService) -> list[str]:
    out = []
    for h in ext.hosts:
        if "*" in h:
            ctx.unsupported(f"the wildcard host `{h}` of external `{ext.name}`", ext.at("hosts"),
                            "a cluster dials one named host, and its certificate is checked for that name")
            continue
        out.append(h.lower())
    return out


def _rbac_override(ctx: Ctx, caller: Service, ext: ExternalService) -> dict:
    """typed_per_filter_config of the external's routes: the caller's own
    deny rules, then its allow rules (unless the mesh allows by default)."""
    rules = [r for r in ctx.mesh.rules_by_target.get(ext.name, [])
             if any(caller_source_matches(ctx.mesh, s, caller.name) for s in r.sources)]
    out: dict = {}

    def config(effect: str, chosen: list[AuthRule]) -> dict:
        pols = {f"{effect}-{r.index}": {"permissions": [permission(r)], "principals": [{"any": True}]}
                for r in chosen}
        return {"@type": RBAC_PER_ROUTE, "rbac": {"rules": {"action": effect.upper(), "policies": pols}}}

    denies = [r for r in rules if r.effect == "deny"]
    if denies:
        out[EGRESS_DENY] = config("deny", denies)
    if ctx.mesh.settings.default != "allow":
        out[EGRESS_ALLOW] = config("allow", [r for r in rules if r.effect == "allow"])
    return out


def egress_vhosts(ctx: Ctx, caller: Service) -> list[dict]:
    vhosts = []
    for ext in externals_of(ctx, caller):
        hosts = _usable_hosts(ctx, ext)
        override = _rbac_override(ctx, caller, ext)
        for p in ext.ports:
            if p.protocol == "tcp":
                continue
            for h in hosts:
                domains = [f"{h}:{p.number}"]
                if external_port(_port_dict(ext), h) == {"port": p.number, "protocol": p.protocol}:
                    domains.insert(0, h)
                action: dict = {"cluster": cluster_of(ext, h, p.number),
                                "timeout": duration(ext.timeout_ms) if ext.timeout_ms is not None else "0s"}
                rp = retry_policy(ctx, ext, ext.retry)
                if rp:
                    action["retry_policy"] = rp
                route: dict = {"name": "egress", "match": {"prefix": "/"}, "route": action}
                if override:
                    route["typed_per_filter_config"] = override
                vhosts.append({"name": f"external|{ext.name}|{h}|{p.number}", "domains": domains,
                               "routes": [route]})
    if ctx.mesh.settings.egress == "allow_any":
        # A declared external this workload may not call is decided by the
        # rules, not passed through as an unknown host would be: refused here.
        allowed = {e.name for e in externals_of(ctx, caller)}
        for ext in sorted(ctx.mesh.external_map.values(), key=lambda e: e.name):
            if ext.name in allowed:
                continue
            # Envoy's `*.suffix` domains are what the checked hosts mean (hosts.py).
            domains = sorted({d for h in (h.lower() for h in ext.hosts)
                              for d in [h] + [f"{h}:{p.number}" for p in ext.ports]})
            if domains:
                vhosts.append({"name": f"external|{ext.name}|refused", "domains": domains, "routes": [{
                    "name": "refused", "match": {"prefix": "/"},
                    "direct_response": {"status": 403, "body": {"inline_string": "RBAC: access denied"}}}]})
        vhosts.append({"name": "egress|any", "domains": ["*"], "routes": [{
            "name": "any-host", "match": {"prefix": "/"}, "route": {"cluster": ANY_HOST_CLUSTER, "timeout": "0s"}}]})
    else:
        # registry_only: a host no virtual host above answers (undeclared, or
        # a mesh service out of this workload's scope, which its own sidecar
        # would refuse) is refused here with the reference's 403, as meshproxy does.
        vhosts.append({"name": "egress|refused", "domains": ["*"], "routes": [{
            "name": "refused", "match": {"prefix": "/"},
            "direct_response": {"status": 403, "body": {"inline_string": REFUSED_BODY}}}]})
    return vhosts


def egress_http_filters(vhosts: list[dict]) -> list[dict]:
    """The outbound HCM's egress filters (before CORS, fault and the router):
    two RBAC filters without rules of their own (every route without an
    override passes) and, under allow_any, the dynamic forward proxy."""
    out = []
    used = {k for vh in vhosts for r in vh["routes"] for k in r.get("typed_per_filter_config", {})}
    for name in (EGRESS_DENY, EGRESS_ALLOW):
        if name in used:
            out.append({"name": name, "typed_config": {"@type": RBAC_HTTP}})
    if any(vh["name"] == "egress|any" for vh in vhosts):
        out.append({"name": "envoy.filters.http.dynamic_forward_proxy",
                    "typed_config": {"@type": DFP_FILTER, "dns_cache_config": DNS_CACHE}})
    return out


def egress_clusters(ctx: Ctx, caller: Service) -> list[dict]:
    out = []
    for ext in externals_of(ctx, caller):
        hosts = _usable_hosts(ctx, ext)
        for p in ext.ports:
            if p.protocol == "tcp" and len(hosts) > 1:
                continue  # egress_tcp_listeners reports it
            for h in hosts[:1] if p.protocol == "tcp" else hosts:
                name = cluster_of(ext, h, p.number)
                at = dict(ctx.settings.external_endpoints).get(f"{ext.name}:{p.number}")
                c: dict = {"name": name, "type": "LOGICAL_DNS", "dns_lookup_family": "V4_PREFERRED",
                           "connect_timeout": duration(ctx.settings.connect_timeout_ms),
                           "load_assignment": endpoint(name, h, p.number)}
                if at is not None:  # [compile.envoy] external_endpoints: dial there, SNI and SAN stay the host
                    c.update(type="STATIC", load_assignment=endpoint(name, at[0], at[1]))
                    del c["dns_lookup_family"]
                if p.protocol == "tls":
                    c["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
                        "@type": UPSTREAM_TLS, "sni": h, "common_tls_context": {"validation_context": {
                            "trusted_ca": {"filename": ctx.settings.egress_ca},
                            "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": h}}]}}}}
                out.append(c)
    if ctx.mesh.settings.egress == "allow_any":
        out.append({"name": ANY_HOST_CLUSTER, "connect_timeout": duration(ctx.settings.connect_timeout_ms),
                    "lb_policy": "CLUSTER_PROVIDED", "cluster_type": {
                        "name": "envoy.clusters.dynamic_forward_proxy",
                        "typed_config": {"@type": DFP_CLUSTER_TYPE, "dns_cache_config": DNS_CACHE}}})
    return out


def tcp_externals(ctx: Ctx, caller: Service) -> list[tuple[ExternalService, int]]:
    """(external, tcp port) pairs caller may reach, each one outbound tcp listener."""
    return [(ext, p.number) for ext in externals_of(ctx, caller) for p in ext.ports if p.protocol == "tcp"]


def tcp_listener_filters(ctx: Ctx, ext: ExternalService, port: int) -> dict | None:
    """The tcp proxy of one external tcp port (None when it cannot be one)."""
    from .inbound import TCP_PROXY

    hosts = _usable_hosts(ctx, ext)
    if len(hosts) != 1:
        ctx.unsupported(f"a tcp port of external `{ext.name}` with {len(hosts)} usable hosts", ext.at("hosts"),
                        "a tcp proxy cannot tell which host a connection is for")
        return None
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": TCP_PROXY, "stat_prefix": f"egress_{ext.name}_{port}", "cluster": cluster_of(ext, hosts[0], port)}}
