"""Where a sidecar listens and whom it dials: the two port layouts shared by
the Envoy and meshproxy targets (`ports` under [compile.envoy] and
[compile.meshproxy]; docs/targets/envoy.md, docs/targets/meshproxy.md).

per-workload (the default; real deployments): each workload has its own
network namespace (a pod), so every sidecar uses the same fixed ports, as
Istio's do: admin 15000 and outbound 15001 on loopback, inbound 15006 on
`listen_address` (0.0.0.0 unless set), the application on its declared port,
outbound tcp listener k on 15100 + k. A caller dials a destination by its
host name (the Service, or `<service>-<version>` for a version) and the
fixed inbound port, so the size of the mesh does not matter.

mesh-unique (`meshc up`: every workload on one host): workload i owns the
block `port_base + i * ports_per_workload + k` and callers dial
`listen_address` and the destination's own inbound port; 65535 caps the mesh.
Setting `port_base`, `ports_per_workload` or `replicas` without `ports`
selects it (they mean nothing in the other layout, where a deployment runs
as many pods as it likes behind each Service).
"""

from __future__ import annotations

PER_WORKLOAD, MESH_UNIQUE = "per-workload", "mesh-unique"
LAYOUTS = (PER_WORKLOAD, MESH_UNIQUE)
BLOCK_KEYS = ("port_base", "ports_per_workload", "replicas")  # settings of the mesh-unique layout only

ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT = 15000, 15001, 15006
FIRST_TCP_PORT = 15100  # outbound tcp listener k: FIRST_TCP_PORT + k
LOOPBACK = "127.0.0.1"
POD_ADDRESS = "0.0.0.0"  # per-workload inbound: callers come from other pods


def layout_of(raw: dict) -> tuple[str, str | None]:
    """The layout meshc.toml asks for, and why the settings are wrong (or None)."""
    given = raw.get("ports")
    block = [k for k in BLOCK_KEYS if k in raw]
    if given is None:
        return (MESH_UNIQUE if block else PER_WORKLOAD), None
    if given not in LAYOUTS:
        return PER_WORKLOAD, f"`ports` must be \"{PER_WORKLOAD}\" or \"{MESH_UNIQUE}\", not {given!r}"
    if given == PER_WORKLOAD and block:
        return given, f"`{block[0]}` applies only to `ports = \"{MESH_UNIQUE}\"`"
    return given, None


def default_listen_address(layout: str) -> str:
    return POD_ADDRESS if layout == PER_WORKLOAD else LOOPBACK


def fixed_port_clashes(app_ports: list[int], tcp_count: int, inbound_count: int = 1) -> list[int]:
    """Application ports that a per-workload sidecar's own listeners take
    (the app and its sidecar share one network namespace)."""
    taken = {ADMIN_PORT, OUTBOUND_PORT}
    taken.update(range(INBOUND_PORT, INBOUND_PORT + inbound_count))
    taken.update(range(FIRST_TCP_PORT, FIRST_TCP_PORT + tcp_count))
    return sorted(p for p in set(app_ports) if p in taken)


# ---- instances (`replicas`, mesh-unique only) --------------------------------
# `meshc up` runs several instances of a workload (docs/up.md, "Instances").
# Which instances there are and whose block of ports each takes is decided
# here, once, for both targets: instance k of workload (service, version)
# owns its own block, the blocks of one workload are consecutive, workloads in
# (service, version) order, so with one instance each the layout is the
# one-block-per-workload layout above. A destination version's endpoints are
# the inbound listeners of all its instances (`blocks_of`).

REPLICAS_KEY = "replicas"  # the setting: {"default": n, "<service>": n, "<service>/<version>": n}
MAX_REPLICAS = 64


def replica_count(replicas: dict | None, service: str, version: str | None) -> int:
    """Instances of one workload: `<service>/<version>`, else `<service>`, else
    `default`, else 1."""
    r = replicas or {}
    if version is not None and f"{service}/{version}" in r:
        return r[f"{service}/{version}"]
    return r.get(service, r.get("default", 1))


def replicas_problem(value) -> str | None:
    """Why a `replicas` setting is malformed (None when it is fine)."""
    if not isinstance(value, dict):
        return f"`{REPLICAS_KEY}` must be a table of \"default\", \"<service>\" or \"<service>/<version>\" = count"
    for k, n in value.items():
        if not isinstance(k, str) or not k or k.count("/") > 1 or "@" in k:
            return f"`{REPLICAS_KEY}` has a key {k!r}; use \"default\", \"<service>\" or \"<service>/<version>\""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_REPLICAS:
            return f"`{REPLICAS_KEY}.{k}` must be a whole number from 1 to {MAX_REPLICAS}, not {n!r}"
    return None


def instance_suffix(instance: int) -> str:
    """What names instance k apart from the workload's first (`@k`; a name
    never holds `@`): instance 0 keeps the workload's own name and file, so a
    mesh with one instance each is named and laid out as without replicas."""
    return f"@{instance}" if instance else ""


def instances(keys: list[tuple[str, str | None]], replicas: dict | None) -> list[tuple[str, str | None, int]]:
    """(service, version, instance) in block order: block i is the i-th."""
    return [(s, v, k) for s, v in keys for k in range(replica_count(replicas, s, v))]


def blocks_of(keys: list[tuple[str, str | None]], replicas: dict | None) -> dict[tuple[str, str | None], list[int]]:
    """(service, version) -> the blocks of its instances, in instance order."""
    out: dict[tuple[str, str | None], list[int]] = {}
    for i, (s, v, _k) in enumerate(instances(keys, replicas)):
        out.setdefault((s, v), []).append(i)
    return out


def account_instances(mesh, replicas: dict | None) -> dict[tuple[str, str], int]:
    """(namespace, account) -> the most instances any workload of that service
    account runs: instance k of every such workload presents the account's
    k-th key pair (plan/cert_layout.py `account_dir`), so each instance of a
    version has a certificate of its own, with the version's SPIFFE id."""
    out: dict[tuple[str, str], int] = {}
    for svc in mesh.services:
        versions = sorted({v.name for v in svc.versions}) or [None]
        n = max(replica_count(replicas, svc.name, v) for v in versions)
        key = (svc.namespace, svc.account)
        out[key] = max(out.get(key, 1), n)
    return out
