"""Where each workload listens: the same port convention as the Envoy target
(docs/targets/envoy.md), so one machine can run either data plane as-is.

Workloads are ordered by (service, version) name; workload i owns ports
`port_base + i * ports_per_workload + k`:

    k = 0 inbound (mTLS) for the first declared service port
        1 outbound HTTP proxy (the app's HTTP_PROXY)
        2 admin (health, metrics)
        3 the application, for the first declared port
        4.. one outbound TCP listener per callable tcp-only destination
            (sorted by name), then an (inbound, application) pair for each
            further declared service port.

`[compile.meshproxy]` in meshc.toml overrides listen_address, app_address,
port_base and ports_per_workload; http1_apps lists services declared http2 or
grpc whose application speaks HTTP/1.1 too (meshproxy speaks only HTTP/1.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...model.types import Mesh, Port, Service

INBOUND, OUTBOUND, ADMIN, APP, FIRST_EXTRA = 0, 1, 2, 3, 4
DEFAULTS = {"listen_address": "127.0.0.1", "app_address": "127.0.0.1",
            "port_base": 20000, "ports_per_workload": 10, "http1_apps": []}


class SettingsError(ValueError):
    pass


def read_settings(settings: dict) -> dict:
    """The convention's settings, checked; SettingsError names the bad key."""
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise SettingsError(f"unknown key `{unknown[0]}` (known: {', '.join(sorted(DEFAULTS))})")
    out = {**DEFAULTS, **settings}
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


def workload_ports(settings: dict, index: int, svc: Service, tcp_dests: list[str]) -> WorkloadPorts:
    """The ports of workload `index`; past ports_per_workload the numbers run
    into the next block, which `needed` lets the caller report."""
    base = settings["port_base"] + index * settings["ports_per_workload"]
    ports = service_ports(svc)
    tcp = {d: base + FIRST_EXTRA + i for i, d in enumerate(tcp_dests)}
    extra = base + FIRST_EXTRA + len(tcp_dests)
    inbound = [(ports[0], base + INBOUND, base + APP)]
    for j, p in enumerate(ports[1:]):
        inbound.append((p, extra + 2 * j, extra + 2 * j + 1))
    return WorkloadPorts(base + ADMIN, base + OUTBOUND, tuple(inbound), tcp)


def needed(svc: Service, tcp_dests: list[str]) -> int:
    """How many ports one of svc's workloads needs."""
    return FIRST_EXTRA + len(tcp_dests) + 2 * (len(service_ports(svc)) - 1)
