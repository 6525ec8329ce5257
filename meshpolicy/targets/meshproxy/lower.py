"""Model -> one meshproxy config (a plain dict) per workload.

Everything a proxy needs is resolved here: rule overrides against service
settings, version settings against service settings, globs to anchored RE2,
sources to SPIFFE principals, and which destinations this workload may call
at all (see `may_call`), so the proxy only does string and regex tests.
"""

from __future__ import annotations

from pathlib import Path

from ...model import types as m
from ...plan import CertLayout, plan_of
from ...plan.hosts import upstream_host
from ..port_layout import ADMIN_PORT, MESH_UNIQUE, OUTBOUND_PORT, blocks_of, instances
from ...semantics.patterns import glob_regex
from ...wire.version import FORMAT_VERSION
from ...semantics.egress import caller_source_matches
from .northsouth import internet_principal, l7, provider_configs, query_test
from .ports import ADMIN, FIRST_EXTRA, OUTBOUND, WorkloadPorts, local_address, needed, workload_keys, workload_ports


_META = frozenset("\\.+*?()|[]{}^$")


def literal(text: str) -> str:
    """text as an RE2 regex matching exactly it: metacharacters backslashed,
    control characters as \\xHH, everything else as is (readable, and the
    same meaning to RE2 and to Python's re)."""
    out = []
    for c in text:
        if c in _META:
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "".join(out)


def glob_to_regex(glob: str) -> str:
    """The semantics' glob, with readable escaping."""
    return glob_regex(glob, escape=literal)


def anchored(regex: str) -> str:
    """An RE2 regex that must match the whole string, under search or fullmatch."""
    return f"^(?:{regex})$"


def path_matcher(p: m.PathPattern) -> dict:
    if p.kind == "exact":
        rx = "^" + literal(p.value) + "$"
    elif p.kind == "prefix":
        rx = "^" + literal(p.value) + "(?s:.*)$"  # startswith: any tail, newlines too
    elif p.kind == "glob":
        rx = anchored(glob_to_regex(p.value))
    else:
        rx = anchored(p.value)
    return {"kind": p.kind, "value": p.value, "regex": rx}


def header_test(h: m.HeaderMatch) -> dict:
    return {
        "name": h.name.lower(),
        "kind": h.kind,
        "value": h.value if h.kind in ("exact", "prefix", "regex") else None,
        "regex": anchored(h.value or "") if h.kind == "regex" else None,
    }


def namespace_regex(trust_domain: str, namespace: str) -> str:
    return "^" + literal(f"spiffe://{trust_domain}/ns/{namespace}/sa/") + "[^/]+$"


def principal(mesh: m.Mesh, s: m.Source) -> dict:
    if s.kind == "any":
        return {"kind": "any"}
    if s.kind == "authenticated":
        return {"kind": "authenticated"}
    if s.kind == "namespace":
        return {"kind": "namespace", "namespace": s.name,
                "regex": namespace_regex(mesh.settings.trust_domain, s.name)}
    if s.kind == "internet":
        return internet_principal(mesh, s)
    return {"kind": "id", "spiffe_id": mesh.spiffe_id(mesh.service_map[s.name])}


def principals(mesh: m.Mesh, sources: list[m.Source]) -> list[dict]:
    out: list[dict] = []
    for s in sources:
        p = principal(mesh, s)
        if p not in out:
            out.append(p)
    return out


def retry(r: m.Retry | None) -> dict | None:
    if r is None:
        return None
    on = r.attempts > 0
    return {
        "retries": r.attempts,
        "per_try_timeout_ms": r.per_try_ms if on else None,
        "retry_on": list(r.on) if on else [],
        "backoff_base_ms": r.backoff_ms if on else None,
        "backoff_max_ms": r.backoff_max_ms if on else None,
        "budget_percent": r.budget_percent if on else None,
        "budget_min_retries": r.budget_min if on else None,
        "non_idempotent": r.non_idempotent and on,
        "on_status": list(dict.fromkeys(r.on_status)) if on else [],
    }


def fault(f: m.Fault | None) -> dict | None:
    if f is None:
        return None
    return {"delay_ms": f.delay_ms, "delay_percent": f.delay_percent,
            "abort_status": f.abort_status, "abort_percent": f.abort_percent}


def circuit(c: m.CircuitBreaker | None) -> dict | None:
    if c is None:
        return None
    return {"max_connections": c.max_connections, "max_pending": c.max_pending,
            "max_requests": c.max_requests, "max_retries": c.max_retries}


def outlier(o: m.Outlier | None) -> dict | None:
    if o is None:
        return None
    return {"consecutive_5xx": o.consecutive_5xx, "consecutive_gateway": o.consecutive_gateway,
            "interval_ms": o.interval_ms, "base_ejection_ms": o.eject_ms, "max_ejection_percent": o.max_percent}


def cors_of(c):
    from .northsouth import cors

    return cors(c)


def balancer(b: m.LoadBalancer | None) -> dict | None:
    if b is None:
        return None
    return {"policy": b.policy, "header": b.header.lower() if b.header else None}


class Lowering:
    """Per-mesh work done once (destinations are shared by all callers)."""

    def __init__(self, mesh: m.Mesh, certs_dir: str, settings: dict):
        self.mesh = mesh
        self.plan = plan_of(mesh)
        self.certs = CertLayout(certs_dir)
        self.settings = settings
        self.keys = workload_keys(mesh)
        # mesh-unique: each workload runs `replicas` instances, each with its
        # own block of ports (../port_layout.py); a version's upstream lists them all
        replicas = settings.get("replicas") if settings["ports"] == MESH_UNIQUE else None
        self.instances = instances(self.keys, replicas)
        self.blocks = blocks_of(self.keys, replicas)
        self._callable: dict[str, list[str]] = {}
        self._tcp: dict[str, list[str]] = {}
        self._dest_cache: dict[str, dict] = {}
        self._inbound_cache: dict[str, dict] = {}
        self._jwks: dict[str, tuple[str | None, str | None]] = {}  # provider -> northsouth.read_jwks
        # ingress gateways are workloads too, by name after the services (the
        # Envoy target's numbering: adding one moves no sidecar's ports)
        self.ingress_index = {name: len(self.instances) + i for i, name in enumerate(sorted(mesh.ingress_map))}

    def callable(self, name: str) -> list[str]:
        if name not in self._callable:
            self._callable[name] = [d for d in self.plan.callees(name) if d != name]
        return self._callable[name]

    def tcp_destinations(self, name: str) -> list[str]:
        if name not in self._tcp:
            self._tcp[name] = [d for d in self.callable(name) if not self.mesh.service_map[d].http]
        return self._tcp[name]

    def tcp_externals(self, name: str) -> list[tuple[m.ExternalService, int]]:
        """(external, tcp port) pairs the plan lets `name` reach, by name:
        each one outbound tcp listener after the tcp services' (the Envoy
        target's order)."""
        return [(self.mesh.external_map[e], p.number) for e in self.plan.external_callees(name)
                for p in self.mesh.external_map[e].ports if p.protocol == "tcp"]

    def tcp_listeners(self, name: str) -> list[str]:
        """What takes an outbound tcp listener: tcp services, then external tcp ports."""
        return self.tcp_destinations(name) + [f"external|{e.name}|{n}" for e, n in self.tcp_externals(name)]

    def ports(self, service: str, version: str | None, instance: int = 0) -> WorkloadPorts:
        svc = self.mesh.service_map[service]
        return workload_ports(self.settings, self.blocks[(service, version)][instance], svc,
                              self.tcp_listeners(service))

    def ports_needed(self) -> int:
        """The most ports any workload needs (an ingress: its block's first
        four, then one per listener)."""
        return max([needed(self.mesh.service_map[s], self.tcp_listeners(s)) for s, _ in self.keys]
                   + [FIRST_EXTRA + len(g.listeners) for g in self.mesh.ingresses], default=0)

    def workload_count(self) -> int:
        return len(self.instances) + len(self.mesh.ingresses)

    # ---- per workload -------------------------------------------------------
    def workload(self, service: str, version: str | None, instance: int = 0) -> dict:
        mesh = self.mesh
        svc = mesh.service_map[service]
        ver = svc.version(version) if version else None
        ports = self.ports(service, version, instance)
        listen, app_address = self.settings["listen_address"], self.settings["app_address"]
        local = local_address(self.settings)
        dests = []
        for d in self.callable(service):
            entry = self.destination(d)
            tcp = ports.tcp.get(d)
            dests.append({**entry, "tcp_listener": {"address": local, "port": tcp} if tcp else None})
        return {
            "version": FORMAT_VERSION,
            "mesh": mesh.settings.name,
            "workload": {"kind": "service", "service": svc.name, "version": version, "instance": instance,
                         "namespace": svc.namespace, "account": svc.account,
                         "labels": dict(ver.labels) if ver else {}},
            "identity": {
                "spiffe_id": mesh.spiffe_id(svc),
                "trust_domain": mesh.settings.trust_domain,
                # instance k's own key pair (plan/cert_layout.py), the version's SPIFFE id
                "cert_file": self.certs.cert_file(svc.namespace, svc.account, instance),
                "key_file": self.certs.key_file(svc.namespace, svc.account, instance),
                "ca_file": self.certs.ca_file,
            },
            "listeners": {
                "layout": self.settings["ports"],
                "admin": {"address": local, "port": ports.admin},
                "outbound": {"address": local, "port": ports.outbound},
                "inbound": [
                    {"service_port": p.number, "address": listen, "port": inb,
                     "app": {"address": app_address, "port": app, "protocol": p.protocol}}
                    for p, inb, app in ports.inbound
                ],
            },
            "inbound": self.inbound(svc),
            "outbound": {"destinations": dests, "externals": self.externals(svc, ports, local)},
            "egress": self.egress(),
            "jwt": provider_configs(mesh, self._inbound_cache[svc.name + "\0providers"], self._jwks),
            "ingress": None,
            "tracing": {"enabled": mesh.settings.tracing.enabled,
                        "formats": list(mesh.settings.tracing.formats) if mesh.settings.tracing.enabled else [],
                        "sample_percent": mesh.settings.tracing.sample_percent
                        if mesh.settings.tracing.enabled else 0.0},
            "metrics": {"enabled": mesh.settings.metrics, "path": "/metrics"},
        }

    # ---- the callee side ----------------------------------------------------
    def inbound(self, svc: m.Service) -> dict:
        if svc.name not in self._inbound_cache:
            mesh = self.mesh
            rules = mesh.rules_by_target.get(svc.name, [])
            entries = {"deny": [], "allow": []}
            for r in rules:
                entries[r.effect].append({
                    "rule": r.index,
                    "principals": principals(mesh, r.sources),
                    "methods": list(dict.fromkeys(r.methods)),
                    "paths": [path_matcher(p) for p in r.paths],
                })
            limits = []
            for lim in mesh.limits_by_target.get(svc.name, ()):
                key = lim.key
                limits.append({
                    "principals": principals(mesh, lim.sources),
                    "key": {"kind": key.kind, "name": key.name if key.kind != "source_ip" else None}
                    if key is not None else None,
                    "requests": lim.requests,
                    "per_seconds": lim.per_seconds,
                    "max_tokens": lim.burst or lim.requests,
                    "tokens_per_fill": lim.requests,
                    "fill_interval_ms": lim.per_seconds * 1000,
                })
            self._inbound_cache[svc.name] = {
                "mtls": mesh.mtls_of(svc),
                "authorization": {**entries, "default": mesh.settings.default},
                "rate_limits": limits,
            }
            # the providers this sidecar validates tokens with (semantics.ingress)
            # the providers this sidecar validates tokens with (401 for a
            # token none validates); a limit keyed by a claim reads the same
            # tokens (a provider no ingress to here accepts sends none)
            used = self.plan.services[svc.name].jwt_providers
            self._inbound_cache[svc.name + "\0providers"] = used
        return self._inbound_cache[svc.name]

    # ---- the caller side ----------------------------------------------------
    def destination(self, name: str) -> dict:
        if name not in self._dest_cache:
            self._dest_cache[name] = self._destination(self.mesh.service_map[name])
        return self._dest_cache[name]

    def _destination(self, svc: m.Service) -> dict:
        mesh = self.mesh
        upstreams = []
        for w in self.plan.services[svc.name].workloads:
            # mesh-unique: every sidecar on this host; per-workload: the
            # destination's Service (of its version), as in a cluster
            address = (self.settings["listen_address"] if self.settings["ports"] == MESH_UNIQUE
                       else upstream_host(svc, w.version))
            endpoints = []
            for k in range(len(self.blocks[(svc.name, w.version)])):  # every instance of the version
                ports = self.ports(svc.name, w.version, k)
                endpoints.append({"address": address,
                                  "ports": [{"service_port": p.number, "port": inb} for p, inb, _ in ports.inbound]})
            upstreams.append({
                "version": w.version,
                "endpoints": endpoints,
                "circuit_breaker": circuit(w.circuit),
                "outlier_detection": outlier(w.outlier),
                "load_balancer": balancer(w.balance),
            })
        route = mesh.route_map.get(svc.name)
        if route is None:
            # No versions: the one upstream (version None) takes everything.
            shares = self.plan.services[svc.name].default.weights or {None: 100.0}
            routes = [{
                "rule": None,
                "match": {"methods": [], "paths": [], "headers": [], "queries": [], "sources": []},
                "action": {"kind": "forward", "mirror": None,
                           "destinations": [{"version": u["version"], "weight": shares[u["version"]]}
                                            for u in upstreams]},
                "timeout_ms": svc.timeout_ms, "retry": retry(svc.retry), "fault": fault(svc.fault),
                "headers": [], "rewrite": None, "cors": cors_of(svc.cors),
            }]
        else:
            routes = [self.route_rule(svc, r) for r in route.rules]
        return {
            "service": svc.name,
            "namespace": svc.namespace,
            "hosts": list(self.plan.services[svc.name].hosts),
            "spiffe_id": mesh.spiffe_id(svc),
            "mtls": mesh.mtls_of(svc) != "off",
            "upstreams": upstreams,
            "routes": routes,
        }

    def route_rule(self, svc: m.Service, r: m.RouteRule) -> dict:
        a = r.action
        if a.kind == "forward":
            weights = self.plan.services[svc.name].rules[r.index].weights
            action = {"kind": "forward",
                      "destinations": [{"version": v, "weight": w} for v, w in weights.items()],
                      "mirror": {"version": a.mirror.version.name, "percent": a.mirror.percent}
                      if a.mirror else None}
        elif a.kind == "redirect":
            action = {"kind": "redirect", "uri": a.uri, "status": a.status}
        else:
            action = {"kind": "respond", "status": a.status, "body": a.body}
        mt = r.match
        timeout_ms, rule_retry, rule_fault = svc.settings_for(r)
        return {
            "rule": r.index,
            "match": {"methods": list(dict.fromkeys(mt.methods)),
                      "paths": [path_matcher(p) for p in mt.paths],
                      "headers": [header_test(h) for h in mt.headers],
                      "queries": [query_test(q) for q in mt.queries],
                      "sources": list(dict.fromkeys(s.name for s in mt.sources))},
            "action": action,
            "timeout_ms": timeout_ms,
            "retry": retry(rule_retry),
            "fault": fault(rule_fault),
            **l7(r, self.plan.services[svc.name].rules[r.index].cors),
        }

    # ---- egress -------------------------------------------------------------
    def egress(self) -> dict:
        return {"stance": self.mesh.settings.egress, "ca_file": self.settings["egress_ca"]}

    def externals(self, svc: m.Service, ports: WorkloadPorts | None = None, local: str = "") -> list[dict]:
        """Every external service, with the rules naming it that apply to
        this caller (a workload none allows is refused 403 by the default);
        a tcp port the plan lets it reach has a local listener."""
        mesh = self.mesh
        dial = self.settings["external_endpoints"]
        out = []
        for e in mesh.externals:
            entries = {"deny": [], "allow": []}
            for r in mesh.rules_by_target.get(e.name, []):
                if any(caller_source_matches(mesh, s, svc.name) for s in r.sources):
                    entries[r.effect].append({"rule": r.index, "methods": list(dict.fromkeys(r.methods)),
                                              "paths": [path_matcher(p) for p in r.paths]})
            out_ports = []
            for p in e.ports:
                at = dial.get(f"{e.name}:{p.number}")
                listen = ports.tcp.get(f"external|{e.name}|{p.number}") if ports and p.protocol == "tcp" else None
                out_ports.append({"port": p.number, "protocol": p.protocol,
                                  "dial": {"address": at.rsplit(":", 1)[0], "port": int(at.rsplit(":", 1)[1])}
                                  if at else None,
                                  "listener": {"address": local, "port": listen} if listen else None})
            out.append({"name": e.name, "namespace": e.namespace, "hosts": list(e.hosts), "ports": out_ports,
                        **entries, "default": mesh.settings.default, "timeout_ms": e.timeout_ms,
                        "retry": retry(e.retry)})
        return out

    # ---- ingress gateways ---------------------------------------------------
    def ingress_workload(self, g: m.Ingress) -> dict:
        mesh = self.mesh
        gp = self.plan.ingresses[g.name]
        account = gp.account
        called = list(gp.callees)
        base = self.settings["port_base"] + self.ingress_index[g.name] * self.settings["ports_per_workload"]
        unique = self.settings["ports"] == MESH_UNIQUE
        local = local_address(self.settings)
        providers = gp.providers
        return {
            "version": FORMAT_VERSION,
            "mesh": mesh.settings.name,
            "workload": {"kind": "ingress", "service": g.name, "version": None, "instance": 0,
                         "namespace": g.namespace, "account": account, "labels": {}},
            "identity": {
                "spiffe_id": gp.spiffe_id,
                "trust_domain": mesh.settings.trust_domain,
                "cert_file": self.certs.cert_file(g.namespace, account),
                "key_file": self.certs.key_file(g.namespace, account),
                "ca_file": self.certs.ca_file,
            },
            "listeners": {
                "layout": self.settings["ports"],
                "admin": {"address": local, "port": base + ADMIN if unique else ADMIN_PORT},
                "outbound": {"address": local, "port": base + OUTBOUND if unique else OUTBOUND_PORT},
                "inbound": [],
            },
            "inbound": {"mtls": "strict", "authorization": {"deny": [], "allow": [], "default": "deny"},
                        "rate_limits": []},
            "outbound": {"destinations": [{**self.destination(d), "tcp_listener": None} for d in called],
                         "externals": []},
            # no app sends through a gateway; ca_file: what a jwks_uri fetch trusts
            "egress": {"stance": "registry_only", "ca_file": self.settings["egress_ca"]},
            "jwt": provider_configs(mesh, providers, self._jwks),
            "ingress": {
                "listeners": [self.ingress_listener(gp, li, base + FIRST_EXTRA + i if unique else li.port)
                              for i, li in enumerate(gp.listeners)],
                "hosts": list(g.hosts),
                "providers": list(providers),
                "rules": [self.ingress_rule(r, rp) for r, rp in zip(g.rules, gp.rules)],
            },
            "tracing": {"enabled": mesh.settings.tracing.enabled,
                        "formats": list(mesh.settings.tracing.formats) if mesh.settings.tracing.enabled else [],
                        "sample_percent": mesh.settings.tracing.sample_percent
                        if mesh.settings.tracing.enabled else 0.0},
            "metrics": {"enabled": mesh.settings.metrics, "path": "/metrics"},
        }

    def ingress_listener(self, gp, li: m.Listener, port: int) -> dict:
        """port: the written one per workload (a gateway is a pod of its
        own); mesh-unique, block offset 4 + i, as the Envoy target (`meshc up`
        maps the written port to it)."""
        files = gp.cert_paths(li)  # resolved against the declaring file; absolute for the proxy's cwd
        return {"address": self.settings["listen_address"], "port": port, "protocol": li.protocol,
                "cert_file": str(Path(files[0]).absolute()) if files else None,
                "key_file": str(Path(files[1]).absolute()) if files else None}

    def ingress_rule(self, r: m.RouteRule, rp) -> dict:
        """rp: the plan's RulePlan of the rule (weights over services, its own CORS)."""
        a = r.action
        if a.kind == "forward":
            action = {"kind": "forward", "destinations": [{"service": name, "weight": w}
                                                          for name, w in rp.weights.items()]}
        elif a.kind == "redirect":
            action = {"kind": "redirect", "uri": a.uri, "status": a.status}
        else:
            action = {"kind": "respond", "status": a.status, "body": a.body}
        mt = r.match
        return {
            "rule": r.index,
            "match": {"methods": list(dict.fromkeys(mt.methods)), "paths": [path_matcher(p) for p in mt.paths],
                      "headers": [header_test(h) for h in mt.headers],
                      "queries": [query_test(q) for q in mt.queries], "sources": []},
            "action": action,
            "timeout_ms": r.timeout_ms,
            **l7(r, rp.cors),
        }
