"""Document symbols (the outline): mesh, services with their versions,
routes with their rules, jwt providers, ingresses with their rules,
external services, and the top-level rules of one file."""

from __future__ import annotations

from lsprotocol import types as lsp

from ..model.types import Mesh
from ..span import SourceFile, Span
from .convert import span_range

K = lsp.SymbolKind


def _sym(src, enc, name: str, kind, span: Span, sel: Span | None = None, detail=None, children=None):
    return lsp.DocumentSymbol(name=name, kind=kind, range=span_range(src, span, enc),
                              selection_range=span_range(src, sel or span, enc), detail=detail,
                              children=children or None)


def document_symbols(mesh: Mesh, src: SourceFile, enc: str) -> list[lsp.DocumentSymbol]:
    f = src.path
    out: list[tuple[int, lsp.DocumentSymbol]] = []
    for m in mesh.mesh_blocks:
        if m.span.file == f:
            out.append((m.span.start, _sym(src, enc, m.name, K.Namespace, m.span, m.at("name"), "mesh")))
    for s in mesh.services:
        if s.span.file != f:
            continue
        versions = [_sym(src, enc, v.name, K.EnumMember, v.span, v.at("name"), "version") for v in s.versions]
        out.append((s.span.start, _sym(src, enc, s.name, K.Class, s.span, s.at("name"),
                                       f"service in {s.namespace}", versions)))
    for r in mesh.routes:
        if r.span.file != f:
            continue
        rules = [_sym(src, enc, src.text[x.span.start:x.span.end].split("->")[0].strip() or "*",
                      K.Event, x.span, detail=f"rule {x.index + 1}") for x in r.rules]
        out.append((r.span.start, _sym(src, enc, f"route {r.service.name}", K.Interface, r.span, r.service.span,
                                       children=rules)))
    for p in mesh.jwt_providers:
        if p.span.file == f:
            out.append((p.span.start, _sym(src, enc, p.name, K.Key, p.span, p.at("name"), "jwt provider")))
    for g in mesh.ingresses:
        if g.span.file != f:
            continue
        rules = [_sym(src, enc, src.text[x.span.start:x.span.end].split("->")[0].strip() or "*",
                      K.Event, x.span, detail=f"rule {x.index + 1}") for x in g.rules]
        out.append((g.span.start, _sym(src, enc, g.name, K.Module, g.span, g.at("name"),
                                       f"ingress in {g.namespace}", rules)))
    for e in mesh.externals:
        if e.span.file == f:
            out.append((e.span.start, _sym(src, enc, e.name, K.Interface, e.span, e.at("name"),
                                           "external " + ", ".join(e.hosts))))
    for a in mesh.auth_rules:
        if a.span.file == f:
            out.append((a.span.start, _sym(src, enc, _text(src, a.span), K.Key, a.span, a.target.span, a.effect)))
    for lim in mesh.rate_limits:
        if lim.span.file == f:
            out.append((lim.span.start, _sym(src, enc, _text(src, lim.span), K.Number, lim.span, lim.target.span,
                                             "limit")))
    for a in mesh.assertions:
        if a.span.file == f:
            out.append((a.span.start, _sym(src, enc, _text(src, a.span), K.Boolean, a.span, a.target.span,
                                           "assert")))
    return [s for _, s in sorted(out, key=lambda x: x[0])]


def _text(src: SourceFile, span: Span) -> str:
    text = " ".join(src.text[span.start:span.end].split())
    return text if len(text) <= 60 else text[:57] + "..."
