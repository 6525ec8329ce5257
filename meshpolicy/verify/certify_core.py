"""The certifier's registry and state (certify.py drives it): `CLAIMS` maps a
finding code to the function that re-decides that finding, `ABSENCE` holds
the functions that certify nothing was missed, and `Certifier` keeps one
Z3 encoding per destination (certify_space.py), the answers asked so far and
what it reports (MP590, MP591)."""

from __future__ import annotations

from collections.abc import Callable

from ..codes import diag
from ..diagnostics import Diagnostic
from ..model.types import Mesh
from ..semantics.evaluate import Request, Token
from .certify_regex import Untranslatable

Claim = Callable[["Certifier", Diagnostic], None]
CLAIMS: dict[str, Claim] = {}
ABSENCE: list[Callable[["Certifier"], None]] = []


def claim(*codes: str):
    def register(fn: Claim) -> Claim:
        for c in codes:
            CLAIMS[c] = fn
        return fn
    return register


def absence(fn):
    ABSENCE.append(fn)
    return fn


class Answer:
    def __init__(self, status: str, request: Request | None = None):
        self.status, self.request = status, request

    sat = property(lambda self: self.status == "sat")
    unsat = property(lambda self: self.status == "unsat")


class Certifier:
    def __init__(self, mesh: Mesh, found: list[Diagnostic], limits: tuple[int, int], graph):
        self.mesh, self.found, self.limits, self.graph = mesh, found, limits, graph
        self.out: list[Diagnostic] = []
        self._spaces: dict[str, object] = {}
        self._facts: dict[tuple, Answer] = {}
        self.pattern_answers: dict[tuple, Answer] = {}
        self.done: set = set()
        self.limit_expected: dict = {}
        self.queries = 0
        self.auth_at = {r.span: r for r in mesh.auth_rules}
        self.route_at = {rr.span: (route.service.name, rr) for route in mesh.routes if mesh.route_map.get(
            route.service.name) is route for rr in route.rules}
        self.assertion_at = {a.span: a for a in mesh.assertions}
        self.source_at = {s.span: r for r in mesh.auth_rules for s in r.sources}
        self.service_at = {s.at("name"): s for s in mesh.services}
        # path patterns of rules, by where they were written: (destination, pattern, rule)
        self.pattern_at: dict = {}
        for r in mesh.auth_rules:
            self.pattern_at.update({p.span: (r.target.name, p, r) for p in r.paths})
        for route in mesh.routes:
            for rr in route.rules:
                self.pattern_at.update({p.span: (route.service.name, p, rr) for p in rr.match.paths})
        self.unnormal = {d.span for d in found if d.code == "MP505"}
        # destinations the verifier says it proved nothing about (MP520) or did not verify (MP507)
        spans = {d.span for d in found if d.code in ("MP520", "MP507")}
        self.unproved = {s.name for s in mesh.services if s.span in spans}

    # ---- the encodings, one per destination -------------------------------------------

    def space(self, dest: str, span=None):
        """The destination's encoding, or None (MP591 reported once) when a
        pattern is outside what the encoding covers."""
        if dest not in self._spaces:
            from .certify_space import Space

            why = north_south(self.mesh, dest)
            if why is not None:  # the encoding has no ingress callers, tokens or egress (docs/verify.md)
                self._spaces[dest] = None
                node = self.mesh.service(dest) or self.mesh.external_map.get(dest)
                self.not_certified(f"nothing about calls to `{dest}` was certified: {why}",
                                   node.span if node is not None else span)
                return None
            try:
                self._spaces[dest] = Space(self.mesh, dest, *self.limits)
            except Untranslatable as exc:
                self._spaces[dest] = None
                svc = self.mesh.service(dest)
                if dest not in self.unproved:  # else the verifier claims nothing either (MP520)
                    self.not_certified(f"nothing about calls to `{dest}` was certified: {exc}",
                                       svc.span if svc else span)
        return self._spaces[dest]

    def ask(self, dest: str, key, span, what: str, *constraints) -> Answer:
        """A question about requests to dest (answers kept under `key`);
        an unknown is MP591 naming `what`."""
        k = (dest, key)
        if k not in self._facts:
            sp = self.space(dest, span)
            if sp is None:
                self._facts[k] = Answer("unknown")
            else:
                status, got = sp.ask(*constraints)
                self.queries += 1
                if status == "unknown":
                    self.not_certified(f"{what} was not certified within the limit ({got})", span)
                    got = None
                self._facts[k] = Answer(status, got)
        return self._facts[k]

    # ---- reports ------------------------------------------------------------------------

    def not_certified(self, message: str, span) -> None:
        self.out.append(diag("MP591", message, span))

    def disagree(self, said: str, found: str, span, req: Request | None = None,
                 ref: Callable[[Request], bool] | None = None, labels=()) -> None:
        """MP590: the verifier said `said`, the certifier found `found`. A
        request Z3 produced is re-evaluated with the reference evaluator
        (`ref`: what it must show); if that fails, the encoding is at fault."""
        from .witness import as_dict

        msg = f"certifier disagrees: the verifier says {said}, but {found}"
        if req is not None:
            msg += f", e.g. {req}"
            if ref is not None and not ref(req):
                msg += " (the reference evaluator disagrees with the certifier's encoding on this request)"
        self.out.append(diag("MP590", msg, span, labels=list(labels), witness=as_dict(req) if req else None))

    def check_witness(self, d: Diagnostic, dest: str, formula_of: Callable, ref: Callable[[Request], bool],
                      what: str) -> None:
        """The finding's witness must show `what` to the reference evaluator
        (`ref`) and to the encoding (`formula_of(space)`)."""
        w = d.witness
        if not w or "path" not in w or "method" not in w or not isinstance(w.get("path"), str):
            return
        tok = w.get("token")
        req = Request(w.get("source"), w.get("destination", dest), w["method"], w["path"],
                      tuple((w.get("headers") or {}).items()), query=w.get("query", ""), host=w.get("host"),
                      token=Token(tok["provider"], tok["claims"]) if tok else None)
        if not ref(req):
            self.disagree(f"{d.code} with witness {req}", f"the reference evaluator says it does not show that {what}",
                          d.span)
            return
        sp = self.space(dest, d.span)
        if sp is None:
            return
        got = sp.holds(formula_of(sp), req)
        if got is False:
            self.disagree(f"{d.code} with witness {req}", f"the certifier's encoding says it does not show that {what} "
                          "(the reference evaluator says it does)", d.span)
        elif got is None:
            self.not_certified(f"the witness of this {d.code} finding was not certified", d.span)


def north_south(mesh: Mesh, dest: str) -> str | None:
    """Why the certifier's encoding cannot decide requests to dest (None: it
    can): it knows service callers and callers without identity, not the
    internet (an ingress caller with a token), egress to externals, or
    query parameter tests."""
    if mesh.service(dest) is None and dest in mesh.external_map:
        return "egress to externals is not encoded by the certifier"
    route = mesh.route_map.get(dest)
    if route is not None and any(rr.match.queries for rr in route.rules):
        return "query parameter tests are not encoded by the certifier"
    if route is not None and any(rr.rewrite is not None and rr.rewrite.path is not None for rr in route.rules):
        return "a route rule rewrites the path (authorization sees the new one), which the certifier does not encode"
    if not mesh.ingresses:
        return None
    from ..semantics.ingress import ingresses_to

    ingress_ns = {g.namespace for g in mesh.ingress_map.values()}
    for r in mesh.rules_by_target.get(dest, []):
        for s in r.sources:
            if s.kind == "internet" or (s.kind == "namespace" and s.name in ingress_ns):
                return "requests from the internet (through an ingress, with tokens) are not encoded by the certifier"
    if ingresses_to(mesh, dest):
        return "requests from the internet (through an ingress, with tokens) are not encoded by the certifier"
    return None
