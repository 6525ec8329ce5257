"""Rate limits in the analysis (docs/semantics.md: authorization, then rate
limits, then routing). A limit only ever sees allowed requests, so:

- MP530: a limit (or one caller it names) no allowed request can reach: no
  rule lets that caller send the destination anything, so the limit is dead;
- MP531: the same, but because deny rules win over the allow rules that would
  let the caller in: the limit is shadowed by those denies;
- MP532: retries at the caller (and amplification on the way to it) multiply
  what one request costs against the limit: with K attempts per request only
  N/K requests per second are sure to be served, the rest of the budget is
  eaten by retries.

Callers come from the call graph's edges (decided exactly by `may_call`);
witnesses are confirmed with the reference evaluator.
"""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Diagnostic, Label
from ..model.types import Mesh, RateLimit, Source
from ..semantics.admission import identity_mates
from ..semantics.evaluate import Request, auth_rule_matches
from .callgraph import OUTSIDE, hop_amplification, path_into, worst_into
from .digraph import Digraph
from .partition import partition
from .witness import confirmed


def _callers(mesh: Mesh, s: Source, by_ns: dict[str, list[str]]) -> list[str | None]:
    """The callers a limit source stands for (None: no identity)."""
    if s.kind == "service":
        return [s.name, *identity_mates(mesh, s.name)] if mesh.service(s.name or "") else []
    if s.kind == "namespace":
        return list(by_ns.get(s.name or "", []))
    if s.kind == "internet":  # the ingresses (the graph has an edge ingress -> dest when one forwards there)
        return list(mesh.ingress_map)
    names = [svc.name for svc in mesh.service_map.values()]
    return names + [None] if s.kind == "any" else names


def _may(graph: Digraph, caller: str | None, dest: str) -> bool:
    return graph.has_edge(caller or OUTSIDE, dest)


def _rate(lim: RateLimit) -> str:
    return f"{lim.requests}/{lim.per}"


def findings(mesh: Mesh, graph: Digraph, timeout_ms: int, box_limit: int,
             skip: set[str] | frozenset[str] = frozenset()) -> list[Diagnostic]:
    """`skip`: destinations the verifier did not analyse (MP507): their
    limits are not judged."""
    by_ns: dict[str, list[str]] = {}
    for svc in mesh.service_map.values():
        by_ns.setdefault(svc.namespace, []).append(svc.name)
    out: list[Diagnostic] = []
    into = worst_into(mesh, graph) if mesh.rate_limits else {}
    for lim in mesh.rate_limits:
        dest = lim.target.name
        if mesh.service(dest) is None or dest in skip:
            continue
        per_source = [(s, [c for c in _callers(mesh, s, by_ns) if c != dest]) for s in lim.sources]
        internet = any(s.kind == "internet" for s in lim.sources)
        if not any(cs for _, cs in per_source) and not internet:
            continue  # only the destination itself: a self-call (the checks' business)
        live = [(s, [c for c in cs if _may(graph, c, dest)]) for s, cs in per_source]
        if not any(cs for _, cs in live):
            # (internet callers are the ingresses: a dead internet source is MP541's finding)
            callers = [c for _, cs in per_source for c in cs if c not in mesh.ingress_map]
            what = f"the limit `{_rate(lim)}` on calls to `{dest}` never applies"
            if callers:
                out.append(_dead(mesh, lim, lim.span, callers, dest, timeout_ms, box_limit, what))
            else:
                out.append(_dead_internet(mesh, lim, dest, timeout_ms, box_limit, what))
            continue
        for (s, cs), (_, alive) in zip(per_source, live):
            if s.kind == "service" and cs and not alive:
                out.append(_dead(mesh, lim, s.span, cs, dest, timeout_ms, box_limit,
                                 f"`{s.name}` in this limit on `{dest}` never applies"))
        out.extend(_retries(mesh, lim, dest, [c for _, cs in live for c in cs if c is not None], graph, into))
    return out


def _dead(mesh: Mesh, lim: RateLimit, span, callers: list[str | None], dest: str, timeout_ms: int,
          box_limit: int, what: str) -> Diagnostic:
    """MP531 when some allow rule would admit one of the callers but a deny
    wins (with that request as witness), else MP530."""
    p = partition(mesh, dest, timeout_ms, box_limit)
    if not p.error:
        allows = [r for r in p.auth_rules if r.effect == "allow"]
        denies = [r for r in p.auth_rules if r.effect == "deny"]
        for c in callers:
            cls = (p.source_index(c),) + tuple(p.full()[1:])
            base = p.meet(cls, p.admitted_box)
            if base is None:
                continue
            starts = [base] if mesh.settings.default == "allow" else [
                m for r in allows if (m := p.meet(base, p.auth_box[r.index])) is not None]
            for a in starts:
                for d in denies:
                    both = p.meet(a, p.auth_box[d.index])
                    if both is None:
                        continue
                    req = p.request_for(c, p.pick(both))
                    wit = confirmed(mesh, req, lambda o: not o.decision.allowed and o.decision.rule is not None
                                    and o.decision.rule.effect == "deny", "a deny rule decides the limited request")
                    return diag("MP531", f"{what}: deny rules refuse every request it would count, e.g. {req}",
                                span, labels=[Label(d.span, "this deny rule wins")], witness=wit)
    caller = next((c for c in callers if c is not None), callers[0] if callers else None)
    req = Request(caller, dest)
    wit = confirmed(mesh, req, lambda o: not o.decision.allowed, "the limited caller's request is denied")
    why = "no allow rule lets " + (f"`{caller}`" if caller else "its callers") + f" call `{dest}`"
    return diag("MP530", f"{what}: {why}, so no request ever counts against it, e.g. {req} is denied",
                span, witness=wit)


def _caller_text(mesh: Mesh, c: str) -> str:
    return f"`internet` (via ingress `{c}`)" if c in mesh.ingress_map else f"`{c}`"


def _dead_internet(mesh: Mesh, lim: RateLimit, dest: str, timeout_ms: int, box_limit: int,
                   what: str) -> Diagnostic:
    """MP530 for a limit whose only callers are the internet: no ingress
    forwards to dest, or every request they forward is denied there."""
    from .assertions import _internet_witness
    from .internet import arrivals

    denied = None
    try:
        denied = next(((req, at) for req, _tok, at in arrivals(mesh, dest, timeout_ms, box_limit)
                       if not at.decision.allowed), None)
    except Exception:  # noqa: BLE001 (Unsupported/Undecided: no witness from the ingresses)
        denied = None
    if denied is not None:
        req, at = denied
        from .internet import confirm

        confirm(mesh, req, dest, at)
        return diag("MP530", f"{what}: every request an ingress forwards there is denied, e.g. {at.request}",
                    lim.span, witness=_internet_witness(req, at))
    req = Request(None, dest)
    wit = confirmed(mesh, req, lambda o: True, "a request from outside reaches the destination only directly")
    return diag("MP530", f"{what}: no ingress forwards any request to `{dest}`, so no request from the "
                         f"internet arrives there", lim.span, witness=wit)


def _retries(mesh: Mesh, lim: RateLimit, dest: str, callers: list[str], graph: Digraph,
             into: dict[str, tuple[float, str | None]]) -> list[Diagnostic]:
    """MP532 for the worst limited caller: attempts per request on the hop,
    times the amplification already on the way into the caller."""
    attempts, rule = hop_amplification(mesh, dest)
    best = None
    for c in sorted(callers):
        up = into.get(c, (1.0, None))[0]
        k = attempts * up
        if k > 1 and (best is None or k > best[0]):
            best = (k, c, path_into(into, c) if c in into else [c])
    if best is None:
        return []
    k, c, path = best
    served = lim.requests / k
    hop = graph.edges[c, dest]["witness"] if graph.has_edge(c, dest) else None
    # a call-path witness (as MP552's) plus the numbers the finding multiplies
    wit = {"path": path + [dest], "requests": [str(hop)] if hop is not None else [], "attempts": k,
           "limit": _rate(lim), "served": served}
    # Label every hop that multiplies, not the limited hop's own retry setting: with
    # `retry off` there, the retries are upstream (it once labelled `retry off`).
    labels = []
    for hop_dest in path[1:] + [dest]:
        n, r = (attempts, rule) if hop_dest == dest else hop_amplification(mesh, hop_dest)
        hop_svc = mesh.service(hop_dest)
        if n <= 1:
            continue
        if r is not None and r.retry:
            labels.append(Label(r.span, "retries here"))
        elif hop_svc is not None and hop_svc.retry is not None:
            labels.append(Label(hop_svc.retry.span, "retries here"))
    return [diag("MP532", f"one request along {' -> '.join(path + [dest])} can count {k:g} times against "
                          f"the limit `{_rate(lim)}` on {_caller_text(mesh, c)} -> `{dest}`: retries eat the budget, and only "
                          f"{served:.3g}/{lim.per} such requests are sure to be served", lim.span, labels=labels,
                 witness=wit)]


# ---- per-key limits (north-south) ----------------------------------------------------------------

def _per_second(lim: RateLimit) -> float:
    return lim.requests / lim.per_seconds


def _capacity(lim: RateLimit) -> int:
    return lim.burst if lim.burst is not None else lim.requests


def _covers(mesh: Mesh, pair: Source, s: Source) -> bool:
    """Does a pair limit's source count every request the keyed limit's
    source counts (same callers, any key value)?"""
    from .diff import _canon

    if pair.kind == "any":
        return True
    if pair.kind == "authenticated":
        return s.kind in ("service", "namespace", "authenticated", "internet")
    if pair.kind == "internet":
        return s.kind == "internet" and (pair.jwt is None or _canon(pair.jwt) == _canon(s.jwt))
    if pair.kind == "namespace":
        svc = mesh.service(s.name or "") if s.kind == "service" else None
        return (s.kind == "namespace" and s.name == pair.name) or (svc is not None and svc.namespace == pair.name)
    if pair.kind == "service":
        from ..semantics.admission import same_identity

        return s.kind == "service" and same_identity(mesh, pair.name, s.name)
    return False


def keyed_findings(mesh: Mesh, graph: Digraph, skip=frozenset()) -> list[Diagnostic]:
    """MP544: a per-key limit (`per claim|header|source_ip`) that a limit
    without a key on the same callers and destination shadows: that limit
    lets the callers' whole traffic through at a lower rate (and burst) than
    one key's bucket allows, so the per-key limit never refuses anything."""
    out: list[Diagnostic] = []
    keyed = [k for k in mesh.rate_limits if k.key is not None and mesh.service(k.target.name) is not None
             and k.target.name not in skip]
    for k in keyed:
        for p in mesh.rate_limits:
            if p.key is not None or p.target.name != k.target.name:
                continue
            if not (_per_second(p) <= _per_second(k) and _capacity(p) <= _capacity(k)):
                continue
            if not all(any(_covers(mesh, ps, ks) for ps in p.sources) for ks in k.sources):
                continue
            req = _keyed_witness(mesh, k, graph)
            if req is None:
                continue  # no counted request at all: MP530's finding
            wit = confirmed(mesh, req, lambda o: o.decision.allowed, "a request the per-key limit counts is allowed")
            wit.update(keyed_limit=_rate(k) + _key_text(k), pair_limit=_rate(p))
            burst = lambda lim: f", burst {_capacity(lim)}"  # noqa: E731
            out.append(diag("MP544", f"the per-key limit `{_rate(k)}{_key_text(k)}` on `{k.target.name}` never "
                                     f"acts: the limit `{_rate(p)}` on the same callers lets through at most "
                                     f"{_per_second(p):g}/s{burst(p)} in all, within one key's "
                                     f"{_per_second(k):g}/s{burst(k)}; e.g. {req}", k.span,
                            labels=[Label(p.span, "this limit refuses first")], witness=wit))
            break
    return out


def _key_text(lim: RateLimit) -> str:
    k = lim.key
    if k.kind == "source_ip":
        return " per source_ip"
    return f' per {k.kind} "{k.name}"'


def _keyed_witness(mesh: Mesh, lim: RateLimit, graph: Digraph) -> Request | None:
    """An allowed request the per-key limit counts, carrying a key value."""
    from dataclasses import replace

    from ..semantics.evaluate import Token, evaluate

    dest = lim.target.name
    by_ns: dict[str, list[str]] = {}
    for svc in mesh.service_map.values():
        by_ns.setdefault(svc.namespace, []).append(svc.name)
    for s in lim.sources:
        bases = []
        if s.kind == "internet":
            from ..semantics.ingress import accepted_providers
            from . import internet
            from .atoms import Undecided, Unsupported
            from .partition import BOX_LIMIT, DEFAULT_TIMEOUT_MS
            from .tokens import met

            try:
                got = internet._first_allowed(
                    mesh, dest, DEFAULT_TIMEOUT_MS, BOX_LIMIT, extra=[s.jwt],
                    want=lambda r, tok, s=s: met(s.jwt, tok, accepted_providers(mesh, mesh.ingress_map[r.destination])))
            except (Unsupported, Undecided):
                got = {}
            bases = [internet.sent_to(at) for _req, at in got.values()]
        else:
            for c in _callers(mesh, s, by_ns):
                if c is not None and c != dest and graph.has_edge(c, dest):
                    bases.append(graph.edges[c, dest]["witness"])
        for base in bases:
            cand = base
            if lim.key.kind == "header":
                cand = replace(base, headers=tuple(h for h in base.headers if h[0] != lim.key.name)
                               + ((lim.key.name, "key-1"),))
            elif lim.key.kind == "claim" and base.token is not None and lim.key.name not in base.token.claims:
                cand = replace(base, token=Token(base.token.provider, {**base.token.claims, lim.key.name: "user-1"}))
            for r in (cand, base):
                if evaluate(mesh, r).decision.allowed:
                    return r
    return None
