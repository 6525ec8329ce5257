"""Verify on power-law meshes: `python bench/bench_powerlaw.py [N ...] [--seed S] [--profile]`.

Times `meshc verify`'s core (`meshpolicy.verify.run`, after the checks) on
bench/gen_powerlaw.py meshes of each N, in one process, cold pattern caches
each time; prints CPU and wall seconds, peak memory (ru_maxrss, so it only
grows across sizes) and the ratio of each size's CPU time to the first.
The target (docs/performance.md): 5000 services within 6x the time of 1000.
"""

from __future__ import annotations

import argparse
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
    found = V.run(checked.mesh, {})
    if profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return {"n": n, **stats(files), "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0,
            "findings": len(found), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="*", type=int, default=[1000, 5000])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    first = None
    print("| services | callers (max / median) | allow rules | verify CPU s | wall s | ratio | peak MB |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        r = run_one(n, args.seed, args.profile)
        first = first or r["cpu_s"]
        print(f"| {n} | {r['max_callers']} / {r['median_callers']} | {r['allow_rules']} | {r['cpu_s']:.2f} | "
              f"{r['wall_s']:.2f} | {r['cpu_s'] / first:.1f}x | {r['peak_mb']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
