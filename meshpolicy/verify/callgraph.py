"""The call graph of allowed calls, and what follows from its paths.

An edge A -> B exists when some request from A to B is allowed
(docs/semantics.md). Edges are decided exactly by `may_call` (the Z3
encoding in verify/auth.py) and carry its witness request. Callers without a
mesh identity are the node OUTSIDE. On this graph: reachability with the
shortest path as witness, cycles, retry amplification (the product of
attempts per hop) and worst-case latency (the sum of hop budgets plus the
sidecar cost per hop).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..codes import diag
from ..diagnostics import Diagnostic, Label
from ..model.types import Assertion, Mesh, Retry, RouteRule, Service
from ..semantics import Request
from . import digraph
from .digraph import Digraph

OUTSIDE = "(outside)"  # callers with no mesh identity
DEFAULT_BACKOFF_MS = 25  # Envoy's default base interval when retries are on

MayCall = Callable[[Mesh, "str | None", str], "Request | None"]


@dataclass(frozen=True)
class GraphConfig:
    sidecar_ms: float = 3.0
    sidecars_per_hop: int = 2
    max_amplification: float = 10.0

    @classmethod
    def from_config(cls, config: dict) -> "GraphConfig":
        v = (config or {}).get("verify", {})
        return cls(
            sidecar_ms=float(v.get("sidecar_ms", cls.sidecar_ms)),
            sidecars_per_hop=int(v.get("sidecars_per_hop", cls.sidecars_per_hop)),
            max_amplification=float(v.get("max_amplification", cls.max_amplification)),
        )

    @property
    def hop_cost_ms(self) -> float:
        return self.sidecar_ms * self.sidecars_per_hop


# ---- building the graph ------------------------------------------------------

def candidate_callers(mesh: Mesh, dest: str, by_ns: dict[str, list[str]] | None = None,
                      names: list[str] | None = None) -> list[str | None]:
    """Callers that some allow rule (or the default stance) might admit to dest;
    may_call decides each exactly. None stands for a caller without identity.
    `names` (every service name) is passed in by build_graph: rebuilding it
    per destination was quadratic in the mesh."""
    from ..semantics.admission import identity_mates

    if names is None:
        names = [s.name for s in mesh.services]
    if mesh.settings.default == "allow":
        return [None, *names]
    if by_ns is None:
        by_ns = services_by_namespace(mesh)
    out: dict[str | None, None] = {}
    for rule in mesh.rules_by_target.get(dest, []):
        if rule.effect != "allow":
            continue
        for src in rule.sources:
            if src.kind == "internet":
                continue  # requests through an ingress: verify/internet.py
            if src.kind == "service":  # and every service sharing its identity
                out[src.name] = None
                out.update(dict.fromkeys(identity_mates(mesh, src.name)))
            elif src.kind == "namespace":
                out.update(dict.fromkeys(by_ns.get(src.name, [])))
            else:
                if src.kind == "any":
                    out[None] = None
                out.update(dict.fromkeys(names))
    return list(out)


def services_by_namespace(mesh: Mesh) -> dict[str, list[str]]:
    by_ns: dict[str, list[str]] = {}
    for s in mesh.services:
        by_ns.setdefault(s.namespace, []).append(s.name)
    return by_ns


# (caller, allowed request) for each candidate caller of a destination that may call it
Callers = Callable[[Mesh, str, "list[str | None]"], "list[tuple[str | None, Request]]"]


def build_graph(mesh: Mesh, may_call: MayCall | None = None, timeout_ms: int | None = None,
                box_limit: int | None = None, callers: Callers | None = None) -> Digraph:
    """Nodes: every service plus OUTSIDE; with ingresses, `internet` and each
    ingress; each external. Edge attribute `witness`: an allowed Request
    (verify/internet.py adds the north-south edges). Edges are decided by
    `callers` (a destination's candidates at once), else by `may_call` asked
    per candidate, else by the verifier's auth.allowed_callers."""
    from .partition import BOX_LIMIT, DEFAULT_TIMEOUT_MS

    timeout = DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms
    limit = BOX_LIMIT if box_limit is None else box_limit
    if callers is None:
        callers = _one_by_one(may_call) if may_call is not None else _default_callers(timeout, limit)
    g = Digraph()
    g.add_node(OUTSIDE)
    for s in mesh.services:
        g.add_node(s.name)
    known = mesh.service_map
    by_ns = services_by_namespace(mesh)
    names = [s.name for s in mesh.services]
    for dest in known:
        for caller, req in callers(mesh, dest, candidate_callers(mesh, dest, by_ns, names)):
            if caller == dest or (caller is not None and caller not in known):
                continue
            g.add_edge(caller or OUTSIDE, dest, witness=req)
    if mesh.ingresses or mesh.externals:
        from .internet import internet_edges

        internet_edges(mesh, g, timeout, limit)
    return g


def _one_by_one(may_call: MayCall) -> Callers:
    def callers(mesh: Mesh, dest: str, candidates: list[str | None]) -> list[tuple[str | None, Request]]:
        known = mesh.service_map
        out = []
        for c in candidates:
            if c == dest or (c is not None and c not in known):
                continue
            req = may_call(mesh, c, dest)
            if req is not None:
                out.append((c, req))
        return out

    return callers


def _default_callers(timeout_ms: int, box_limit: int) -> Callers:
    from .auth import allowed_callers

    return lambda mesh, dest, candidates: allowed_callers(mesh, dest, candidates, timeout_ms, box_limit)


# ---- hop costs -------------------------------------------------------------------

def _effective(rule: RouteRule | None, svc: Service) -> tuple[Retry | None, int | None]:
    s = svc.settings_for(rule)
    return s.retry, s.timeout_ms


def _hop_variants(mesh: Mesh, dest: Service) -> list[tuple[Retry | None, int | None, RouteRule | None]]:
    route = mesh.route_map.get(dest.name)
    if route is None or not route.rules:
        return [(*_effective(None, dest), None)]
    return [(*_effective(r, dest), r) for r in route.rules if r.action.kind == "forward"] or [
        (*_effective(None, dest), None)
    ]


def attempts(retry: Retry | None) -> int:
    return 1 if retry is None else retry.attempts + 1


def backoff_total_ms(retry: Retry | None) -> float:
    """Worst case of jittered exponential backoff: each wait is at most
    min(base * 2^i, max); Envoy's defaults are 25 ms and 10 x base."""
    if retry is None or retry.attempts <= 0:
        return 0.0
    base = retry.backoff_ms or DEFAULT_BACKOFF_MS
    cap = retry.backoff_max_ms or 10 * base
    return float(sum(min(base * 2**i, cap) for i in range(retry.attempts)))


def hop_budget_ms(retry: Retry | None, timeout: int | None) -> float:
    """The longest a caller's sidecar waits for one request on this hop."""
    if retry is not None and retry.attempts > 0 and retry.per_try_ms:
        tries = attempts(retry) * retry.per_try_ms + backoff_total_ms(retry)
    else:
        tries = math.inf
    if timeout:
        return min(float(timeout), tries)
    return tries


def hop_budget_sum(retry: Retry | None, timeout: int | None) -> str | None:
    """The sum behind hop_budget_ms when retries set it (not the timeout), for
    messages: "3 attempts x 120ms per try + 75ms backoff" (MP301 shows its
    arithmetic the same way). None when the number is a written timeout."""
    b = hop_budget_ms(retry, timeout)
    if math.isinf(b) or (timeout and b == float(timeout)) or retry is None:
        return None
    backoff = backoff_total_ms(retry)
    return f"{attempts(retry)} attempts x {retry.per_try_ms:g}ms per try" + (
        f" + {backoff:g}ms backoff" if backoff else "")


def hop_amplification(mesh: Mesh, dest: str) -> tuple[int, RouteRule | None]:
    """Worst-case attempts a caller makes per request to dest, and the rule that causes it."""
    svc = mesh.service(dest)
    if svc is None:
        return 1, None
    best = (0, None)
    for retry, _timeout, rule in _hop_variants(mesh, svc):
        a = attempts(retry)
        if a > best[0]:
            best = (a, rule)
    return best


def hop_latency(mesh: Mesh, dest: str) -> tuple[float, RouteRule | None]:
    svc = mesh.service(dest)
    if svc is None:
        return math.inf, None
    best = (-1.0, None)
    for retry, timeout, rule in _hop_variants(mesh, svc):
        b = hop_budget_ms(retry, timeout)
        if b > best[0]:
            best = (b, rule)
    return best


def hop_latency_sum(mesh: Mesh, dest: str) -> str | None:
    """hop_budget_sum of the variant hop_latency picks (the first worst one)."""
    svc = mesh.service(dest)
    if svc is None:
        return None
    best: tuple[float, str | None] = (-1.0, None)
    for retry, timeout, _rule in _hop_variants(mesh, svc):
        b = hop_budget_ms(retry, timeout)
        if b > best[0]:
            best = (b, hop_budget_sum(retry, timeout))
    return best[1]


# ---- worst paths ---------------------------------------------------------------

@dataclass
class WorstPath:
    value: float  # product of attempts, or total ms; math.inf if unbounded
    path: list[str]
    complete: bool = True  # False: too many simple paths to look at them all


MAX_SIMPLE_PATHS = 100_000


def _between(g: Digraph, a: str, b: str) -> Digraph | None:
    if a not in g or b not in g or not digraph.has_path(g, a, b):
        return None
    down = digraph.descendants(g, a) | {a}
    up = digraph.ancestors(g, b) | {b}
    return g.subgraph(down & up)


def worst_path(g: Digraph, a: str, b: str, hop_value: Callable[[str, str], float], combine: str) -> WorstPath | None:
    """The simple path a ~> b maximising the product ('mul') or sum ('add') of
    hop values. A request is taken to visit each service at most once; loops
    are reported on their own (MP551)."""
    sub = _between(g, a, b)
    if sub is None:
        return None
    start = 1.0 if combine == "mul" else 0.0
    if digraph.is_acyclic(sub):
        best: dict[str, tuple[float, str | None]] = {a: (start, None)}
        for u in digraph.topological_sort(sub):
            if u not in best:
                continue
            for v in sub.successors(u):
                h = hop_value(u, v)
                val = best[u][0] * h if combine == "mul" else best[u][0] + h
                if v not in best or val > best[v][0]:
                    best[v] = (val, u)
        path = [b]
        while path[-1] != a:
            path.append(best[path[-1]][1])
        return WorstPath(best[b][0], path[::-1])
    found = None
    for i, p in enumerate(digraph.all_simple_paths(sub, a, b)):
        if i >= MAX_SIMPLE_PATHS:
            found.complete = False
            break
        val = start
        for u, v in zip(p, p[1:]):
            val = val * hop_value(u, v) if combine == "mul" else val + hop_value(u, v)
        if found is None or val > found.value:
            found = WorstPath(val, p)
    return found


def amplification_path(mesh: Mesh, g: Digraph, a: str, b: str) -> WorstPath | None:
    cache: dict[str, int] = {}

    def hop(_u: str, v: str) -> float:
        if v not in cache:
            cache[v] = hop_amplification(mesh, v)[0]
        return cache[v]

    return worst_path(g, a, b, hop, "mul")


def latency_path(mesh: Mesh, g: Digraph, a: str, b: str, cfg: GraphConfig) -> WorstPath | None:
    cache: dict[str, float] = {}

    def hop(_u: str, v: str) -> float:
        if v not in cache:
            cache[v] = hop_latency(mesh, v)[0] + cfg.hop_cost_ms
        return cache[v]

    return worst_path(g, a, b, hop, "add")


# ---- findings -----------------------------------------------------------------------

def _path_witness(g: Digraph, path: list[str]) -> dict:
    hops = [str(g.edges[u, v]["witness"]) for u, v in zip(path, path[1:]) if (u, v) in g.edges]
    return {"path": path, "requests": hops}


def _with_sum(ms: float, how: str | None) -> str:
    return f"{_fmt_ms(ms)} ({how} = {ms:g}ms)" if how else _fmt_ms(ms)


def _fmt_ms(ms: float) -> str:
    if math.isinf(ms):
        return "unbounded"
    return f"{ms / 1000:g}s" if ms >= 1000 else f"{ms:g}ms"


def findings(mesh: Mesh, config: dict | None = None, graph: Digraph | None = None,
             may_call: MayCall | None = None) -> list[Diagnostic]:
    cfg = GraphConfig.from_config(config or {})
    g = graph if graph is not None else build_graph(mesh, may_call)
    out: list[Diagnostic] = []
    out += _cycles(mesh, g)
    out += _isolated(mesh, g)
    out += _amplification(mesh, g, cfg)
    out += _timeout_inversions(mesh, g)
    return out


def _cycles(mesh: Mesh, g: Digraph) -> list[Diagnostic]:
    out = []
    for comp in sorted(digraph.strongly_connected_components(g), key=lambda c: sorted(c)):
        if len(comp) < 2:
            continue
        start = min(comp)
        sub = g.subgraph(comp)
        back = (digraph.shortest_path(sub, s, start) for s in sub.successors(start))
        path = [start] + min(back, key=len)  # the shortest cycle through start
        cycle = path[:-1]
        svc = mesh.service(start)
        labels = [Label(mesh.service(n).at("name"), "on the cycle") for n in cycle[1:] if mesh.service(n)]
        out.append(diag("MP551", "services may call each other in a cycle: " + " -> ".join(path),
                        svc.at("name") if svc else None, labels=labels, witness=_path_witness(g, path)))
    return out


def _isolated(mesh: Mesh, g: Digraph) -> list[Diagnostic]:
    out = []
    for svc in mesh.services:
        if svc.name in g and g.degree(svc.name) == 0 and mesh.service(svc.name) is svc:
            out.append(diag("MP554", f"`{svc.name}` may call no service and no caller may call it", svc.at("name")))
    return out


def worst_into(mesh: Mesh, g: Digraph) -> dict[str, tuple[float, str | None]]:
    """Per node, the worst amplification it can receive from any entry point,
    and the caller on that worst path (follow with `path_into`)."""
    amp = {n: hop_amplification(mesh, n)[0] for n in g.nodes if n != OUTSIDE}
    # Longest (by product) path into each service over the DAG of strongly
    # connected components (taken callers first); edges inside a component
    # are cycles, reported as MP551. Among equally bad callers the first by
    # name is kept, so the witness path does not depend on the order of the walk.
    best: dict[str, tuple[float, str | None]] = {n: (1.0, None) for n in g.nodes}
    comps = digraph.strongly_connected_components(g)[::-1]
    members = {n: i for i, comp in enumerate(comps) for n in comp}
    for c, comp in enumerate(comps):
        for u in sorted(comp):
            for v in g.successors(u):
                if members[v] != c:
                    val = best[u][0] * amp[v]
                    cur, pred = best[v]
                    if val > cur or (val == cur and pred is not None and u < pred):
                        best[v] = (val, u)
    return best


def path_into(best: dict[str, tuple[float, str | None]], v: str) -> list[str]:
    """The worst path into v (entry point first), from worst_into's answer."""
    return _chain(best, v)[::-1]


def _amplification(mesh: Mesh, g: Digraph, cfg: GraphConfig) -> list[Diagnostic]:
    """Report, per service, the worst amplification it can receive from any entry point."""
    best = worst_into(mesh, g)
    out = []
    for svc in mesh.services:
        val, _pred = best.get(svc.name, (1.0, None))
        if val > cfg.max_amplification and mesh.service(svc.name) is svc:
            path = _chain(best, svc.name)[::-1]
            rule = hop_amplification(mesh, svc.name)[1]
            labels = [Label(rule.span, "retries here")] if rule is not None and rule.retry else []
            labels += [Label(mesh.service(n).retry.span, f"retries when calling `{n}`")
                       for n in path[1:] if mesh.service(n) and mesh.service(n).retry and n != svc.name]
            out.append(diag(
                "MP552",
                f"one request along {' -> '.join(path)} can reach `{svc.name}` {val:g} times "
                f"(limit {cfg.max_amplification:g})",
                svc.retry.span if svc.retry else svc.at("name"), labels=labels,
                witness=_path_witness(g, path),
            ))
    return out


def _chain(best: dict[str, tuple[float, str | None]], v: str) -> list[str]:
    chain = [v]
    seen = {v}
    while best[chain[-1]][1] is not None and best[chain[-1]][1] not in seen:
        chain.append(best[chain[-1]][1])
        seen.add(chain[-1])
    return chain


def _timeout_inversions(mesh: Mesh, g: Digraph) -> list[Diagnostic]:
    """X waits at most T(X->Y) for Y; if Y itself may wait longer than that for Z,
    X gives up while Y still works (wasted work, and Y's retries are futile)."""
    out = []
    budget = {n: hop_latency(mesh, n) for n in g.nodes if n != OUTSIDE}
    for y in sorted(budget):
        t_xy, _ = budget[y]
        if math.isinf(t_xy) or not g.in_degree(y):
            continue
        # Only finite inner budgets: an unbounded hop (no timeout) is what latency assertions are for.
        worst_z = max(((budget[z][0], z) for z in g.successors(y) if z in budget and not math.isinf(budget[z][0])),
                      default=None)
        if worst_z is None or not (worst_z[0] > t_xy):
            continue
        t_yz, z = worst_z
        svc_y, svc_z = mesh.service(y), mesh.service(z)
        span = svc_y.at("timeout") if "timeout" in svc_y.spans else svc_y.at("name")
        out.append(diag(
            "MP553",
            f"callers of `{y}` wait at most {_with_sum(t_xy, hop_latency_sum(mesh, y))}, "
            f"but `{y}` may wait {_with_sum(t_yz, hop_latency_sum(mesh, z))} for `{z}`",
            span, labels=[Label(svc_z.at("timeout") if "timeout" in svc_z.spans else svc_z.at("name"),
                                f"`{z}` may take {_fmt_ms(t_yz)}")],
            witness=_path_witness(g, [y, z]),
        ))
    return out


# ---- assertions on paths --------------------------------------------------------------

def check_assertion(mesh: Mesh, a: Assertion, config: dict | None = None, graph: Digraph | None = None,
                    may_call: MayCall | None = None) -> Diagnostic | None:
    """never A ~> B (transitive), amplification A ~> B <= N, latency A ~> B <= D.
    Returns an MP601 diagnostic when refuted, None when proved."""
    cfg = GraphConfig.from_config(config or {})
    from .internet import INTERNET

    if a.source is not None and a.source.name == INTERNET and a.kind == "never":
        from .internet import never_reaches

        g = graph if graph is not None else build_graph(mesh, may_call)
        return never_reaches(mesh, a, g, config)
    if a.source is None or mesh.service(a.source.name) is None or mesh.service(a.target.name) is None:
        return None  # unknown names are check errors (MP101)
    g = graph if graph is not None else build_graph(mesh, may_call)
    src, dst = a.source.name, a.target.name
    if a.kind == "never":
        if a.methods or a.paths:
            raise ValueError("transitive `never` with methods or paths is checked by verify.assertions")
        if src == dst:  # "never A ~> A": no cycle leads back to A
            back = [p for p in (digraph.shortest_path(g, s, src) for s in g.successors(src)) if p]
            if not back:
                return None
            path = [src] + min(back, key=len)
        else:
            path = digraph.shortest_path(g, src, dst)
            if path is None:
                return None
        return diag("MP601", f"assertion fails: `{src}` can reach `{dst}` through " + " -> ".join(path), a.span,
                    witness=_path_witness(g, path))
    if a.kind == "amplification":
        wp = amplification_path(mesh, g, src, dst) if a.transitive else _direct(mesh, g, src, dst, "mul", cfg)
        if wp is None or wp.value <= a.bound:
            return None
        if not wp.complete:
            return _unknown(a, wp)
        what = f"{wp.value:g}"
        return diag("MP601", f"assertion fails: one request from `{src}` can reach `{dst}` {what} times "
                             f"along {' -> '.join(wp.path)} (bound {a.bound})", a.span,
                    labels=[Label(a.at("bound"), "the bound")] if "bound" in a.spans else [],
                    witness=_path_witness(g, wp.path))
    if a.kind == "latency":
        wp = latency_path(mesh, g, src, dst, cfg) if a.transitive else _direct(mesh, g, src, dst, "add", cfg)
        if wp is None or wp.value <= a.bound:
            return None
        if not wp.complete:
            return _unknown(a, wp)
        notes = [f"each hop counts its timeout (or attempts x per-try timeout + backoff) plus "
                 f"{cfg.sidecars_per_hop} sidecars x {cfg.sidecar_ms:g}ms"]
        unbounded = [v for v in wp.path[1:] if math.isinf(hop_latency(mesh, v)[0])]
        if unbounded:
            notes.append("no timeout bounds calls to " + ", ".join(f"`{v}`" for v in unbounded))
        return diag("MP601", f"assertion fails: worst-case latency from `{src}` to `{dst}` is {_fmt_ms(wp.value)} "
                             f"along {' -> '.join(wp.path)} (bound {_fmt_ms(a.bound)})", a.span,
                    labels=[Label(a.at("bound"), "the bound")] if "bound" in a.spans else [],
                    notes=notes, witness=_path_witness(g, wp.path))
    raise ValueError(f"callgraph does not check `{a.kind}` assertions")


def _unknown(a: Assertion, wp: WorstPath) -> Diagnostic:
    return diag("MP602", f"assertion not proved: more than {MAX_SIMPLE_PATHS} call paths lead from "
                         f"`{a.source.name}` to `{a.target.name}`; the worst seen is {wp.value:g} along "
                         + " -> ".join(wp.path), a.span)


def _direct(mesh: Mesh, g: Digraph, src: str, dst: str, combine: str, cfg: GraphConfig) -> WorstPath | None:
    if not g.has_edge(src, dst):
        return None
    if combine == "mul":
        return WorstPath(float(hop_amplification(mesh, dst)[0]), [src, dst])
    return WorstPath(hop_latency(mesh, dst)[0] + cfg.hop_cost_ms, [src, dst])
