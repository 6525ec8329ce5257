"""Authorization rules as two RBAC filters: DENY, then ALLOW.

An RBAC filter has one action, so docs/semantics.md's order (any matching
deny denies, else any matching allow allows, else the default stance) takes
two filters in sequence. With `default allow` the ALLOW filter is left out
(everything the DENY filter lets through is allowed); with `default deny`
an ALLOW filter without policies denies everything.

HTTP services: the rules live in the inbound route configuration (RDS), as
`RBACPerRoute` on its virtual host, over two filters in the listener that
carry no rules of their own (the ALLOW one fails closed). A policy change
then changes the route configuration, which Envoy applies to the next
request on every connection, and not the listener, whose update would
leave kept-alive connections on the old rules while they drain
(docs/up.md, "--watch"). tcp services keep network RBAC in the listener:
it decides once per connection anyway.
"""

from __future__ import annotations

from ...model.types import AuthRule, Service, Source
from .conventions import spiffe_prefix
from .context import Ctx
from ...semantics.ingress import providers_admitted
from .jwt_authn import token_principal
from .matchers import methods_header, string_matcher

RBAC_HTTP = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_NETWORK = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
RBAC_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
# The inbound HCM's RBAC filters, named so the route configuration can override each.
INBOUND_DENY, INBOUND_ALLOW = "meshc.inbound.deny", "meshc.inbound.allow"


def principal(ctx: Ctx, s: Source) -> dict:
    """A source as an RBAC principal over the peer certificate's URI SAN.
    The SPIFFE ID format puts the namespace in the path, so a namespace is
    an exact prefix match."""
    mesh = ctx.mesh
    if s.kind == "any":
        return {"any": True}
    if s.kind == "internet":
        return internet_principal(ctx, s)
    if s.kind == "authenticated":
        return {"authenticated": {}}
    if s.kind == "namespace":
        return {"authenticated": {"principal_name": {"prefix": f"{spiffe_prefix(mesh)}ns/{s.name}/sa/"}}}
    svc = mesh.service(s.name or "")
    if svc is None:  # the checks report unknown services; match nobody
        return {"not_id": {"any": True}}
    return {"authenticated": {"principal_name": {"exact": mesh.spiffe_id(svc)}}}


def ingress_id(mesh, g) -> str:
    return f"spiffe://{mesh.settings.trust_domain}/ns/{g.namespace}/sa/{g.account}"


def internet_principal(ctx: Ctx, s: Source) -> dict:
    """`internet [with jwt ...]`: the peer is one of the mesh's ingress
    gateways and, with a token requirement, the token that gateway forwarded
    was validated (here, again) by a provider that can meet it for that
    gateway (semantics/ingress.py `providers_admitted`), with claims passing
    every test."""
    mesh = ctx.mesh
    alts = []
    for g in sorted(mesh.ingress_map.values(), key=lambda g: g.name):
        providers = providers_admitted(mesh, s, g)
        if providers is None:
            continue
        peer = {"authenticated": {"principal_name": {"exact": ingress_id(mesh, g)}}}
        if not providers:
            alts.append(peer)
            continue
        tokens = [token_principal(p, s.jwt) for p in sorted(providers)]
        alts.append({"and_ids": {"ids": [peer, tokens[0] if len(tokens) == 1 else {"or_ids": {"ids": tokens}}]}})
    if not alts:
        return {"not_id": {"any": True}}  # no ingress can send what it needs: nobody
    return alts[0] if len(alts) == 1 else {"or_ids": {"ids": alts}}


def permission(rule: AuthRule) -> dict:
    parts = []
    if rule.methods:
        parts.append({"header": methods_header(rule.methods)})
    if rule.paths:
        parts.append({"or_rules": {"rules": [{"url_path": {"path": string_matcher(p)}} for p in rule.paths]}})
    if not parts:
        return {"any": True}
    if len(parts) == 1:
        return parts[0]
    return {"and_rules": {"rules": parts}}


def _policy(ctx: Ctx, rule: AuthRule) -> dict:
    return {"permissions": [permission(rule)],
            "principals": [principal(ctx, s) for s in rule.sources]}


def policies(ctx: Ctx, dest: Service, effect: str) -> dict:
    rules = [r for r in ctx.mesh.rules_by_target.get(dest.name, []) if r.effect == effect]
    # Keys carry the rule's position so a denial's stat names the rule.
    return {f"{effect}-{r.index}": _policy(ctx, r) for r in rules}


def _check_tcp_rules(ctx: Ctx, dest: Service) -> None:
    for r in ctx.mesh.rules_by_target.get(dest.name, []):
        if r.methods or r.paths:
            ctx.unsupported("methods or paths in an authorization rule for a tcp service", r.span,
                            f"`{dest.name}` speaks tcp only, so its sidecar sees no HTTP method or path")


def _rule_sets(ctx: Ctx, dest: Service):
    """(effect, policies) for the DENY set (when there are deny rules), then
    the ALLOW set (unless the mesh allows by default)."""
    for effect in ("deny", "allow"):
        pols = policies(ctx, dest, effect)
        if effect == "deny" and not pols:
            continue
        if effect == "allow" and ctx.mesh.settings.default == "allow":
            continue
        yield effect, pols


def rbac_network_filters(ctx: Ctx, dest: Service) -> list[dict]:
    """A tcp service's network RBAC filters, rules inline."""
    _check_tcp_rules(ctx, dest)
    return [{"name": "envoy.filters.network.rbac", "typed_config": {
        "@type": RBAC_NETWORK, "rules": {"action": effect.upper(), "policies": pols},
        "stat_prefix": f"inbound_{effect}_"}} for effect, pols in _rule_sets(ctx, dest)]


def rbac_http_filters(ctx: Ctx) -> list[dict]:
    """The inbound HCM's RBAC filters, the same for every policy of a given
    default stance: DENY without rules (denies nothing unless overridden),
    and, unless the mesh allows by default, ALLOW without policies (denies
    everything unless overridden: a request no virtual host covers is refused)."""
    out = [{"name": INBOUND_DENY, "typed_config": {"@type": RBAC_HTTP}}]
    if ctx.mesh.settings.default != "allow":
        out.append({"name": INBOUND_ALLOW, "typed_config": {"@type": RBAC_HTTP, "rules": {"action": "ALLOW"}}})
    return out


def rbac_per_route(ctx: Ctx, dest: Service) -> dict:
    """typed_per_filter_config of the inbound virtual host: the destination's
    rules for the filters of rbac_http_filters."""
    names = {"deny": INBOUND_DENY, "allow": INBOUND_ALLOW}
    return {names[effect]: {"@type": RBAC_PER_ROUTE, "rbac": {"rules": {"action": effect.upper(), "policies": pols}}}
            for effect, pols in _rule_sets(ctx, dest)}


def allowed_san_matchers(ctx: Ctx, dest: Service) -> list[dict]:
    """URI SAN matchers for the inbound TLS handshake: every identity some
    allow rule (or the default stance) could admit. Callers outside it are
    refused at the handshake, which RBAC would deny anyway."""
    mesh = ctx.mesh
    rules = [r for r in mesh.rules_by_target.get(dest.name, []) if r.effect == "allow"]
    sources = [s for r in rules for s in r.sources]
    if mesh.settings.default == "allow" or any(s.kind in ("any", "authenticated") for s in sources):
        return [{"san_type": "URI", "matcher": {"prefix": spiffe_prefix(mesh)}}]
    exact: set[str] = set()
    prefixes: set[str] = set()
    for s in sources:
        if s.kind == "internet":
            exact.update(ingress_id(mesh, g) for g in mesh.ingress_map.values())
        elif s.kind == "namespace":
            prefixes.add(f"{spiffe_prefix(mesh)}ns/{s.name}/sa/")
        elif (svc := mesh.service(s.name or "")) is not None:
            exact.add(mesh.spiffe_id(svc))
    out = [{"san_type": "URI", "matcher": {"prefix": p}} for p in sorted(prefixes)]
    out += [{"san_type": "URI", "matcher": {"exact": e}} for e in sorted(exact)]
    if not out:
        # Nobody may call: still only this mesh's identities complete the handshake.
        out = [{"san_type": "URI", "matcher": {"prefix": spiffe_prefix(mesh)}}]
    return out
