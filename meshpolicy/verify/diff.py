"""What a policy change does: the requests whose decision or route changed.

For each destination whose meaning may have changed, the request space is
split into classes both meshes agree on (callers that every rule of either
mesh treats alike; the joint path and header atoms of both meshes' patterns;
every method), and one request per class is evaluated with the reference
evaluator under the old and the new mesh. Since the classes are exact, this
enumeration covers every request: nothing is sampled. Changes are then
grouped into short request classes for a reviewer, each with a witness.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from ..model.types import HTTP_METHODS, Mesh
from ..semantics.evaluate import Outcome, Request, egress_source_matches, evaluate, source_matches
from ..semantics.patterns import normalize_path
from .atoms import Atom, is_normalized, key_of, matches, split
from .witness import as_dict


@dataclass
class Change:
    kind: str  # "decision" or "route"
    source: str  # the caller class, as a reviewer reads it
    destination: str
    methods: list[str]
    paths: str  # the path class, e.g. "/orders/**"
    old: str
    new: str
    witness: dict

    def line(self) -> str:
        ms = ",".join(self.methods) if len(self.methods) < len(HTTP_METHODS) else "*"
        return f"{self.source} -> {self.destination} {ms} {self.paths} : {self.old} → {self.new}"

    def as_json(self) -> dict:
        return {"kind": self.kind, "source": self.source, "destination": self.destination, "methods": self.methods,
                "paths": self.paths, "old": self.old, "new": self.new, "summary": self.line(),
                "witness": self.witness}


@dataclass
class MeshDiff:
    decisions: list[Change] = field(default_factory=list)
    routes: list[Change] = field(default_factory=list)
    edges_added: list[tuple[str, str, dict | None]] = field(default_factory=list)
    edges_removed: list[tuple[str, str, dict | None]] = field(default_factory=list)
    services_added: list[str] = field(default_factory=list)
    services_removed: list[str] = field(default_factory=list)
    # (service, setting, before, after): timeouts, retries, faults, circuit
    # breaking, outlier detection, load balancing, mTLS and rate limits, which
    # change how requests are carried, not which are allowed or where they go.
    settings: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.decisions or self.routes or self.edges_added or self.edges_removed
                    or self.services_added or self.services_removed or self.settings)

    def as_json(self) -> dict:
        edge = lambda e: {"source": e[0], "destination": e[1], "witness": e[2]}  # noqa: E731
        return {"changed": self.changed, "decisions": [c.as_json() for c in self.decisions],
                "routes": [c.as_json() for c in self.routes],
                "edges_added": [edge(e) for e in self.edges_added],
                "edges_removed": [edge(e) for e in self.edges_removed],
                "services_added": self.services_added, "services_removed": self.services_removed,
                "settings": [{"service": a, "setting": b, "old": c, "new": d} for a, b, c, d in self.settings]}


# ---- what a destination's meaning depends on ----------------------------------------------

def _canon(x):
    """A model value without spans, for comparing meaning across edits."""
    if hasattr(x, "model_dump"):
        return _canon(x.model_dump(exclude={"span", "spans"}))
    if isinstance(x, dict):
        return tuple(sorted((k, _canon(v)) for k, v in x.items() if k not in ("span", "spans", "index")))
    if isinstance(x, (list, tuple)):
        return tuple(_canon(v) for v in x)
    return x


def _meaning(mesh: Mesh, dest: str):
    svc = mesh.service(dest)
    route = mesh.route_map.get(dest)
    return (
        _canon(mesh.rules_by_target.get(dest, [])),
        _canon(route.rules) if route else None,
        mesh.mtls_of(svc) if svc else None,
        tuple(v.name for v in svc.versions) if svc else None,
        mesh.settings.default,
        # who the internet is at a sidecar: the ingresses (identity, providers) and the providers
        _canon([(g.name, g.namespace, g.account, g.jwt) for g in mesh.ingresses]),
        _canon(mesh.jwt_providers),
    )


def _callers(mesh: Mesh) -> dict[str, str]:
    return {s.name: s.namespace for s in mesh.services}


# ---- the joint request space of one destination -------------------------------------------

def _source_classes(old: Mesh, new: Mesh, dest: str) -> list[tuple[str | None, str]]:
    """(representative, label) per class of callers both meshes treat alike."""
    names = list(dict.fromkeys([s.name for s in old.services] + [s.name for s in new.services]))

    def sig(mesh: Mesh, name: str | None):
        req = Request(name, dest)
        # an external's rules are matched at the caller's own sidecar
        match = egress_source_matches if mesh.service(dest) is None and dest in mesh.external_map else source_matches
        auth = tuple(match(mesh, s, req) for r in mesh.rules_by_target.get(dest, []) for s in r.sources)
        route = mesh.route_map.get(dest)
        frm = tuple(name in {ref.name for ref in rr.match.sources} for rr in route.rules) if route else ()
        return auth, frm

    groups: dict[tuple, list[str]] = {}
    for n in names:
        groups.setdefault((sig(old, n), sig(new, n)), []).append(n)
    out: list = []
    for members in groups.values():
        label = members[0] if len(members) == 1 else f"{members[0]} (and {len(members) - 1} more alike)"
        out.append((members[0], label))
    out.append((None, "(no identity)"))
    return out + _internet_classes(old, new, dest)


def _internet_classes(old: Mesh, new: Mesh, dest: str) -> list:
    """Requests from the internet at dest, as ((ingress, token), label): per
    ingress of either mesh, no token and each token class the `with jwt`
    requirements of both meshes tell apart (verify/tokens.py)."""
    from ..semantics.ingress import accepted_providers
    from .internet import requirements_at
    from .tokens import shown, token_classes

    reqs = requirements_at(old, dest) + requirements_at(new, dest)
    out = []
    seen: set = set()
    for mesh in (new, old):
        for g in mesh.ingress_map.values():
            providers = list(dict.fromkeys(list(accepted_providers(old, old.ingress_map[g.name]))
                                           if g.name in old.ingress_map else [])
                             ) + list(accepted_providers(mesh, g))
            for tok in token_classes(list(dict.fromkeys(providers)), reqs):
                key = (g.name, tok)
                if key not in seen:
                    seen.add(key)
                    out.append(((g.name, tok), f"internet via {g.name} ({shown(tok)})"))
    return out


def _keys(mesh: Mesh, dest: str):
    paths, headers = [], {}
    for r in mesh.rules_by_target.get(dest, []):
        paths.extend(key_of(p) for p in r.paths)
    route = mesh.route_map.get(dest)
    for rr in route.rules if route else []:
        paths.extend(key_of(p) for p in rr.match.paths)
        for h in rr.match.headers:
            ks = headers.setdefault(h.name, [])
            if h.kind in ("exact", "prefix", "regex"):
                ks.append((h.kind, h.value or ""))
    return paths, headers


def _route_text(o: Outcome) -> str:
    r = o.route
    if r.kind == "forward":
        ws = ", ".join(f"{v} {w:g}%" for v, w in sorted(r.weights.items()) if w > 0) or "no version"
        return ws + (f" mirror {r.mirror[0]} {r.mirror[1]:g}%" if r.mirror else "")
    if r.kind == "redirect":
        return f"redirect {r.status}"
    if r.kind == "respond":
        return f"respond {r.status}"
    if r.kind == "no_route":
        return "404 (no rule matches)"
    return "all versions" if r.weights else "the service"


# ---- shapes: where a reviewer expects the witness of a change ------------------------------

def _shape_keys(keys: list) -> list:
    """Auxiliary patterns that cut the paths around each pattern's literal
    prefix L into the shapes a reviewer tells apart: L itself, `L/`, one
    segment below, two or more below, and siblings (`/readme` beside `/read`).
    They refine the atoms (a change class never mixes shapes it does not
    have to) and give each part a typical witness."""
    out = []
    for kind, value in dict.fromkeys(keys):
        if kind == "regex":
            continue
        lit = value.split("*", 1)[0] if kind == "glob" else value
        base = lit.rstrip("/")
        if not lit.startswith("/") or normalize_path(base or "/") != (base or "/"):
            continue
        if base:
            out += [("exact", base), ("prefix", base)]
        out += [("exact", base + "/"), ("glob", base + "/*"), ("glob", base + "/*/**")]
    return [k for k in dict.fromkeys(out) if k not in set(keys)]


def _shape_text(shape: frozenset) -> str:
    """The narrowest auxiliary pattern an atom is in, as a reviewer reads it."""
    if not shape:
        return ""
    exact = sorted(v for k, v in shape if k == "exact")
    if exact:
        return exact[0]
    globs = sorted((v for k, v in shape if k == "glob"), key=len, reverse=True)
    if globs:
        return globs[0]
    base = max(v for k, v in shape if k == "prefix")
    return f"{base}… (beside {base}, e.g. {base}me)"


def _typical(atom: Atom, keys: list) -> str:
    """A witness in the atom that looks like a real request: a segment or two
    below a pattern's prefix, or a sibling name, before bare prefixes and
    trailing slashes; the atom's own witness when none fits."""
    def inside(s: str) -> bool:
        return is_normalized(s) and all(matches(k, s) == (k in atom.members) for k in keys)

    for kind, value in sorted(atom.members, key=lambda k: (-len(k[1]), k)):  # the narrowest prefix first
        if kind == "regex":
            continue
        base = (value.split("*", 1)[0] if kind == "glob" else value).rstrip("/")
        for c in (base + "/1/items", base + "me", base + "/1", base or "/", base + "/"):
            if inside(c):
                return c
    return atom.witness


def destination_changes(old: Mesh, new: Mesh, dest: str) -> tuple[list[Change], list[Change]]:
    opaths, oheaders = _keys(old, dest)
    npaths, nheaders = _keys(new, dest)
    real = list(dict.fromkeys(opaths + npaths))
    shapes = _shape_keys(real)
    keys = list(dict.fromkeys(real + shapes))
    fine = split(keys, "path")
    real_set = frozenset(real)
    # atoms as the real patterns see them (for naming), each with its shape and a typical witness
    path_atoms = [Atom(_typical(a, keys), a.members & real_set) for a in fine]
    shape_of = [a.members - real_set for a in fine]
    hnames = sorted(set(oheaders) | set(nheaders))
    hatoms = {n: [None] + split(oheaders.get(n, []) + nheaders.get(n, []), "value") for n in hnames}
    sources = _source_classes(old, new, dest)
    # per (change, path atom, header combination): the methods it happens for, and a witness
    per_atom: dict[tuple, dict] = {}
    hranges = [range(len(hatoms[n])) for n in hnames]
    for (src, label), method, ai in itertools.product(sources, HTTP_METHODS, range(len(path_atoms))):
        atom = path_atoms[ai]
        for hc in itertools.product(*hranges):
            hs = tuple((n, hatoms[n][i].witness) for n, i in zip(hnames, hc) if i)
            tok = None
            if isinstance(src, tuple):  # a request from the internet: the ingress and the token
                src, tok = src
            req = Request(src, dest, method, atom.witness, hs, token=tok)
            a, b = evaluate(old, req), evaluate(new, req)
            for kind, x, y in (("decision", a.decision.effect, b.decision.effect),
                               ("route", _route_text(a), _route_text(b))):
                if x != y:
                    g = per_atom.setdefault((kind, label, x, y, ai, hc), {"methods": [], "witness": req})
                    if method not in g["methods"]:
                        g["methods"].append(method)
    # Merge into request classes that are whole products (callers x methods x
    # paths x headers), so every request a summary line names really changed.
    step1: dict[tuple, list] = {}
    for (kind, label, x, y, ai, hc), g in per_atom.items():
        step1.setdefault((kind, label, x, y, hc, tuple(g["methods"])), []).append((ai, g["witness"]))
    step2: dict[tuple, list] = {}
    for (kind, label, x, y, hc, ms), items in step1.items():
        # a class naming only part of a pattern is split by shape, so its
        # witness shows each part (`/orders/1/items`, `/readme`), not an edge case
        groups = [items]
        if "(part of)" in _describe_atoms(path_atoms, sorted(ai for ai, _ in items)):
            by_shape: dict[frozenset, list] = {}
            for it in items:
                by_shape.setdefault(shape_of[it[0]], []).append(it)
            groups = list(by_shape.values())
        for group in groups:
            paths = frozenset(ai for ai, _ in group)
            step2.setdefault((kind, label, x, y, ms, paths), []).append((hc, _most_typical(group)))
    step3: dict[tuple, list] = {}
    for (kind, label, x, y, ms, paths), items in step2.items():
        hcs = frozenset(hc for hc, _ in items)
        step3.setdefault((kind, x, y, ms, paths, hcs), []).append((label, items[0][1]))
    out: dict[str, list[Change]] = {"decision": [], "route": []}
    for (kind, x, y, methods, paths, hcs), items in step3.items():
        req = items[0][1]
        a, b = evaluate(old, req), evaluate(new, req)
        shown = (a.decision.effect, b.decision.effect) if kind == "decision" else (_route_text(a), _route_text(b))
        assert shown == (x, y), f"diff witness {req} does not show {x} → {y}"
        labels = [lab for lab, _ in items]
        who = "any caller" if len(labels) == len(sources) else ", ".join(labels)
        text = _describe_atoms(path_atoms, sorted(paths))
        if "(part of)" in text and len({shape_of[i] for i in paths}) == 1 and shape_of[min(paths)]:
            text += f" [{_shape_text(shape_of[min(paths)])}]"
        text += _describe_headers(hnames, hatoms, hcs)
        wit = as_dict(req)
        if req.source in new.ingress_map or req.source in old.ingress_map:
            wit["internet_via"] = req.source
        svc = new.service(req.source) if req.source else None
        wit["identity"] = new.spiffe_id(svc) if svc is not None else None
        out[kind].append(Change(kind, who, dest, list(methods), text, x, y, wit))
    return out["decision"], out["route"]


def _most_typical(items: list) -> Request:
    """Of a class's witnesses, the most typical path: no trailing slash, then short."""
    return min((w for _, w in items), key=lambda r: (r.path.endswith("/") and r.path != "/", len(r.path), r.path))


def _describe_headers(hnames: list[str], hatoms: dict, hcs: frozenset) -> str:
    parts = []
    for j, n in enumerate(hnames):
        used = sorted({hc[j] for hc in hcs})
        if len(used) == len(hatoms[n]):
            continue
        vals = []
        for i in used:
            a = hatoms[n][i]
            vals.append("absent" if a is None else (f'"{a.witness}"' if a.members else "other values"))
        parts.append(f"{n}: {' or '.join(vals)}")
    return (" with " + "; ".join(parts)) if parts else ""


def _describe_atoms(atoms: list[Atom], chosen: list[int]) -> str:
    """Name a set of path atoms by the patterns that span them: for each atom
    its broadest pattern within the set; "(part of)" when the set does not
    hold everything that pattern matches. The witness shows a concrete path."""
    inside = set(chosen)
    count: dict = {}
    for i in chosen:
        for k in atoms[i].members:
            count[k] = count.get(k, 0) + 1
    names = []
    for i in chosen:
        if not atoms[i].members:
            names.append("(paths no pattern names)")
            continue
        k = max(atoms[i].members, key=lambda k: (count[k], k))
        whole = all(j in inside for j, a in enumerate(atoms) if k in a.members)
        shown = k[1] if k[0] == "glob" or (k[0] == "exact" and k[1].startswith("/")) else f'{k[0]} "{k[1]}"'
        names.append(shown if whole else f"(part of) {shown}")
    return ", ".join(sorted(set(names)))


def _edges(mesh: Mesh) -> dict[tuple[str, str], dict | None]:
    from .callgraph import build_graph

    g = build_graph(mesh)  # edges by auth.allowed_callers: may_call's answers, a caller class at a time
    return {(u, v): (as_dict(d["witness"]) if d.get("witness") else None) for u, v, d in g.edges(data=True)}


def _show(value) -> str:
    """A setting as a reviewer reads it: `none`, or its non-empty fields."""
    if value is None:
        return "none"
    if hasattr(value, "model_dump"):
        fields = value.model_dump(exclude={"span", "spans", "index"}, exclude_none=True)
        return ", ".join(_field(k, v) for k, v in fields.items() if v not in ([], {}, False)) or "on"
    if isinstance(value, list):
        return "; ".join(_show(v) for v in value) or "none"
    return str(value)


def _field(key: str, value) -> str:
    """`per_try 500ms`, `on [5xx, reset]`, `sources [frontend]`: no Python reprs."""
    if key.endswith("_ms") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{key[:-3]} {value:g}ms"
    return f"{key} {_plain(value)}"


def _plain(value) -> str:
    if isinstance(value, dict):  # a nested model, dumped; a reference is its name
        if "name" in value and not set(value) - {"span", "spans", "kind", "name"}:
            return str(value["name"])
        return " ".join(_field(k, v) for k, v in value.items()
                        if k not in ("span", "spans", "index") and v not in (None, [], {}, False))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    return str(value)


def _limits(mesh: Mesh, dest: str) -> list:
    return sorted((lim for lim in mesh.rate_limits if lim.target.name == dest), key=lambda x: repr(_canon(x)))


def _rule_overrides(mesh: Mesh, dest: str) -> list:
    route = mesh.route_map.get(dest)
    if route is None:
        return []
    return [(_canon(r.match), r.timeout_ms, _canon(r.retry), _canon(r.fault)) for r in route.rules]


def settings_changes(old: Mesh, new: Mesh, dest: str) -> list[tuple[str, str, str, str]]:
    a, b = old.service(dest), new.service(dest)
    out = []
    for name in ("timeout_ms", "retry", "fault", "circuit", "outlier", "balance"):
        va, vb = getattr(a, name), getattr(b, name)
        if _canon(va) != _canon(vb):
            if name == "timeout_ms":
                va, vb = (f"{v}ms" if v is not None else None for v in (va, vb))
            out.append((dest, name.replace("_ms", ""), _show(va), _show(vb)))
    if old.mtls_of(a) != new.mtls_of(b):
        out.append((dest, "mtls", old.mtls_of(a), new.mtls_of(b)))
    va, vb = {v.name: v for v in a.versions}, {v.name: v for v in b.versions}
    for v in sorted(va.keys() & vb.keys()):
        for name in ("circuit", "outlier", "balance"):
            if _canon(getattr(va[v], name)) != _canon(getattr(vb[v], name)):
                out.append((dest, f"version {v} {name}", _show(getattr(va[v], name)), _show(getattr(vb[v], name))))
    la, lb = _limits(old, dest), _limits(new, dest)
    if _canon(la) != _canon(lb):
        out.append((dest, "rate limits", _show(la), _show(lb)))
    oa, ob = _rule_overrides(old, dest), _rule_overrides(new, dest)
    if oa != ob and [x[0] for x in oa] == [x[0] for x in ob]:
        for i, (x, y) in enumerate(zip(oa, ob)):
            for j, name in ((1, "timeout"), (2, "retry"), (3, "fault")):
                if x[j] != y[j]:
                    rule = new.route_map[dest].rules[i]
                    old_rule = old.route_map[dest].rules[i]
                    value = {1: "timeout_ms", 2: "retry", 3: "fault"}[j]
                    out.append((dest, f"rule {i + 1} {name}", _show(getattr(old_rule, value)),
                                _show(getattr(rule, value))))
    return out


def diff(old: Mesh, new: Mesh) -> MeshDiff:
    out = MeshDiff()
    olds, news = set(old.service_map), set(new.service_map)
    out.services_added = sorted(news - olds)
    out.services_removed = sorted(olds - news)
    callers_same = _callers(old) == _callers(new)
    # egress rules (on externals, decided at the caller's sidecar) change decisions too
    externals = {e for e in old.external_map if e in new.external_map and not old.service(e) and not new.service(e)
                 and (e in old.rules_by_target or e in new.rules_by_target)}
    for dest in sorted((olds & news) | externals):
        if callers_same and _meaning(old, dest) == _meaning(new, dest):
            continue
        dec, rt = destination_changes(old, new, dest)
        out.decisions.extend(dec)
        out.routes.extend(rt)
    for dest in sorted(olds & news):
        out.settings.extend(settings_changes(old, new, dest))
    eo, en = _edges(old), _edges(new)
    out.edges_added = [(u, v, en[(u, v)]) for u, v in sorted(en.keys() - eo.keys())]
    out.edges_removed = [(u, v, eo[(u, v)]) for u, v in sorted(eo.keys() - en.keys())]
    key = lambda c: (c.destination, c.source, c.paths, c.old, c.new)  # noqa: E731
    out.decisions.sort(key=key)
    out.routes.sort(key=key)
    return out


# ---- rendering ------------------------------------------------------------------------------

def text(d: MeshDiff) -> str:
    if not d.changed:
        return "no change: every request is decided and routed as before\n"
    lines = []
    for title, items in (("services added", d.services_added), ("services removed", d.services_removed)):
        if items:
            lines.append(f"{title}: " + ", ".join(items))
    for title, changes in (("Decision changes", d.decisions), ("Route changes", d.routes)):
        if changes:
            lines.append(f"{title} ({len(changes)}):")
            for c in changes:
                lines.append(f"  {c.line()}")
                lines.append(f"      e.g. {c.witness['request']}" + _identity_text(c.witness))
    if d.settings:
        lines.append(f"Settings changes ({len(d.settings)}):")
        for svc, name, a, b in d.settings:
            lines.append(f"  {svc}: {name}: {a} → {b}")
    for title, edges, sign in (("Calls now possible", d.edges_added, "+"), ("Calls no longer possible", d.edges_removed, "-")):
        if edges:
            lines.append(f"{title} ({len(edges)}):")
            for u, v, w in edges:
                lines.append(f"  {sign} {u} -> {v}" + (f"   e.g. {w['request']}" if w else ""))
    return "\n".join(lines) + "\n"


def _identity_text(w: dict) -> str:
    """The caller's identity as the destination sees it (the request line
    already shows method, path, headers and `(no identity)`)."""
    return f"   (identity {w['identity']})" if w.get("identity") else ""


def _md(s: str) -> str:
    """Text for a Markdown table cell: pipes and backticks escaped, shown as written."""
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")


def _code(s: str) -> str:
    """A code span that shows s exactly (a witness path may hold backticks):
    fenced with one backtick more than its longest run, padded when s starts
    or ends with one; pipes escaped for the table."""
    if not s:
        return ""
    fence = "`" * (max((len(m) for m in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s[0] == "`" or s[-1] == "`" else ""
    return f"{fence}{pad}{s.replace('|', chr(92) + '|')}{pad}{fence}"


def markdown(d: MeshDiff) -> str:
    out = ["## meshc diff", ""]
    if not d.changed:
        return "\n".join(out + ["No change: every request is decided and routed as before.", ""])
    if d.services_added or d.services_removed:
        out += [f"Services added: {', '.join(d.services_added) or 'none'}; "
                f"removed: {', '.join(d.services_removed) or 'none'}.", ""]
    for title, changes in (("Decision changes", d.decisions), ("Route changes", d.routes)):
        if not changes:
            continue
        out += [f"### {title} ({len(changes)})", "", "| caller | destination | methods | paths | before | after | witness |",
                "|---|---|---|---|---|---|---|"]
        for c in changes:
            ms = ",".join(c.methods) if len(c.methods) < len(HTTP_METHODS) else "any"
            ident = c.witness.get("identity")
            out.append(f"| {_md(c.source)} | {_md(c.destination)} | {ms} | {_code(c.paths)} | {_md(c.old)} | "
                       f"**{_md(c.new)}** | {_code(c.witness['request'])}"
                       + (f" as {_code(ident)}" if ident else "") + " |")
        out.append("")
    if d.settings:
        out += [f"### Settings changes ({len(d.settings)})", "", "| service | setting | before | after |",
                "|---|---|---|---|"]
        out += [f"| {_md(a)} | {_md(b)} | {_md(c)} | **{_md(e)}** |" for a, b, c, e in d.settings]
        out.append("")
    if d.edges_added or d.edges_removed:
        out += ["### Reachability changes", "", "| change | call | witness |", "|---|---|---|"]
        for sign, edges in (("added", d.edges_added), ("removed", d.edges_removed)):
            for u, v, w in edges:
                out.append(f"| {sign} | {_md(u)} → {_md(v)} | {_code(w['request']) if w else ''} |")
        out += ["", "```mermaid", "graph LR"]
        ids: dict[str, str] = {}

        def node(n: str) -> str:
            if n not in ids:
                ids[n] = f"n{len(ids)}"
                out.append(f'  {ids[n]}["{n}"]')
            return ids[n]

        for u, v, _ in d.edges_added:
            a, b = node(u), node(v)
            out.append(f"  {a} -->|added| {b}")
        for u, v, _ in d.edges_removed:
            a, b = node(u), node(v)
            out.append(f"  {a} -. removed .-> {b}")
        out += ["```", ""]
    return "\n".join(out)
