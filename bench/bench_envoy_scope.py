"""How much scoping shrinks Envoy bootstraps: `python bench/bench_envoy_scope.py [N] [--sample K]`.

Generates the N-service bench mesh (bench/gen.py), compiles every workload's
bootstrap scoped (routes and clusters only for services some allow rule
lets it call) and, for a deterministic sample of K workloads, unscoped
(every service), and prints a table: workload, services it may call,
scoped bytes, unscoped bytes, ratio; then median and p95 over workloads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gen import generate  # noqa: E402
from meshpolicy.compile import CompileOptions  # noqa: E402
from meshpolicy.pipeline import check_project  # noqa: E402
from meshpolicy.project import from_texts  # noqa: E402
from meshpolicy.targets.envoy import render  # noqa: E402
from meshpolicy.targets.envoy.bootstrap import bootstrap, tcp_destinations  # noqa: E402
from meshpolicy.targets.envoy.context import Ctx  # noqa: E402
from meshpolicy.targets.envoy.conventions import settings_from, workloads  # noqa: E402
from meshpolicy.targets.envoy.scope import callable_services  # noqa: E402


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=1000)
    ap.add_argument("--sample", type=int, default=40, help="workloads compiled unscoped too")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    files = generate(args.n, args.seed)
    checked = check_project(from_texts({k: v for k, v in files.items() if k.endswith(".mesh")}))
    mesh = checked.mesh
    ws = workloads(mesh)
    options = CompileOptions()
    settings, _ = settings_from({})
    ctx = Ctx(mesh, options, settings)
    max_tcp = max(len(tcp_destinations(ctx, w.service)) for w in ws)
    # Room for every workload's outbound tcp ports (the convention's only variable part).
    settings, _ = settings_from({"ports_per_workload": max(10, 4 + max_tcp), "port_base": 1024})
    ctx = Ctx(mesh, options, settings)
    index = {w.cluster: w for w in ws}

    t0 = time.perf_counter()
    scoped = {w.path: len(render(bootstrap(ctx, w, index, True), w).encode()) for w in ws}
    t_scoped = time.perf_counter() - t0
    calls = {w.path: len(callable_services(mesh, w.service)) for w in ws}
    step = max(1, len(ws) // args.sample)
    sample = ws[::step][: args.sample]
    t0 = time.perf_counter()
    unscoped = {w.path: len(render(bootstrap(ctx, w, index, False), w).encode()) for w in sample}
    t_unscoped = time.perf_counter() - t0

    print(f"{args.n} services, {len(ws)} workloads, {len(mesh.auth_rules)} auth rules (seed {args.seed})")
    print(f"{'workload':48} {'calls':>5} {'scoped B':>10} {'unscoped B':>11} {'ratio':>7}")
    ratios = []
    for w in sample:
        r = unscoped[w.path] / scoped[w.path]
        ratios.append(r)
        print(f"{w.path:48} {calls[w.path]:5d} {scoped[w.path]:10d} {unscoped[w.path]:11d} {r:7.1f}")
    sv = list(scoped.values())
    print()
    print(f"scoped, all {len(ws)} workloads: median {statistics.median(sv):.0f} B, p95 {pct(sv, 0.95):.0f} B, "
          f"max {max(sv)} B, total {sum(sv) / 1e6:.1f} MB; calls median {statistics.median(calls.values()):.0f}, "
          f"p95 {pct(list(calls.values()), 0.95):.0f}")
    uv = list(unscoped.values())
    print(f"unscoped, {len(sample)} sampled: median {statistics.median(uv):.0f} B, p95 {pct(uv, 0.95):.0f} B")
    print(f"ratio unscoped/scoped over the sample: median {statistics.median(ratios):.1f}x, "
          f"p95 {pct(ratios, 0.95):.1f}x, min {min(ratios):.1f}x")
    print(f"time: scoped {t_scoped:.1f}s for {len(ws)} workloads ({1000 * t_scoped / len(ws):.1f} ms each), "
          f"unscoped {1000 * t_unscoped / len(sample):.0f} ms each")


if __name__ == "__main__":
    main()
