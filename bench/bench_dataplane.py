"""Data-plane costs, measured with C tools: `python bench/bench_dataplane.py [--seconds S] [--rounds R]`.

The load generator is `wrk` (C, Debian's /usr/bin/wrk, `--latency`) and the
upstream is nginx (C, a config of our own in a temp dir, `daemon off`,
loopback ports), so what is measured is the sidecars, not a Python load
generator or the Python echo app. A two-service mesh (`client -> server`,
strict mTLS) is started with `meshc up`'s machinery (certificates from
`meshc certs`, i.e. meshpolicy.certs.issue) with nginx as the server's app:

- direct to nginx, and direct to meshc's echo app (the client's app);
- meshc's Envoy sidecar pair (client outbound -> mTLS -> server inbound -> nginx);
- a minimal hand-written Envoy mTLS pair, the floor: listener -> cluster
  (TLS, client certificate) -> listener (TLS, client certificate required)
  -> nginx, nothing else (no RBAC, stats sinks, retries or access logs);
- meshproxy's pair on uvloop (what `pip install "meshpolicy[proxy]"` gives)
  and on the standard asyncio loop.

`--app echo` puts meshc's echo app (Python) behind every pair instead of
nginx, as a Python upstream makes the pairs' share of the time smaller
(added latency is then against direct-to-echo).

Every row runs at 1 and 16 connections (`wrk -t1 -cC -dS`); rows are
interleaved and repeated (`--rounds`, default 3) and medians printed, since
on a shared machine neighbours move any single run. Added latency per pair
is the pair's p50 minus direct-to-nginx's p50 (every pair fronts the same
nginx). Sidecar CPU per request is the pair's user+system CPU
(/proc/<pid>/stat, children included) over the requests wrk completed.
Everything started is stopped on exit; only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshpolicy.pipeline import check_project  # noqa: E402
from meshpolicy.project import from_texts  # noqa: E402
from meshpolicy.run import up  # noqa: E402
from meshpolicy.run.supervisor import Supervisor  # noqa: E402

PAIR = """
mesh bench { trust_domain "bench.test"; mtls strict; default deny; metrics on }
service client { namespace bench; account client; port 8080 http }
service server { namespace bench; account server; port 8080 http }
allow client -> server
"""

# Port blocks, away from meshc up's default and the test suite's.
PORTS = {"envoy": 33100, "meshproxy": 33200, "meshproxy-asyncio": 33300, "floor": 33400}
CONNECTIONS = (1, 16)
ROWS = ("nginx", "echo", "envoy", "floor", "meshproxy", "meshproxy-asyncio")
LABELS = {
    "nginx": "direct to nginx",
    "echo": "direct to meshc's echo app (Python)",
    "envoy": "meshc's Envoy pair -> nginx",
    "floor": "minimal Envoy mTLS pair -> nginx (floor)",
    "meshproxy": "meshproxy pair (uvloop) -> nginx",
    "meshproxy-asyncio": "meshproxy pair (asyncio loop) -> nginx",
}

NGINX_CONF = """daemon off;
worker_processes 1;
pid {tmp}/nginx-{port}.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/nginx-tmp;
    proxy_temp_path {tmp}/nginx-tmp;
    fastcgi_temp_path {tmp}/nginx-tmp;
    uwsgi_temp_path {tmp}/nginx-tmp;
    scgi_temp_path {tmp}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
"""


# --- wrk -------------------------------------------------------------------

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_wrk(out: str) -> dict:
    """p50/p99 (ms), requests/s, requests and errors from `wrk --latency` output."""
    pcts = {int(q): _ms(v) for q, v in re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M)}
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)\s*$", out, re.M)
    total = re.search(r"^\s+(\d+) requests in ", out, re.M)
    if 50 not in pcts or 99 not in pcts or not rps or not total:
        raise ValueError("unreadable wrk output:\n" + out)
    bad = re.search(r"^\s+Non-2xx or 3xx responses:\s+(\d+)\s*$", out, re.M)
    sock = re.search(r"^\s+Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$", out, re.M)
    errors = (int(bad.group(1)) if bad else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    return {"p50": pcts[50], "p99": pcts[99], "rps": float(rps.group(1)), "requests": int(total.group(1)),
            "errors": errors}


def run_wrk(port: int, connections: int, seconds: float) -> dict:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "5s",
            "-H", "Host: server", f"http://127.0.0.1:{port}/bench"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    return parse_wrk(out)


# --- processes ---------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its waited-for children (Envoy and nginx
    do their work in threads / a worker process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU of a process plus its live children (nginx's worker, say)."""
    total = cpu_seconds(pid)
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                total += tree_cpu(int(child))
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_http(url: str, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if not proc.alive():
            raise SystemExit(f"{url}: process exited\n{proc.tail()}")
        time.sleep(0.1)
    raise SystemExit(f"{url}: not ready after {timeout:.0f} s")


def nginx_app(tmp: Path, port: int) -> dict:
    """`[up.apps.server]` running nginx on the server's app port."""
    (tmp / "nginx-tmp").mkdir(exist_ok=True)
    conf = tmp / f"nginx-{port}.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return {"command": [nginx, "-p", str(tmp), "-e", "stderr", "-c", str(conf)]}


def no_uvloop_argv(plan, w) -> list[str]:
    """meshproxy on the standard asyncio loop: uvloop made unimportable, so
    meshproxy.main's optional `import uvloop` falls back."""
    code = ("import sys; sys.modules['uvloop'] = None; from pathlib import Path; "
            "from meshpolicy.proxy.main import run; sys.exit(run(Path(sys.argv[1])))")
    return [sys.executable, "-c", code, str(w.config)]


def start_pair(stack: contextlib.ExitStack, mesh, proxy: str, base: int, tmp: Path, argv=None, app: str = "nginx"):
    """One meshc up run of PAIR with nginx as the server's app: (client
    outbound port, server app port, client app port, sidecar pids)."""
    work = tmp / f"up-{base}"
    work.mkdir()
    # Ports are checked free just before start; the machine is shared, so a
    # busy block moves the pair up rather than failing the run.
    for attempt in range(5):
        try:
            return _start_pair(stack, mesh, proxy, base + 1000 * attempt, tmp, work / str(attempt), argv, app)
        except up.UpError as exc:
            err = exc
    raise SystemExit(f"{proxy}: {err}")


def _start_pair(stack, mesh, proxy, base, tmp, work, argv, app):
    work.mkdir()
    config = {"compile": {proxy: {"port_base": base}}, "up": {"xds": False}}
    plan, diags = up.prepare(mesh, config, proxy, work)
    if plan is None:
        raise SystemExit(f"{proxy}: {[str(d) for d in diags]}")
    server = next(w for w in plan.workloads if w.service == "server")
    client = next(w for w in plan.workloads if w.service == "client")
    sup = stack.enter_context(Supervisor(work / "logs"))
    apps = {"server": nginx_app(tmp, server.app_port)} if app == "nginx" else {}  # {}: the echo app
    if argv is None:
        up.start(plan, sup, apps)
    else:  # the same start, with another sidecar command
        real = up.sidecar_argv
        up.sidecar_argv = argv
        try:
            up.start(plan, sup, apps)
        finally:
            up.sidecar_argv = real
    pending = up.wait_ready(plan, sup)
    if pending:
        raise SystemExit(f"{proxy}: not ready: {pending}\n" + "\n".join(p.tail() for p in sup.crashed()))
    pids = [p.pid for n, p in sup.procs.items() if n.startswith("sidecar:")]
    return client.outbound_port, server.app_port, client.app_port, pids, work


def _tls(certs: Path, account: str) -> dict:
    d = certs / "bench" / account
    return {"tls_certificates": [{"certificate_chain": {"filename": str(d / "cert.pem")},
                                  "private_key": {"filename": str(d / "key.pem")}}],
            "validation_context": {"trusted_ca": {"filename": str(certs / "ca.pem")}}}


def _hcm(prefix: str, cluster: str) -> dict:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": prefix,
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}


def _cluster(name: str, port: int, tls: dict | None = None) -> dict:
    c = {"name": name, "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}
    if tls is not None:
        c["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": tls}}
    return c


def floor_configs(certs: Path, base: int, upstream: int) -> tuple[dict, dict]:
    """The hand-written pair: client listener base -> mTLS -> server listener
    base+1 -> nginx; admin on base+2 and base+3."""

    def admin(port):
        return {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}

    def listener(name, port, hcm, tls=None):
        chain = {"filters": [hcm]}
        if tls is not None:
            chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": True, "common_tls_context": tls}}
        return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [chain]}

    client = {"admin": admin(base + 2), "static_resources": {
        "listeners": [listener("outbound", base, _hcm("outbound", "peer"))],
        "clusters": [_cluster("peer", base + 1, _tls(certs, "client"))]}}
    server = {"admin": admin(base + 3), "static_resources": {
        "listeners": [listener("inbound", base + 1, _hcm("inbound", "app"), _tls(certs, "server"))],
        "clusters": [_cluster("app", upstream)]}}
    return client, server


def free_block(base: int, n: int = 4) -> int:
    """The first of base, base+1000, ... whose n ports can be bound now (the
    machine is shared: another bench may hold the first block)."""
    import socket

    for start in range(base, base + 5000, 1000):
        socks = []
        try:
            for port in range(start, start + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SystemExit(f"no free block of {n} ports from {base}")


def start_floor(stack: contextlib.ExitStack, certs: Path, base: int, upstream: int, tmp: Path) -> list[int]:
    sup = stack.enter_context(Supervisor(tmp / "floor-logs"))
    pids = []
    for role, cfg in zip(("client", "server"), floor_configs(certs, base, upstream)):
        path = tmp / f"floor-{role}.json"
        path.write_text(json.dumps(cfg))
        p = sup.start(f"floor:{role}", [up.envoy_binary() or "envoy", "-c", str(path), "--use-dynamic-base-id",
                                        "--base-id-path", str(tmp / f"floor-{role}.base-id"), "--log-level", "warn"])
        wait_http(f"http://127.0.0.1:{cfg['admin']['address']['socket_address']['port_value']}/ready", p)
        pids.append(p.pid)
    return pids


# --- the table -----------------------------------------------------------------


def measure(seconds: float, rounds: int, app: str = "nginx") -> None:
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found (Debian: apt-get install wrk)")
    uvloop = importlib.util.find_spec("uvloop") is not None
    rows = [r for r in ROWS if uvloop or r != "meshproxy"]
    load0 = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    mesh = check_project(from_texts({"pair.mesh": PAIR})).mesh
    with tempfile.TemporaryDirectory(prefix="bench-dataplane-") as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        targets: dict[str, tuple[int, list[int]]] = {}
        out, server_app, client_app, pids, work = start_pair(stack, mesh, "envoy", PORTS["envoy"], tmp, app=app)
        targets["envoy"] = (out, pids)
        nginx_port = server_app
        if app == "echo":  # nginx alone, for the direct row; the pairs front the server's echo app
            nginx_port = free_block(PORTS["envoy"] + 90, 1)
            (tmp / "direct").mkdir()
            stack.enter_context(Supervisor(tmp / "direct")).start("nginx", nginx_app(tmp / "direct", nginx_port)["command"])
            time.sleep(0.5)
        targets["nginx"] = (nginx_port, [])
        targets["echo"] = (server_app if app == "echo" else client_app, [])
        floor = free_block(PORTS["floor"])
        targets["floor"] = (floor, start_floor(stack, work / "certs", floor, server_app, tmp))
        if uvloop:
            out, _, _, pids, _ = start_pair(stack, mesh, "meshproxy", PORTS["meshproxy"], tmp, app=app)
            targets["meshproxy"] = (out, pids)
        out, _, _, pids, _ = start_pair(stack, mesh, "meshproxy", PORTS["meshproxy-asyncio"], tmp, no_uvloop_argv,
                                        app=app)
        targets["meshproxy-asyncio"] = (out, pids)

        results: dict[tuple[str, int], list[dict]] = {}
        for row in rows:  # warm-up: connections, TLS sessions, caches
            run_wrk(targets[row][0], 16, 1)
        for rnd in range(rounds):
            for c in CONNECTIONS:
                for row in (rows if rnd % 2 == 0 else rows[::-1]):  # interleaved, order alternating
                    port, spids = targets[row]
                    cpu0 = sum(tree_cpu(p) for p in spids)
                    r = run_wrk(port, c, seconds)
                    r["cpu_us"] = (sum(tree_cpu(p) for p in spids) - cpu0) * 1e6 / max(1, r["requests"])
                    if r["errors"]:
                        raise SystemExit(f"{row}, {c} connections: {r['errors']} errors or non-2xx responses")
                    results.setdefault((row, c), []).append(r)
        rss = {row: statistics.median(rss_mib(p) for p in spids) for row, (_, spids) in targets.items() if spids}
    load1 = os.getloadavg()

    upstream = "nginx" if app == "nginx" else "echo"  # what every pair fronts; added p50 is against it
    label = "nginx" if app == "nginx" else "the echo app"

    def med(row, c, key):
        return statistics.median(r[key] for r in results[(row, c)])

    print(f"{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {platform.machine()}, Python "
          f"{platform.python_version()}, load average {load0[0]:.1f} at start, {load1[0]:.1f} at end; "
          f"wrk -t1 -dS {seconds:g}s per run, median of {rounds} interleaved rounds; "
          f"{'uvloop ' + __import__('uvloop').__version__ if uvloop else 'uvloop not installed (no uvloop row)'}; "
          f"pairs in front of {label}\n")
    print("| path | conns | p50 ms | p99 ms | added p50 ms | req/s | sidecar CPU us/req | sidecar RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        for c in CONNECTIONS:
            p50, p99, rps = med(row, c, "p50"), med(row, c, "p99"), med(row, c, "rps")
            pair = row not in ("nginx", "echo")
            added = f"{p50 - med(upstream, c, 'p50'):.3f}" if pair else "-"
            cpu = f"{med(row, c, 'cpu_us'):.0f}" if pair else "-"
            mem = f"{rss[row]:.0f}" if pair else "-"
            print(f"| {LABELS[row].replace('-> nginx', '-> ' + label)} | {c} | {p50:.3f} | {p99:.3f} | {added} | {rps:.0f} | {cpu} | {mem} |")
    print()
    for c in CONNECTIONS:
        base = med(upstream, c, "p50")
        e_added, f_added = med("envoy", c, "p50") - base, med("floor", c, "p50") - base
        line = (f"{c} conn: meshc Envoy pair adds {e_added:.3f} ms, floor {f_added:.3f} ms "
                f"(meshc/floor {e_added / f_added:.2f}x)" if f_added > 0 else
                f"{c} conn: meshc Envoy pair adds {e_added:.3f} ms, floor {f_added:.3f} ms")
        for mp in ("meshproxy", "meshproxy-asyncio"):
            if mp in rows:
                m_added = med(mp, c, "p50") - base
                line += (f"; {mp}/Envoy: added p50 {m_added / e_added:.1f}x, "
                         f"throughput {med(mp, c, 'rps') / med('envoy', c, 'rps'):.2f}x, "
                         f"CPU/req {med(mp, c, 'cpu_us') / med('envoy', c, 'cpu_us'):.1f}x")
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0, help="wrk duration per run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    ap.add_argument("--port-offset", type=int, default=0,
                    help="move every port block by this much (another run holds the default ones)")
    ap.add_argument("--app", choices=("nginx", "echo"), default="nginx",
                    help="the server's app behind every pair: nginx (C) or meshc's echo app (Python)")
    a = ap.parse_args()
    for k in PORTS:
        PORTS[k] += a.port_offset
    measure(a.seconds, a.rounds, a.app)


if __name__ == "__main__":
    main()
