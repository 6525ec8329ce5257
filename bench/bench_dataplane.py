"""Data-plane costs: `python bench/bench_dataplane.py [--requests N] [--seconds S] [--skip-memory]`.

1. Added latency per hop and throughput on loopback, with a bounded load
   generator (aiohttp, keep-alive): direct to the echo app, through a pair of
   Envoy sidecars compiled by meshc, and through a pair of meshproxy sidecars.
   Latency: N sequential requests, p50 and p99; throughput: 16 concurrent
   clients for S seconds. "Added per hop" is the pair's p50 minus direct.
2. Sidecar memory (RSS after start-up) and config size for one workload of
   the 1000-service bench mesh: Envoy with meshc's scoped bootstrap vs the
   same Envoy with an unscoped bootstrap listing every service.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import ClientSession, TCPConnector  # noqa: E402

from meshpolicy.project import from_texts  # noqa: E402
from meshpolicy.pipeline import check_project  # noqa: E402
from meshpolicy.run import up  # noqa: E402
from meshpolicy.run.supervisor import Supervisor  # noqa: E402

PAIR = """
mesh bench { trust_domain "bench.test"; mtls strict; default deny; metrics on }
service client { namespace bench; account client; port 8080 http }
service server { namespace bench; account server; port 8080 http }
allow client -> server
"""


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


async def latency(url: str, host: str, n: int) -> list[float]:
    out = []
    async with ClientSession(connector=TCPConnector(limit=1)) as s:
        for _ in range(20):  # warm up connections
            async with s.get(url, headers={"Host": host}) as r:
                await r.read()
        for _ in range(n):
            t = time.perf_counter()
            async with s.get(url, headers={"Host": host}) as r:
                await r.read()
                assert r.status == 200, r.status
            out.append((time.perf_counter() - t) * 1000)
    return out


async def throughput(url: str, host: str, seconds: float, clients: int = 16) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(s):
        nonlocal done
        while time.perf_counter() < stop:
            async with s.get(url, headers={"Host": host}) as r:
                await r.read()
                if r.status == 200:
                    done += 1

    async with ClientSession(connector=TCPConnector(limit=clients)) as s:
        t = time.perf_counter()
        await asyncio.gather(*(worker(s) for _ in range(clients)))
        return done / (time.perf_counter() - t)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def hop_table(requests: int, seconds: float) -> None:
    checked = check_project(from_texts({"pair.mesh": PAIR}))
    rows = []
    for proxy in ("direct", "envoy", "meshproxy"):
        with tempfile.TemporaryDirectory() as tmp:
            plan, diags = up.prepare(checked.mesh, {"compile": {p: {"port_base": 23000} for p in ("envoy", "meshproxy")}},
                                     "meshproxy" if proxy == "direct" else proxy, Path(tmp))
            assert plan is not None, diags
            with Supervisor(Path(tmp) / "logs") as sup:
                up.start(plan, sup, {})
                assert not up.wait_ready(plan, sup), [p.tail() for p in sup.crashed()]
                server = next(w for w in plan.workloads if w.service == "server")
                client = next(w for w in plan.workloads if w.service == "client")
                if proxy == "direct":
                    url = f"http://127.0.0.1:{server.app_port}/bench"
                else:
                    url = f"http://127.0.0.1:{client.outbound_port}/bench"
                lat = asyncio.run(latency(url, "server", requests))
                rps = asyncio.run(throughput(url, "server", seconds))
                pids = [p.pid for n, p in sup.procs.items() if n.startswith("sidecar:")]
                mem = statistics.median(rss_kb(p) for p in pids) / 1024 if proxy != "direct" else 0.0
                rows.append((proxy, statistics.median(lat), pct(lat, 0.99), rps, mem))
    base = rows[0][1]
    print(f"| path | p50 ms | p99 ms | added p50 per hop ms | throughput req/s (16 clients) | sidecar RSS MiB |")
    print("|---|---|---|---|---|---|")
    for name, p50, p99, rps, mem in rows:
        added = "-" if name == "direct" else f"{p50 - base:.2f}"
        label = {"direct": "direct to the app", "envoy": "Envoy sidecar pair", "meshproxy": "meshproxy sidecar pair"}[name]
        print(f"| {label} | {p50:.2f} | {p99:.2f} | {added} | {rps:.0f} | {mem:.0f} |" if name != "direct"
              else f"| {label} | {p50:.2f} | {p99:.2f} | {added} | {rps:.0f} | - |")


def memory_table() -> None:
    from bench.gen import generate
    from meshpolicy.certs import issue
    from meshpolicy.compile import CompileOptions
    from meshpolicy.targets.envoy import render
    from meshpolicy.targets.envoy.bootstrap import bootstrap, tcp_destinations
    from meshpolicy.targets.envoy.context import Ctx
    from meshpolicy.targets.envoy.conventions import settings_from, workloads
    from meshpolicy.targets.envoy.scope import callable_services

    files = generate(1000, 1)
    mesh = check_project(from_texts({k: v for k, v in files.items() if k.endswith(".mesh")})).mesh
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp) / "certs"
        issue(mesh, certs)
        options = CompileOptions(certs_dir=str(certs))
        ws = workloads(mesh)
        settings, _ = settings_from({})
        ctx = Ctx(mesh, options, settings)
        max_tcp = max(len(tcp_destinations(ctx, w.service)) for w in ws)
        settings, _ = settings_from({"ports_per_workload": max(10, 4 + max_tcp), "port_base": 2000,
                                     "zipkin_collector": "127.0.0.1:9411"})
        ctx = Ctx(mesh, options, settings)
        index = {w.cluster: w for w in ws}
        by_calls = sorted(ws, key=lambda w: len(callable_services(mesh, w.service)))
        w = by_calls[len(by_calls) // 2]  # a typical workload: the median number of callees
        print(f"\nworkload `{w.path}` of the 1000-service bench mesh, which may call "
              f"{len(callable_services(mesh, w.service))} services\n")
        print("| bootstrap | size KiB | clusters | Envoy RSS MiB |")
        print("|---|---|---|---|")
        out = {}
        for label, scoped in (("scoped (meshc)", True), ("unscoped (every service)", False)):
            cfg = bootstrap(ctx, w, index, scoped)
            text = render(cfg, w)
            path = Path(tmp) / f"{'scoped' if scoped else 'unscoped'}.yaml"
            path.write_text(text)
            with Supervisor(Path(tmp) / "logs") as sup:
                p = sup.start(label, [up.envoy_binary(), "-c", str(path), "--base-id", str(41000 + scoped),
                                      "--log-level", "error"])
                admin = cfg["admin"]["address"]["socket_address"]["port_value"]
                import urllib.request

                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1)
                        break
                    except OSError:
                        if not p.alive():
                            raise SystemExit(p.tail())
                        time.sleep(0.2)
                time.sleep(1.0)
                mem = rss_kb(p.pid) / 1024
            out[label] = (len(text.encode()) / 1024, len(cfg["static_resources"]["clusters"]), mem)
            print(f"| {label} | {out[label][0]:.0f} | {out[label][1]} | {mem:.0f} |")
        (s_kb, _, s_mem), (u_kb, _, u_mem) = out.values()
        print(f"\nunscoped / scoped: config {u_kb / s_kb:.1f}x, RSS {u_mem / s_mem:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--skip-memory", action="store_true")
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}\n")
    hop_table(a.requests, a.seconds)
    if not a.skip_memory:
        memory_table()


if __name__ == "__main__":
    main()
