"""Egress as Linkerd (2.16+) carries it: an EgressNetwork per namespace of
mesh services and HTTPRoutes attached to it.

Linkerd decides egress in the client's proxy, by the EgressNetwork of the
client's namespace (a namespace-local one takes priority over the global
egress namespace's): `trafficPolicy: Deny` refuses what no route attached
to it matches (HTTP: 403 from the client's proxy, route
`http-egress-deny`), `Allow` lets it through. So:

- the stance: `egress registry_only` is `Deny`, `allow_any` is `Allow`, in
  every namespace holding a mesh service;
- an external `http` port: an HTTPRoute `egress-<external>-<port>` on that
  EgressNetwork (parentRef port), `hostnames` the external's hosts, one
  rule forwarding to the original destination (backendRef: the
  EgressNetwork), with the external's timeout and its retry annotations;
  written in each namespace whose services may call the external.

What a namespace may send is the egress rules' algebra (`_reach`): an
allow's methods and paths become the route's rules (paths restricted to
normalized paths, as the inbound routes: never looser than the policy;
requests no rule matches get the EgressNetwork's `Deny`). Linkerd has no
per-workload egress authorization, only the namespace's EgressNetwork:
an external the services of a namespace may call differently is MP701,
and so is any refusal under `allow_any` (an `Allow` EgressNetwork lets
every host through; a route cannot refuse) and a deny with methods or
paths (the route would need its complement). `tls` ports are the manifest's MP701 (Linkerd
originates no TLS); `tcp` ports need `allow_any` (a TCPRoute names no
host: under `Deny` it would open the port to every host).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from ...codes import diag
from ...model.types import Mesh
from ...plan import Plan
from ..constructs import egress_stance_used
from ...semantics.egress import caller_source_matches
from ..kube import DNS1123_LABEL
from ..http_routes import MAX_MATCHES, MAX_ROUTE_MATCHES, MAX_RULES, Dialect, duration
from . import normal_paths, route_authz
from .routes import retry_policy

NAME = "egress"  # the EgressNetwork of each namespace
MAX_HOSTNAMES = 16  # an HTTPRoute's hostnames (the CRD's maxItems)
GROUP = "policy.linkerd.io"


def documents(mesh: Mesh, plan: Plan, route_api: str, d: Dialect,
              reject: Callable[[str, object, str], None], taken: set[tuple[str, str, str]] | None = None,
              diags: list | None = None) -> list[dict]:
    """taken: (kind, namespace, name) of the documents written already; a
    route named like one of them is MP741 (into diags), never a silent
    replacement."""
    if not egress_stance_used(mesh):  # the mesh says nothing about egress
        return []
    allow_any = mesh.settings.egress == "allow_any"
    by_ns: dict[str, list[str]] = {}
    for sp in plan.services.values():
        by_ns.setdefault(sp.service.namespace, []).append(sp.name)
    docs: list[dict] = [{
        "apiVersion": f"{GROUP}/v1alpha1", "kind": "EgressNetwork",
        "metadata": {"name": NAME, "namespace": ns},
        "spec": {"trafficPolicy": "Allow" if allow_any else "Deny"},
    } for ns in sorted(by_ns)]
    for name, ep in plan.externals.items():
        ext = ep.external
        rules = mesh.rules_by_target.get(name, [])
        scoped_deny = next((r for r in rules if r.effect == "deny" and (r.methods or r.paths)), None)
        if scoped_deny is not None:
            reject(f"the methods or paths of deny rule #{scoped_deny.index + 1} (to external `{name}`)",
                   scoped_deny.span, "a route on an EgressNetwork lets requests through; refusing some requests "
                   "of a caller it lets through would need the complement of the deny's matches")
            continue
        where = rules[0].span if rules else ext.span
        admitted: dict[str, list[dict]] = {}  # namespace -> the rules of its route
        ok = True
        for ns, names in sorted(by_ns.items()):
            got = {n: _reach(mesh, rules, n) for n in names}
            kinds = set(got.values())
            if len(kinds) > 1:
                told = "; ".join(f"{', '.join(sorted(n for n in names if got[n] == k))} {_told(k)}"
                                 for k in sorted(kinds, key=str))
                reject(f"egress to external `{name}` from some services of namespace `{ns}`", where,
                       f"Linkerd decides egress per client namespace (its EgressNetwork), not per workload: {told}")
                ok = False
                continue
            reach = kinds.pop()
            if reach != ALL and allow_any:
                reject(f"refusing (some requests to) external `{name}` to namespace `{ns}` under `egress allow_any`",
                       where, "an `Allow` EgressNetwork lets every host through and a route on it cannot refuse one")
                ok = False
            elif reach:
                matches = _route_matches([r for r in rules if r.index in reach] if reach != ALL else ALL,
                                         name, reject)
                if matches is None:
                    ok = False
                elif matches:  # [] : no normalized path matches the allows' paths: nothing to let through
                    admitted[ns] = matches
        http = [p for p in ep.ports if p.protocol == "http"]
        # hosts compare without letter case (semantics/hosts.py); the CRD wants lower case
        hostnames = list(dict.fromkeys(h.lower() for h in ext.hosts))
        if http and len(hostnames) > MAX_HOSTNAMES:
            reject(f"the {len(hostnames)} hosts of external `{name}`", ext.at("hosts"),
                   f"a route holds at most {MAX_HOSTNAMES} hostnames")
            ok = False
        address = next((h for h in ext.hosts if _is_address(h)), None)
        if http and address is not None:
            reject(f"the host `{address}` of external `{name}`", ext.at("hosts"),
                   "a route's hostnames are DNS names (Gateway API allows no IP address there)")
            ok = False
        if any(p.protocol == "tcp" for p in ep.ports) and not allow_any:
            p = next(p for p in ep.ports if p.protocol == "tcp")
            reject(f"`port {p.number} tcp` of external `{name}` under `egress registry_only`", p.span,
                   "a TCPRoute on an EgressNetwork names no host: it would open the port to every host")
            ok = False
        if not http and (ext.timeout_ms is not None or (ext.retry is not None and ext.retry.attempts > 0)):
            reject(f"the timeout or retry of external `{name}`", ext.at("timeout") if ext.timeout_ms else ext.retry.span,
                   "only an HTTPRoute carries them, and the external has no http port")
            ok = False
        ann: dict[str, str] | None = {}
        if ext.retry is not None and ext.retry.attempts > 0:
            ann = retry_policy(ext.retry, False, d, f"external `{name}`")
        if not ok or ann is None:
            continue
        for p in http:
            route_name = f"egress-{name}-{p.number}"
            if not DNS1123_LABEL.fullmatch(route_name) or len(route_name) > 63:
                reject(f"the external name `{name}`", ext.at("name"),
                       f"its route `{route_name}` must be a DNS-1123 label of at most 63 characters")
                ok = False
            clash = next((ns for ns in admitted if ("HTTPRoute", ns, route_name) in (taken or ())), None)
            if clash is not None and diags is not None:
                diags.append(diag("MP741", f"the HTTPRoute `{route_name}` for port {p.number} of external `{name}` "
                                           f"would replace a route of the same name in namespace `{clash}`", ext.span))
                ok = False
        if not ok:
            continue
        for ns, matches in admitted.items():
            for p in http:
                rule: dict = {"backendRefs": [{"group": GROUP, "kind": "EgressNetwork", "name": NAME}]}
                if ext.timeout_ms is not None:
                    rule["timeouts"] = {"request": duration(ext.timeout_ms)}
                route_rules = [{"matches": m, **rule} for m in matches] if matches != [ALL_MATCHES] else [rule]
                meta: dict = {"name": f"egress-{name}-{p.number}", "namespace": ns}
                if ann:
                    meta["annotations"] = dict(ann)
                docs.append({
                    "apiVersion": route_api, "kind": "HTTPRoute", "metadata": meta,
                    "spec": {"parentRefs": [{"group": GROUP, "kind": "EgressNetwork", "name": NAME, "port": p.number}],
                             "hostnames": hostnames, "rules": route_rules},
                })
    return docs


# What a caller may send to an external: ALL (every request), () (nothing),
# or the scoped allow rules that let it through (their methods x paths).
ALL = ("*",)
ALL_MATCHES = "every request"


def _reach(mesh: Mesh, rules, caller: str) -> tuple:
    """The egress algebra (semantics/evaluate.py authorize_egress) for one
    caller, when no deny names methods or paths: a matching deny refuses
    everything; else the default `allow`, or an allow without methods and
    paths, lets everything through; else the matching scoped allows do
    (their indexes)."""
    hits = [r for r in rules if any(caller_source_matches(mesh, s, caller) for s in r.sources)]
    if any(r.effect == "deny" for r in hits):
        return ()
    allows = [r for r in hits if r.effect == "allow"]
    if mesh.settings.default == "allow" or any(not (r.methods or r.paths) for r in allows):
        return ALL
    return tuple(sorted(r.index for r in allows))


def _told(reach: tuple) -> str:
    if reach == ALL:
        return "may send it every request"
    if not reach:
        return "may send it nothing"
    return "may send it what allow rules " + ", ".join(f"#{i + 1}" for i in reach) + " let through"


def _route_matches(reach, name: str, reject) -> list | None:
    """One HTTPRoute rule's matches per scoped allow rule ([ALL_MATCHES]:
    one rule matching everything). Paths hold only for normalized paths
    (route_authz.path_match), so the route is never looser than the
    policy, which judges the normalized path. None after an MP701."""
    if reach == ALL:
        return [ALL_MATCHES]
    out = []
    for r in reach:
        paths: list[dict | None] = [None]
        if r.paths:
            try:
                paths = [route_authz.path_match((p.kind, p.value)) for p in r.paths]
            except (route_authz.Unlayable, normal_paths.NotLayable) as exc:
                reject(f"a path of allow rule #{r.index + 1} (to external `{name}`)", r.span, str(exc))
                return None
            paths = [p for p in paths if p is not None]
            if not paths:
                continue  # no normalized path matches: the rule lets nothing through
        matches = [{**({"path": p} if p else {}), **({"method": m} if m else {})}
                   for m in (list(dict.fromkeys(r.methods)) or [None]) for p in paths]
        if len(matches) > MAX_MATCHES:
            reject(f"{len(matches)} method and path combinations of allow rule #{r.index + 1} (to external `{name}`)",
                   r.span, f"a route rule holds at most {MAX_MATCHES} matches")
            return None
        out.append(matches)
    if len(out) > MAX_RULES or sum(map(len, out)) > MAX_ROUTE_MATCHES:
        reject(f"the egress rules to external `{name}`", reach[0].span,
               f"a route holds at most {MAX_RULES} rules and {MAX_ROUTE_MATCHES} matches")
        return None
    return out


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
