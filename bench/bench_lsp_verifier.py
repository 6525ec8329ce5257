"""An edit during a verification: `python bench/bench_lsp_verifier.py [--mesh 1000] [--edits 20] [--into 0.2]`.

What the language server does when an edit lands while the verifier runs,
without the editor and the pygls plumbing around it (bench/bench_lsp.py
measures those too, but on a shared machine its pauses let other jobs decide
what runs): the N-service bench mesh is analysed as the server does
(meshpolicy.lsp.meshes.analyse with a ParseCache), a verification of it is
started, `--into` seconds later an edit arrives and the edited text is
analysed on a worker thread (the server's check thread), and the time from
the edit to the analysis' end is measured (wall), with the analysis
thread's own CPU time. Where the verifier runs, taking turns per edit:

- `process`: a forked child (meshpolicy/lsp/verifier_process.py, what the
  server does), killed at the edit; the analysis waits for it to be gone,
  as the server's does;
- `thread`: a thread of the same process (the server before 2026-12-07),
  told at the edit that its run is stale; it stops at its next destination,
  holding the interpreter half the time until then;
- `none`: no verification (the floor).

`--no-wait-row` adds `process, no wait`: the analysis starts without
waiting for the killed child to be gone (its pages still shared).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gen import generate, write  # noqa: E402
from meshpolicy.lsp.meshes import Cancelled, ParseCache, analyse, verify  # noqa: E402
from meshpolicy.lsp.verifier_process import VerifierProcess  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]


async def one_edit(mode: str, a, root: str, key: str, text: str, cache: ParseCache, check: ThreadPoolExecutor,
                   verify_pool: ThreadPoolExecutor, into: float, generation: int) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    stale = threading.Event()
    child = job = None
    if mode.startswith("process"):
        child = VerifierProcess(lambda x: verify(x), a)
    elif mode == "thread":
        job = loop.run_in_executor(verify_pool, verify, a, stale.is_set)
    await asyncio.sleep(into)
    t0 = time.perf_counter()  # the edit
    if child is not None:
        child.cancel()
        if mode == "process":
            await asyncio.wait([child.future], timeout=0.1)
    stale.set()

    def analysis() -> float:
        c0 = time.thread_time()
        analyse(root, {key: text}, generation, cache)
        return time.thread_time() - c0

    cpu = await loop.run_in_executor(check, analysis)
    wall = time.perf_counter() - t0
    for pending in (child.future if child else None, job):
        if pending is not None:
            try:
                await pending
            except Cancelled:
                pass
    return wall * 1000, cpu * 1000


async def main_async(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = write(generate(args.mesh, seed=1), Path(tmp) / "mesh")
        root_s = str(Path(root).resolve())
        teams = sorted(p for p in Path(root_s).rglob("*.mesh") if "teams" in p.parts)
        path = teams[len(teams) // 2]
        key, original = str(path), path.read_text()
        lines = original.splitlines(keepends=True)
        allow = [i for i, ln in enumerate(lines) if ln.startswith("allow ") and " -> " in ln]
        cache = ParseCache()
        check = ThreadPoolExecutor(1)
        verify_pool = ThreadPoolExecutor(1)
        loop = asyncio.get_running_loop()
        a = await loop.run_in_executor(check, analyse, root_s, {}, 0, cache)
        assert a.checked.ok
        # As the server runs (server.py, serve): what lives long frozen, the
        # cyclic GC off. A collection here would also walk, and so write to,
        # every page the forked child shares.
        gc.collect()
        gc.freeze()
        gc.disable()
        t0 = time.process_time()
        verify(a)
        full = time.process_time() - t0
        print(f"Edit during a verification, {platform.python_implementation()} {platform.python_version()}, "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; the {args.mesh}-service "
              f"bench mesh; one verification {full:.2f} s of CPU; the edit {args.into * 1000:.0f} ms into it; "
              f"{args.edits} edits per row, rows taking turns\n")
        modes = ("process", "process, no wait", "thread", "none") if args.no_wait_row else ("process", "thread", "none")
        res: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
        for k in range(args.edits):
            for m in modes:
                i = allow[k % len(allow)]
                edited = "".join(lines[:i] + [lines[i].replace(" -> ", " -> x", 1)] + lines[i + 1:]) \
                    if k % 2 else original
                a = await loop.run_in_executor(check, analyse, root_s, {key: original}, 1, cache)
                res[m].append(await one_edit(m, a, root_s, key, edited, cache, check, verify_pool,
                                             args.into, 2))
        print("| verifier | edit -> analysed, wall p50 | wall p95 | wall max | analysis CPU p50 | CPU p95 |")
        print("|---|---|---|---|---|---|")
        for m in modes:
            walls = [w for w, _ in res[m]]
            cpus = [c for _, c in res[m]]
            print(f"| {m} | {statistics.median(walls):.0f} ms | {pct(walls, 95):.0f} ms | {max(walls):.0f} ms "
                  f"| {statistics.median(cpus):.0f} ms | {pct(cpus, 95):.0f} ms |")
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mesh", type=int, default=1000)
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--into", type=float, default=0.2, help="seconds from the verification's start to the edit")
    ap.add_argument("--no-wait-row", action="store_true",
                    help="also: the analysis starts at once, not after the killed child is gone")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
