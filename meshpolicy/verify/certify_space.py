"""The certifier's Z3 encoding of the requests to one destination.

Built from the model and docs/semantics.md directly, not from the verifier's
atoms or boxes: a request is a caller (an integer: a declared service, or
`none` for a caller without identity), a method (an index into the standard
methods), the path as a Z3 string and, for each header the destination's
route rules test, a presence flag and the value as a Z3 string. Patterns are
string constraints (equality, PrefixOf, regex membership through
certify_regex.py); sources, the deny-over-allow-over-default order and the
first-match order of route rules are written out as formulas.

The strings range over the request space docs/verify.md defines (the
verifier's `atoms.UNIVERSES`, read as regexes and translated here).
"""

from __future__ import annotations

import time

from ..model.types import HTTP_METHODS, AuthRule, HeaderMatch, Mesh, PathPattern, RouteRule, Source
from ..semantics import admission
from ..semantics.evaluate import Request
from ..semantics.patterns import glob_regex
from .certify_regex import hex_escape, regex_to_z3


class Space:
    """Questions about requests to `dest`: `ask(*constraints)` gives
    ("sat", request), ("unsat", None) or ("unknown", reason)."""

    def __init__(self, mesh: Mesh, dest: str, rlimit: int, wall_ms: int):
        import z3

        from .atoms import UNIVERSES

        self.z3 = z3
        self.mesh, self.dest = mesh, dest
        self.names = list(mesh.service_map)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.none = len(self.names)
        self.src = z3.Int("caller")
        self.method = z3.Int("method")
        self.path = z3.String("path")
        self.auth_rules: list[AuthRule] = mesh.rules_by_target.get(dest, [])
        route = mesh.route_map.get(dest)
        self.route_rules: list[RouteRule] = route.rules if route else []
        names = sorted({h.name for rr in self.route_rules for h in rr.match.headers})
        self.headers = {n: (z3.Bool(f"has {n}"), z3.String(f"value {n}")) for n in names}
        self.solver = z3.Solver()
        # the limit per question: a Z3 resource budget (the same verdict on every
        # machine and load), with a wall-clock cap as a safety net
        self.solver.set("rlimit", rlimit)
        self.solver.set("timeout", wall_ms)
        value_space = regex_to_z3(UNIVERSES["value"][1])
        self.base = [self.src >= 0, self.src <= self.none, self.method >= 0, self.method < len(HTTP_METHODS),
                     z3.InRe(self.path, regex_to_z3(UNIVERSES["path"][1])),
                     *[z3.InRe(v, value_space) for _, v in self.headers.values()]]
        self.solver.add(*self.base)
        # Transport admission and identity are one computation (semantics/admission.py),
        # the same for every caller with a certificate: asked with the destination
        # itself standing for them, and with None for callers without one.
        with_id, without = self.src != self.none, self.src == self.none
        self.visible = z3.And(with_id, z3.BoolVal(admission.identity_visible(mesh, dest, dest)))
        self.admitted = z3.Or(z3.And(with_id, z3.BoolVal(admission.admits(mesh, dest, dest))),
                              z3.And(without, z3.BoolVal(admission.admits(mesh, None, dest))))
        self.auth = {r.index: self.auth_match(r) for r in self.auth_rules}
        deny = [self.auth[r.index] for r in self.auth_rules if r.effect == "deny"]
        allow = [self.auth[r.index] for r in self.auth_rules if r.effect == "allow"]
        self.denied_by_rule = z3.Or(*deny) if deny else z3.BoolVal(False)
        stance = z3.BoolVal(mesh.settings.default == "allow")
        self.allowed = z3.And(self.admitted, z3.Not(self.denied_by_rule), z3.Or(stance, *allow))
        self.route = [self.match(rr) for rr in self.route_rules]
        self.queries = 0
        self.seconds = 0.0

    # ---- formulas -------------------------------------------------------------------

    def caller_is(self, name: str | None):
        i = self.index.get(name) if name is not None else None
        return self.src == (self.none if i is None else i)

    def source(self, s: Source):
        z3 = self.z3
        if s.kind == "any":
            return z3.BoolVal(True)
        if s.kind == "authenticated":
            return self.visible
        if s.kind == "service":  # every service presenting the named one's certificate identity
            names = [s.name, *admission.identity_mates(self.mesh, s.name)]
            return z3.And(self.visible, z3.Or(*[self.src == self.index[n] for n in names if n in self.index],
                                              z3.BoolVal(False)))
        members = [i for i, n in enumerate(self.names) if self.mesh.service_map[n].namespace == s.name]
        return z3.And(self.visible, z3.Or(*[self.src == i for i in members])) if members else z3.BoolVal(False)

    def methods(self, methods: list[str]):
        z3 = self.z3
        if not methods:
            return z3.BoolVal(True)
        return z3.Or(*[self.method == HTTP_METHODS.index(m) for m in methods if m in HTTP_METHODS], z3.BoolVal(False))

    def pattern(self, p: PathPattern, var=None):
        z3 = self.z3
        s = self.path if var is None else var
        if p.kind == "exact":
            return s == z3.StringVal(p.value)
        if p.kind == "prefix":  # as a regex, not PrefixOf: Z3 then reasons on the path by derivatives only (3x faster)
            return z3.InRe(s, z3.Concat(z3.Re(z3.StringVal(p.value)), z3.Star(z3.AllChar(z3.ReSort(z3.StringSort())))))
        regex = glob_regex(p.value, escape=hex_escape) if p.kind == "glob" else p.value
        return z3.InRe(s, regex_to_z3(regex))

    def paths(self, paths: list[PathPattern]):
        z3 = self.z3
        return z3.Or(*[self.pattern(p) for p in paths]) if paths else z3.BoolVal(True)

    def header(self, h: HeaderMatch):
        z3 = self.z3
        has, value = self.headers[h.name]
        if h.kind == "absent":
            return z3.Not(has)
        if h.kind == "present":
            return has
        if h.kind == "exact":
            return z3.And(has, value == z3.StringVal(h.value or ""))
        if h.kind == "prefix":
            return z3.And(has, z3.PrefixOf(z3.StringVal(h.value or ""), value))
        return z3.And(has, z3.InRe(value, regex_to_z3(h.value or "")))

    def auth_match(self, r: AuthRule):
        z3 = self.z3
        return z3.And(z3.Or(*[self.source(s) for s in r.sources], z3.BoolVal(False)),
                      self.methods(r.methods), self.paths(r.paths))

    def match(self, rr: RouteRule, methods: list[str] | None = None, paths: list[PathPattern] | None = None):
        """A route rule's match (`methods`/`paths` narrow it to a part); `from`
        names the caller itself (routing runs in the caller's sidecar, which
        knows who it is)."""
        z3 = self.z3
        m = rr.match
        sources = z3.Or(*[self.caller_is(ref.name) for ref in m.sources if ref.name in self.index], z3.BoolVal(False))
        return z3.And(self.methods(m.methods if methods is None else methods),
                      self.paths(m.paths if paths is None else paths), *[self.header(h) for h in m.headers],
                      sources if m.sources else z3.BoolVal(True))

    def taken(self, i: int):
        """Route rule i decides the request: it matches and no earlier rule does."""
        z3 = self.z3
        return z3.And(self.route[i], *[z3.Not(e) for e in self.route[:i]])

    def in_scope(self, methods: list[str], paths: list[PathPattern]):
        return self.z3.And(self.methods(methods), self.paths(paths))

    # ---- questions ------------------------------------------------------------------

    def ask(self, *constraints) -> tuple[str, Request | None | str]:
        z3 = self.z3
        t0 = time.perf_counter()
        self.solver.push()
        try:
            self.solver.add(*constraints)
            res = self.solver.check()
            if res == z3.sat:
                return "sat", self.decode(self.solver.model())
            if res == z3.unsat:
                return "unsat", None
            return "unknown", self.solver.reason_unknown()
        finally:
            self.solver.pop()
            self.queries += 1
            self.seconds += time.perf_counter() - t0

    def decode(self, model) -> Request:
        num = lambda v: model.eval(v, model_completion=True).as_long()  # noqa: E731
        src = num(self.src)
        headers = tuple((n, model.eval(v, model_completion=True).as_string())
                        for n, (has, v) in self.headers.items() if self.z3.is_true(model.eval(has, model_completion=True)))
        return Request(None if src == self.none else self.names[src], self.dest, HTTP_METHODS[num(self.method)],
                       model.eval(self.path, model_completion=True).as_string(), headers)

    def holds(self, formula, req: Request) -> bool | None:
        """Does `formula` hold for this concrete request (None: the request is
        not in this space, e.g. a method outside the standard ones)?"""
        z3 = self.z3
        if req.destination != self.dest or req.method not in HTTP_METHODS:
            return None
        values = req.header_map
        subs = [(self.src, z3.IntVal(self.index.get(req.source, self.none) if req.source is not None else self.none)),
                (self.method, z3.IntVal(HTTP_METHODS.index(req.method))), (self.path, z3.StringVal(req.path))]
        for n, (has, v) in self.headers.items():
            subs += [(has, z3.BoolVal(n in values)), (v, z3.StringVal(values.get(n, "")))]
        # the request must lie in the space too (its path a real path, ...)
        got = z3.simplify(z3.substitute(z3.And(*self.base, formula), *subs))
        if z3.is_true(got) or z3.is_false(got):
            return z3.is_true(got)
        res = self.ask(*[a == b for a, b in subs], formula)  # not reduced by simplify: ask the solver
        return {"sat": True, "unsat": False}.get(res[0])
