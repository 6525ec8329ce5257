"""End-user tokens: RequestAuthentication on the ingress gateways and on the
services that validate tokens, and the AuthorizationPolicy rules of
`internet [with jwt ...]` sources (docs/targets/istio.md, "Tokens").

Who validates what is the plan's (semantics/ingress.py): an ingress its
accepted providers; a service `ServicePlan.jwt_providers`, so a token an
ingress let through is valid at every service it reaches. Istio's
RequestAuthentication answers 401 to a request carrying a token no rule
validates, and lets a request without a token through, as the semantics
says. Claims are read from the token the workload itself validated
(`request.auth.claims[...]`), so an `internet with jwt` rule is decided by
the callee, as specified.

Istio compares claims as strings: a claim test matches a string claim equal
to the value, or a list claim with such an element; the claims listed in
`spaceDelimitedClaims` (every claim tested with `has`; Istio always splits
`scope` and `permission`) are split on spaces into lists first. So `has` is
exact for strings and lists of strings; `=` is refused (MP701) where Istio
would split the claim or where the value reads as a JSON number or boolean
(Istio never matches a non-string claim).
"""

from __future__ import annotations

import json

from ...model.jwks_text import jwks_label, jwks_text
from ...model.types import AuthRule, ClaimTest, JwtProvider, Source
from ...plan import plan_of
from ...semantics.tokens import locations_of
from .context import Lowering
from .names import APP_LABEL

SPLIT_BY_ISTIO = ("scope", "permission", "permissions")  # split whatever spaceDelimitedClaims says


def jwt_rule(lw: Lowering, p: JwtProvider, split: list[str]) -> dict | None:
    rule: dict = {"issuer": p.issuer or ""}
    if p.audiences:
        rule["audiences"] = list(p.audiences)
    if p.jwks_uri is not None:
        rule["jwksUri"] = p.jwks_uri
    else:
        text, problem = jwks_text(p)
        try:
            if text is None:
                raise ValueError(problem)
            rule["jwks"] = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
        except ValueError as exc:
            from ...codes import diag

            lw.diagnostics.append(diag("MP223", f"the {jwks_label(p)} of jwt provider `{p.name}` "
                                                f"cannot be read at compile time ({exc})", p.at("jwks_file")))
            return None
    headers, params, cookies = [], [], []
    for loc in locations_of(p):  # always written: Istio's default also reads `?access_token=`
        if loc.kind == "header":
            h: dict = {"name": loc.name}
            if loc.prefix:
                h["prefix"] = loc.prefix
            headers.append(h)
        elif loc.kind == "query":
            params.append(loc.name)
        else:
            cookies.append(loc.name)
    if headers:
        rule["fromHeaders"] = headers
    if params:
        rule["fromParams"] = params
    if cookies:
        rule["fromCookies"] = cookies
    rule["forwardOriginalToken"] = True  # the ingress forwards the token unchanged; the callee validates it again
    if split:
        rule["spaceDelimitedClaims"] = list(split)
    return rule


def request_authentication(lw: Lowering, name: str, namespace: str, app: str, providers: tuple[str, ...],
                           split: list[str]) -> dict | None:
    rules = []
    for pname in providers:
        p = lw.mesh.provider_map.get(pname)
        if p is None:
            continue
        r = jwt_rule(lw, p, split)
        if r is not None:
            rules.append(r)
    if not rules:
        return None
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"matchLabels": {APP_LABEL: app}}, "jwtRules": rules},
    }


def _claims_tested(rules: list[AuthRule]) -> list[ClaimTest]:
    return [t for r in rules for s in r.sources if s.kind == "internet" and s.jwt is not None for t in s.jwt.claims]


def split_claims(rules: list[AuthRule]) -> list[str]:
    """The claims a workload's rules test with `has`, split on spaces by Istio."""
    return sorted({t.claim for t in _claims_tested(rules) if t.op == "has"})


def request_authentications(lw: Lowering) -> list[dict]:
    plan = plan_of(lw.mesh)
    out = []
    for ip in plan.ingresses.values():
        g = ip.ingress
        ra = request_authentication(lw, f"{g.name}-jwt", g.namespace, g.name, ip.providers, [])
        if ra is not None:
            out.append(ra)
    for sp in plan.services.values():
        svc = sp.service
        if not sp.jwt_providers:
            continue
        split = split_claims(lw.mesh.rules_by_target.get(svc.name, []))
        ra = request_authentication(lw, f"{svc.name}-jwt", svc.namespace, svc.name, sp.jwt_providers, split)
        if ra is not None:
            out.append(ra)
    return out


# ---- AuthorizationPolicy: `internet [with jwt ...]` sources ----------------------

_JSON_LITERAL = ("true", "false", "null")


def _looks_non_string(value: str) -> bool:
    if value in _JSON_LITERAL:
        return True
    try:
        float(value)
    except ValueError:
        return False
    return True


def claim_conditions(lw: Lowering, tests: list[ClaimTest], split: list[str], where: str) -> list[dict] | None:
    """`when` conditions for claim tests (each must hold); None after MP701."""
    out = []
    for t in tests:
        if "[" in t.claim or "]" in t.claim:
            lw.unsupported(f"the claim `{t.claim}` {where}", t.span,
                           "Istio's claim keys are `request.auth.claims[NAME]`, so a name cannot hold `[` or `]`")
            return None
        if t.op == "eq":
            if t.claim in SPLIT_BY_ISTIO or t.claim in split:
                lw.unsupported(f"`{t.claim} = \"{t.value}\"` {where}", t.span,
                               "Istio splits this claim on spaces (it is `scope`/`permission` or tested with `has`), "
                               "so `=` would also hold for a claim with more words")
                return None
            if _looks_non_string(t.value):
                lw.unsupported(f"`{t.claim} = {t.value}` {where}", t.span,
                               "Istio compares claims as strings and never matches a number, boolean or null claim")
                return None
        out.append({"key": f"request.auth.claims[{t.claim}]", "values": [t.value]})
    return out


def internet_rules(lw: Lowering, rule: AuthRule, s: Source, to: list[dict] | None) -> list[dict]:
    """The AuthorizationPolicy rules of one `internet` source: per group of
    ingresses that accept the same providers, their identities as
    principals, the issuers of those providers (`request.auth.claims[iss]`,
    the token this workload validated) and the claim tests."""
    plan = plan_of(lw.mesh)
    sp = plan.service(rule.target.name)
    isrc = next((i for i in (sp.internet if sp else []) if i.rule is rule and i.source is s), None)
    if isrc is None or not isrc.ingresses:
        return []  # no ingress can send a request this source matches
    where = f"in {rule.effect} rule #{rule.index + 1}"
    split = split_claims(lw.mesh.rules_by_target.get(rule.target.name, []))
    claims = claim_conditions(lw, list(s.jwt.claims) if s.jwt else [], split, where) if s.jwt else []
    if claims is None:
        return []
    groups: dict[tuple[str, ...], list[str]] = {}
    for gname, providers in isrc.ingresses.items():
        ip = plan.ingress(gname)
        if ip is None:
            continue
        principal = f"{plan.trust_domain}/ns/{ip.namespace}/sa/{ip.account}"
        groups.setdefault(tuple(providers), []).append(principal)
    validated = set(sp.jwt_providers) if sp else set()
    out = []
    for providers, principals in sorted(groups.items()):
        r: dict = {"from": [{"source": {"principals": sorted(set(principals))}}]}
        when = []
        if s.jwt is not None:
            issuers = sorted({lw.mesh.provider_map[p].issuer or "" for p in providers if p in lw.mesh.provider_map})
            others = [q for q in validated - set(providers)
                      if q in lw.mesh.provider_map and (lw.mesh.provider_map[q].issuer or "") in issuers]
            if others:
                lw.unsupported(f"the token requirement {where}", s.jwt.span,
                               f"jwt provider `{sorted(others)[0]}` has the issuer of a provider the rule accepts, "
                               "and Istio tells validated tokens apart only by their claims")
                return []
            if not issuers:
                continue
            when.append({"key": "request.auth.claims[iss]", "values": issuers})
            when += claims
        if to:
            r["to"] = to
        if when:
            r["when"] = when
        out.append(r)
    return out
