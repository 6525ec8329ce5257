"""Names, file paths and port numbers: the documented conventions. Ports
follow one of two layouts (../port_layout.py): fixed per-workload ports for
real deployments, or ports unique across the mesh so that a runner
(`meshc up`) can start every bootstrap on one machine."""

from __future__ import annotations

import re

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

from ...codes import diag
from ...diagnostics import Diagnostic
from ...model.types import Ingress, Mesh, Service
from ...plan import CertLayout
from ...resources import target_dir
from ..port_layout import (ADMIN_PORT, FIRST_TCP_PORT, INBOUND_PORT, LOOPBACK, MESH_UNIQUE, OUTBOUND_PORT,
                           default_listen_address, fixed_port_clashes, instance_suffix, instances, layout_of,
                           replicas_problem)

# Offsets inside a workload's block of ports.
INBOUND, OUTBOUND, ADMIN, APP, FIRST_TCP = 0, 1, 2, 3, 4
APP_CLUSTER = "inbound|app"
COLLECTOR_CLUSTER = "tracing|collector"


@lru_cache(maxsize=1)
def defaults() -> dict[str, Any]:
    return yaml.safe_load((target_dir("envoy") / "defaults.yaml").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Settings:
    ports: str  # the port layout: "per-workload" or "mesh-unique"
    listen_address: str
    app_address: str
    port_base: int
    ports_per_workload: int
    zipkin_collector: tuple[str, int]
    otlp_collector: tuple[str, int]
    connect_timeout_ms: int
    max_downstream_connections: int = 10000
    # [compile.envoy] runtime: (key, value) pairs over runtime.py's static layer
    runtime: tuple[tuple[str, Any], ...] = ()
    http1_apps: tuple[str, ...] = ()
    egress_ca: str = "/etc/ssl/certs/ca-certificates.crt"
    # "<external>:<port>" -> (address, port) dialled instead of the host (`meshc up`'s stand-ins)
    external_endpoints: tuple[tuple[str, tuple[str, int]], ...] = ()
    # gRPC access-log service the inbound side logs every request to (access_log.py); None: off
    access_log_service: tuple[str, int] | None = None
    # mesh-unique: instances per workload, as `replicas` in ../port_layout.py ("default", "<svc>", "<svc>/<v>")
    replicas: tuple[tuple[str, int], ...] = ()


def _host_port(value: Any) -> tuple[str, int] | None:
    if not isinstance(value, str) or ":" not in value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _ip_port(value: Any) -> bool:
    """An IP address and port (a STATIC cluster's endpoint cannot be a name)."""
    import ipaddress

    hp = _host_port(value)
    try:
        return hp is not None and bool(ipaddress.ip_address(hp[0].strip("[]")))
    except ValueError:
        return False


_RUNTIME_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,199}")


def settings_from(raw: dict[str, Any]) -> tuple[Settings, list[Diagnostic]]:
    """Merge meshc.toml's [compile.envoy] over the defaults, reporting MP720."""
    merged = dict(defaults())
    diags: list[Diagnostic] = []
    layout, problem = layout_of(raw)
    if problem:
        diags.append(diag("MP720", f"[compile.envoy] {problem}"))
    for key, value in sorted(raw.items()):
        if key not in merged:
            diags.append(diag("MP720", f"unknown setting `{key}` in [compile.envoy]"))
            continue
        merged[key] = value
    merged["ports"] = layout
    if "listen_address" not in raw:
        merged["listen_address"] = default_listen_address(layout)
    for key in ("port_base", "ports_per_workload", "connect_timeout_ms", "max_downstream_connections"):
        v = merged[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            diags.append(diag("MP720", f"[compile.envoy] `{key}` must be a positive integer, not {v!r}"))
            merged[key] = defaults()[key]
    for key in ("listen_address", "app_address", "egress_ca"):
        if not isinstance(merged[key], str) or not merged[key]:
            diags.append(diag("MP720", f"[compile.envoy] `{key}` must be an address string"))
            merged[key] = defaults()[key]
    apps = merged.get("http1_apps", [])
    if not isinstance(apps, list) or not all(isinstance(x, str) for x in apps):
        diags.append(diag("MP720", f"[compile.envoy] `http1_apps` must be a list of service names, not {apps!r}"))
        apps = []
    merged["http1_apps"] = tuple(apps)
    eps = merged.get("external_endpoints") or {}
    good = isinstance(eps, dict) and all(isinstance(k, str) and _host_port(k) and _ip_port(v)
                                         for k, v in eps.items())
    if not good:
        diags.append(diag("MP720", "[compile.envoy] `external_endpoints` maps \"<external>:<port>\" to "
                                   f"\"<ip address>:<port>\", not {eps!r}"))
        eps = {}
    merged["external_endpoints"] = tuple(sorted((k, _host_port(v)) for k, v in eps.items()))
    problem = replicas_problem(merged["replicas"])
    if problem:
        diags.append(diag("MP720", f"[compile.envoy] {problem}"))
        merged["replicas"] = {}
    merged["replicas"] = tuple(sorted(merged["replicas"].items()))
    rt = merged.get("runtime") or {}
    rt_ok = isinstance(rt, dict) and all(isinstance(k, str) and _RUNTIME_KEY.fullmatch(k)
                                         and isinstance(v, (bool, int, float, str)) for k, v in rt.items())
    if not rt_ok:
        diags.append(diag("MP720", "[compile.envoy] `runtime` maps Envoy runtime keys (letters, digits, `._-:`) "
                                   f"to a number, a boolean or a string, not {rt!r}"))
        rt = {}
    merged["runtime"] = tuple(sorted(rt.items()))
    als = merged.get("access_log_service") or ""
    merged["access_log_service"] = _host_port(als) if als else None
    if als and merged["access_log_service"] is None:
        diags.append(diag("MP720", f"[compile.envoy] `access_log_service` must be \"host:port\" or \"\", not {als!r}"))
    for key in ("zipkin_collector", "otlp_collector"):
        hp = _host_port(merged[key])
        if hp is None:
            diags.append(diag("MP720", f"[compile.envoy] `{key}` must be \"host:port\", not {merged[key]!r}"))
            hp = _host_port(defaults()[key])
        merged[key] = hp
    return Settings(**merged), diags


@dataclass(frozen=True)
class Workload:
    """One running instance of a service, or of one version of it; index:
    its block of ports. Instance k > 0 (mesh-unique `replicas`) is named
    with `@k` after the workload's name."""

    service: Service
    version: str | None
    index: int
    instance: int = 0

    @property
    def path(self) -> str:
        s, at = self.service, instance_suffix(self.instance)
        if self.version is None:
            return f"{s.namespace}/{s.name}{at}.yaml"
        return f"{s.namespace}/{s.name}/{self.version}{at}.yaml"

    @property
    def node_id(self) -> str:
        return self.path[: -len(".yaml")]

    @property
    def cluster(self) -> str:
        return cluster_name(self.service.name, self.version)


def cluster_name(service: str, version: str | None) -> str:
    """`<svc>|<version>`, or `<svc>` for a service without versions; `|`
    never occurs in a name, so these cannot collide with each other or with
    the sidecar's own clusters."""
    return service if version is None else f"{service}|{version}"


def workloads(mesh: Mesh, settings: Settings | None = None) -> list[Workload]:
    """Every workload instance in a stable order (service name, version name,
    instance: ../port_layout.py `instances`); a position fixes its ports."""
    keys = [(svc.name, v) for svc in sorted(mesh.service_map.values(), key=lambda s: s.name)
            for v in (sorted({v.name for v in svc.versions}) or [None])]
    replicas = dict(settings.replicas) if settings is not None and settings.ports == MESH_UNIQUE else None
    return [Workload(mesh.service_map[s], v, i, k) for i, (s, v, k) in enumerate(instances(keys, replicas))]


@dataclass(frozen=True)
class Gateway:
    """An ingress gateway's workload: numbered after every service's, so
    adding an ingress moves no sidecar's ports."""

    ingress: Ingress
    index: int

    @property
    def path(self) -> str:
        return f"{self.ingress.namespace}/{self.ingress.name}.yaml"

    @property
    def node_id(self) -> str:
        return self.path[: -len(".yaml")]


def gateways(mesh: Mesh, first_index: int) -> list[Gateway]:
    """Every ingress, by name, numbered from first_index (the count of service workloads)."""
    return [Gateway(g, first_index + i) for i, g in enumerate(sorted(mesh.ingress_map.values(), key=lambda g: g.name))]


def gateway_port(settings: Settings, gw: Gateway, offset: int) -> int:
    """The gateway's admin (ADMIN) and its loopback hop into the mesh
    (OUTBOUND), as any workload's."""
    if settings.ports == MESH_UNIQUE:
        return settings.port_base + gw.index * settings.ports_per_workload + offset
    return _FIXED[offset]


def listener_port(settings: Settings, gw: Gateway, i: int) -> int:
    """Where the gateway's i-th `listen` binds: the written port per workload
    (a gateway is a pod of its own), or block offset FIRST_TCP + i when every
    workload shares one host (`meshc up` maps the written port to it)."""
    if settings.ports == MESH_UNIQUE:
        return settings.port_base + gw.index * settings.ports_per_workload + FIRST_TCP + i
    return gw.ingress.listeners[i].port


def gateway_port_problems(settings: Settings, gws: list[Gateway]) -> list[Diagnostic]:
    diags = []
    for gw in gws:
        g = gw.ingress
        if settings.ports == MESH_UNIQUE:
            if FIRST_TCP + len(g.listeners) > settings.ports_per_workload:
                diags.append(diag("MP720", f"ingress `{g.name}` needs {FIRST_TCP + len(g.listeners)} ports "
                                           f"but `ports_per_workload` is {settings.ports_per_workload}", g.span))
            top = gateway_port(settings, gw, 0) + settings.ports_per_workload - 1
            if top > 65535:
                diags.append(diag("MP720", f"ingress `{g.name}` needs ports up to {top}, above 65535", g.span))
            continue
        for ls in g.listeners:
            if ls.port in (ADMIN_PORT, OUTBOUND_PORT):
                diags.append(diag("MP720", f"ingress `{g.name}` listens on port {ls.port}, which the gateway's "
                                           "own admin or mesh hop uses in the per-workload layout", ls.span))
    return diags


def app_port(svc: Service) -> int:
    """The application's port in the per-workload layout: its first declared
    port (80 when it declares none, as the other targets assume)."""
    return svc.ports[0].number if svc.ports else 80


_FIXED = {INBOUND: INBOUND_PORT, OUTBOUND: OUTBOUND_PORT, ADMIN: ADMIN_PORT}


def port(settings: Settings, w: Workload, offset: int) -> int:
    if settings.ports == MESH_UNIQUE:
        return settings.port_base + w.index * settings.ports_per_workload + offset
    if offset == APP:
        return app_port(w.service)
    return _FIXED[offset] if offset < FIRST_TCP else FIRST_TCP_PORT + offset - FIRST_TCP


def local_address(settings: Settings) -> str:
    """Where the outbound and tcp listeners bind: only the workload's own app
    may use its identity, so per-workload they stay on loopback."""
    return settings.listen_address if settings.ports == MESH_UNIQUE else LOOPBACK


def port_problems(settings: Settings, ws: list[Workload], tcp_counts: dict[str, int]) -> list[Diagnostic]:
    """MP720 when the layout cannot place every listener (tcp_counts: service ->
    outbound tcp destinations)."""
    max_tcp = max(tcp_counts.values(), default=0)
    if settings.ports != MESH_UNIQUE:
        diags = []
        if FIRST_TCP_PORT + max_tcp - 1 > 65535:
            diags.append(diag("MP720", f"a workload needs {max_tcp} outbound tcp listeners from port "
                                       f"{FIRST_TCP_PORT}, past 65535"))
        seen = set()
        for w in ws:
            svc = w.service
            if svc.name in seen:
                continue
            seen.add(svc.name)
            clash = fixed_port_clashes([app_port(svc)], tcp_counts.get(svc.name, 0))
            if clash:
                diags.append(diag("MP720", f"`{svc.name}` serves port {clash[0]}, which its sidecar's own "
                                           "listeners use in the per-workload layout",
                                  svc.ports[0].span if svc.ports else svc.span))
        return diags
    diags = []
    if FIRST_TCP + max_tcp > settings.ports_per_workload:
        diags.append(diag("MP720", f"a workload needs {FIRST_TCP + max_tcp} ports ({max_tcp} outbound tcp"
                                   f" destinations) but `ports_per_workload` is {settings.ports_per_workload}"))
    if ws:
        top = port(settings, ws[-1], settings.ports_per_workload - 1)
        if top > 65535:
            diags.append(diag("MP720", f"{len(ws)} workloads need ports up to {top}, above 65535"))
    return diags


def spiffe_prefix(mesh: Mesh) -> str:
    return f"spiffe://{mesh.settings.trust_domain}/"


def cert_files(certs_dir: str, svc: Service | Ingress, instance: int = 0) -> tuple[str, str]:
    """The certificate of a workload's identity (a service's, or an ingress
    gateway's), instance k's own pair for k > 0 (`replicas`)."""
    layout = CertLayout(certs_dir)  # the plan's certificate layout, shared with meshproxy and `meshc certs`
    return (layout.cert_file(svc.namespace, svc.account, instance),
            layout.key_file(svc.namespace, svc.account, instance))


def ca_file(certs_dir: str) -> str:
    return CertLayout(certs_dir).ca_file
