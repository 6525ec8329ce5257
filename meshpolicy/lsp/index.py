"""Definitions and references of services and versions, read off the model.

Every `Ref` (routes, rule destinations and mirrors, `from`, auth rules,
limits, assertions) and every service-kind `Source` is a use; service and
version declarations are definitions. A symbol is ("service", NAME) or
("version", SERVICE, NAME).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from ..model.types import Mesh, Source
from ..span import Span

Symbol = tuple


@dataclass(frozen=True, slots=True)
class Occurrence:
    span: Span
    symbol: Symbol
    is_definition: bool


class SymbolIndex:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.definitions: dict[Symbol, Span] = {}
        self.occurrences: list[Occurrence] = []
        for svc in mesh.services:
            self._define(("service", svc.name), svc.at("name"))
            for v in svc.versions:
                self._define(("version", svc.name, v.name), v.at("name"))
        for route in mesh.routes:
            owner = route.service.name
            self._use(("service", owner), route.service.span)
            for r in route.rules:
                for ref in r.match.sources:
                    self._use(("service", ref.name), ref.span)
                if r.action.kind == "forward":
                    refs = [d.version for d in r.action.destinations]
                    if r.action.mirror:
                        refs.append(r.action.mirror.version)
                    for ref in refs:
                        self._use(("version", owner, ref.name), ref.span)
        for item in [*mesh.auth_rules, *mesh.rate_limits]:
            self._sources(item.sources)
            self._use(("service", item.target.name), item.target.span)
        for a in mesh.assertions:
            if a.source:
                self._use(("service", a.source.name), a.source.span)
            self._sources(a.sources)
            self._use(("service", a.target.name), a.target.span)
        self._by_file: dict[str, list[Occurrence]] = {}
        for occ in self.occurrences:
            self._by_file.setdefault(occ.span.file, []).append(occ)
        for occs in self._by_file.values():
            occs.sort(key=lambda o: o.span.start)
        self._starts = {f: [o.span.start for o in occs] for f, occs in self._by_file.items()}

    def _define(self, sym: Symbol, span: Span) -> None:
        self.definitions.setdefault(sym, span)
        self.occurrences.append(Occurrence(span, sym, True))

    def _use(self, sym: Symbol, span: Span) -> None:
        if span.line > 0:
            self.occurrences.append(Occurrence(span, sym, False))

    def _sources(self, sources: list[Source]) -> None:
        for s in sources:
            if s.kind == "service" and s.name:
                self._use(("service", s.name), s.span)

    def at(self, file: str, offset: int) -> Occurrence | None:
        """The name written at `offset` (a cursor just after a name still counts)."""
        occs = self._by_file.get(file)
        if not occs:
            return None
        i = bisect.bisect_right(self._starts[file], offset) - 1
        if i >= 0 and occs[i].span.start <= offset <= occs[i].span.end:
            return occs[i]
        return None

    def definition(self, sym: Symbol) -> Span | None:
        return self.definitions.get(sym)

    def references(self, sym: Symbol, include_declaration: bool = True) -> list[Span]:
        return [o.span for o in self.occurrences
                if o.symbol == sym and (include_declaration or not o.is_definition)]
