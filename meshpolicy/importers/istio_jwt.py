"""RequestAuthentications -> jwt providers; token conditions of
AuthorizationPolicies -> `internet with jwt` sources.

Istio (docs/import.md, "End-user tokens"): a RequestAuthentication's
jwtRules validate tokens at the workloads it applies to (root namespace:
all; a namespace; a selector): a token none validates is 401, no token
passes. `requestPrincipals` (`<iss>/<sub>`, `<iss>/*`, `*`) and
`when: request.auth.*` conditions then need a validated token. Those are
the language's `internet with jwt` sources, whose claims are tested as
`iss = ...`, `sub = ...` and `CLAIM has ...` (a list holding the value, or
a string equal to it: Istio's metadata list-or-string match). Istio matches
any caller carrying such a token; the language the requests an ingress
forwarded, which is exact when the source also names the gateway (MP925).
"""

from __future__ import annotations

import itertools
import json
import re

from ..codes import diag
from ..model import types as t
from ..span import Span
from .context import Context
from .inventory import Resource, labels_of, mesh_name, selects
from .yamlmarks import YMap, YSeq, items_of

_CLAIM = re.compile(r"request\.auth\.claims((?:\[[^\[\]]+\])+)")
_MAX_ALTERNATIVES = 64


def request_authentications(cx: Context, ras: list[Resource], root_ns: str) -> None:
    taken = {s.name for s in cx.mesh.services} | {g.name for g in cx.mesh.ingresses} | \
        {e.name for e in cx.mesh.externals}
    seen: dict[str, t.JwtProvider] = {}
    for res in sorted(ras, key=lambda r: r.sort_key()):
        rules = res.spec.get("jwtRules")
        sel = res.spec.get("selector")
        labels = labels_of(sel.get("matchLabels")) if isinstance(sel, YMap) else {}
        refs = [res.spec["targetRef"]] if isinstance(res.spec.get("targetRef"), YMap) else \
            [r for r in items_of(res.spec.get("targetRefs")) if isinstance(r, YMap)]
        if refs:
            gateways = [r for r in refs if r.get("kind") == "Gateway"]
            if len(gateways) != len(refs):
                cx.refuse(res, "spec.targetRefs", res.spec.key_at("targetRefs" if "targetRefs" in res.spec
                                                                  else "targetRef"),
                          "only Gateway targets are expressible (the ingress's providers); the others are left out")
            # a Gateway API gateway's pods carry its name as this label (Istio's deployment)
            labels = {"gateway.networking.k8s.io/gateway-name": str(gateways[0].get("name"))} if gateways \
                else {"meshc.invalid/no-target": ""}
        cx.coverage.imported[res.kind] += 1
        for i, rule in enumerate(rules if isinstance(rules, YSeq) else []):
            if not isinstance(rule, YMap):
                continue
            where = f"spec.jwtRules[{i}]"
            provider = _provider(cx, res, rule, rules.at(i), where)
            if provider is None:
                continue
            key = json.dumps([provider.issuer, provider.audiences, provider.jwks_uri,
                              cx.extra_files.get(provider.jwks_file or "", provider.jwks_file),
                              [(x.kind, x.name, x.prefix) for x in provider.token_from]])
            if key in seen:
                cx.extra_files.pop(provider.jwks_file or "", None)
                provider = seen[key]
            else:
                base = mesh_name(res.name if len(rules) == 1 else f"{res.name}-{i}")
                name, n = (base if base not in taken else f"{base}-jwt"), 2
                while name in taken:
                    name, n = f"{base}-jwt-{n}", n + 1
                taken.add(name)
                provider.name = name
                if provider.jwks_file is not None:
                    text = cx.extra_files.pop(provider.jwks_file)
                    provider.jwks_file = f"jwks/{name}.json"
                    cx.extra_files[provider.jwks_file] = text
                seen[key] = provider
                cx.mesh.jwt_providers.append(provider)
            cx.provider_scopes.append((res, labels, provider, rule.get("forwardOriginalToken") is True,
                                       rules.at(i)))


def _provider(cx: Context, res: Resource, rule: YMap, at: Span, where: str) -> t.JwtProvider | None:
    issuer = rule.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        cx.diags.append(diag("MP924", f"{res.label}: `{where}` has no issuer (Istio accepts any; the language "
                                      "needs one)", at))
        return None
    p = t.JwtProvider.make(name="", issuer=issuer, file="", span=at, spans={})
    p.audiences = [str(a) for a in items_of(rule.get("audiences"))]
    uri, inline = rule.get("jwksUri", rule.get("jwks_uri")), rule.get("jwks")
    if isinstance(inline, str):
        from ..wire.jwks import jwks_problem  # the validators' own reading: never write a file they refuse

        problem = jwks_problem(inline)
        if problem is not None:
            cx.diags.append(diag("MP924", f"{res.label}: `{where}.jwks` is {problem}; tokens of this issuer are "
                                          "not imported", rule.at("jwks")))
            return None
        p.jwks_file = f"inline:{res.namespace}/{res.name}/{where}"
        p.jwks_text = inline  # what the checks and targets read when the YAML is verified or compiled in place
        cx.extra_files[p.jwks_file] = inline
        cx.diags.append(diag("MP923", f"{res.label}: `{where}.jwks` is inline; `meshc import` writes it as a file "
                                      "next to the .mesh files", rule.at("jwks")))
    elif isinstance(uri, str):
        if not uri.startswith("https://"):
            cx.diags.append(diag("MP924", f"{res.label}: `{where}.jwksUri` `{uri}` is not https (the language "
                                          "fetches keys over verified TLS only); tokens of this issuer are not "
                                          "imported", rule.at("jwksUri")))
            return None
        p.jwks_uri = uri
    else:
        cx.diags.append(diag("MP924", f"{res.label}: `{where}` names no JWKS (Istio then looks the keys up by "
                                      "OpenID discovery of the issuer, which the language does not)", at))
        return None
    for i, h in enumerate(items_of(rule.get("fromHeaders"))):
        if isinstance(h, dict) and h.get("name"):
            from .route_options import header_name_problem

            if header_name_problem(str(h["name"]).lower()):
                cx.diags.append(diag("MP924", f"{res.label}: `{where}.fromHeaders[{i}]` `{h['name']}` is not an HTTP "
                                              "header name; tokens of this issuer are not imported", at))
                return None
            p.token_from.append(t.TokenLocation.make(kind="header", name=str(h["name"]).lower(),
                                                     prefix=str(h["prefix"]) if h.get("prefix") else None,
                                                     span=rule.at("fromHeaders"), spans={}))
    for q in items_of(rule.get("fromParams")):
        p.token_from.append(t.TokenLocation.make(kind="query", name=str(q), span=rule.at("fromParams"), spans={}))
    for c in items_of(rule.get("fromCookies")):
        p.token_from.append(t.TokenLocation.make(kind="cookie", name=str(c), span=rule.at("fromCookies"), spans={}))
    for key in rule:
        if key in ("outputPayloadToHeader", "outputClaimToHeaders"):
            cx.approximate(res, f"{where}.{key}", rule.key_at(key), "copies the token's payload or claims into "
                           "request headers; not imported (services' header matches do not see them)")
        elif key not in ("issuer", "audiences", "jwksUri", "jwks_uri", "jwks", "fromHeaders", "fromParams",
                         "fromCookies", "forwardOriginalToken", "timeout", "spaceDelimitedClaims"):
            cx.refuse(res, f"{where}.{key}", rule.key_at(key), "the language has no equivalent")
    cx.imported(res, where)
    return p


def gateway_providers(cx: Context, root_ns: str) -> None:
    """Each ingress accepts the providers whose RequestAuthentication applies to its gateway workload."""
    for g in cx.mesh.ingresses:
        gw = cx.gateway_of.get(g.name)
        if gw is None:
            continue
        names = []
        for res, labels, provider, forwards, at in cx.provider_scopes:
            if res.namespace not in (root_ns, gw.namespace):
                continue
            if labels and not selects(labels, gw.labels):
                continue
            if provider.name not in names:
                names.append(provider.name)
            if not forwards:
                cx.reported_forwarding.add((res.label, g.name, at))
        g.jwt = [t.Ref.make(name=n, span=g.span, spans={}) for n in names]
        if not names and cx.mesh.jwt_providers:
            cx.approximate(gw.res, "spec.selector", gw.res.spec.at("selector") if "selector" in gw.res.spec
                           else gw.res.span, f"no RequestAuthentication applies to this gateway, so Istio "
                           f"validates no token there; ingress `{g.name}` is imported accepting every provider "
                           "(a request with an invalid token gets 401 there rather than at the service)")


def report_token_forwarding(cx: Context) -> None:
    """MP932 where it changes a decision: a gateway strips the token
    (`forwardOriginalToken` false) while some rule tests tokens at a service
    that gateway forwards to (in Istio that rule never matches its requests)."""
    tested = {a.target.name for a in cx.mesh.auth_rules if any(s.kind == "internet" and s.jwt for s in a.sources)}
    for label, ingress, at in sorted(cx.reported_forwarding, key=lambda x: (x[0], x[1])):
        g = cx.mesh.ingress_map.get(ingress)
        reached = {d.version.name for r in (g.rules if g else []) if isinstance(r.action, t.Forward)
                   for d in r.action.destinations}
        hit = sorted(reached & tested)
        if hit:
            cx.diags.append(diag("MP932", f"{label} applies to the gateway of ingress `{ingress}` without "
                                          "`forwardOriginalToken: true`: Istio removes the token there, so the token "
                                          f"rules of {', '.join(f'`{h}`' for h in hit)} never match its requests; "
                                          "the language forwards it", at))


# ---- authorization conditions on tokens
def token_conditions(cx: Context, res: Resource, when, where: str, effect: str) -> list[list[t.ClaimTest]] | None:
    """`when` as alternatives (OR) of claim tests (AND); None (and said so) when
    a condition is not on the token or cannot be expressed."""
    alternatives: list[list[list[t.ClaimTest]]] = []
    for i, cond in enumerate(when if isinstance(when, YSeq) else []):
        key = str(cond.get("key") or "") if isinstance(cond, YMap) else ""
        at = when.at(i)
        values = [str(v) for v in items_of(cond.get("values"))] if isinstance(cond, YMap) else []
        if not key.startswith("request.auth."):
            cx.refuse(res, f"{where}.when[{i}]", at, f"condition `{key}` cannot be expressed; the rule is left out",
                      f"{'denied' if effect == 'deny' else 'allowed'} requests")
            return None
        if "notValues" in cond or not values or any("*" in v for v in values):
            cx.diags.append(diag("MP926", f"{res.label}: `{where}.when[{i}]` ({key}): only exact `values` are "
                                          "expressible; the rule is left out", at))
            return None
        options = []
        for v in values:
            claims = _condition(cx, res, key, v, at, where)
            if claims is None:
                return None
            options.append(claims)
        alternatives.append(options)
    out = [[c for part in combo for c in part] for combo in itertools.product(*alternatives)] if alternatives \
        else [[]]
    if len(out) > _MAX_ALTERNATIVES:
        cx.diags.append(diag("MP926", f"{res.label}: `{where}.when` expands to {len(out)} alternatives; the rule is "
                                      "left out", when.span))
        return None
    return out


def _condition(cx: Context, res: Resource, key: str, value: str, at: Span, where: str) -> list[t.ClaimTest] | None:
    if key in ("request.auth.principal",):
        return principal_claims(cx, res, value, at, where)
    if key == "request.auth.audiences":
        return [t.ClaimTest.make(claim="aud", op="has", value=value, span=at, spans={})]
    if key == "request.auth.presenter":
        return [t.ClaimTest.make(claim="azp", op="eq", value=value, span=at, spans={})]
    m = _CLAIM.fullmatch(key)
    if m and m.group(1).count("[") == 1:
        return [t.ClaimTest.make(claim=m.group(1)[1:-1], op="has", value=value, span=at, spans={})]
    cx.diags.append(diag("MP926", f"{res.label}: `{key}` (a nested claim or an unknown attribute) cannot be "
                                  "expressed; the rule is left out", at))
    return None


def principal_claims(cx: Context, res: Resource, principal: str, at: Span, where: str) -> list[t.ClaimTest] | None:
    """`*` any validated token; `<iss>/*`; `<iss>/<sub>` (the issuer may hold `/`)."""
    if principal == "*":
        return []
    issuers = sorted({p.issuer for p in cx.mesh.jwt_providers if p.issuer}, key=len, reverse=True)
    for iss in issuers:
        if principal.startswith(iss + "/"):
            sub = principal[len(iss) + 1:]
            tests = [t.ClaimTest.make(claim="iss", op="eq", value=iss, span=at, spans={})]
            if sub == "*":
                return tests
            if "*" not in sub:
                return tests + [t.ClaimTest.make(claim="sub", op="eq", value=sub, span=at, spans={})]
    cx.diags.append(diag("MP926", f"{res.label}: request principal `{principal}` is " +
                         ("a pattern the language cannot express" if any(principal.startswith(i + "/")
                                                                         for i in issuers)
                          else "of an issuer no RequestAuthentication in the inputs validates, so it never matches")
                         + "; the rule is left out", at))
    return None


def gateway_identities(cx: Context) -> set[tuple[str, str]]:
    return {(g.namespace, g.account) for g in cx.mesh.ingresses}


def internet_sources(cx: Context, res: Resource, src: YMap | None, claims_alts: list[list[t.ClaimTest]],
                     at: Span, where: str, effect: str) -> list[t.Source] | None:
    """A `from.source` that needs a token (requestPrincipals, or `when` on
    request.auth) as internet sources; None when it cannot be expressed."""
    src = src if isinstance(src, YMap) else {}
    for key in src:
        if key not in ("requestPrincipals", "principals", "namespaces"):
            cx.refuse(res, f"{where}.{key}", src.key_at(key) if isinstance(src, YMap) else at, "cannot be combined "
                      "with a token requirement; the rule is left out",
                      f"{'denied' if effect == 'deny' else 'allowed'} requests")
            return None
    principal_alts: list[list[t.ClaimTest]] = [[]]
    if src.get("requestPrincipals"):
        principal_alts = []
        for p in src["requestPrincipals"]:
            got = principal_claims(cx, res, str(p), src.at("requestPrincipals"), where)
            if got is None:
                return None
            principal_alts.append(got)
    gateways = gateway_identities(cx)
    td = cx.mesh.settings.trust_domain
    named = [str(p).removeprefix("spiffe://") for p in items_of(src.get("principals"))]
    namespaces = [str(n) for n in items_of(src.get("namespaces"))]
    if named or namespaces:
        ok = any((not named or f"{td}/ns/{ns}/sa/{sa}" in named or "*" in named) and
                 (not namespaces or ns in namespaces or "*" in namespaces) for ns, sa in gateways)
        if not ok:
            cx.diags.append(diag("MP926", f"{res.label}: `{where}` requires a token from callers that are not an "
                                          "ingress gateway; the language tests tokens on requests gateways forward "
                                          "only; the rule is left out", at))
            return None
    else:
        cx.diags.append(diag("MP925", f"{res.label}: `{where}` matches any caller with such a token in Istio; "
                                      "imported as `internet with jwt`: requests an ingress gateway forwarded", at))
    out = []
    for pc, wc in itertools.product(principal_alts, claims_alts):
        out.append(t.Source.make(kind="internet", jwt=t.JwtRequirement.make(
            claims=[c.model_copy() for c in pc + wc], span=at, spans={}), span=at, spans={}))
    cx.imported(res, where)
    return out


def selects_gateway(cx: Context, res: Resource, root_ns: str) -> bool:
    """A workload policy whose selector picks a gateway workload (and nothing else)."""
    sel = res.spec.get("selector")
    labels = labels_of(sel.get("matchLabels")) if isinstance(sel, YMap) else {}
    if not labels:
        return False
    if cx.gateway_list is None:
        cx.gateway_list = list({id(g): g for g in cx.gateway_of.values()}.values())
    for gw in cx.gateway_list:
        if (res.namespace in (root_ns, gw.namespace)) and gw.labels and selects(labels, gw.labels):
            return True
    return False
