"""Verify benchmark: `python bench/bench_verify.py [N ...] [--full] [--seed S]`.

For generated meshes (bench/gen.py) of N services, times the verifier core
(every partition's atoms, authorization and route findings, direct
assertions, and may_call for every (caller, callee) pair the call graph asks
about) and, with --full, the whole `meshc verify` run including the call
graph and mTLS findings. Per-partition time is the time spent building a
destination's atoms and boxes plus any Z3 work for it (median, p95, max).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gen import generate  # noqa: E402
from meshpolicy.pipeline import check_project  # noqa: E402
from meshpolicy.project import from_texts  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def bench(n: int, seed: int, full: bool) -> dict:
    import meshpolicy.verify as V
    from meshpolicy.verify.auth import may_call
    from meshpolicy.verify.callgraph import candidate_callers

    files = generate(n, seed)
    checked = check_project(from_texts({k: v for k, v in files.items() if k.endswith(".mesh")}))
    assert checked.ok, [d.message for d in checked.diagnostics if d.is_error][:3]
    mesh = checked.mesh
    # the core: findings and direct assertions, without the lead's graph modules
    optional = V._optional
    V._optional = lambda name: None
    try:
        stats: dict = {}
        t0 = time.perf_counter()
        diags = V.run(mesh, {"verify": {}}, stats)
        core = time.perf_counter() - t0
    finally:
        V._optional = optional
    t0 = time.perf_counter()
    pairs = 0
    for dest in mesh.service_map:
        for caller in candidate_callers(mesh, dest):
            if caller != dest:
                may_call(mesh, caller, dest)
                pairs += 1
    edges = time.perf_counter() - t0
    row = {"n": n, "core_s": core, "may_call_s": edges, "pairs": pairs, "findings": len(diags),
           "partition_median_ms": 1000 * statistics.median(stats["z3_seconds"]),
           "partition_p95_ms": 1000 * pct(stats["z3_seconds"], 95),
           "partition_max_ms": 1000 * max(stats["z3_seconds"]),
           "z3_queries": stats["queries"], "box_questions": stats["box_questions"]}
    if full:
        checked = check_project(from_texts({k: v for k, v in files.items() if k.endswith(".mesh")}))
        t0 = time.perf_counter()
        V.run(checked.mesh, {"verify": {}})
        row["full_s"] = time.perf_counter() - t0
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="*", type=int, default=[10, 100, 1000])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="also time the whole run (call graph and mTLS included)")
    args = ap.parse_args()
    cols = ["n", "core_s", "may_call_s", "pairs", "partition_median_ms", "partition_p95_ms", "partition_max_ms",
            "z3_queries", "box_questions", "findings"] + (["full_s"] if args.full else [])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for n in args.sizes:
        row = bench(n, args.seed, args.full)
        print("| " + " | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols) + " |",
              flush=True)


if __name__ == "__main__":
    main()
