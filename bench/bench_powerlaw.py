"""Verify on power-law meshes: `python bench/bench_powerlaw.py [N ...] [--seed S] [--profile]`.

Times `meshc verify`'s core (`meshpolicy.verify.run`, after the checks) on
bench/gen_powerlaw.py meshes of each N, in one process, cold pattern caches
each time; prints CPU and wall seconds, the solver checks (Z3) it needed,
peak memory (ru_maxrss, so it only grows across sizes), the ratio of each
size's CPU time to the first, and the growth: CPU per service over CPU per
service at the first size. The target (issue 16, docs/performance.md):
10,000 services in under 10 s, growth within 1.5x of 1,000's.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_verify import cold  # noqa: E402
from bench.gen_powerlaw import generate, stats  # noqa: E402
from meshpolicy.pipeline import check_project  # noqa: E402
from meshpolicy.project import from_texts  # noqa: E402


def run_one(n: int, seed: int, profile: bool) -> dict:
    import meshpolicy.verify as V

    files = generate(n, seed)
    checked = check_project(from_texts({k: v for k, v in files.items() if k.endswith(".mesh")}))
    assert checked.ok, [d.message for d in checked.diagnostics if d.is_error][:3]
    cold()
    c0, w0 = time.process_time(), time.perf_counter()
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
    st: dict = {}
    found = V.run(checked.mesh, {}, st)
    if profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return {"n": n, **stats(files), "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0,
            "findings": len(found), "z3": st.get("queries", 0),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="*", type=int, default=[1000, 5000])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    first = None
    print("| services | callers (max / median) | allow rules | verify CPU s | wall s | ratio | growth | Z3 checks "
          "| findings | peak MB | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        r = run_one(n, args.seed, args.profile)
        first = first or (r["cpu_s"], n)
        print(f"| {n} | {r['max_callers']} / {r['median_callers']} | {r['allow_rules']} | {r['cpu_s']:.2f} | "
              f"{r['wall_s']:.2f} | {r['cpu_s'] / first[0]:.1f}x | {r['cpu_s'] / n / (first[0] / first[1]):.2f}x "
              f"| {r['z3']} | {r['findings']} | {r['peak_mb']:.0f} | {os.getloadavg()[0]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
