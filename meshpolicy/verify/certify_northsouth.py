"""Certifying the north-south findings (MP540-MP544).

The certifier's Z3 encoding has no ingress callers, tokens or egress
(certify_core.north_south), so what can be re-decided without it is:
MP542 (the stance and a request the reference evaluator lets through) and
MP544 (the limits' arithmetic, redone here from the model, and an allowed
witness). For MP540, MP541 and MP543 the witness is re-checked with the
reference evaluator (a witness that does not show the finding is MP590) and
the finding itself is reported as not certified (MP591): never a silent pass.
"""

from __future__ import annotations

from ..diagnostics import Diagnostic
from ..semantics.evaluate import Request, Token, evaluate, source_matches
from .certify_core import Certifier, claim


def _request(w: dict | None) -> Request | None:
    if not w or not isinstance(w.get("path"), str) or "method" not in w:
        return None
    tok = w.get("token")
    return Request(w.get("source"), w["destination"], w["method"], w["path"], tuple((w.get("headers") or {}).items()),
                   query=w.get("query", ""), host=w.get("host"),
                   token=Token(tok["provider"], tok["claims"]) if tok else None)


@claim("MP540")
def _admin_open(c: Certifier, d: Diagnostic) -> None:
    from .ingress import looks_administrative

    sent = _request((d.witness or {}).get("sent"))
    if sent is None:
        c.disagree("MP540", "its witness has no request sent to an ingress", d.span)
        return
    got = evaluate(c.mesh, sent)
    at = got.forwarded.get(d.witness["destination"])
    ok = (sent.token is None and at is not None and at.decision.allowed
          and (looks_administrative((at.delivered or at.request).path) or looks_administrative(sent.path)))
    if not ok:
        c.disagree("MP540", "the reference evaluator does not let its witness reach an administrative path "
                   "without a token", d.span, req=sent)
        return
    c.not_certified("MP540 is found by a search over ingress requests, which the certifier does not encode "
                    "(its witness was re-checked)", d.span)


@claim("MP541")
def _dead_internet_source(c: Certifier, d: Diagnostic) -> None:
    req = _request(d.witness)
    src = next((s for r in c.mesh.auth_rules for s in r.sources if s.span == d.span), None)
    if req is None or src is None or not source_matches(c.mesh, src, req):
        c.disagree("MP541", "its witness is not a request the internet source matches", d.span, req=req)
        return
    c.not_certified("MP541 is about every request the ingresses forward, which the certifier does not encode "
                    "(its witness was re-checked)", d.span)


@claim("MP542")
def _allow_any(c: Certifier, d: Diagnostic) -> None:
    req = _request(d.witness)
    if c.mesh.settings.egress != "allow_any":
        c.disagree("MP542", "the mesh's egress stance is registry_only", d.span)
    elif req is None or c.mesh.service(req.destination) is not None or req.destination in c.mesh.external_map:
        c.disagree("MP542", "its witness is not a request to an undeclared host", d.span, req=req)
    elif not evaluate(c.mesh, req).decision.allowed:
        c.disagree("MP542", "the reference evaluator refuses its witness", d.span, req=req)


@claim("MP543")
def _host_shadowed(c: Certifier, d: Diagnostic) -> None:
    req = _request(d.witness)
    host = (d.witness or {}).get("host")
    ext = next((e for e in c.mesh.external_map.values() for i, _ in enumerate(e.hosts)
                if e.spans.get(f"host.{i}") == d.span), None)
    if req is None or host is None or ext is None or req.destination == ext.name:
        c.disagree("MP543", "its witness is not a request for the external's host decided elsewhere", d.span,
                   req=req)
        return
    c.not_certified("MP543 follows the registry's order of declarations (semantics.egress), which the "
                    "certifier does not encode (its witness was re-checked)", d.span)


@claim("MP544")
def _keyed_shadowed(c: Certifier, d: Diagnostic) -> None:
    keyed = next((lim for lim in c.mesh.rate_limits if lim.span == d.span and lim.key is not None), None)
    pair = next((lim for lim in c.mesh.rate_limits for lab in d.labels if lim.span == lab.span), None)
    if keyed is None or pair is None or pair.key is not None or pair.target.name != keyed.target.name:
        c.disagree("MP544", "its labels do not name a keyless limit on the same destination", d.span)
        return
    rate = lambda lim: lim.requests / {"s": 1, "m": 60, "h": 3600}[lim.per]  # noqa: E731
    cap = lambda lim: lim.requests if lim.burst is None else lim.burst  # noqa: E731
    if not (rate(pair) <= rate(keyed) and cap(pair) <= cap(keyed)):
        c.disagree("MP544", f"the keyless limit ({rate(pair):g}/s, burst {cap(pair)}) is not within one key's "
                   f"bucket ({rate(keyed):g}/s, burst {cap(keyed)})", d.span)
        return
    req = _request(d.witness)
    if req is None or not evaluate(c.mesh, req).decision.allowed:
        c.disagree("MP544", "the reference evaluator does not allow its witness", d.span, req=req)
        return

    def covered(k) -> bool:  # the plain cases; anything else is left to MP591
        return any(p.kind == "any" or (p.kind == k.kind and p.name == k.name and (p.jwt is None or k.kind != "internet"))
                   or (p.kind == "internet" and p.jwt is None and k.kind == "internet") for p in pair.sources)

    if not all(covered(k) for k in keyed.sources):
        c.not_certified("that the keyless limit counts every caller of the per-key one was not re-decided",
                        d.span)
