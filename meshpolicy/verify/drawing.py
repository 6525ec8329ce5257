"""The allowed call graph as Mermaid or Graphviz DOT, for docs and PR comments."""

from __future__ import annotations

from ..model.types import AuthRule, Mesh
from ..semantics.evaluate import source_matches
from ..semantics import Request
from .callgraph import OUTSIDE
from .digraph import Digraph


def _rule_label(r: AuthRule) -> str:
    methods = ", ".join(r.methods)
    paths = ", ".join(p.value if p.kind in ("exact", "glob") else f'{p.kind} "{p.value}"' for p in r.paths)
    return " ".join(x for x in (methods, paths) if x) or "any request"


def _ingress_label(mesh: Mesh, g: str, dest: str) -> str:
    """The ingress rules that forward to dest, summarised (with their rewrites)."""
    from ..semantics.evaluate import forward_weights

    parts = []
    for r in mesh.ingress_map[g].rules:
        if r.action.kind == "forward" and forward_weights(r).get(dest, 0) > 0:
            m = r.match
            text = " ".join(x for x in (", ".join(m.methods),
                                        ", ".join(p.value for p in m.paths)) if x) or "any request"
            if r.rewrite is not None and r.rewrite.path is not None:
                text += f" rewrite {r.rewrite.path}"
            parts.append(text)
    return "; ".join(dict.fromkeys(parts))


def edge_labels(mesh: Mesh, g: Digraph) -> dict[tuple[str, str], str]:
    """What each edge allows: the allow rules that admit that caller, summarised
    (internet -> ingress: its hosts; ingress -> service: the ingress rules
    that forward there; service -> external: the egress rules)."""
    from ..semantics.evaluate import egress_source_matches
    from .internet import INTERNET

    out = {}
    for u, v in g.edges:
        if u == INTERNET and v in mesh.ingress_map:
            out[(u, v)] = ", ".join(mesh.ingress_map[v].hosts) or "any host"
            continue
        if u in mesh.ingress_map:
            out[(u, v)] = _ingress_label(mesh, u, v)
            continue
        probe = Request(None if u == OUTSIDE else u, v)
        if mesh.service(v) is None and v in mesh.external_map:
            rules = [r for r in mesh.rules_by_target.get(v, [])
                     if r.effect == "allow" and any(egress_source_matches(mesh, s, probe) for s in r.sources)]
            out[(u, v)] = "; ".join(dict.fromkeys(_rule_label(r) for r in rules)) or "default allow"
            continue
        rules = [r for r in mesh.rules_by_target.get(v, [])
                 if r.effect == "allow" and any(source_matches(mesh, s, probe) for s in r.sources)]
        out[(u, v)] = "; ".join(dict.fromkeys(_rule_label(r) for r in rules)) or "default allow"
    return out


def routed_but_denied(mesh: Mesh, g: Digraph) -> list[tuple[str, str]]:
    """Route rules written `from A` on B, where A may not call B at all."""
    out = set()
    for route in mesh.routes:
        for rule in route.rules:
            for src in rule.match.sources:
                if mesh.service(src.name) and not g.has_edge(src.name, route.service.name):
                    out.add((src.name, route.service.name))
    return sorted(out)


def _nodes(g: Digraph, extra: list[tuple[str, str]]) -> list[str]:
    used = {n for e in list(g.edges) + extra for n in e}
    return sorted(n for n in g.nodes if n in used or n != OUTSIDE)


def _q(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', "#quot;")


def _shape(mesh: Mesh, n: str) -> str:
    """Mermaid node shapes: callers from outside as stadiums, ingresses as
    trapezoids, externals as hexagons, services as boxes."""
    from .internet import INTERNET

    if n in (OUTSIDE, INTERNET):
        return f'(["{_q(n)}"])'
    if n in mesh.ingress_map:
        return f'[/"{_q(n)}"\\]'
    if mesh.service(n) is None and n in mesh.external_map:
        return f'{{{{"{_q(n)}"}}}}'
    return f'["{_q(n)}"]'


def mermaid(mesh: Mesh, g: Digraph) -> str:
    denied = routed_but_denied(mesh, g)
    ids = {n: f"n{i}" for i, n in enumerate(_nodes(g, denied))}
    lines = ["flowchart LR"]
    for n, i in ids.items():
        lines.append(f"  {i}{_shape(mesh, n)}")
    labels = edge_labels(mesh, g)
    for (u, v) in sorted(g.edges):
        lines.append(f'  {ids[u]} -->|"{_q(labels[(u, v)])}"| {ids[v]}')
    for i, (u, v) in enumerate(denied):
        lines.append(f'  {ids[u]} -.-x|"routed, but denied"| {ids[v]}')
    if denied:
        start = len(g.edges)
        idx = ",".join(str(start + k) for k in range(len(denied)))
        lines.append(f"  linkStyle {idx} stroke:#d33,stroke-dasharray:4")
    return "\n".join(lines) + "\n"


def _dq(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(mesh: Mesh, g: Digraph) -> str:
    denied = routed_but_denied(mesh, g)
    lines = ["digraph mesh {", "  rankdir=LR;", "  node [shape=box, fontname=\"Helvetica\"];"]
    from .internet import INTERNET

    for n in _nodes(g, denied):
        attrs = " [shape=ellipse, style=dashed]" if n in (OUTSIDE, INTERNET) else (
            " [shape=trapezium]" if n in mesh.ingress_map else (
                " [shape=hexagon]" if mesh.service(n) is None and n in mesh.external_map else ""))
        lines.append(f"  {_dq(n)}{attrs};")
    labels = edge_labels(mesh, g)
    for (u, v) in sorted(g.edges):
        lines.append(f"  {_dq(u)} -> {_dq(v)} [label={_dq(labels[(u, v)])}];")
    for u, v in denied:
        lines.append(f"  {_dq(u)} -> {_dq(v)} [label=\"routed, but denied\", style=dashed, color=red];")
    lines.append("}")
    return "\n".join(lines) + "\n"
