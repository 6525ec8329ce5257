"""Verify benchmark: `python bench/bench_verify.py [N ...] [--full] [--seed S]`.

For generated meshes (bench/gen.py) of N services, times the verifier core
(every partition's atoms, authorization and route findings), the call
graph's edges (auth.allowed_callers over every destination's candidate
callers: *candidates* is how many there are, *asked* how many may_call
questions remain once wholly denied caller classes are skipped), and, with
--full, the whole `verify.run` including the call graph, mTLS findings and
assertions. Times are CPU seconds of this process (the machine is shared)
and wall seconds. Per-partition time is the time spent building a
destination's atoms and boxes plus any Z3 work for it (median, p95, max).
*z3_queries* counts solver checks; *peak_mb* is the process's peak RSS
(ru_maxrss: it only grows across sizes).
"""

from __future__ import annotations

import argparse
import resource
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


def cold() -> None:
    """Forget pattern caches, so each measured run starts cold."""
    from meshpolicy.verify import atoms, automata

    atoms._split_cached.cache_clear()
    automata.witness.cache_clear()
    automata.compile_key.cache_clear()


def bench(n: int, seed: int, full: bool) -> dict:
    import meshpolicy.verify as V
    from meshpolicy.verify import auth
    from meshpolicy.verify.callgraph import candidate_callers, services_by_namespace

    files = generate(n, seed)
    checked = check_project(from_texts({k: v for k, v in files.items() if k.endswith(".mesh")}))
    assert checked.ok, [d.message for d in checked.diagnostics if d.is_error][:3]
    mesh = checked.mesh
    # the core: every destination's partition and its findings, i.e. the
    # run up to the step that builds the call graph
    stats: dict = {}
    marks: dict = {}

    def progress(step: str, _done: int, _total: int) -> None:
        if step == "the call graph":
            marks["core"] = (time.perf_counter(), time.process_time())

    cold()
    t0, c0 = time.perf_counter(), time.process_time()
    diags = V.run(mesh, {"verify": {}}, stats, progress=progress)
    core, core_cpu = marks["core"][0] - t0, marks["core"][1] - c0
    by_ns, names = services_by_namespace(mesh), [s.name for s in mesh.services]
    candidates = {d: candidate_callers(mesh, d, by_ns, names) for d in mesh.service_map}
    asked: list = []
    real = auth.may_call

    def counting(m, source, dest, *args):
        asked.append(1)
        return real(m, source, dest, *args)

    auth.may_call = counting  # the calls allowed_callers makes, counted
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        for dest, cands in candidates.items():
            auth.allowed_callers(mesh, dest, cands)
        edges, edges_cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        auth.may_call = real
    row = {"n": n, "core_cpu_s": core_cpu, "core_wall_s": core, "edges_cpu_s": edges_cpu,
           "edges_wall_s": edges, "candidates": sum(len(c) for c in candidates.values()), "asked": len(asked),
           "findings": len(diags), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
           "partition_median_ms": 1000 * statistics.median(stats["partition_seconds"]),
           "partition_p95_ms": 1000 * pct(stats["partition_seconds"], 95),
           "partition_max_ms": 1000 * max(stats["partition_seconds"]),
           "z3_queries": stats["queries"], "box_questions": stats["box_questions"]}
    if full:
        checked = check_project(from_texts({k: v for k, v in files.items() if k.endswith(".mesh")}))
        cold()
        t0, c0 = time.perf_counter(), time.process_time()
        V.run(checked.mesh, {"verify": {}})
        row["full_cpu_s"], row["full_wall_s"] = time.process_time() - c0, time.perf_counter() - t0
        row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="*", type=int, default=[10, 100, 1000])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="also time the whole run (call graph and mTLS included)")
    args = ap.parse_args()
    cols = ["n", "core_cpu_s", "core_wall_s", "edges_cpu_s", "edges_wall_s", "candidates", "asked",
            "partition_median_ms", "partition_p95_ms", "partition_max_ms", "z3_queries", "box_questions",
            "findings"] + (["full_cpu_s", "full_wall_s"] if args.full else []) + ["peak_mb"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for n in args.sizes:
        row = bench(n, args.seed, args.full)
        print("| " + " | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols) + " |",
              flush=True)


if __name__ == "__main__":
    main()
