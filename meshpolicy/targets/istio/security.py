"""PeerAuthentication and AuthorizationPolicy: mTLS modes and who may call what.

Istio evaluates CUSTOM, then DENY, then ALLOW policies, and a workload with no
ALLOW policy allows everything. So a default-deny mesh gets an explicit
allow-nothing policy in the root namespace (an ALLOW policy that matches
nothing), and a default-allow mesh gets no ALLOW policies at all: with the
default allowing, allow rules cannot change any decision.
"""

from __future__ import annotations

from ...model.types import AuthRule, PathPattern, Service
from .context import Lowering
from .names import ROOT_NAMESPACE, principal, selector
from .tokens import internet_rules

_MTLS = {"strict": "STRICT", "permissive": "PERMISSIVE", "off": "DISABLE"}


def peer_authentications(lw: Lowering) -> list[dict]:
    mesh = lw.mesh
    out = [{
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": ROOT_NAMESPACE},
        "spec": {"mtls": {"mode": _MTLS[mesh.settings.mtls]}},
    }]
    for svc in mesh.services:
        if svc.mtls is not None and mesh.service(svc.name) is svc:
            out.append({
                "apiVersion": "security.istio.io/v1",
                "kind": "PeerAuthentication",
                "metadata": {"name": svc.name, "namespace": svc.namespace},
                "spec": {"selector": selector(svc), "mtls": {"mode": _MTLS[svc.mtls]}},
            })
    return out


def istio_path(lw: Lowering, p: PathPattern) -> str | None:
    """Istio authorization paths are exact, `prefix*`, `*suffix`, `*`, or
    Envoy URI templates using `{*}` (one non-empty segment) and `{**}`.
    Returns None (after MP701) where none of these means exactly `p`."""
    v = p.value
    where = f"the {p.kind} path `{v}` in an authorization rule"
    if any(c in v for c in "{}") or (p.kind != "glob" and "*" in v):
        lw.unsupported(where, p.span, "`*`, `{` and `}` are operators in Istio authorization paths")
        return None
    if p.kind == "exact":
        return v
    if p.kind == "prefix":
        return v + "*"
    if p.kind == "regex":
        lw.unsupported(where, p.span, "Istio authorization matches paths only exactly, by prefix, suffix or template")
        return None
    segments = v.split("/")
    if "**" in v:
        # `/a/b/**`: `**` is `.*`, so a plain string prefix is exact.
        if v.endswith("/**") and v.count("*") == 2:
            return v[:-2] + "*"
        lw.unsupported(where, p.span, "Istio can express `**` only as a trailing `/**` with no other wildcard")
        return None
    return "/".join("{*}" if s == "*" else s for s in segments)


def _sources(lw: Lowering, rule: AuthRule) -> list[dict] | None:
    """The rule's `from` list (its entries OR-combine); None: any source."""
    mesh = lw.mesh
    principals: list[str] = []
    namespaces: list[str] = []
    for s in rule.sources:
        if s.kind == "any":
            return None
        if s.kind == "internet":
            continue  # its own rules: tokens.internet_rules
        if s.kind == "authenticated":
            principals.append("*")
        elif s.kind == "namespace":
            namespaces.append(s.name or "")
        else:
            svc = mesh.service(s.name or "")
            if svc is None:
                continue
            # a service sharing its account with another is MP108's (meshc check)
            principals.append(principal(mesh, svc))
    out = []
    if principals:
        out.append({"source": {"principals": sorted(set(principals))}})
    if namespaces:
        out.append({"source": {"namespaces": sorted(set(namespaces))}})
    return out


def _rules(lw: Lowering, rule: AuthRule) -> list[dict]:
    """One AuthorizationPolicy rule for the rule's service, namespace and
    `authenticated` sources (or `*`), plus those of each `internet` source
    (their claim conditions must not constrain the other sources)."""
    op: dict = {}
    if rule.methods:
        op["methods"] = list(rule.methods)
    if rule.paths:
        paths = [istio_path(lw, p) for p in rule.paths]
        op["paths"] = [p for p in paths if p is not None]
    to = [{"operation": op}] if op else None
    srcs = _sources(lw, rule)
    out: list[dict] = []
    if srcs is None:
        out.append({"to": to} if to else {})
        return out  # `*`: every request, internet ones included
    if srcs:
        r: dict = {"from": srcs}
        if to:
            r["to"] = to
        out.append(r)
    for s in rule.sources:
        if s.kind == "internet":
            out += internet_rules(lw, rule, s, to)
    return out  # empty: no source can match (e.g. every named caller is unknown)


def authorization_policies(lw: Lowering) -> list[dict]:
    mesh = lw.mesh
    out = []
    if mesh.settings.default == "deny":
        out.append({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "allow-nothing", "namespace": ROOT_NAMESPACE},
            "spec": {},
        })
    for svc in mesh.services:
        if mesh.service(svc.name) is not svc:
            continue
        rules = mesh.rules_by_target.get(svc.name, [])
        for effect in ("deny", "allow"):
            if effect == "allow" and mesh.settings.default == "allow":
                continue
            lowered = [x for r in rules if r.effect == effect for x in _rules(lw, r)]
            if lowered:
                out.append(policy(svc, effect, lowered))
    return out


def policy(svc: Service, effect: str, rules: list[dict]) -> dict:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": f"{svc.name}-{effect}", "namespace": svc.namespace},
        "spec": {"selector": selector(svc), "action": effect.upper(), "rules": rules},
    }
