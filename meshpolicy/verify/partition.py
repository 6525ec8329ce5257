"""One destination's request space as a finite Z3 problem.

Authorization and routing questions about a destination only involve that
destination's rules, so each destination is one partition with one
incremental solver. A request to it is encoded as small integers:

- S: the caller's class (services the destination's rules cannot tell apart
  share a class; one class is "no mesh identity"),
- M: the method (one of the standard HTTP methods),
- P: the path's atom (see atoms.py),
- H<i>: for each header a route tests, absent (0) or the value's atom.

Each rule becomes an indicator Bool defined as its match over these
variables, and every question is `solver.check(assumptions)` on indicator
literals. Which values a rule admits is computed with the reference
evaluator on each class's representative, so the encoding agrees with
docs/semantics.md by construction; witnesses are re-checked anyway.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from ..model.types import HTTP_METHODS, AuthRule, Mesh, RouteRule, Source
from ..semantics.admission import admits, identity_mates
from ..semantics.evaluate import Request, egress_source_matches, source_matches
from .atoms import Atom, Key, Undecided, Unsupported, key_of, split

DEFAULT_TIMEOUT_MS = 2000
# Box differences larger than this go to the solver instead (0: always the solver).
BOX_LIMIT = 256


@dataclass
class Answer:
    status: str  # "sat", "unsat" or "unknown"
    request: Request | None = None
    reason: str = ""

    @property
    def sat(self) -> bool:
        return self.status == "sat"

    @property
    def unsat(self) -> bool:
        return self.status == "unsat"


@dataclass
class SourceClass:
    rep: str | None  # representative service name; None: no identity (or the internet)
    label: str  # how a report names the class, e.g. "frontend" or "other services of namespace shop"
    # internet callers (verify/internet.py): the ingress that forwards and the token carried
    ingress: str | None = None
    token: object = None


class Partition:
    def __init__(self, mesh: Mesh, dest: str, timeout_ms: int = DEFAULT_TIMEOUT_MS, box_limit: int = BOX_LIMIT):
        self.mesh = mesh
        self.box_limit = box_limit
        self.dest = dest
        self.timeout_ms = timeout_ms
        self.error: str | None = None  # set when the space cannot be encoded exactly
        self.seconds = 0.0
        self.queries = 0
        self.box_questions = 0
        self.stats: dict = {}
        self.auth_rules: list[AuthRule] = mesh.rules_by_target.get(dest, [])
        # an external service: its rules are egress rules, decided at the caller's own sidecar
        self.external = mesh.service(dest) is None and dest in mesh.external_map
        route = mesh.route_map.get(dest)
        self.route_rules: list[RouteRule] = route.rules if route else []
        self.has_route = route is not None
        t0 = time.perf_counter()
        try:
            self._build()
        except (Unsupported, Undecided) as exc:
            self.error = str(exc)
        self.seconds += time.perf_counter() - t0

    # ---- the finite space ----------------------------------------------------------

    def _assertions(self):
        return _index(self.mesh).assertions.get(self.dest, [])

    def _build(self) -> None:
        # A route rule that rewrites the path: the callee's authorization sees the
        # new path (docs/semantics.md). Requests here are as the destination's
        # sidecar receives them, which the rule findings are about; what needs
        # the path as sent (MP512 on such a rule, assertions) is not judged.
        self.rewrites = [rr.index for rr in self.route_rules if rr.rewrite is not None and rr.rewrite.path is not None]
        keys: list[Key] = []
        for r in self.auth_rules:
            keys.extend(key_of(p) for p in r.paths)
        for rr in self.route_rules:
            keys.extend(key_of(p) for p in rr.match.paths)
        for a in self._assertions():
            keys.extend(key_of(p) for p in a.paths)
        self.paths: list[Atom] = split(keys, "path", self.timeout_ms, self.stats)
        headers: dict[str, list[Key]] = {}
        for rr in self.route_rules:
            for h in rr.match.headers:
                ks = headers.setdefault(h.name, [])
                if h.kind in ("exact", "prefix", "regex"):
                    ks.append((h.kind, h.value or ""))
        self.header_names = sorted(headers)
        self.header_atoms: dict[str, list[Atom | None]] = {
            n: [None] + split(headers[n], "value", self.timeout_ms, self.stats) for n in self.header_names
        }
        # query parameters route rules test (after the headers; atom None: the parameter is absent)
        queries: dict[str, list[Key]] = {}
        for rr in self.route_rules:
            for q in rr.match.queries:
                ks = queries.setdefault(q.name, [])
                if q.kind in ("exact", "prefix", "regex"):
                    ks.append((q.kind, q.value or ""))
        self.query_names = sorted(queries)
        self.query_atoms: dict[str, list[Atom | None]] = {
            n: [None] + split(queries[n], "value", self.timeout_ms, self.stats) for n in self.query_names
        }
        self.methods = list(HTTP_METHODS)
        self.sources = self._source_classes()
        self.sizes = [len(self.sources), len(self.methods), len(self.paths)] + [
            len(self.header_atoms[n]) for n in self.header_names] + [len(self.query_atoms[n]) for n in self.query_names]
        # Every rule's match is a box: a product of one value set per variable.
        self.auth_box = {r.index: self.auth_rule_box(r) for r in self.auth_rules}
        # the requests the destination's transport admits (docs/semantics.md):
        # every rule's verdict applies only inside this box
        # (admission depends on the caller only through having an identity:
        # one answer for the identity classes, one for "no identity")
        some = next((c.rep for c in self.sources if c.rep is not None), None)
        ok = {None: admits(self.mesh, None, self.dest), some: admits(self.mesh, some, self.dest)}
        if self.external:  # only a workload (with its sidecar) goes out through the mesh
            ok = {None: False, some: True}
        # (an ingress, the internet's caller, has a mesh identity too; a token
        # the destination's sidecar validates with none of its providers is refused, 401)
        self.admitted_box = (frozenset(i for i, c in enumerate(self.sources) if ok[c.rep if c.rep is None else some]
                                       and self._token_passes(c)),
                             ) + tuple(self.full()[1:])
        self.route_box = [self.route_rule_box(rr) for rr in self.route_rules]
        self._solver = None

    # ---- boxes: exact shortcuts that need no solver ---------------------------------

    def full(self) -> list[frozenset[int]]:
        # built once: a hub's caller classes number in the thousands, and every box starts from it
        whole = self.__dict__.get("_full")
        if whole is None or len(whole) != len(self.sizes):
            whole = self.__dict__["_full"] = tuple(frozenset(range(n)) for n in self.sizes)
        return list(whole)

    def box(self, sources=None, methods=(), paths=(), from_names=(), headers=(), queries=()) -> tuple[frozenset[int], ...]:
        b = self.full()
        if sources is not None:
            b[0] = frozenset().union(*[self._classes_of_source(s) for s in sources])
        if from_names:
            b[0] = b[0] & frozenset(i for i, c in enumerate(self.sources) if c.rep in from_names)
        if methods:
            b[1] = frozenset(i for i, m in enumerate(self.methods) if m in methods)
        if paths:
            # an atom's members are exactly the patterns its strings match
            keys = {key_of(p) for p in paths}
            b[2] = frozenset(i for i, a in enumerate(self.paths) if a.members & keys)
        for h in headers:
            j = 3 + self.header_names.index(h.name)
            atoms = self.header_atoms[h.name]
            if h.kind in ("exact", "prefix", "regex"):
                k = (h.kind, h.value or "")
                ok = frozenset(i for i, a in enumerate(atoms) if a is not None and k in a.members)
            else:
                ok = frozenset(i for i, a in enumerate(atoms) if (a is None) == (h.kind == "absent"))
            b[j] = b[j] & ok
        for q in queries:
            j = 3 + len(self.header_names) + self.query_names.index(q.name)
            atoms = self.query_atoms[q.name]
            if q.kind in ("exact", "prefix", "regex"):
                k = (q.kind, q.value or "")
                ok = frozenset(i for i, a in enumerate(atoms) if a is not None and k in a.members)
            else:  # present
                ok = frozenset(i for i, a in enumerate(atoms) if a is not None)
            b[j] = b[j] & ok
        return tuple(b)

    def _classes_of_source(self, s: Source) -> frozenset[int]:
        """The caller classes a rule source matches (source_matches on each
        class's representative, which stands for the whole class). A named
        service is looked up directly: a busy destination has hundreds of
        named callers, and testing every rule against every class would be
        quadratic in them."""
        memo = self.__dict__.setdefault("_source_memo", {})
        key = (s.kind, s.name) if s.jwt is None else (s.kind, s.name, id(s.jwt))
        got = memo.get(key)
        if got is None:
            if s.kind == "service" and s.name in self._named:
                names = [s.name, *identity_mates(self.mesh, s.name)]
                cand = [self._class_of[("svc", n)] for n in names if ("svc", n) in self._class_of]
            else:
                cand = range(len(self.sources))
            match = egress_source_matches if self.external else source_matches
            got = memo[key] = frozenset(i for i in cand if match(self.mesh, s, self.req(i)))
        return got

    def auth_rule_box(self, r: AuthRule):
        return self.box(r.sources, r.methods, r.paths)

    def route_rule_box(self, rr: RouteRule):
        m = rr.match
        return self.box(None, m.methods, m.paths, {ref.name for ref in m.sources}, m.headers, m.queries)

    @staticmethod
    def meet(a, b):
        """The intersection of two boxes, or None when it is empty. Sides that
        are one object (most are the whole range, shared with full()) are kept
        as they are: intersecting a hub's thousands of caller classes or path
        atoms with themselves was most of the call graph's time."""
        out = tuple(x if x is y else x & y for x, y in zip(a, b))
        return None if any(not x for x in out) else out

    @staticmethod
    def within(a, b) -> bool:
        return all(x is y or x <= y for x, y in zip(a, b))

    def minus(self, pieces, boxes):
        """The requests in `pieces` (boxes) outside every box of `boxes`, as
        disjoint boxes; None when that takes more than box_limit boxes."""
        out = list(pieces)
        for b in boxes:
            nxt = []
            for a in out:
                if self.meet(a, b) is None:
                    nxt.append(a)
                    continue
                cur = list(a)
                for k in range(len(cur)):
                    if cur[k] is b[k]:
                        continue  # nothing outside b on this side
                    rest = cur[k] - b[k]
                    if rest:
                        nxt.append(tuple(cur[:k] + [rest] + cur[k + 1:]))
                    cur[k] = cur[k] & b[k]
            out = nxt
            if len(out) > self.box_limit:
                return None
        self.box_questions += 1
        return out

    def allowed_in(self, pieces):
        """The allowed requests within `pieces`, as boxes (None: too many)."""
        pieces = [m for b in pieces if (m := self.meet(b, self.admitted_box)) is not None]
        if self.mesh.settings.default == "allow":
            starts = pieces
        else:
            allows = [self.auth_box[r.index] for r in self.auth_rules if r.effect == "allow"]
            starts = [m for b in pieces for a in allows if (m := self.meet(b, a)) is not None]
        if len(starts) > self.box_limit:
            return None
        return self.minus(starts, [self.auth_box[r.index] for r in self.auth_rules if r.effect == "deny"])

    def allowed_for_class(self, cls: int):
        """Every allowed request from one caller class, as boxes (None: too
        many). Only the allow rules naming that class are looked at, so a
        destination with hundreds of named callers answers each in time
        proportional to that caller's own rules, without the solver."""
        memo = self.__dict__.setdefault("_allowed_by_class", {})
        if cls not in memo:
            within = (frozenset({cls}),) + tuple(self.full()[1:])
            within = self.meet(within, self.admitted_box)
            if within is None:
                memo[cls] = []
            else:
                if self.mesh.settings.default == "allow":
                    starts = [within]
                else:
                    starts = [m for r in self.allows_of_class(cls) if (m := self.meet(within, self.auth_box[r.index])) is not None]
                denies = [self.auth_box[r.index] for r in self.denies_of_class(cls)]
                memo[cls] = None if len(starts) > self.box_limit else self.minus(starts, denies)
        return memo[cls]

    def callers_not_denied(self) -> tuple[set[str | None] | None, set[str | None]]:
        """Which callers (service names; None: no identity) may have some
        request allowed, by caller class, without looking at each caller:
        (keep, drop). When the class of unnamed services is wholly denied,
        keep holds every caller of the classes that are not (the rest are
        denied); otherwise keep is None and drop holds the callers of the named
        classes that are. A class whose answer is too large to hold
        (allowed_for_class None) is never dropped: may_call asks the solver."""
        def denied(key: tuple) -> bool:
            i = self._class_of.get(key)
            return i is not None and self.allowed_for_class(i) == []

        idx = _index(self.mesh)
        members: list[tuple[tuple, list]] = [(("svc", n), [n]) for n in self._named if n in idx.names]
        members += [(("ns", ns), [n for n in idx.by_ns.get(ns, ()) if n not in self._named]) for ns in self._namespaces]
        members.append((("none",), [None]))
        if ("other",) not in self._class_of or denied(("other",)):
            return {m for key, ms in members if not denied(key) for m in ms}, set()
        return None, {m for key, ms in members if denied(key) for m in ms}

    def some_allowed_in(self, pieces) -> bool | None:
        """Is some request within `pieces` allowed? Asked caller class by
        caller class (allowed_for_class), so a destination with hundreds of
        allow rules needs neither one huge box difference nor the solver.
        None: some class's answer was too large to hold."""
        classes = sorted(frozenset().union(*[b[0] for b in pieces])) if pieces else []
        for c in classes:
            boxes = self.allowed_for_class(c)
            if boxes is None:
                return None
            if any(self.meet(a, b) is not None for a in boxes for b in pieces):
                return True
        return False

    def allows_of_class(self, cls: int) -> list[AuthRule]:
        """The allow rules whose sources include caller class cls (indexed once)."""
        index = self.__dict__.get("_allows_index")
        if index is None:
            index = self.__dict__["_allows_index"] = {}
            for r in self.auth_rules:
                if r.effect == "allow":
                    for i in self.auth_box[r.index][0]:
                        index.setdefault(i, []).append(r)
        return index.get(cls, [])

    def denies_of_class(self, cls: int) -> list[AuthRule]:
        """The deny rules whose sources include caller class cls, in file order (indexed once)."""
        index = self.__dict__.get("_denies_index")
        if index is None:
            index = self.__dict__["_denies_index"] = {}
            for r in self.auth_rules:
                if r.effect == "deny":
                    for i in self.auth_box[r.index][0]:
                        index.setdefault(i, []).append(r)
        return index.get(cls, [])

    def rules_sharing_callers(self, r: AuthRule) -> list[AuthRule]:
        """The rules whose caller classes meet r's, in file order: only these
        can overlap r (a per-class index, not every pair of rules)."""
        index = self.__dict__.get("_rules_index")
        if index is None:
            index = self.__dict__["_rules_index"] = {}
            for o in self.auth_rules:
                for i in self.auth_box[o.index][0]:
                    index.setdefault(i, []).append(o)
        seen: dict[int, AuthRule] = {}
        for i in self.auth_box[r.index][0]:
            for o in index.get(i, ()):
                seen.setdefault(o.index, o)
        return [seen[k] for k in sorted(seen)]

    def allowed_everywhere(self):
        """Every allowed request to this destination, as boxes (computed once)."""
        if not hasattr(self, "_allowed_all"):
            self._allowed_all = self.allowed_in([tuple(self.full())])
        return self._allowed_all

    def pick(self, box) -> Request:
        """A request in a non-empty box (the smallest index of each variable)."""
        idx = [min(x) for x in box]
        headers = []
        for j, n in enumerate(self.header_names):
            a = self.header_atoms[n][idx[3 + j]]
            if a is not None:
                headers.append((n, a.witness))
        query = []
        for j, n in enumerate(self.query_names):
            a = self.query_atoms[n][idx[3 + len(self.header_names) + j]]
            if a is not None:
                query.append((n, a.witness))
        return self.req(idx[0], idx[1], idx[2], tuple(headers), tuple(query))

    def find(self, box, allowed: bool | None = None) -> Answer:
        """A request in `box` that authorization allows (True), denies (False)
        or either (None). Box arithmetic answers when the difference stays
        within box_limit; the solver answers otherwise."""
        if any(not x for x in box):
            return Answer("unsat")  # an empty scope holds no request
        if self.box_limit:
            if allowed is None:
                boxes = [box]
            elif allowed:
                boxes = self.allowed_in([box])
            else:
                everywhere = self.allowed_everywhere()
                boxes = None if everywhere is None else self.minus([box], everywhere)
            if boxes is not None:
                return Answer("sat", self.pick(boxes[0])) if boxes else Answer("unsat")
        z3 = self.z3
        within = self.box_formula(box)
        if allowed is not None:
            within = z3.And(within, self.allowed if allowed else z3.Not(self.allowed))
        return self.check(self.define("find", within))

    def scope_box(self, source_classes: frozenset[int] | None = None, methods=(), paths=()):
        """The box of requests from those caller classes (None: any caller)
        with one of the methods and paths (empty: any)."""
        b = self.box(None, methods, paths)
        return b if source_classes is None else (source_classes,) + b[1:]

    # ---- the solver, built on first use ------------------------------------------------

    @property
    def solver(self):
        if self._solver is None:
            t0 = time.perf_counter()
            self._build_solver()
            self.seconds += time.perf_counter() - t0
        return self._solver

    def _build_solver(self) -> None:
        import z3

        self.z3 = z3
        self._solver = z3.Solver()
        self._solver.set("timeout", self.timeout_ms)
        self.S, self.M, self.P = z3.Int("S"), z3.Int("M"), z3.Int("P")
        self.H = {n: z3.Int(f"H{i}") for i, n in enumerate(self.header_names)}
        self.Q = {n: z3.Int(f"Q{i}") for i, n in enumerate(self.query_names)}
        self.vars = [self.S, self.M, self.P] + [self.H[n] for n in self.header_names] + [
            self.Q[n] for n in self.query_names]
        for v, n in zip(self.vars, self.sizes):
            self._solver.add(v >= 0, v < n)
        self._fresh = 0
        self.auth_ind: dict[int, object] = {}
        for r in self.auth_rules:
            self.auth_ind[r.index] = self.define(f"a{r.index}", self.box_formula(self.auth_box[r.index]))
        denies = [self.auth_ind[r.index] for r in self.auth_rules if r.effect == "deny"]
        allows = [self.auth_ind[r.index] for r in self.auth_rules if r.effect == "allow"]
        self.deny_any = self.define("deny_any", z3.Or(*denies) if denies else z3.BoolVal(False))
        allow_any = z3.Or(*allows) if allows else z3.BoolVal(False)
        default_allow = self.mesh.settings.default == "allow"
        self.admitted = self.define("admitted", self.box_formula(self.admitted_box))
        self.allowed = self.define("allowed", z3.And(self.admitted, z3.Not(self.deny_any),
                                                     z3.BoolVal(True) if default_allow else allow_any))
        self.route_ind = [self.define(f"t{rr.index}", self.box_formula(b)) for rr, b in zip(self.route_rules, self.route_box)]
        # taken[i]: rule i is the first whose match holds
        self.taken = []
        for i, t in enumerate(self.route_ind):
            self.taken.append(self.define(f"first{i}", z3.And(t, *[z3.Not(u) for u in self.route_ind[:i]])))

    def box_formula(self, box):
        return self.z3.And(*[self._in(v, x, n) for v, x, n in zip(self.vars, box, self.sizes)])

    def taken_rest(self, i: int):
        """The requests route rule i takes (it matches, no earlier rule does), as boxes."""
        b = self.route_box[i]
        return self.minus([b], [e for e in self.route_box[:i] if self.meet(b, e) is not None])

    _LAZY = frozenset({"z3", "auth_ind", "deny_any", "admitted", "allowed", "route_ind", "taken", "S", "M", "P", "H", "Q",
                       "vars"})

    def __getattr__(self, name: str):
        # the solver's indicators exist once the solver is built; build it on first use
        if name in Partition._LAZY and self.__dict__.get("_solver", False) is None:
            self.ensure()
            return self.__dict__[name]
        raise AttributeError(name)

    def ensure(self) -> "Partition":
        """Build the solver now (its indicators are then available)."""
        self.solver  # noqa: B018
        return self

    def _source_classes(self) -> list[SourceClass]:
        named: set[str] = set()
        namespaces: set[str] = set()

        def note(srcs: list[Source]):
            for s in srcs:
                if s.kind == "service" and s.name:
                    named.add(s.name)
                elif s.kind == "namespace" and s.name:
                    namespaces.add(s.name)

        for r in self.auth_rules:
            note(r.sources)
        for rr in self.route_rules:
            named.update(ref.name for ref in rr.match.sources)
        for a in self._assertions():
            note(a.sources)
            if a.source:
                named.add(a.source.name)
        # a caller sharing a named service's identity is matched by the same
        # rules (semantics.admission), so it cannot hide in "other services"
        named.update(m for n in list(named) for m in identity_mates(self.mesh, n))
        self._named, self._namespaces = named, namespaces
        idx = _index(self.mesh)
        out: list[SourceClass] = []
        self._class_of: dict[tuple, int] = {}
        for name in sorted(named):
            if name in idx.names:
                self._class_of[("svc", name)] = len(out)
                out.append(SourceClass(name, name))
        for ns in sorted(namespaces):
            rest = next((n for n in idx.by_ns.get(ns, ()) if n not in named), None)
            if rest is not None:
                self._class_of[("ns", ns)] = len(out)
                out.append(SourceClass(rest, f"other services of namespace {ns}"))
        # the first service in declaration order that is neither named nor in a named namespace,
        # skipping whole runs of a named namespace (the first services are often all edge services)
        rest = next((n for ns, run in idx.runs if ns not in namespaces for n in run if n not in named), None)
        if rest is not None:
            self._class_of[("other",)] = len(out)
            out.append(SourceClass(rest, "other services"))
        self._class_of[("none",)] = len(out)
        out.append(SourceClass(None, "callers without mesh identity"))
        if self.mesh.ingresses and self.mesh.service(self.dest) is not None:
            from .internet import classes_at
            from .tokens import shown

            for g, tok in classes_at(self.mesh, self.dest):
                out.append(SourceClass(g, f"internet via {g} ({shown(tok)})", ingress=g, token=tok))
        return out

    def _token_passes(self, c: SourceClass) -> bool:
        if c.token is None:
            return True
        from ..semantics.ingress import validating_providers

        validators = self.__dict__.get("_validators")
        if validators is None:
            validators = self.__dict__["_validators"] = validating_providers(self.mesh, self.dest)
        return not validators or c.token.provider in validators

    def internet_classes(self) -> frozenset[int]:
        return frozenset(i for i, c in enumerate(self.sources) if c.ingress is not None)

    def class_key(self, name: str | None) -> tuple:
        svc = self.mesh.service(name) if name is not None else None
        if svc is None:
            return ("none",)
        if name in self._named:
            return ("svc", name)
        if svc.namespace in self._namespaces:
            return ("ns", svc.namespace)
        return ("other",)

    # ---- formulas ---------------------------------------------------------------

    def define(self, name: str, formula):
        """A fresh indicator Bool equal to formula (usable as an assumption)."""
        self._fresh += 1
        b = self.z3.Bool(f"{name}_{self._fresh}")
        self._solver.add(b == formula)
        return b

    def _in(self, var, idxs, n: int):
        z3 = self.z3
        idxs = sorted(set(idxs))
        if len(idxs) == n:
            return z3.BoolVal(True)
        if not idxs:
            return z3.BoolVal(False)
        return z3.Or(*[var == i for i in idxs])

    def req(self, s: int, m: int = 0, p: int = 0, headers: tuple = (), query: tuple = ()) -> Request:
        c = self.sources[s]
        return Request(c.rep, self.dest, self.methods[m], self.paths[p].witness, headers, query=query_string(query),
                       token=c.token)

    def source_index(self, name: str | None) -> frozenset[int]:
        """The class of a caller (a service name; None or an unknown name: no identity)."""
        return frozenset({self._class_of[self.class_key(name)]})

    def source_is(self, name: str | None):
        return self._in(self.S, self.source_index(name), len(self.sources))

    # ---- questions -----------------------------------------------------------------

    def check(self, *assumptions) -> Answer:
        solver = self.solver
        z3 = self.z3
        t0 = time.perf_counter()
        res = solver.check(*assumptions)
        self.seconds += time.perf_counter() - t0
        self.queries += 1
        if res == z3.unsat:
            return Answer("unsat")
        if res == z3.unknown:
            return Answer("unknown", reason=self.solver.reason_unknown())
        return Answer("sat", self._decode(self.solver.model()))

    def _decode(self, model) -> Request:
        val = lambda v: model.eval(v, model_completion=True).as_long()  # noqa: E731
        headers = []
        for n in self.header_names:
            a = self.header_atoms[n][val(self.H[n])]
            if a is not None:
                headers.append((n, a.witness))
        query = []
        for n in self.query_names:
            a = self.query_atoms[n][val(self.Q[n])]
            if a is not None:
                query.append((n, a.witness))
        return self.req(val(self.S), val(self.M), val(self.P), tuple(headers), tuple(query))

    def request_for(self, source: str | None, req: Request) -> Request:
        """The same request from a specific member of its source class."""
        from dataclasses import replace

        return replace(req, source=source)


def query_string(params: tuple) -> str:
    """A raw query string carrying these (name, decoded value) pairs, as
    semantics/query.py decodes it (form encoding)."""
    from urllib.parse import quote_plus

    return "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in params)


@dataclass
class _MeshIndex:
    names: set[str]
    by_ns: dict[str, list[str]]
    # the request assertions (never, only, can) on each destination, in file order
    assertions: dict[str, list]
    # the services in declaration order, as runs of one namespace: (namespace, names)
    runs: list[tuple[str, list[str]]]


_INDEX: OrderedDict[int, tuple[Mesh, _MeshIndex]] = OrderedDict()


def _index(mesh: Mesh) -> _MeshIndex:
    """Per-mesh lookups every partition needs (built once, not once per partition)."""
    got = _INDEX.get(id(mesh))
    if got is not None and got[0] is mesh:
        return got[1]
    by_ns: dict[str, list[str]] = {}
    for s in mesh.services:
        by_ns.setdefault(s.namespace, []).append(s.name)
    asserts: dict[str, list] = {}
    for a in mesh.assertions:
        if a.kind in ("never", "only", "can"):
            asserts.setdefault(a.target.name, []).append(a)
    runs: list[tuple[str, list[str]]] = []
    for s in mesh.services:
        if not runs or runs[-1][0] != s.namespace:
            runs.append((s.namespace, []))
        runs[-1][1].append(s.name)
    ix = _MeshIndex({s.name for s in mesh.services}, by_ns, asserts, runs)
    _INDEX[id(mesh)] = (mesh, ix)
    while len(_INDEX) > 4:
        _INDEX.popitem(last=False)
    return ix


# One mesh is usually asked many questions (findings, may_call for every pair,
# assertions), so its partitions are kept for the few most recent meshes.
_CACHE: OrderedDict[tuple[int, int, int], tuple[Mesh, dict[str, Partition]]] = OrderedDict()


def partition(mesh: Mesh, dest: str, timeout_ms: int = DEFAULT_TIMEOUT_MS, box_limit: int = BOX_LIMIT) -> Partition:
    key = (id(mesh), timeout_ms, box_limit)
    entry = _CACHE.get(key)
    if entry is None or entry[0] is not mesh:
        entry = (mesh, {})
        _CACHE[key] = entry
        while len(_CACHE) > 4:
            _CACHE.popitem(last=False)
    parts = entry[1]
    p = parts.get(dest)
    if p is None:
        p = parts[dest] = Partition(mesh, dest, timeout_ms, box_limit)
    return p


def partitions(mesh: Mesh, timeout_ms: int = DEFAULT_TIMEOUT_MS, box_limit: int = BOX_LIMIT) -> list[Partition]:
    """Every declared service's partition, in declaration order."""
    seen = dict.fromkeys(s.name for s in mesh.services)
    return [partition(mesh, d, timeout_ms, box_limit) for d in seen]

