"""Authorization: who may call whom, and findings about allow/deny rules.

Every question is about one destination's rules, so it runs on that
destination's partition (partition.py)."""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Diagnostic, Label
from ..model.types import AuthRule, Mesh
from ..semantics.evaluate import Request, auth_rule_matches, authorize
from .partition import DEFAULT_TIMEOUT_MS, Partition, partition
from .witness import WitnessMismatch, confirmed


def may_call(mesh: Mesh, source: str | None, destination: str, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> Request | None:
    """An allowed request from source to destination, or None when authorization
    denies every request from that source (source None: no mesh identity).

    Exact over every method, path and header (via the partition's atoms). When
    the destination cannot be encoded exactly (MP520 says so), the answer is the
    best the candidate requests show: a returned request is always truly allowed.
    """
    p = partition(mesh, destination, timeout_ms)
    if p.error:
        return _probe(mesh, p, source, destination)
    known = source is None or mesh.service(source) is not None
    ans = p.check(p.allowed, p.source_is(source if known else None))
    if not ans.sat:
        return None
    req = p.request_for(source, ans.request)
    if not authorize(mesh, req).allowed:
        raise WitnessMismatch(f"may_call witness `{req}` is not allowed by the reference evaluator")
    return req


def _probe(mesh: Mesh, p: Partition, source: str | None, destination: str) -> Request | None:
    from ..model.types import HTTP_METHODS

    paths = {"/"}
    for r in p.auth_rules:
        for pat in r.paths:
            from .atoms import _candidates, key_of

            paths.update(c for c in _candidates(key_of(pat)) if c.startswith("/"))
    for m in HTTP_METHODS:
        for path in sorted(paths):
            req = Request(source, destination, m, path)
            if authorize(mesh, req).allowed:
                return req
    return None


def _label(r: AuthRule, msg: str) -> Label:
    return Label(r.span, msg)


def _what(r: AuthRule) -> str:
    return f"`{r.effect} ... -> {r.target.name}` (rule {r.index + 1})"


def findings(mesh: Mesh, p: Partition) -> list[Diagnostic]:
    if p.error or not p.auth_rules:
        return []
    out: list[Diagnostic] = []
    ind = p.auth_ind
    empty: set[int] = set()
    dead: set[int] = set()
    for r in p.auth_rules:
        a = ind[r.index]
        if p.check(a).unsat:
            empty.add(r.index)
            out.append(diag("MP504", f"{_what(r)} matches no request", r.span))
            continue
        if r.effect != "allow":
            continue
        denies = [d for d in p.auth_rules if d.effect == "deny" and d.index not in empty]
        overlapping = [d for d in denies if p.check(a, ind[d.index]).sat]
        if not overlapping:
            continue
        ans = p.check(a, ind[overlapping[0].index])
        wit = confirmed(mesh, ans.request, lambda o, r=r: not o.decision.allowed and auth_rule_matches(mesh, r, o.request),
                        "a request the allow rule matches is denied")
        labels = [_label(d, "this deny rule wins") for d in overlapping]
        if p.check(a, p.z3.Not(p.deny_any)).unsat:
            dead.add(r.index)
            out.append(diag("MP501", f"{_what(r)} is dead: deny rules deny every request it matches, "
                            f"e.g. {ans.request}", r.span, labels=labels, witness=wit))
        else:
            out.append(diag("MP503", f"deny rules win over part of {_what(r)}, e.g. {ans.request}",
                            r.span, labels=labels, witness=wit))
    # Redundancy, from the last rule up, so of two equal rules the later is reported.
    redundant: set[int] = set()
    for r in reversed(p.auth_rules):
        if r.index in empty or r.index in dead:
            continue
        others = [o for o in p.auth_rules if o.effect == r.effect and o.index != r.index
                  and o.index not in redundant and o.index not in empty]
        if not others:
            continue
        a = ind[r.index]
        if not p.check(a, *[p.z3.Not(ind[o.index]) for o in others]).unsat:
            continue
        covering = [o for o in others if p.check(a, ind[o.index]).sat]
        ans = p.check(a)
        wit = confirmed(mesh, ans.request,
                        lambda o, r=r: auth_rule_matches(mesh, r, o.request)
                        and any(auth_rule_matches(mesh, c, o.request) for c in covering),
                        "the rule's request is also matched by the covering rules")
        redundant.add(r.index)
        out.append(diag("MP502", f"{_what(r)} is redundant: the {r.effect} rules in the labels already match "
                        f"every request it matches", r.span,
                        labels=[_label(o, f"covers part of it") for o in covering], witness=wit))
    return out
