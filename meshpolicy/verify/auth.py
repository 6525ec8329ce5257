"""Authorization: who may call whom, and findings about allow/deny rules.

Every question is about one destination's rules, so it runs on that
destination's partition (partition.py). Each rule matches a box of requests;
questions that boxes answer exactly (is a box empty, do two boxes meet, is
one inside another) skip the solver, and the rest (is a box covered by a
union of others) go to Z3 with the rules' indicators as assumptions."""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Diagnostic, Label
from ..model.types import AuthRule, Mesh
from ..semantics.evaluate import Request, _paths_match, authorize, egress_source_matches, normalized
from ..semantics.evaluate import auth_rule_matches as _east_west_matches
from .atoms import Undecided
from .partition import BOX_LIMIT, DEFAULT_TIMEOUT_MS, Partition, partition
from .raw_paths import wholly_dead
from .witness import WitnessMismatch, confirmed


def may_call(mesh: Mesh, source: str | None, destination: str, timeout_ms: int = DEFAULT_TIMEOUT_MS,
             box_limit: int = BOX_LIMIT) -> Request | None:
    """An allowed request from source to destination, or None when authorization
    denies every request from that source (source None: no mesh identity).

    Exact over every method, path and header (via the partition's atoms). When
    the destination cannot be encoded exactly (MP520 says so), the answer is the
    best the candidate requests show (likewise after a solver timeout): a returned request is always truly allowed.
    """
    p = partition(mesh, destination, timeout_ms, box_limit)
    if p.error:
        return _probe(mesh, p, source, destination)
    known = source is None or mesh.service(source) is not None
    cls = p.source_index(source if known else None)
    boxes = p.allowed_for_class(next(iter(cls)))
    if boxes is not None:
        if not boxes:
            return None
        req = p.request_for(source, p.pick(boxes[0]))
    else:
        ans = p.check(p.allowed, p.source_is(source if known else None))
        if ans.status == "unknown":
            return _probe(mesh, p, source, destination)
        if not ans.sat:
            return None
        req = p.request_for(source, ans.request)
    if not authorize(mesh, req).allowed:
        raise WitnessMismatch(f"may_call witness `{req}` is not allowed by the reference evaluator")
    return req


def allowed_callers(mesh: Mesh, destination: str, candidates: list[str | None],
                    timeout_ms: int = DEFAULT_TIMEOUT_MS, box_limit: int = BOX_LIMIT) -> list[tuple[str | None, Request]]:
    """(caller, may_call(caller)) for each candidate that may call (a service
    other than the destination, or None: no identity), in candidate order:
    the same answers as asking may_call one by one. A caller class whose every
    request is denied (box arithmetic, no solver) has its members skipped
    without a look: behind `allow *` with `deny authenticated` every service
    of the mesh is a candidate, and asking each one made the call graph
    quadratic in the mesh (3 million questions at 10,000 services)."""
    p = partition(mesh, destination, timeout_ms, box_limit)
    # worth it only when the candidates outnumber the classes (a broad source such as `*`)
    if not p.error and len(candidates) > len(p.sources):
        keep, drop = p.callers_not_denied()
        if keep is not None:
            candidates = [c for c in candidates if c in keep]
        elif drop:
            candidates = [c for c in candidates if c not in drop]
    known = mesh.service_map
    out = []
    for c in candidates:
        if c == destination or (c is not None and c not in known):
            continue
        req = may_call(mesh, c, destination, timeout_ms, box_limit)
        if req is not None:
            out.append((c, req))
    return out


def graph_callers(skipped: set[str], timeout_ms: int = DEFAULT_TIMEOUT_MS, box_limit: int = BOX_LIMIT):
    """The call graph's edge decider as verify.run uses it (callgraph.build_graph's
    `callers`): allowed_callers, except that callers of a destination over the
    rule limit (`skipped`, MP507) are only probed."""
    def callers(mesh: Mesh, destination: str, candidates: list[str | None]) -> list[tuple[str | None, Request]]:
        if destination in skipped:
            return [(s, req) for s in candidates if s != destination and (s is None or s in mesh.service_map)
                    and (req := probe(mesh, s, destination)) is not None]
        return allowed_callers(mesh, destination, candidates, timeout_ms, box_limit)

    return callers


def probe(mesh: Mesh, source: str | None, destination: str) -> Request | None:
    """An allowed request among the candidate requests of the destination's
    rules, without building its partition (a destination over the verifier's
    rule limit): a returned request is truly allowed; None proves nothing."""
    return _probe_rules(mesh, mesh.rules_by_target.get(destination, []), source, destination)


def _probe(mesh: Mesh, p: Partition, source: str | None, destination: str) -> Request | None:
    return _probe_rules(mesh, p.auth_rules, source, destination)


def _probe_rules(mesh: Mesh, rules, source: str | None, destination: str) -> Request | None:
    from ..model.types import HTTP_METHODS
    from .atoms import _candidates, key_of

    paths = {"/"}
    for r in rules:
        for pat in r.paths:
            paths.update(c for c in _candidates(key_of(pat)) if c.startswith("/"))
    for m in HTTP_METHODS:
        for path in sorted(paths):
            req = Request(source, destination, m, path)
            if authorize(mesh, req).allowed:
                return req
    return None


def auth_rule_matches(mesh: Mesh, r: AuthRule, req: Request) -> bool:
    """Does rule r match req? An egress rule (its target an external) is
    matched at the caller's own sidecar (semantics.evaluate.egress_source_matches)."""
    if mesh.service(r.target.name) is None and r.target.name in mesh.external_map:
        norm = normalized(req)
        return (norm is not None and r.target.name == req.destination
                and any(egress_source_matches(mesh, s, norm) for s in r.sources)
                and (not r.methods or norm.method in r.methods) and _paths_match(r.paths, norm.path))
    return _east_west_matches(mesh, r, req)


def _what(r: AuthRule) -> str:
    return f"this {r.effect} rule for `{r.target.name}`"


def _identity_blind(mesh: Mesh, r: AuthRule) -> bool:
    """An allow rule naming callers by identity on a service with mTLS off: the
    mTLS findings (MP562) already say why it cannot match; one report is enough."""
    svc = mesh.service(r.target.name)
    return (r.effect == "allow" and svc is not None and mesh.mtls_of(svc) == "off"
            and all(s.kind != "any" for s in r.sources))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _empty(box) -> bool:
    return any(not x for x in box)


def findings(mesh: Mesh, p: Partition) -> list[Diagnostic]:
    if p.error or not p.auth_rules:
        return []
    out: list[Diagnostic] = []
    box = p.auth_box
    empty = {r.index for r in p.auth_rules if _empty(box[r.index])}
    dead: set[int] = set()
    for r in p.auth_rules:
        if r.index in empty:
            if not _identity_blind(mesh, r) and not wholly_dead(r.paths):
                out.append(diag("MP504", f"{_cap(_what(r))} matches no request", r.span))
            continue
        if r.effect != "allow":
            continue
        # deny rules only decide what the transport admits; the rest is MP561's
        rbox = p.meet(box[r.index], p.admitted_box)
        if rbox is None:
            continue
        overlapping = [d for d in p.rules_sharing_callers(r) if d.effect == "deny" and d.index not in empty
                       and p.meet(rbox, box[d.index]) is not None]
        if not overlapping:
            continue
        req = p.pick(p.meet(rbox, box[overlapping[0].index]))
        wit = confirmed(mesh, req, lambda o, r=r: not o.decision.allowed and auth_rule_matches(mesh, r, o.request),
                        "a request the allow rule matches is denied")
        labels = [Label(d.span, "this deny rule wins") for d in overlapping]
        if _covered(p, r, overlapping, lambda: p.check(p.auth_ind[r.index], p.admitted, p.z3.Not(p.deny_any)),
                    rbox):
            dead.add(r.index)
            out.append(diag("MP501", f"{_cap(_what(r))} is dead: deny rules deny every request it matches, "
                            f"e.g. {req}", r.span, labels=labels, witness=wit))
        else:
            out.append(diag("MP503", f"deny rules win over part of {_what(r)}, e.g. {req}",
                            r.span, labels=labels, witness=wit))
    # Redundancy, from the last rule up, so of two equal rules the later is reported.
    redundant: set[int] = set()
    for r in reversed(p.auth_rules):
        if r.index in empty or r.index in dead:
            continue
        paths = box[r.index][2]
        covering = [o for o in p.rules_sharing_callers(r) if o.effect == r.effect and o.index != r.index
                    and o.index not in redundant and o.index not in empty
                    and not paths.isdisjoint(box[o.index][2])  # the usual reason two rules do not meet
                    and p.meet(box[r.index], box[o.index]) is not None]
        if not covering:
            continue
        if not _covered(p, r, covering, lambda: p.check(p.auth_ind[r.index],
                                                        *[p.z3.Not(p.auth_ind[o.index]) for o in covering])):
            continue
        req = p.pick(p.meet(box[r.index], box[covering[0].index]))
        wit = confirmed(mesh, req, lambda o, r=r: auth_rule_matches(mesh, r, o.request)
                        and auth_rule_matches(mesh, covering[0], o.request),
                        "the rule's request is also matched by a covering rule")
        redundant.add(r.index)
        out.append(diag("MP502", f"{_cap(_what(r))} is redundant: the {r.effect} rules in the labels already match "
                        f"every request it matches", r.span,
                        labels=[Label(o.span, "covers part of it") for o in covering], witness=wit))
    return out


def _covered(p: Partition, r: AuthRule, others: list[AuthRule], ask, rbox=None) -> bool:
    """Is every request of r (within rbox, default r's whole box) matched by
    one of `others`? One box inside another decides it at once; otherwise the
    solver does (an unknown is not a yes)."""
    rbox = p.auth_box[r.index] if rbox is None else rbox
    if any(p.within(rbox, p.auth_box[o.index]) for o in others):
        return True
    rest = p.minus([rbox], [p.auth_box[o.index] for o in others])
    if rest is not None:
        return not rest
    ans = ask()
    if ans.status == "unknown":
        raise Undecided(f"the solver gave up on rule {r.index + 1} ({ans.reason})")
    return ans.unsat
