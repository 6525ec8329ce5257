"""The verifier: properties of a mesh proved over every request, with witnesses.

`run(mesh, config)` is the one entry point (`meshc verify`, the language
server and CI). `config` is the project's meshc.toml as a dict; its
`[verify]` table (with command-line overrides) holds `timeout_ms` (per solver
query), `verbose` (report proved assertions too), `box_limit` (how large a box
difference may grow before a question goes to Z3; 0 sends every question to
Z3) and the call-graph settings callgraph.py reads. Z3 is imported only inside this package.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..codes import diag
from ..diagnostics import Diagnostic, sorted_diagnostics
from ..model.types import Mesh

GRAPH_ASSERTIONS = ("amplification", "latency")


def run(mesh: Mesh, config: dict | None = None, stats: dict | None = None,
        progress: Callable[[str, int, int], None] | None = None) -> list[Diagnostic]:
    """`progress(step, done, total)` is called as work advances (a progress bar).

    The cyclic GC is paused for the run: partitions, atoms and boxes are many
    small objects that all stay alive until it ends, and on a 5000-service
    mesh the collector's rescans of them cost as much as the analysis."""
    from ..gc_pause import gc_paused

    with gc_paused():
        return _run(mesh, config, stats, progress)


def _run(mesh: Mesh, config: dict | None, stats: dict | None,
         progress: Callable[[str, int, int], None] | None) -> list[Diagnostic]:
    from . import assertions, auth, callgraph, limits, mtls, raw_paths, routes
    from .atoms import Undecided
    from .partition import partition

    config = dict(config or {})
    timeout, limit = timeout_ms(config), box_limit(config)
    max_rules, max_seconds = _setting(config, "max_rules_per_destination", MAX_RULES_PER_DESTINATION), \
        _setting(config, "max_seconds", MAX_SECONDS)
    t0 = time.perf_counter()
    out: list[Diagnostic] = []
    # externals with egress rules get the same rule findings (decided at the caller's sidecar)
    dests = list(dict.fromkeys([s.name for s in mesh.services]
                               + [e.name for e in mesh.externals if e.name in mesh.rules_by_target
                                  and mesh.service(e.name) is None]))
    total = len(dests) + 2  # each destination, then the call graph, then the assertions
    parts = []
    too_big = {d for d in dests if _rule_count(mesh, d) > max_rules}
    for d in sorted(too_big, key=dests.index):
        svc = mesh.service(d) or mesh.external_map.get(d)
        out.append(diag("MP507", f"calls to `{d}` were not verified: its {_rule_count(mesh, d)} authorization and "
                                 f"route rules exceed the limit of {max_rules} ([verify] max_rules_per_destination)",
                        svc.span if svc else None))
    stopped = None
    for i, dest in enumerate(dests):
        if progress:
            progress(f"verifying calls to {dest}", i, total)
        if dest in too_big:
            continue
        if time.perf_counter() - t0 >= max_seconds:
            stopped = i
            break
        p = partition(mesh, dest, timeout, limit)
        parts.append(p)
        if p.error:
            svc = mesh.service(p.dest) or mesh.external_map.get(p.dest)
            out.append(diag("MP520", f"findings for `{p.dest}` were not proved: {p.error}", svc.span if svc else None))
            continue
        try:
            found = auth.findings(mesh, p) + routes.findings(mesh, p)
        except Undecided as exc:
            svc = mesh.service(p.dest) or mesh.external_map.get(p.dest)
            found = [diag("MP520", f"findings for `{p.dest}` were not proved: {exc}", svc.span if svc else None)]
        out.extend(found)
    out.extend(mtls.findings(mesh))
    out.extend(raw_paths.findings(mesh))
    if stopped is not None:
        return _stopped(mesh, out, dests[stopped:], max_seconds, stats, parts, t0)
    if progress:
        progress("the call graph", len(dests), total)

    graph = callgraph.build_graph(mesh, timeout_ms=timeout, box_limit=limit,
                                  callers=auth.graph_callers(too_big, timeout, limit))
    # edges into a destination over the limit are only what probing found:
    # "nobody calls it" would not be proved there
    unproved = {mesh.service(d).at("name") for d in too_big if mesh.service(d) is not None}
    out.extend(d for d in callgraph.findings(mesh, config, graph=graph)
               if not (d.code == "MP554" and d.span in unproved))
    out.extend(limits.findings(mesh, graph, timeout, limit, skip=too_big))
    out.extend(limits.keyed_findings(mesh, graph, skip=too_big))
    if mesh.ingresses or mesh.externals or mesh.settings.egress != "registry_only":
        from . import egress, exposure

        out.extend(exposure.findings(mesh, timeout, limit, skip=too_big))
        out.extend(egress.findings(mesh))
    if progress:
        progress("assertions", len(dests) + 1, total)
    for a in mesh.assertions:
        graph_kind = a.kind in GRAPH_ASSERTIONS or (a.kind == "never" and a.transitive and not (a.methods or a.paths))
        if a.target.name in too_big and not graph_kind:
            out.append(diag("MP602", f"`{assertions.describe(a)}` was not proved: `{a.target.name}` has more rules "
                                     f"than [verify] max_rules_per_destination ({max_rules})", a.span))
        elif graph_kind:
            d = callgraph.check_assertion(mesh, a, config, graph=graph)
            out.extend([d] if d is not None else assertions.proved(a, config))
        else:
            out.extend(assertions.check(mesh, a, config, graph))
    if progress:
        progress("done", total, total)
    if stats is not None:
        times = sorted(p.seconds for p in parts)
        stats.update(partitions=len(parts), partition_seconds=times, queries=sum(p.queries for p in parts),
                     box_questions=sum(p.box_questions for p in parts),
                     string_queries=sum(p.stats.get("string_queries", 0) for p in parts),
                     total_seconds=time.perf_counter() - t0)
    return sorted_diagnostics(out)


# Documented limits (docs/verify.md, "Limits"): past them a clear warning
# ends the work instead of a run that takes hours or gigabytes.
MAX_RULES_PER_DESTINATION = 5000
MAX_SECONDS = 600


def _setting(config: dict, name: str, default):
    return type(default)(((config or {}).get("verify") or {}).get(name, default))


def _rule_count(mesh: Mesh, dest: str) -> int:
    route = mesh.route_map.get(dest)
    return len(mesh.rules_by_target.get(dest, [])) + (len(route.rules) if route else 0)


def _stopped(mesh: Mesh, out: list[Diagnostic], rest: list[str], max_seconds: float, stats: dict | None,
             parts: list, t0: float) -> list[Diagnostic]:
    """MP508 once for the time limit; every assertion not proved (MP602)."""
    from .assertions import describe

    first = mesh.service(rest[0])
    names = ", ".join(f"`{d}`" for d in rest[:5]) + (f" and {len(rest) - 5} more" if len(rest) > 5 else "")
    out.append(diag("MP508", f"verification stopped at the time limit of {max_seconds:g}s ([verify] max_seconds): "
                             f"calls to {names}, the call graph, rate limits and assertions were not proved",
                    first.span if first else None))
    out.extend(diag("MP602", f"`{describe(a)}` was not proved within the time limit", a.span)
               for a in mesh.assertions)
    if stats is not None:
        stats.update(partitions=len(parts), total_seconds=time.perf_counter() - t0, stopped=True)
    return sorted_diagnostics(out)


def timeout_ms(config: dict | None) -> int:
    from .partition import DEFAULT_TIMEOUT_MS

    return int(((config or {}).get("verify") or {}).get("timeout_ms", DEFAULT_TIMEOUT_MS))


def box_limit(config: dict | None) -> int:
    from .partition import BOX_LIMIT

    return int(((config or {}).get("verify") or {}).get("box_limit", BOX_LIMIT))


def verbose(config: dict | None) -> bool:
    return bool(((config or {}).get("verify") or {}).get("verbose", False))


def may_call(mesh: Mesh, source: str | None, destination: str):
    from .auth import may_call as _may_call

    return _may_call(mesh, source, destination)
