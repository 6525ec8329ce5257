"""Where each workload listens: the same two port layouts as the Envoy
target (../port_layout.py, docs/targets/meshproxy.md), so either data plane
runs as-is.

per-workload (the default): admin 15000 and outbound 15001 on 127.0.0.1, the
inbound listener of the j-th declared service port on 15006 + j at
`listen_address` (0.0.0.0 unless set), its application on the declared port
number, outbound tcp listener k on 15100 + k; upstreams are host names.

mesh-unique (`meshc up`): workloads are ordered by (service, version) name,
each as many instances as `replicas` says (../port_layout.py `instances`);
instance block i owns ports `port_base + i * ports_per_workload + k`:

    k = 0 inbound (mTLS) for the first declared service port
        1 outbound HTTP proxy (the app's HTTP_PROXY)
        2 admin (health, metrics)
        3 the application, for the first declared port
        4.. one outbound TCP listener per callable tcp-only destination
            (sorted by name), then an (inbound, application) pair for each
            further declared service port.

`[compile.meshproxy]` in meshc.toml sets `ports` (the layout) and overrides
listen_address, app_address, port_base and ports_per_workload; http1_apps lists services declared http2 or
grpc whose application speaks HTTP/1.1 too (meshproxy speaks only HTTP/1.1).
egress_ca: the CA file TLS origination to external services trusts
instead of the system store; external_endpoints: "<external>:<port>" ->
"<address>:<port>" to dial instead of resolving the external's host
(both for `meshc up`'s local stand-in of an external service).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...model.types import Mesh, Port, Service
from ..port_layout import (ADMIN_PORT, FIRST_TCP_PORT, INBOUND_PORT, LOOPBACK, MESH_UNIQUE, OUTBOUND_PORT,
                           default_listen_address, fixed_port_clashes, layout_of, replicas_problem)

INBOUND, OUTBOUND, ADMIN, APP, FIRST_EXTRA = 0, 1, 2, 3, 4
DEFAULTS = {"ports": "per-workload", "listen_address": "127.0.0.1", "app_address": "127.0.0.1",
            "port_base": 20000, "ports_per_workload": 10, "http1_apps": [],
            "egress_ca": None, "external_endpoints": {}, "replicas": {}}


_EXTERNAL_KEY = re.compile(r"[a-z0-9][a-z0-9-]*:[0-9]{1,5}")
_ENDPOINT = re.compile(r"[0-9A-Za-z.\-\[\]:]+:[0-9]{1,5}")


class SettingsError(ValueError):
    pass


def read_settings(settings: dict) -> dict:
    """The convention's settings, checked; SettingsError names the bad key."""
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise SettingsError(f"unknown key `{unknown[0]}` (known: {', '.join(sorted(DEFAULTS))})")
    layout, problem = layout_of(settings)
    if problem:
        raise SettingsError(problem)
    out = {**DEFAULTS, **settings, "ports": layout}
    if "listen_address" not in settings:
        out["listen_address"] = default_listen_address(layout)
    for key in ("listen_address", "app_address"):
        if not isinstance(out[key], str) or not out[key] or any(c.isspace() for c in out[key]):
            raise SettingsError(f"`{key}` must be an address such as \"127.0.0.1\", not {out[key]!r}")
    for key in ("port_base", "ports_per_workload"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
            raise SettingsError(f"`{key}` must be an integer between 1 and 65535, not {v!r}")
    apps = out["http1_apps"]
    if not isinstance(apps, list) or not all(isinstance(a, str) for a in apps):
        raise SettingsError(f"`http1_apps` must be a list of service names, not {apps!r}")
    ca = out["egress_ca"]
    if ca is not None and (not isinstance(ca, str) or not ca):
        raise SettingsError(f"`egress_ca` must be a file path, not {ca!r}")
    eps = out["external_endpoints"]
    if not isinstance(eps, dict) or not all(
            isinstance(k, str) and _EXTERNAL_KEY.fullmatch(k) and isinstance(v, str) and _ENDPOINT.fullmatch(v)
            and 1 <= int(v.rsplit(":", 1)[1]) <= 65535 for k, v in eps.items()):
        raise SettingsError("`external_endpoints` maps \"<external>:<port>\" to \"<address>:<port>\", "
                            f"not {eps!r}")
    problem = replicas_problem(out["replicas"])
    if problem:
        raise SettingsError(problem)
    if out["ports_per_workload"] < FIRST_EXTRA:
        raise SettingsError(f"`ports_per_workload` must be at least {FIRST_EXTRA}")
    return out


def workload_keys(mesh: Mesh) -> list[tuple[str, str | None]]:
    """Every workload, in port order: (service, version), version None for
    an unversioned service."""
    keys: list[tuple[str, str | None]] = []
    for name in sorted(mesh.service_map):
        versions = sorted({v.name for v in mesh.service_map[name].versions})
        keys.extend((name, v) for v in versions) if versions else keys.append((name, None))
    return keys


def service_ports(svc: Service) -> list[Port]:
    """Declared ports, first declaration of each number wins (the checks
    report duplicates); a service without ports is served as http on 80."""
    seen: dict[int, Port] = {}
    for p in svc.ports:
        seen.setdefault(p.number, p)
    return list(seen.values()) or [Port.make(number=80, protocol="http")]


@dataclass(frozen=True)
class WorkloadPorts:
    admin: int
    outbound: int
    inbound: tuple[tuple[Port, int, int], ...]  # (declared port, inbound port, app port)
    tcp: dict[str, int]  # tcp-only destination -> local outbound listener port


def local_address(settings: dict) -> str:
    """Where admin, outbound and tcp listeners bind: per-workload, loopback
    (only the workload's own app may send with its identity)."""
    return settings["listen_address"] if settings["ports"] == MESH_UNIQUE else LOOPBACK


def workload_ports(settings: dict, index: int, svc: Service, tcp_dests: list[str]) -> WorkloadPorts:
    """The ports of workload `index` (mesh-unique; per-workload they are the
    same for every workload of svc). Mesh-unique, past ports_per_workload the
    numbers run into the next block, which `needed` lets the caller report."""
    ports = service_ports(svc)
    if settings["ports"] != MESH_UNIQUE:
        return WorkloadPorts(ADMIN_PORT, OUTBOUND_PORT,
                             tuple((p, INBOUND_PORT + j, p.number) for j, p in enumerate(ports)),
                             {d: FIRST_TCP_PORT + k for k, d in enumerate(tcp_dests)})
    base = settings["port_base"] + index * settings["ports_per_workload"]
    tcp = {d: base + FIRST_EXTRA + i for i, d in enumerate(tcp_dests)}
    extra = base + FIRST_EXTRA + len(tcp_dests)
    inbound = [(ports[0], base + INBOUND, base + APP)]
    for j, p in enumerate(ports[1:]):
        inbound.append((p, extra + 2 * j, extra + 2 * j + 1))
    return WorkloadPorts(base + ADMIN, base + OUTBOUND, tuple(inbound), tcp)


def needed(svc: Service, tcp_dests: list[str]) -> int:
    """How many ports one of svc's workloads needs."""
    return FIRST_EXTRA + len(tcp_dests) + 2 * (len(service_ports(svc)) - 1)


def per_workload_problems(svc: Service, tcp_dests: list[str]) -> list[str]:
    """Why svc's sidecar cannot take the fixed per-workload ports."""
    ports = service_ports(svc)
    out = []
    if INBOUND_PORT + len(ports) > FIRST_TCP_PORT:
        out.append(f"`{svc.name}` declares {len(ports)} ports; the per-workload layout has inbound "
                   f"listeners for {FIRST_TCP_PORT - INBOUND_PORT}")
    if FIRST_TCP_PORT + len(tcp_dests) - 1 > 65535:
        out.append(f"`{svc.name}` needs {len(tcp_dests)} outbound tcp listeners from port {FIRST_TCP_PORT}, "
                   "past 65535")
    clash = fixed_port_clashes([p.number for p in ports], len(tcp_dests), len(ports))
    if clash:
        out.append(f"`{svc.name}` serves port {clash[0]}, which its sidecar's own listeners use in the "
                   "per-workload layout")
    return out
