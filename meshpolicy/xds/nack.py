"""A NACK as a diagnostic (MP780) at the policy construct the rejected
resource came from.

The Envoy target names what it writes after the policy: an outbound virtual
host is the destination service (its routes `rule-<i>` are the rules of
`route <service>`), an RBAC policy is `allow-<i>`/`deny-<i>` (the auth
rule's index), a cluster is `<service>` or `<service>|<version>`, and every
workload's own listeners and routes belong to its service. `parts` reads
those names back into (construct, span) pairs, each with the JSON of the
piece it covers. A rejection is pinned to the smallest piece that holds what
Envoy's message quotes; failing that, to the pieces that changed since the
last configuration the workload accepted; failing that, to the resource's
owner.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..codes import info
from ..diagnostics import Diagnostic, Severity
from ..span import Span
from .resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot
from .server import Nack

CODE = "MP780"
_KINDS = {LISTENER: "listener", ROUTE: "route configuration", CLUSTER: "cluster", ENDPOINT: "endpoints"}
_RULE = re.compile(r"rule-(\d+)")
_POLICY = re.compile(r"(allow|deny)-(\d+)")
# What an Envoy message quotes: '...', "..." or `...`.
_QUOTED = re.compile(r"'([^']{2,})'|\"([^\"]{2,})\"|`([^`]{2,})`")


@dataclass(frozen=True)
class Part:
    construct: str  # e.g. "rule 1 of `route api`"
    span: Span | None
    fragment: str  # the JSON of the piece of the resource it produced


def _json(x) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"))


def _owner(mesh, node: str) -> tuple[str, Span | None]:
    """The construct a workload's own resources come from: its service (or ingress gateway)."""
    parts = node.split("/")
    name = parts[1] if len(parts) > 1 else node
    svc = mesh.service(name)
    if svc is not None:
        return f"service `{svc.name}`", svc.span
    for g in mesh.ingress_map.values():
        if g.name == name:
            return f"ingress `{g.name}`", g.span
    return f"workload `{node}`", None


def _service_part(mesh, name: str) -> tuple[str, Span | None] | None:
    svc = mesh.service(name)
    if svc is None:
        return None
    route = next((r for r in mesh.routes if r.service.name == svc.name), None)
    if route is not None:
        return f"`route {svc.name}`", route.span
    return f"service `{svc.name}`", svc.span


def parts(mesh, node: str, type_url: str, name: str, resource: dict) -> list[Part]:
    """The constructs a resource comes from, the whole resource (its owner) last."""
    out: list[Part] = []
    rules = {r.index: r for r in mesh.auth_rules}
    if type_url == ROUTE:
        for vh in resource.get("virtual_hosts", []):
            owner = _service_part(mesh, vh.get("name", ""))
            route = next((r for r in mesh.routes if r.service.name == vh.get("name")), None)
            for r in vh.get("routes", []):
                m = _RULE.fullmatch(r.get("name", ""))
                if route is not None and m and int(m.group(1)) < len(route.rules):
                    rule = route.rules[int(m.group(1))]
                    out.append(Part(f"rule {int(m.group(1)) + 1} of `route {route.service.name}`", rule.span,
                                    _json(r)))
            for cfg in vh.get("typed_per_filter_config", {}).values():
                for key, policy in cfg.get("rbac", {}).get("rules", {}).get("policies", {}).items():
                    m = _POLICY.fullmatch(key)
                    if m and int(m.group(2)) in rules:
                        out.append(Part(f"the `{m.group(1)}` rule", rules[int(m.group(2))].span, _json(policy)))
            if owner is not None:
                out.append(Part(owner[0], owner[1], _json(vh)))
    elif type_url in (CLUSTER, ENDPOINT):
        owner = _service_part(mesh, name.split("|")[0]) if not name.startswith("inbound|") else None
        if owner is not None:
            svc = mesh.service(name.split("|")[0])
            version = next((v for v in svc.versions if "|" in name and v.name == name.split("|")[1]), None)
            label, span = (f"version `{version.name}` of service `{svc.name}`", version.span) if version else owner
            out.append(Part(label, span, _json(resource)))
    label, span = _owner(mesh, node)
    out.append(Part(label, span, _json(resource)))
    return out


def _quoted(message: str) -> list[str]:
    return [next(g for g in m.groups() if g) for m in _QUOTED.finditer(message)]


def locate(mesh, nack: Nack, snap: Snapshot, last_good: Snapshot | None = None) -> tuple[str, Part]:
    """The rejected resource and the piece of policy it is pinned to."""
    names = [n for n in nack.resources if n in snap.resources.get(nack.type_url, {})]
    names = names or sorted(snap.resources.get(nack.type_url, {}))
    named = [n for n in names if n in nack.message]  # Envoy often names the resource
    names = named or names
    candidates = [(n, p) for n in names for p in parts(mesh, nack.node, nack.type_url, n,
                                                         snap.resources[nack.type_url][n])]
    if not candidates:
        return (names[0] if names else "?"), Part(*_owner(mesh, nack.node), "")
    quoted = [json.dumps(q)[1:-1] for q in _quoted(nack.message)]
    hits = [(n, p) for n, p in candidates if any(q in p.fragment for q in quoted)]
    if not hits and last_good is not None:
        old = last_good.resources.get(nack.type_url, {})
        seen = {p.fragment for n in old for p in parts(mesh, nack.node, nack.type_url, n, old[n])}
        hits = [(n, p) for n, p in candidates if p.fragment not in seen]
    if not hits:
        return names[0], candidates[-1][1] if len(names) == 1 else Part(*_owner(mesh, nack.node), "")
    return min(hits, key=lambda np: len(np[1].fragment))


def nack_diagnostic(mesh, nack: Nack, snap: Snapshot, last_good: Snapshot | None = None) -> Diagnostic:
    name, part = locate(mesh, nack, snap, last_good)
    kind = _KINDS.get(nack.type_url, nack.type_url.rsplit(".", 1)[-1])
    return Diagnostic(
        CODE, Severity.ERROR,
        f"workload `{nack.node}` rejected the {kind} `{name}` built from {part.construct}: {nack.message.strip()}",
        span=part.span, help=info(CODE).help,
        notes=["the workload keeps running its last good configuration; the next accepted change replaces it"])
