"""Compile time and output size per target on generated meshes:
`python bench/bench_compile.py [--sizes 10 100 1000] [--runs R]`.

For each size N it generates the mesh from bench/gen.py, parses and checks
it once (not timed: bench_check.py measures that), then times what
`meshc compile` does after that for each target: lowering plus the target's
own validation of its output (`compile_mesh`). Times are CPU seconds of this
process, the median of `--runs` runs after a warm-up on a different small
mesh (imports, template and schema loading are not counted, per-mesh caches
start cold; the machine is shared, so wall time
mostly measures the neighbours). Sizes are bytes per output file (median
and p95); for the Envoy and meshproxy targets one file is one workload.
A target that is not there yet is skipped with a note. `--profile N TARGET`
prints where one compile spends its time instead of the table;
`--digests N` prints a digest per target of its files and findings on the
N-service mesh (compare them across a change meant to keep output
byte-identical).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
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
from meshpolicy.compile import TARGETS, CompileOptions, compile_mesh  # noqa: E402
from meshpolicy.diagnostics import has_errors  # noqa: E402
from meshpolicy.pipeline import check_project  # noqa: E402
from meshpolicy.project import load  # noqa: E402

SIZES = (10, 100, 1000)
TARGET_N, TARGET_S = 1000, 10.0  # all targets together


def checked_mesh(n: int, seed: int):
    with tempfile.TemporaryDirectory() as tmp:
        root = write(generate(n, seed), Path(tmp) / "mesh")
        checked = check_project(load([root]))
        settings = checked.project.config.get("compile", {})
    if not checked.ok:
        bad = [d for d in checked.diagnostics if d.is_error][:3]
        raise SystemExit(f"generated mesh of {n} services has errors: {[(d.code, d.message) for d in bad]}")
    return checked.mesh, settings


def available(target: str) -> str | None:
    """None when the target can be compiled to, else why not."""
    try:
        mod = importlib.import_module(f"meshpolicy.targets.{target}")
    except ImportError as exc:
        return f"not importable ({exc})"
    return None if hasattr(mod, "TARGET") else "no TARGET yet"


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (the targets
    check large outputs in a forked pool)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


WALL: dict[str, float] = {}  # wall seconds of the last compile per target


def compile_once(mesh, target: str, settings: dict) -> tuple[float, list, str]:
    """(CPU seconds, outputs, a note on errors: a target may refuse constructs it cannot express)."""
    options = CompileOptions(settings=settings.get(target, {}))
    t0, w0 = _cpu(), time.perf_counter()
    outputs, diags = compile_mesh(mesh, target, options)
    elapsed = _cpu() - t0
    WALL[target] = time.perf_counter() - w0
    note = ""
    if has_errors(diags):
        counts: dict[str, int] = {}
        for d in diags:
            if d.is_error:
                counts[d.code] = counts.get(d.code, 0) + 1
        note = "refused: " + ", ".join(f"{c} x{k}" for c, k in sorted(counts.items()))
        outputs = []
    return elapsed, outputs, note


def p95(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


def kib(b: float) -> str:
    return f"{b / 1024:.1f}" if b < 10 * 1024 * 1024 else f"{b / 1024:.0f}"


def table(sizes, runs: int, seed: int, targets: list[str]) -> int:
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs; CPU seconds (this process and its "
          f"workers) and wall seconds, median of {runs} run(s) after a warm-up on another mesh; sizes in KiB "
          "per output file")
    print()
    print("| services | target | workloads | CPU (s) | wall (s) | files | total size (KiB) | median file (KiB) "
          "| p95 file (KiB) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    totals: dict[int, float] = {}
    walls: dict[int, float] = {}
    notes: list[str] = []
    warm, wsettings = checked_mesh(10, seed + 1000)
    for target in targets:  # imports, templates, schemas: on another mesh, so its caches stay cold
        compile_once(warm, target, wsettings)
    for n in sizes:
        mesh, settings = checked_mesh(n, seed)
        workloads = sum(max(1, len({v.name for v in s.versions})) for s in mesh.service_map.values())
        for target in targets:
            times, wall_times, outputs, note = [], [], [], ""
            for _ in range(runs):
                t, outputs, note = compile_once(mesh, target, settings)
                times.append(t)
                wall_times.append(WALL[target])
            sizes_b = [len(o.content.encode("utf-8")) for o in outputs]
            secs = statistics.median(times)
            wall = statistics.median(wall_times)
            totals[n] = totals.get(n, 0.0) + secs
            walls[n] = walls.get(n, 0.0) + wall
            if note:
                notes.append(f"{target}, {n} services: {note} (time is lowering up to the refusal)")
                cells = "— | — | — | —"
            else:
                cells = (f"{len(outputs)} | {kib(sum(sizes_b))} | {kib(statistics.median(sizes_b))} "
                         f"| {kib(p95(sizes_b))}")
            print(f"| {n} | {target} | {workloads} | {secs:.3f} | {wall:.3f} | {cells} |", flush=True)
    print()
    for note in notes:
        print(f"note: {note}")
    for n, total in totals.items():
        print(f"all targets, {n} services: {total:.2f} s CPU, {walls[n]:.2f} s wall")
    if TARGET_N in walls:
        ok = walls[TARGET_N] < TARGET_S
        print(f"target: {TARGET_N} services to every target in under {TARGET_S:g} s (wall): "
              f"{'met' if ok else 'MISSED'} ({walls[TARGET_N]:.2f} s)")
    return 0


def profile(n: int, target: str, seed: int) -> int:
    mesh, settings = checked_mesh(n, seed)
    print(compile_once(mesh, target, settings)[2] or "compiled")
    prof = cProfile.Profile()
    prof.enable()
    compile_once(mesh, target, settings)
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    return 0


def digests(n: int, seed: int, targets: list[str]) -> int:
    """One SHA-256 per target over every output file (path and bytes) and
    every diagnostic (code, message, span): run it before and after a change
    that must not change output, and compare."""
    import hashlib

    mesh, settings = checked_mesh(n, seed)
    for target in targets:
        outputs, diags = compile_mesh(mesh, target, CompileOptions(settings=settings.get(target, {})))
        h = hashlib.sha256()
        for o in outputs:
            h.update(f"{o.path}\0{len(o.content)}\0".encode() + o.content.encode("utf-8"))
        for d in diags:  # the mesh is written to a fresh temporary folder: its name is left out
            where = (Path(d.span.file).name, d.span.line, d.span.col, d.span.end_line, d.span.end_col) if d.span else None
            h.update(repr((d.code, d.message, where)).encode())
        print(f"{target}: {len(outputs)} files, {len(diags)} diagnostics, sha256 {h.hexdigest()}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    ap.add_argument("--profile", nargs=2, metavar=("N", "TARGET"))
    ap.add_argument("--digests", type=int, metavar="N",
                    help="print a digest of each target's output and diagnostics on the N-service mesh "
                         "(compare before and after a change meant to keep output byte-identical)")
    args = ap.parse_args(argv)
    if args.profile:
        return profile(int(args.profile[0]), args.profile[1], args.seed)
    if args.digests:
        return digests(args.digests, args.seed, args.targets)
    targets = []
    for t in args.targets:
        why = available(t)
        if why:
            print(f"note: skipping target {t}: {why}")
        else:
            targets.append(t)
    return table(args.sizes, max(1, args.runs), args.seed, targets)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
