"""Envoy data-plane settings of `meshc up`, measured with C tools:
`python bench/bench_envoy_settings.py [--seconds S] [--rounds R]`.

The same two-service mesh as bench/bench_dataplane.py (`client -> server`,
strict mTLS, nginx as the server's app, `wrk` as the client's app) is started
four times with `meshc up`'s machinery, one per combination of

- the hop between the sidecars: HTTP/2 (what meshc writes for an http
  service, docs/targets/envoy.md) or HTTP/1.1 (what it writes when the
  destination's `circuit` sets `max_connections`; here `max_connections 1024`,
  Envoy's own default, so the thresholds are the same in both);
- each Envoy's worker threads: `[up] envoy_concurrency` 1 or 2 (2 is Envoy's
  default on this 2-core machine, one per hardware thread).

With `--chain`, three services (`client -> mid -> server`): mid's app is
an nginx that forwards every request to mid's own outbound sidecar, so four
sidecars work on each request (several busy sidecars on one host, each with
its own workers).

Each pair is checked to speak the protocol it should (the client sidecar's
`upstream_cx_http1_total` / `upstream_cx_http2_total` for the server cluster)
and to run the workers it should (`/server_info`). Rows are interleaved, the
order alternating every round, and medians printed with ratios to the
h1/1-worker pair measured in the same rounds, since the machine is shared.
Sidecar CPU per request is both sidecars' user+system CPU over the requests
wrk completed. Everything started is stopped on exit; only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dataplane import NGINX_CONF, PAIR, nginx_app, parse_wrk, rss_mib, tree_cpu  # noqa: E402

from meshpolicy.pipeline import check_project  # noqa: E402
from meshpolicy.project import from_texts  # noqa: E402
from meshpolicy.run import up  # noqa: E402
from meshpolicy.run.supervisor import Supervisor  # noqa: E402

# Port blocks away from bench_dataplane's (33100-33400), meshc up's default and the tests'.
BASE = 34100
CONNECTIONS = (1, 16, 64)
# (label, hop protocol, workers per Envoy)
VARIANTS = (("h1-w1", "http1", 1), ("h1-w2", "http1", 2), ("h2-w1", "http2", 1), ("h2-w2", "http2", 2))
# A connection limit keeps the hop on HTTP/1.1 (semantics/multiplexing.py); 1024 is Envoy's default.
H1_CIRCUIT = "; circuit max_connections 1024 }"
CHAIN = """
mesh bench { trust_domain "bench.test"; mtls strict; default deny; metrics on }
service client { namespace bench; account client; port 8080 http }
service mid { namespace bench; account mid; port 8080 http }
service server { namespace bench; account server; port 8080 http }
allow client -> mid
allow mid -> server
"""
# mid's app: nginx forwarding to mid's outbound sidecar (kept-alive connections), as `server`.
FORWARD = NGINX_CONF.replace(
    'location / {{ default_type text/plain; return 200 "ok\\n"; }}',
    'location / {{ proxy_pass http://out; proxy_http_version 1.1; '
    'proxy_set_header Connection ""; proxy_set_header Host server; }}').replace(
    "    server {{\n", "    upstream out {{ server 127.0.0.1:{outbound}; keepalive 64; }}\n    server {{\n")


def pair_mesh(protocol: str, text: str = PAIR):
    if protocol == "http1":  # every destination: client's and mid's
        text = "\n".join(ln[:-2] + H1_CIRCUIT if ln.startswith(("service server ", "service mid ")) else ln
                         for ln in text.splitlines())
    return check_project(from_texts({"pair.mesh": text})).mesh


def forward_app(tmp: Path, port: int, outbound: int) -> dict:
    (tmp / "nginx-tmp").mkdir(exist_ok=True)
    conf = tmp / f"nginx-fwd-{port}.conf"
    conf.write_text(FORWARD.format(tmp=tmp, port=port, outbound=outbound))
    return {"command": [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(tmp), "-e", "stderr", "-c", str(conf)]}


def run_wrk(port: int, connections: int, seconds: float, host: str = "server") -> dict:
    """bench_dataplane's wrk run, to a given destination (its Host header)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "5s",
            "-H", f"Host: {host}", f"http://127.0.0.1:{port}/bench"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    return parse_wrk(out)


def admin_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def start_variant(stack: contextlib.ExitStack, protocol: str, workers: int, base: int, tmp: Path,
                  chain: bool = False) -> dict:
    """One meshc up run of the pair (or chain): wrk's port, the sidecars' pids
    and the client sidecar's admin port."""
    mesh = pair_mesh(protocol, CHAIN if chain else PAIR)
    err = None
    for attempt in range(5):  # a busy port block (shared machine) moves the pair up
        work = tmp / f"up-{base}-{attempt}"
        work.mkdir()
        config = {"compile": {"envoy": {"port_base": base + 1000 * attempt}},
                  "up": {"xds": False, "envoy_concurrency": workers}}
        plan, diags = up.prepare(mesh, config, "envoy", work)
        if plan is None:
            raise SystemExit(f"{protocol}/{workers}: {[str(d) for d in diags]}")
        server = next(w for w in plan.workloads if w.service == "server")
        client = next(w for w in plan.workloads if w.service == "client")
        sup = stack.enter_context(Supervisor(work / "logs"))
        apps = {"server": nginx_app(tmp, server.app_port)}
        if chain:
            mid = next(w for w in plan.workloads if w.service == "mid")
            apps["mid"] = forward_app(tmp, mid.app_port, mid.outbound_port)
        try:
            up.start(plan, sup, apps)
        except up.UpError as exc:
            err = exc
            continue
        pending = up.wait_ready(plan, sup)
        if pending:
            raise SystemExit(f"{protocol}/{workers}: not ready: {pending}\n"
                             + "\n".join(p.tail() for p in sup.crashed()))
        pids = [p.pid for n, p in sup.procs.items() if n.startswith("sidecar:")]
        return {"port": client.outbound_port, "pids": pids, "admin": client.admin_port,
                "admins": [w.admin_port for w in plan.workloads],
                "first": "mid" if chain else "server"}
    raise SystemExit(f"{protocol}/{workers}: {err}")


def check_variant(name: str, v: dict, protocol: str, workers: int) -> None:
    """The pair runs what its row says: the hop's protocol and each Envoy's workers."""
    dest = v["first"]
    stats = admin_get(v["admin"], f"/stats?filter=^cluster\\.{dest}\\.upstream_cx_http")
    counts = {k: int(n) for k, n in re.findall(rf"cluster\.{dest}\.upstream_cx_(http[12])_total: (\d+)", stats)}
    other = "http1" if protocol == "http2" else "http2"
    if not counts.get(protocol) or counts.get(other):
        raise SystemExit(f"{name}: expected {protocol} between the sidecars, stats say {counts}")
    for port in v["admins"]:
        info = json.loads(admin_get(port, "/server_info"))
        got = info["command_line_options"]["concurrency"]
        if got != workers:
            raise SystemExit(f"{name}: expected {workers} workers, /server_info says {got}")


def measure(seconds: float, rounds: int, chain: bool = False) -> None:
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found (Debian: apt-get install wrk)")
    load0 = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    results: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-envoy-settings-") as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        pairs = {name: start_variant(stack, proto, workers, BASE + 100 * i, tmp, chain)
                 for i, (name, proto, workers) in enumerate(VARIANTS)}
        names = [name for name, _, _ in VARIANTS]
        for name in names:  # warm-up: connections, TLS sessions, caches
            warm = run_wrk(pairs[name]["port"], 16, 1, pairs[name]["first"])
            if warm["errors"]:
                raise SystemExit(f"{name}: {warm['errors']} errors or non-2xx responses while warming up")
        for name, proto, workers in VARIANTS:
            check_variant(name, pairs[name], proto, workers)
        loads = [os.getloadavg()[0]]
        for rnd in range(rounds):
            for c in CONNECTIONS:
                for name in (names if rnd % 2 == 0 else names[::-1]):  # interleaved, order alternating
                    v = pairs[name]
                    cpu0 = sum(tree_cpu(p) for p in v["pids"])
                    r = run_wrk(v["port"], c, seconds, v["first"])
                    r["cpu_us"] = (sum(tree_cpu(p) for p in v["pids"]) - cpu0) * 1e6 / max(1, r["requests"])
                    if r["errors"]:
                        raise SystemExit(f"{name}, {c} connections: {r['errors']} errors or non-2xx responses")
                    results.setdefault((name, c), []).append(r)
            loads.append(os.getloadavg()[0])
        rss = {name: sum(rss_mib(p) for p in pairs[name]["pids"]) for name in names}
    load1 = os.getloadavg()

    def med(name, c, key):
        return statistics.median(r[key] for r in results[(name, c)])

    print(f"{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {platform.machine()}, Python "
          f"{platform.python_version()}, load average {load0[0]:.1f} at start, {load1[0]:.1f} at end "
          f"(1-min, per round: {', '.join(f'{x:.1f}' for x in loads)}); wrk -t1 -d{seconds:g}s per run, "
          f"median of {rounds} interleaved rounds; "
          f"{'chain client -> mid -> server (4 sidecars)' if chain else 'pair client -> server (2 sidecars)'}\n")
    print("| hop | workers | conns | p50 ms | p99 ms | req/s | req/s vs h1, 1 worker | p50 vs h1, 1 worker "
          "| sidecars' CPU us/req | sidecars' RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in CONNECTIONS:
        for name, proto, workers in VARIANTS:
            p50, p99, rps = med(name, c, "p50"), med(name, c, "p99"), med(name, c, "rps")
            print(f"| {'HTTP/2' if proto == 'http2' else 'HTTP/1.1'} | {workers} | {c} | {p50:.3f} | {p99:.3f} "
                  f"| {rps:.0f} | {rps / med('h1-w1', c, 'rps'):.2f}x | {p50 / med('h1-w1', c, 'p50'):.2f}x "
                  f"| {med(name, c, 'cpu_us'):.0f} | {rss[name]:.0f} |")
    print()
    # Ratios of the same rounds: each round's pair of runs, then the median of those ratios.
    for c in CONNECTIONS:
        def ratio(a, b, key="rps"):
            return statistics.median(x[key] / y[key] for x, y in zip(results[(a, c)], results[(b, c)]))
        print(f"{c} conns, per-round req/s ratios (median): h2/h1 at 1 worker {ratio('h2-w1', 'h1-w1'):.2f}x, "
              f"at 2 workers {ratio('h2-w2', 'h1-w2'):.2f}x; 1 worker/2 workers with h2 "
              f"{ratio('h2-w1', 'h2-w2'):.2f}x, with h1 {ratio('h1-w1', 'h1-w2'):.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0, help="wrk duration per run")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are printed")
    ap.add_argument("--chain", action="store_true", help="client -> mid -> server: four sidecars per request")
    a = ap.parse_args()
    measure(a.seconds, a.rounds, a.chain)


if __name__ == "__main__":
    main()
