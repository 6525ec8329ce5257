"""Parse-and-check time on generated meshes: `python bench/bench_check.py`.

For each size N it writes the mesh from bench/gen.py to a temporary
directory and times what `meshc check` does after start-up: read the files,
parse them, build the model and run the checks. Each figure is the median of
`--runs` runs (after one warm-up run, so imports and the grammar tables are
not counted). `--profile N` prints where the time goes for one size, by
module (cProfile self time), instead of the table.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gen import generate, write  # noqa: E402
from meshpolicy.checks import run_checks  # noqa: E402
from meshpolicy.diagnostics import has_errors  # noqa: E402
from meshpolicy.model.build import build  # noqa: E402
from meshpolicy.pipeline import gc_paused, parse_project  # noqa: E402
from meshpolicy.project import load  # noqa: E402

SIZES = (10, 100, 1000, 5000)
TARGET_N, TARGET_S = 1000, 2.0


def one_run(root: Path) -> dict[str, float]:
    """Stage times in CPU seconds of this process (the machine is shared, so
    wall time mostly measures the neighbours), plus the wall-clock total."""
    clock = time.process_time
    w0 = time.perf_counter()
    t0 = clock()
    project = load([root])
    with gc_paused():
        t1 = clock()
        trees, diags = parse_project(project)
        t2 = clock()
        mesh, bdiags = build(list(trees.values()))
        cdiags = run_checks(mesh)
        t3 = clock()
    wall = time.perf_counter() - w0
    if has_errors(diags + bdiags + cdiags + project.diagnostics):
        raise SystemExit(f"the generated mesh at {root} has errors; fix bench/gen.py")
    return {"read": t1 - t0, "parse": t2 - t1, "check": t3 - t2, "total": t3 - t0, "wall": wall}


def measure(n: int, runs: int, seed: int, tmp: Path) -> dict[str, float]:
    files = generate(n, seed)
    root = write(files, tmp / f"mesh{n}")
    results = [one_run(root) for _ in range(runs)]
    out = {k: statistics.median(r[k] for r in results) for k in results[0]}
    out["lines"] = sum(t.count("\n") for name, t in files.items() if name.endswith(".mesh"))
    out["files"] = sum(name.endswith(".mesh") for name in files)
    return out


def machine() -> str:
    return (f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()} "
            f"({platform.python_implementation()}), {platform.system()} {platform.release()}")


def table(sizes: list[int], runs: int, seed: int) -> int:
    print(f"machine: {machine()}")
    print(f"median of {runs} runs, seed {seed}; CPU seconds (total includes reading the files); "
          "wall s is elapsed time")
    print()
    print("| N | lines | files | parse s | build+check s | total s | lines/s | wall s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        one_run(write(generate(10, seed), Path(d) / "warmup"))
        for n in sizes:
            r = rows[n] = measure(n, runs, seed, Path(d))
            print(f"| {n} | {r['lines']} | {r['files']} | {r['parse']:.3f} | {r['check']:.3f} | "
                  f"{r['total']:.3f} | {r['lines'] / r['total']:,.0f} | {r['wall']:.3f} |", flush=True)
    print()
    if TARGET_N in rows:
        t, w = rows[TARGET_N]["total"], rows[TARGET_N]["wall"]
        print(f"target: {TARGET_N} services in under {TARGET_S} s: {'met' if t < TARGET_S else 'MISSED'} "
              f"({t:.2f} s CPU, {w:.2f} s wall)")
    big = [n for n in sizes if n >= 100]
    if len(big) >= 2:
        lo, hi = big[0], big[-1]
        per_lo = rows[lo]["total"] / rows[lo]["lines"]
        per_hi = rows[hi]["total"] / rows[hi]["lines"]
        print(f"growth: time per line at N={hi} is {per_hi / per_lo:.2f}x that at N={lo} (1.00 = linear)")
    return 0


def profile(n: int, seed: int, top: int = 15) -> int:
    with tempfile.TemporaryDirectory() as d:
        root = write(generate(n, seed), Path(d) / "mesh")
        one_run(root)
        prof = cProfile.Profile()
        prof.enable()
        one_run(root)
        prof.disable()
    stats = pstats.Stats(prof)
    by_module: dict[str, float] = {}
    for (file, _line, _func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():
        by_module[_module(file)] = by_module.get(_module(file), 0.0) + tt
    total = sum(by_module.values())
    print(f"N={n}: {total:.3f} s profiled (self time, by module)")
    for mod, tt in sorted(by_module.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {tt:7.3f} s  {100 * tt / total:5.1f}%  {mod}")
    return 0


def _module(file: str) -> str:
    if file.startswith("~") or file.startswith("<"):
        return "(builtins)"
    p = Path(file)
    parts = p.parts
    for anchor in ("site-packages", "meshpolicy"):
        if anchor in parts:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            rest = parts[i + 1:] if anchor == "site-packages" else parts[i:]
            return "/".join(rest)
    return p.name


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated service counts")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", type=int, metavar="N", help="profile one size instead of printing the table")
    args = ap.parse_args(argv)
    if args.profile:
        return profile(args.profile, args.seed)
    return table([int(s) for s in args.sizes.split(",")], args.runs, args.seed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
