"""`meshc up --check`'s north-south probes (docs/up.md, "Ingress, tokens and
egress"): requests from outside at each ingress listener, with no token, a
valid token carrying the claims a rule asks for, and every kind of bad
token; and requests from workloads to the local stand-ins of external
services. Every expected answer is the reference evaluator's
(semantics.evaluate) for the same request; nothing here decides an outcome.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from dataclasses import dataclass, field

from ..model.types import Ingress, Mesh, PathPattern, RouteRule
from ..semantics import INVALID_TOKEN, Request, Token, evaluate
from . import local_jwt

UNDECLARED_HOST = "meshc-up-check.invalid"


@dataclass
class NsProbe:
    label: str  # what the probe is, for the report
    port: int
    method: str
    target: str  # path and query as sent
    headers: dict
    expect: set[int]  # the evaluator's status (a set: a split over services may answer differently)
    reaches: set[str] = field(default_factory=set)  # the echo apps / stand-ins that must answer a 200
    tls: bool = False
    sni: str | None = None
    why: str = ""  # where the expectation comes from, when not the evaluator's status as is
    observed: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.observed in self.expect and not self.detail

    def describe(self) -> str:
        host = self.headers.get("Host", "")
        return f"{self.label}: {self.method} {host}{self.target}"


def witness_path(p: PathPattern) -> str | None:
    """A path the pattern matches (None for a regex: no general witness)."""
    if p.kind == "exact":
        return p.value
    if p.kind == "prefix":
        return p.value + ("check" if p.value.endswith("/") else "/check")
    if p.kind == "glob":
        return p.value.replace("**", "meshc-check").replace("*", "check")
    return None


def _witness(rule: RouteRule) -> tuple[str, str] | None:
    m = rule.match
    method = m.methods[0] if m.methods else "GET"
    if not m.paths:
        return method, "/meshc-check"
    for p in m.paths:
        w = witness_path(p)
        if w is not None:
            return method, w
    return None


def _host(g: Ingress) -> str:
    for h in g.hosts:
        if "*" not in h:
            return h
    for h in g.hosts:
        if h.startswith("*.") and len(h) > 2:
            return "check" + h[1:]
    return "localhost"


def _query_for(rule: RouteRule) -> str:
    """Query parameters the rule tests (so its witness matches)."""
    from urllib.parse import quote

    parts = []
    for q in rule.match.queries:
        if q.kind == "regex":
            continue
        value = q.value or ("1" if q.kind == "present" else "")
        parts.append(f"{quote(q.name, safe='')}={quote(value, safe='')}")
    return "&".join(parts)


def _headers_for(rule: RouteRule) -> tuple[tuple[str, str], ...]:
    """Headers the rule tests (exact, prefix, present), so its witness matches."""
    out = []
    for h in rule.match.headers:
        if h.kind in ("exact", "prefix"):
            out.append((h.name, h.value or ""))
        elif h.kind == "present":
            out.append((h.name, "1"))
    return tuple(out)


def _wanted_claims(mesh: Mesh, g: Ingress, services: list[str]) -> list[tuple[str, dict]]:
    """(provider, claims) candidates for a valid token: for each `internet
    with jwt` allow rule to one of the services, a provider this ingress
    accepts and the claims its tests ask for; then the first accepted
    provider with no claims (empty: the ingress accepts no provider)."""
    from ..semantics.ingress import accepted_providers

    accepted = accepted_providers(mesh, g)
    if not accepted:
        return []
    out = []
    for svc in services:
        for r in mesh.rules_by_target.get(svc, []):
            if r.effect != "allow":
                continue
            for s in r.sources:
                if s.kind != "internet" or s.jwt is None:
                    continue
                provider = s.jwt.provider.name if s.jwt.provider is not None else accepted[0]
                if provider not in accepted:
                    continue
                claims: dict = {}
                for t in s.jwt.claims:
                    claims[t.claim] = t.value if t.op == "eq" else [t.value]
                out.append((provider, claims))
    return out + [(accepted[0], {})]


def _token_header(mesh: Mesh, provider: str, token: str, target: str) -> tuple[dict, str]:
    """The token at the provider's first location: (headers, target)."""
    from urllib.parse import quote

    from ..semantics.tokens import locations_of

    loc = locations_of(mesh.provider_map[provider])[0]
    if loc.kind == "header":
        return {loc.name: f"{loc.prefix or ''}{token}"}, target
    if loc.kind == "query":
        return {}, target + ("&" if "?" in target else "?") + f"{quote(loc.name, safe='')}={token}"
    return {"Cookie": f"{loc.name}={token}"}, target


def _expect(out) -> tuple[set[int], set[str]]:
    """The statuses the evaluator predicts and, for 200, which services answer."""
    if out.status is not None:
        return {out.status}, set()
    if out.forwarded:
        statuses, reached = set(), set()
        for svc, o in out.forwarded.items():
            st = o.status if o.status is not None else 200
            statuses.add(st)
            if st == 200:
                reached.add(svc)
        return statuses, reached
    return {200}, set()


def ingress_probes(mesh: Mesh, workdir, plan) -> list[NsProbe]:
    probes: list[NsProbe] = []
    for w in plan.workloads:
        if not w.is_ingress or not w.listeners:
            continue
        g = mesh.ingress_map[w.service]
        written, port, protocol = next((x for x in w.listeners if x[2] == "http"), w.listeners[0])
        host = _host(g)
        tls = protocol == "https"

        def probe(label, method, target, token_kind=None, provider=None, claims=None, host=host,
                  rule_query="", rule_headers=()):
            tok, headers = None, {"Host": host, **dict(rule_headers)}
            sent = target + (f"?{rule_query}" if rule_query else "")
            if token_kind is not None:
                raw = _make_token(mesh, workdir, provider, token_kind, claims or {})
                extra, sent = _token_header(mesh, provider, raw, sent)
                headers.update(extra)
                tok = Token(provider, {**local_jwt.default_claims(mesh, provider), **(claims or {})}) \
                    if token_kind == "valid" else INVALID_TOKEN
            out = evaluate(mesh, Request(None, g.name, method, target, tuple(rule_headers), query=rule_query,
                                         host=host, token=tok))
            expect, reaches = _expect(out)
            probes.append(NsProbe(f"ingress {g.name}:{written} {label}", port, method, sent, headers, expect,
                                  reaches, tls, host))

        forwards = [r for r in g.rules if r.action.kind == "forward"][:4]
        bad_done = False
        for rule in g.rules[:6]:
            wit = _witness(rule)
            if wit is None:
                continue
            method, path = wit
            q, hs = _query_for(rule), _headers_for(rule)
            if rule.action.kind != "forward":
                probe(f"rule {rule.index} ({rule.action.kind})", method, path, rule_query=q, rule_headers=hs)
                continue
            if rule not in forwards:
                continue
            services = [d.version.name for d in rule.action.destinations]
            candidates = _wanted_claims(mesh, g, services)
            probe(f"rule {rule.index}, no token", method, path, rule_query=q, rule_headers=hs)
            if not candidates:
                continue
            # the claims of a rule that lets this request through, when one does (the evaluator says which)
            provider, claims = next((c for c in candidates if 200 in _expect(evaluate(mesh, Request(
                None, g.name, method, path, hs, query=q, host=host,
                token=Token(c[0], {**local_jwt.default_claims(mesh, c[0]), **c[1]}))))[0]), candidates[0])
            probe(f"rule {rule.index}, valid token {json.dumps(claims) if claims else ''}".rstrip(), method, path,
                  "valid", provider, {"sub": f"meshc-check-{len(probes)}", **claims}, rule_query=q,
                  rule_headers=hs)
            if bad_done:
                continue
            bad_done = True
            for kind in ("expired", "wrong issuer", "wrong audience", "tampered", "alg=none"):
                if kind == "wrong audience" and not mesh.provider_map[provider].audiences:
                    continue
                probe(f"rule {rule.index}, {kind} token", method, path, kind, provider, claims, rule_query=q,
                      rule_headers=hs)
        if g.hosts and "*" not in g.hosts:
            probe("unknown host", "GET", "/", host="meshc-check.invalid")
    return probes


def _make_token(mesh: Mesh, workdir, provider: str, kind: str, claims: dict) -> str:
    p = mesh.provider_map[provider]
    if kind == "valid":
        return local_jwt.mint(mesh, workdir, provider, claims)
    if kind == "expired":  # past the 60 s clock skew both proxies allow
        now = int(time.time())
        return local_jwt.mint(mesh, workdir, provider, {**claims, "iat": now - 7200, "exp": now - 3600})
    if kind == "wrong issuer":
        return local_jwt.mint(mesh, workdir, provider, {**claims, "iss": f"{p.issuer}meshc-check-other-issuer/"})
    if kind == "wrong audience":
        return local_jwt.mint(mesh, workdir, provider, {**claims, "aud": "meshc-check-other-audience"})
    if kind == "tampered":
        return local_jwt.tampered(local_jwt.mint(mesh, workdir, provider, claims))
    if kind == "alg=none":
        return local_jwt.unsigned(mesh, provider, claims)
    raise ValueError(kind)


def egress_probes(mesh: Mesh, plan) -> list[NsProbe]:
    """From a caller the plan lets out, to each stand-in: each allow rule's
    witness and a request no rule allows; and an undeclared host."""
    from ..plan import plan_of
    from ..semantics.egress import caller_source_matches

    probes: list[NsProbe] = []
    by_service = {w.service: w for w in plan.workloads if not w.is_ingress}
    stands = {s.key_name: s for s in plan.standins}
    p = plan_of(mesh)
    for ext in sorted(mesh.externals, key=lambda e: e.name):
        callers = [s for s in sorted(by_service) if ext.name in p.external_callees(s)]
        if not callers:
            continue
        ports = [x for x in ext.ports if f"{ext.name}:{x.number}" in stands]
        if not ports or not ext.hosts or "*" in ext.hosts[0]:
            continue
        host = f"{ext.hosts[0].lower()}:{ports[0].number}"
        for rule in mesh.rules_by_target.get(ext.name, []):
            caller = next((c for c in callers if any(caller_source_matches(mesh, s, c) for s in rule.sources)), None)
            if caller is None:
                continue
            method = rule.methods[0] if rule.methods else "GET"
            path = next((w for w in map(witness_path, rule.paths) if w is not None), "/") if rule.paths else "/"
            for m, pth in ((method, path), ("DELETE", "/__meshc_up_check/denied")):
                out = evaluate(mesh, Request(caller, ext.name, m, pth))
                expect = {out.status} if out.status is not None else {200}
                probes.append(NsProbe(f"egress {caller} -> {ext.name} ({ports[0].protocol})",
                                      by_service[caller].outbound_port, m, pth, {"Host": host}, expect,
                                      {ext.name} if expect == {200} else set()))
            break
    if mesh.settings.egress == "registry_only" and by_service:
        caller = sorted(by_service)[0]
        out = evaluate(mesh, Request(caller, UNDECLARED_HOST, "GET", "/"))
        if out.route.kind == "blackhole":
            probes.append(NsProbe(f"egress {caller} -> undeclared host", by_service[caller].outbound_port, "GET",
                                  "/", {"Host": UNDECLARED_HOST}, {out.route.status}))
    return probes


def run(plan, probe: NsProbe, timeout: float = 10) -> None:
    """Send the probe; record the status, and whether a 200 came from this
    run's app or stand-in for the right service."""
    if probe.tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False  # the ingress's own certificate, as the policy names it: not what is probed
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", probe.port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", probe.port, timeout=timeout)
    try:
        conn.putrequest(probe.method, probe.target, skip_host=True, skip_accept_encoding=True)
        for k, v in probe.headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        probe.observed, body = r.status, r.read()
    except (OSError, http.client.HTTPException) as exc:
        probe.detail = f"no answer: {exc}"
        return
    finally:
        conn.close()
    checked = probe.reaches & (plan.echo_services | {s.external for s in plan.standins})
    if probe.observed == 200 and checked:  # an app of the user's own answers as it likes
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        who = doc.get("service") or doc.get("external") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or doc.get("run") != plan.token:
            probe.detail = "answered by a process of another run"
        elif who not in probe.reaches:
            probe.detail = f"answered by {who}"
