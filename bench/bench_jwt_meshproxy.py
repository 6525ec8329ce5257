"""What end-user token validation adds per request on meshproxy:
`python bench/bench_jwt_meshproxy.py [--seconds S] [--rounds R]`.

Two copies of one path, each a meshproxy ingress gateway -> mTLS -> the
callee's meshproxy sidecar -> nginx, compiled from a policy that differs
only in tokens:

- `jwt`: the gateway accepts a provider (a local RS256 JWKS) and the callee
  admits `internet with jwt scope has "bench"`, so each request's token is
  validated twice with PyJWT (at the gateway, then again at the callee) and
  its claims tested by the callee;
- `no jwt`: no provider, the callee admits `internet`; the requests carry
  the same `Authorization` header, unread.

wrk (`-t1 -cC`) drives both at 1 and 16 connections, interleaved and
repeated (`--rounds`); medians are printed. The added latency is p50(jwt) -
p50(no jwt); CPU per request is the two meshproxies' CPU over the requests
wrk completed. The proxies run on uvloop when it is installed (as
`meshc proxy` does). Only 127.0.0.1 is used; everything started is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_dataplane import NGINX_CONF, parse_wrk, tree_cpu  # noqa: E402
from meshpolicy.certs import issue  # noqa: E402
from meshpolicy.compile import CompileOptions, compile_mesh  # noqa: E402
from meshpolicy.pipeline import check_project  # noqa: E402
from meshpolicy.project import load  # noqa: E402

PORTS = {"jwt": 34500, "no jwt": 34600}
STRIDE = 10
CONNECTIONS = (1, 16)
ISSUER, AUDIENCE = "https://auth.bench.test/", "bench"

MESH = """mesh bench {{ trust_domain "bench.test"; mtls strict; default deny }}
{provider}
ingress edge {{
  namespace bench
  listen {listen} http
  hosts "bench.test"
  * -> server
}}
service server {{ namespace bench; port 8080 http }}
allow internet{jwt} -> server
"""


def keys(folder: Path) -> str:
    """Writes the JWKS; returns a token valid for an hour."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    (folder / "auth.jwks.json").write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-user", "scope": "read bench", "iat": now,
                       "exp": now + 3600}, key, algorithm="RS256", headers={"kid": "k1"})


def wait_ready(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        if proc.poll() is not None:
            raise SystemExit(f"meshproxy on admin port {port} exited")
        time.sleep(0.1)
    raise SystemExit(f"admin port {port}: not ready")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def start(stack: contextlib.ExitStack, name: str, folder: Path, jwks: Path) -> tuple[int, list[int]]:
    """One variant's gateway and callee sidecar, nginx as the callee's app:
    (the gateway's listener port, the proxies' pids)."""
    base = PORTS[name]
    folder.mkdir()
    shutil.copy(jwks, folder / "auth.jwks.json")
    listen = 8080  # as written; mesh-unique puts it in the gateway's port block (read back below)
    with_jwt = name == "jwt"
    provider = f'jwt auth {{ issuer "{ISSUER}"; audience "{AUDIENCE}"; jwks "auth.jwks.json" }}' if with_jwt else ""
    (folder / "bench.mesh").write_text(MESH.format(provider=provider, listen=listen,
                                                   jwt=' with jwt scope has "bench"' if with_jwt else ""))
    checked = check_project(load([folder / "bench.mesh"]))
    if not checked.ok:
        raise SystemExit(f"{name}: {[d.message for d in checked.diagnostics if d.is_error]}")
    issue(checked.mesh, folder / "certs")
    outputs, diags = compile_mesh(checked.mesh, "meshproxy", CompileOptions(
        certs_dir=str(folder / "certs"),
        settings={"ports": "mesh-unique", "port_base": base, "ports_per_workload": STRIDE}))
    errors = [d.message for d in diags if d.is_error]
    if errors:
        raise SystemExit(f"{name}: {errors}")
    (folder / "nginx-tmp").mkdir()
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=folder, port=base + 3))  # server is workload 0: app at base + 3
    procs = [subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(folder), "-e", "stderr",
                               "-c", str(conf)], stderr=subprocess.DEVNULL)]
    pids = []
    gateway = next(json.loads(o.content) for o in outputs if o.path == "bench/edge.json")
    listen = gateway["ingress"]["listeners"][0]["port"]
    for o in sorted(outputs, key=lambda o: o.path != "bench/server.json"):  # the server first
        p = folder / "out" / o.path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(o.content)
        proc = subprocess.Popen([sys.executable, "-m", "meshpolicy.proxy.main", "--config", str(p)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        pids.append(proc.pid)
    for proc in procs:
        stack.callback(_stop, proc)
    wait_ready(base + 2, procs[1])  # server: workload 0
    wait_ready(base + STRIDE + 2, procs[2])  # the gateway: the workload after the services
    return listen, pids


def run_wrk(port: int, connections: int, seconds: float, token: str) -> dict:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "5s",
            "-H", "Host: bench.test", "-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}/bench"]
    return parse_wrk(subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout)


def measure(seconds: float, rounds: int) -> None:
    if not shutil.which("wrk") or not shutil.which("nginx"):
        raise SystemExit("needs wrk and nginx")
    load0 = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    rows = tuple(PORTS)
    with tempfile.TemporaryDirectory(prefix="bench-jwt-mp-") as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        token = keys(tmp)
        targets = {name: start(stack, name, tmp / name.replace(" ", "-"), tmp / "auth.jwks.json") for name in rows}
        for name in rows:  # warm-up, and a check that both answer 200
            r = run_wrk(targets[name][0], 16, 1, token)
            if r["errors"]:
                raise SystemExit(f"{name}: {r['errors']} errors or non-2xx responses in the warm-up")
        results: dict[tuple[str, int], list[dict]] = {}
        for rnd in range(rounds):
            for c in CONNECTIONS:
                for name in (rows if rnd % 2 == 0 else rows[::-1]):
                    port, pids = targets[name]
                    cpu0 = sum(tree_cpu(p) for p in pids)
                    r = run_wrk(port, c, seconds, token)
                    r["cpu_us"] = (sum(tree_cpu(p) for p in pids) - cpu0) * 1e6 / max(1, r["requests"])
                    if r["errors"]:
                        raise SystemExit(f"{name}, {c} connections: {r['errors']} errors or non-2xx responses")
                    results.setdefault((name, c), []).append(r)
    load1 = os.getloadavg()
    try:
        import uvloop  # noqa: F401
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"

    def med(name, c, key):
        return statistics.median(r[key] for r in results[(name, c)])

    print(f"{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {platform.machine()}, load average "
          f"{load0[0]:.1f} at start, {load1[0]:.1f} at end; wrk -t1 {seconds:g}s per run, median of {rounds} "
          f"interleaved rounds; meshproxy ({loop}) gateway -> mTLS -> callee sidecar -> nginx, "
          "RS256 (2048-bit) token\n")
    print("| path | conns | p50 ms | p99 ms | req/s | meshproxy CPU us/req |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in rows:
        for c in CONNECTIONS:
            print(f"| {name} | {c} | {med(name, c, 'p50'):.3f} | {med(name, c, 'p99'):.3f} | "
                  f"{med(name, c, 'rps'):.0f} | {med(name, c, 'cpu_us'):.0f} |")
    print()
    for c in CONNECTIONS:
        print(f"{c} conn: token validation (gateway + callee) adds {med('jwt', c, 'p50') - med('no jwt', c, 'p50'):.3f}"
              f" ms p50, {med('jwt', c, 'cpu_us') - med('no jwt', c, 'cpu_us'):.0f} us CPU per request; "
              f"throughput {med('jwt', c, 'rps') / med('no jwt', c, 'rps'):.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0, help="wrk duration per run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    a = ap.parse_args()
    measure(a.seconds, a.rounds)


if __name__ == "__main__":
    main()
