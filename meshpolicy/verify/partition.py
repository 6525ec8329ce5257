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
from dataclasses import dataclass, field

from ..model.types import HTTP_METHODS, AuthRule, Mesh, PathPattern, RouteRule, Source
from ..semantics.evaluate import Request, match_holds, source_matches
from ..semantics.patterns import header_matches
from .atoms import Atom, Key, Undecided, Unsupported, key_of, matches, split

DEFAULT_TIMEOUT_MS = 2000


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
    rep: str | None  # representative service name; None: no identity
    label: str  # how a report names the class, e.g. "frontend" or "namespace shop (other)"
    members: list[str] = field(default_factory=list)


class Partition:
    def __init__(self, mesh: Mesh, dest: str, timeout_ms: int = DEFAULT_TIMEOUT_MS):
        self.mesh = mesh
        self.dest = dest
        self.timeout_ms = timeout_ms
        self.error: str | None = None  # set when the space cannot be encoded exactly
        self.z3_seconds = 0.0
        self.queries = 0
        self.stats: dict = {}
        self.auth_rules: list[AuthRule] = mesh.rules_by_target.get(dest, [])
        route = mesh.route_map.get(dest)
        self.route_rules: list[RouteRule] = route.rules if route else []
        self.has_route = route is not None
        t0 = time.perf_counter()
        try:
            self._build()
        except (Unsupported, Undecided) as exc:
            self.error = str(exc)
        self.z3_seconds += time.perf_counter() - t0

    # ---- the finite space ----------------------------------------------------------

    def _assertions(self):
        return [a for a in self.mesh.assertions if a.target.name == self.dest and a.kind in ("never", "only", "can")]

    def _build(self) -> None:
        import z3

        mesh, dest = self.mesh, self.dest
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
        self.methods = list(HTTP_METHODS)
        self.sources = self._source_classes()

        self.z3 = z3
        self.solver = z3.Solver()
        self.solver.set("timeout", self.timeout_ms)
        self.S, self.M, self.P = z3.Int("S"), z3.Int("M"), z3.Int("P")
        self.H = {n: z3.Int(f"H{i}") for i, n in enumerate(self.header_names)}
        dom = [(self.S, len(self.sources)), (self.M, len(self.methods)), (self.P, len(self.paths))]
        dom += [(self.H[n], len(self.header_atoms[n])) for n in self.header_names]
        for v, n in dom:
            self.solver.add(v >= 0, v < n)
        self._fresh = 0

        self.auth_ind: dict[int, object] = {}
        for r in self.auth_rules:
            self.auth_ind[r.index] = self.define(f"a{r.index}", self.auth_formula(r))
        denies = [self.auth_ind[r.index] for r in self.auth_rules if r.effect == "deny"]
        allows = [self.auth_ind[r.index] for r in self.auth_rules if r.effect == "allow"]
        self.deny_any = self.define("deny_any", z3.Or(*denies) if denies else z3.BoolVal(False))
        allow_any = z3.Or(*allows) if allows else z3.BoolVal(False)
        default_allow = mesh.settings.default == "allow"
        self.allowed = self.define("allowed", z3.And(z3.Not(self.deny_any), z3.BoolVal(True) if default_allow else allow_any))
        self.route_ind = [self.define(f"t{rr.index}", self.route_formula(rr)) for rr in self.route_rules]
        # taken[i]: rule i is the first whose match holds
        self.taken = []
        for i, t in enumerate(self.route_ind):
            self.taken.append(self.define(f"first{i}", z3.And(t, *[z3.Not(u) for u in self.route_ind[:i]])))

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
        groups: dict[object, SourceClass] = {}
        for svc in self.mesh.services:
            if svc.name in named:
                key, label = ("svc", svc.name), svc.name
            elif svc.namespace in namespaces:
                key, label = ("ns", svc.namespace), f"other services of namespace {svc.namespace}"
            else:
                key, label = ("other",), "other services"
            cls = groups.get(key)
            if cls is None:
                groups[key] = SourceClass(svc.name, label, [svc.name])
            elif svc.name not in cls.members:
                cls.members.append(svc.name)
        return list(groups.values()) + [SourceClass(None, "callers without mesh identity")]

    # ---- formulas ---------------------------------------------------------------

    def define(self, name: str, formula):
        """A fresh indicator Bool equal to formula (usable as an assumption)."""
        self._fresh += 1
        b = self.z3.Bool(f"{name}_{self._fresh}")
        self.solver.add(b == formula)
        return b

    def _in(self, var, idxs, n: int):
        z3 = self.z3
        idxs = sorted(set(idxs))
        if len(idxs) == n:
            return z3.BoolVal(True)
        if not idxs:
            return z3.BoolVal(False)
        return z3.Or(*[var == i for i in idxs])

    def req(self, s: int, m: int = 0, p: int = 0, headers: tuple = ()) -> Request:
        return Request(self.sources[s].rep, self.dest, self.methods[m], self.paths[p].witness, headers)

    def sources_formula(self, srcs: list[Source]):
        idx = [i for i, c in enumerate(self.sources) if any(source_matches(self.mesh, s, self.req(i)) for s in srcs)]
        return self._in(self.S, idx, len(self.sources))

    def methods_formula(self, methods: list[str]):
        if not methods:
            return self.z3.BoolVal(True)
        return self._in(self.M, [i for i, m in enumerate(self.methods) if m in methods], len(self.methods))

    def paths_formula(self, paths: list[PathPattern]):
        if not paths:
            return self.z3.BoolVal(True)
        keys = [key_of(p) for p in paths]
        idx = [i for i, a in enumerate(self.paths) if any(matches(k, a.witness) for k in keys)]
        return self._in(self.P, idx, len(self.paths))

    def auth_formula(self, r: AuthRule):
        return self.z3.And(self.sources_formula(r.sources), self.methods_formula(r.methods), self.paths_formula(r.paths))

    def route_formula(self, rr: RouteRule):
        z3 = self.z3
        m = rr.match
        parts = [self.methods_formula(m.methods), self.paths_formula(m.paths)]
        names = {ref.name for ref in m.sources}
        if names:
            parts.append(self._in(self.S, [i for i, c in enumerate(self.sources) if c.rep in names], len(self.sources)))
        for h in m.headers:
            atoms = self.header_atoms[h.name]
            ok = [i for i, a in enumerate(atoms) if header_matches(h, {} if a is None else {h.name: a.witness})]
            parts.append(self._in(self.H[h.name], ok, len(atoms)))
        return z3.And(*parts)

    def source_is(self, name: str | None):
        idx = [i for i, c in enumerate(self.sources) if (name in c.members if name else c.rep is None)]
        return self._in(self.S, idx, len(self.sources))

    # ---- questions -----------------------------------------------------------------

    def check(self, *assumptions) -> Answer:
        z3 = self.z3
        t0 = time.perf_counter()
        res = self.solver.check(*assumptions)
        self.z3_seconds += time.perf_counter() - t0
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
        return self.req(val(self.S), val(self.M), val(self.P), tuple(headers))

    def request_for(self, source: str | None, req: Request) -> Request:
        """The same request from a specific member of its source class."""
        return Request(source, req.destination, req.method, req.path, req.headers)


# One mesh is usually asked many questions (findings, may_call for every pair,
# assertions), so its partitions are kept for the few most recent meshes.
_CACHE: OrderedDict[tuple[int, int], tuple[Mesh, dict[str, Partition]]] = OrderedDict()


def partition(mesh: Mesh, dest: str, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> Partition:
    key = (id(mesh), timeout_ms)
    entry = _CACHE.get(key)
    if entry is None or entry[0] is not mesh:
        entry = (mesh, {})
        _CACHE[key] = entry
        while len(_CACHE) > 4:
            _CACHE.popitem(last=False)
    parts = entry[1]
    p = parts.get(dest)
    if p is None:
        p = parts[dest] = Partition(mesh, dest, timeout_ms)
    return p


def partitions(mesh: Mesh, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> list[Partition]:
    """Every declared service's partition, in declaration order."""
    seen = dict.fromkeys(s.name for s in mesh.services)
    return [partition(mesh, d, timeout_ms) for d in seen]


def route_match_holds(rr: RouteRule, req: Request) -> bool:
    return match_holds(rr.match, req)
