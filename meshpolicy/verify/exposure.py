"""Findings about what the internet can do (docs/verify.md, "The internet as
a caller"), each with a witness request that the reference evaluator
confirms:

- MP540: an administrative-looking path (an `admin`, `internal`, `debug` or
  `actuator` segment, at the ingress or at the service) is reachable from
  the internet without a token;
- MP541: an `internet [with jwt ...]` source that no request from the
  ingresses forwarding to the rule's target can meet: none forwards a
  request the rule's methods and paths match as it arrives (after the
  ingress rewrite) with a token that passes its claims. (No ingress reaching
  the target, or none accepting the provider named, are the checker's MP237
  and MP236, from the rule's text.)
"""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Diagnostic, Label
from ..model.types import AuthRule, Mesh, Source
from ..semantics.ingress import accepted_providers, ingresses_to
from .atoms import Undecided, Unsupported, key_of
from .ingress import looks_administrative


def findings(mesh: Mesh, timeout_ms: int, box_limit: int, skip=frozenset()) -> list[Diagnostic]:
    if not mesh.ingresses:
        return []
    out: list[Diagnostic] = []
    for svc in mesh.service_map.values():
        if svc.name in skip:
            continue
        try:
            out.extend(_admin_open(mesh, svc.name, timeout_ms, box_limit))
            out.extend(_dead_internet_sources(mesh, svc.name, timeout_ms, box_limit))
        except (Unsupported, Undecided) as exc:
            out.append(diag("MP520", f"findings about requests from the internet to `{svc.name}` were not "
                                     f"proved: {exc}", svc.at("name")))
    return out


def _admin_open(mesh: Mesh, dest: str, timeout_ms: int, box_limit: int) -> list[Diagnostic]:
    """MP540, by search: for each ingress rule forwarding to dest, requests
    with an administrative segment its patterns match (ingress.admin_candidates),
    sent without a token; a finding per deciding rule, each confirmed by the
    reference evaluator (an admin path the search does not try is not reported)."""
    from urllib.parse import quote_plus

    from ..model.types import HTTP_METHODS
    from ..semantics.evaluate import Request, evaluate, forward_weights
    from .assertions import _deciding, _internet_witness
    from .ingress import Entry, admin_candidates, sample_host, satisfying_extras
    from .internet import forward

    out: list[Diagnostic] = []
    seen: set = set()
    for name in ingresses_to(mesh, dest):
        g = mesh.ingress_map[name]
        for r in g.rules:
            if r.action.kind != "forward" or forward_weights(r).get(dest, 0) <= 0:
                continue
            extras = satisfying_extras(r)
            if extras is None:
                continue
            hs, qs = extras
            query = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in qs)
            for path in admin_candidates(r):
                for method in (r.match.methods or ["GET", "POST"]):
                    if method not in HTTP_METHODS:
                        continue
                    # the rule's own leg first (cheap); the evaluator's whole path for a hit
                    _req, at = forward(mesh, Entry(name, r, method, path, hs, qs, sample_host(g), dest, path), None)
                    if at is None or not at.decision.allowed or not (
                            looks_administrative((at.delivered or at.request).path) or looks_administrative(path)):
                        continue
                    req = Request(None, name, method, path, hs, query=query, host=sample_host(g))
                    got = evaluate(mesh, req)
                    at = got.forwarded.get(dest)
                    if got.route.rule is not r or at is None or not at.decision.allowed:
                        continue  # an earlier ingress rule takes it, or the service denies it
                    sent = at.delivered or at.request
                    if not (looks_administrative(sent.path) or looks_administrative(req.path)):
                        continue
                    rule = at.decision.rule
                    if (id(rule), name) in seen:
                        continue
                    seen.add((id(rule), name))
                    labels = _deciding(mesh, sent) + [Label(r.span, f"ingress `{name}` forwards it")]
                    why = "by the mesh default (allow)" if rule is None else "by this rule"
                    out.append(diag("MP540", f"an administrative path of `{dest}` is open to the internet without "
                                             f"a token: {sent_text(req)} arrives as {sent} and is allowed {why}",
                                    rule.span if rule is not None else r.span, labels=labels,
                                    witness=_internet_witness(req, at)))
    return out


def sent_text(req) -> str:
    """A request as sent to an ingress, from outside."""
    return "internet" + str(req)[len("(no identity)"):] if req.source is None else str(req)


def _dead_internet_sources(mesh: Mesh, dest: str, timeout_ms: int, box_limit: int) -> list[Diagnostic]:
    """MP541 per `internet with jwt ...` source of a rule on dest that no
    forwarded request meets (with the rule's methods and paths)."""
    from ..semantics.evaluate import Request, Token, source_matches
    from .internet import _route_rewrites, arrivals, sent_to
    from .witness import as_dict

    svc = mesh.service(dest)
    rules = [r for r in mesh.rules_by_target.get(dest, []) if any(s.kind == "internet" for s in r.sources)]
    if not rules or svc is None or mesh.mtls_of(svc) == "off":
        return []  # with mTLS off no ingress identity is seen: MP562/MP504 say so
    senders = ingresses_to(mesh, dest)
    live: set[int] = set()
    if senders:
        _route_rewrites(mesh, dest)
        pending = {id(s): (r, s) for r in rules for s in r.sources if s.kind == "internet"}
        for _req, _tok, at in arrivals(mesh, dest, timeout_ms, box_limit):
            sent = sent_to(at)
            for k, (r, s) in list(pending.items()):
                if _rule_scope(r, sent) and source_matches(mesh, s, sent):
                    live.add(k)
                    del pending[k]
            if not pending:
                break
    out = []
    for r in rules:
        for s in r.sources:
            if s.kind != "internet" or id(s) in live or not senders or _provider_refused(mesh, s, senders):
                continue  # (no ingress reaches it: MP237; no sender accepts its provider: MP236)
            # the witness: a request the rule would match at its target, which no ingress sends
            g = senders[0]
            provider = s.jwt.provider.name if s.jwt and s.jwt.provider else next(iter(accepted_providers(
                mesh, mesh.ingress_map[g])), None) or next(iter(mesh.provider_map), "?")
            claims: dict = {}
            for t in (s.jwt.claims if s.jwt else []):
                if t.op == "eq":
                    claims[t.claim] = t.value
                else:
                    claims.setdefault(t.claim, [])
                    if isinstance(claims[t.claim], list):
                        claims[t.claim].append(t.value)
            path = next((c for p in r.paths for c in _samples(key_of(p))), "/")
            req = Request(g, dest, r.methods[0] if r.methods else "GET", path,
                          token=Token(provider, claims) if s.jwt else None)
            wit = as_dict(req)
            wit["sent_by_no_ingress"] = True
            what = " with a token that passes these claims" if s.jwt else ""
            out.append(diag("MP541", f"no request from the internet can meet `internet{_jwt(s)}` on `{dest}`: "
                                     f"the ingresses that forward to it ({', '.join(senders)}) send no request{what} "
                                     "with the rule's methods and paths as it arrives (after the ingress rewrite); "
                                     f"e.g. {req} is never sent", s.span, witness=wit,
                            labels=[Label(r.span, "in this rule")]))
    return out


def _provider_refused(mesh: Mesh, s: Source, senders: tuple[str, ...]) -> bool:
    if s.jwt is None or s.jwt.provider is None:
        return False
    name = s.jwt.provider.name
    return not any(name in accepted_providers(mesh, mesh.ingress_map[g]) for g in senders)


def _rule_scope(r: AuthRule, req) -> bool:
    from ..semantics.evaluate import _paths_match

    return (not r.methods or req.method in r.methods) and _paths_match(r.paths, req.path)


def _samples(key) -> list[str]:
    from .atoms import _candidates, is_normalized, matches

    return [c for c in _candidates(key) if is_normalized(c) and matches(key, c)]


def _jwt(s: Source) -> str:
    from .assertions import _jwt_text

    return _jwt_text(s.jwt)
