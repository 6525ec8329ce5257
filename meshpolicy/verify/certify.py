"""`meshc verify --certify`: every verifier finding and verdict re-decided by Z3.

The fast deciders (boxes, automata; atoms.py, partition.py) answer every
question of a plain `meshc verify`. The certifier asks the same questions
again of a separate encoding (certify_space.py: the request as a caller
index, a method and Z3 strings; patterns through its own RE2 parser,
certify_regex.py) and reports a disagreement as MP590 with the request Z3
found, re-evaluated with the reference evaluator. It checks both directions:

- every finding's claim (`CLAIMS`, one function per code), its labels and
  its witness (with the reference evaluator and with the encoding);
- that nothing was missed (`ABSENCE`): no dead, redundant, empty or
  overlapping rule, unreachable route rule or ineffective part of one,
  unfed version, route that authorization always denies or dead rate limit
  goes unreported, no call-graph edge is missing or extra, and every
  assertion's verdict (refuted, or proved when nothing is reported) is the
  right one.

Codes that make no decidable claim are listed in `NO_CLAIM` with the reason;
any other code without a certifying function is MP591, never a silent pass.
A question Z3 cannot answer within the limit (a resource budget per question
that scales with `--timeout-ms`, see `limits`) and a pattern the encoding
does not cover are MP591 too.

Z3 is imported only by the certify_* modules, and only when they run.
"""

from __future__ import annotations

import time

from ..diagnostics import Diagnostic, sorted_diagnostics
from ..model.types import Mesh
from .certify_core import ABSENCE, CLAIMS, Certifier

# importing the kinds' modules registers their certifying functions
from . import certify_assertions, certify_auth, certify_graph, certify_northsouth, certify_routes  # noqa: E402,F401,I001

# Codes whose findings claim nothing the certifier can re-decide, and why.
NO_CLAIM = {
    "MP520": "the verifier says it proved nothing about the destination",
    "MP602": "the verifier says it neither proved nor refuted the assertion",
    "MP563": "compares two mTLS settings; no request is involved",
    "MP507": "the verifier says it did not verify the destination (too many rules)",
    "MP508": "the verifier says it stopped at its time limit; what it did not reach it does not claim",
}


# ---- the entry point ----------------------------------------------------------------

def certify(mesh: Mesh, found: list[Diagnostic], config: dict | None = None, graph=None,
            stats: dict | None = None) -> list[Diagnostic]:
    """MP590 for each disagreement with the verifier's findings `found` (the
    output of `verify.run` on the same mesh and config), MP591 for what could
    not be certified. `graph`: the verifier's call graph (rebuilt if None)."""
    from . import auth, box_limit, timeout_ms
    from .callgraph import build_graph

    t0 = time.perf_counter()
    timeout = timeout_ms(config)
    if graph is None:  # the one verify.run built: destinations it did not verify (MP507) were only probed
        limit = box_limit(config)
        spans = {d.span for d in found if d.code == "MP507"}
        skipped = {svc.name for svc in mesh.services if svc.span in spans}
        graph = build_graph(mesh, timeout_ms=timeout, box_limit=limit,
                            callers=auth.graph_callers(skipped, timeout, limit))
    c = Certifier(mesh, found, limits(config), graph)
    for d in found:
        fn = CLAIMS.get(d.code)
        rule = c.auth_at.get(d.span)
        if rule is not None and mesh.service(rule.target.name) is None and rule.target.name in mesh.external_map:
            c.not_certified(f"{d.code} on an egress rule is not certified: the certifier does not encode egress",
                            d.span)
            continue
        if fn is not None:
            fn(c, d)
        elif d.code not in NO_CLAIM:
            c.not_certified(f"{d.code} findings are not certified (no certifying function for the code)", d.span)
    # after MP508 the verifier claims nothing about what it did not reach
    # (which destinations those are is not recorded), so only its findings are checked
    if not any(d.code == "MP508" for d in found):
        for fn in ABSENCE:
            fn(c)
    if stats is not None:
        stats.update(certify_queries=c.queries, certify_seconds=time.perf_counter() - t0)
    return sorted_diagnostics(_dedupe(c.out))


# The limit per question is a Z3 resource budget, so a question is certified
# or not (MP591) the same way on every machine and under any load: this many
# units per millisecond of the verifier's limit (--timeout-ms; 20 M units by
# default, about 30 times what the examples' hardest question takes). Wall
# time is only a safety net: 5 x the verifier's limit, at least 10 s.
RLIMIT_PER_MS = 10_000
MIN_WALL_MS = 10_000


def limits(config: dict | None) -> tuple[int, int]:
    """(resource budget, wall-clock cap in ms) per certifier question."""
    from . import timeout_ms

    ms = timeout_ms(config)
    return RLIMIT_PER_MS * ms, max(5 * ms, MIN_WALL_MS)


def _dedupe(out: list[Diagnostic]) -> list[Diagnostic]:
    seen, keep = set(), []
    for d in out:
        k = (d.code, d.span, d.message)
        if k not in seen:
            seen.add(k)
            keep.append(d)
    return keep


__all__ = ["ABSENCE", "CLAIMS", "NO_CLAIM", "certify"]
