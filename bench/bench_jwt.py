"""What end-user token validation adds per request on the Envoy target:
`python bench/bench_jwt.py [--seconds S] [--rounds R]`.

Two copies of one path, each an ingress gateway (meshc's bootstrap) ->
mTLS -> the callee's sidecar -> nginx, differing only in tokens:

- `jwt`: the gateway accepts a provider (a local RS256 JWKS) and the callee
  admits `internet with jwt scope has "bench"`, so each request's token is
  validated twice (at the gateway, then again at the callee) and its claims
  tested by the callee's RBAC;
- `jwt, no cache`: the same with jwt_authn's cache of verified tokens taken
  out of both bootstraps, so every request pays for two RS256 signature
  checks: what requests with distinct tokens cost (the `jwt` row sends one
  token over and over, the best case for the cache);
- `no jwt`: no provider, the callee admits `internet`; the requests carry
  the same `Authorization` header, unread.

wrk (`-t1 -cC`, C) drives both at 1 and 16 connections, interleaved and
repeated (`--rounds`); medians are printed. The added latency is p50(jwt) -
p50(no jwt); CPU per request is the two Envoys' user+system CPU over the
requests wrk completed. nginx (bench_dataplane's config) is the app. Only
127.0.0.1 is used, and everything started is stopped on exit.
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
from meshpolicy.model.types import (AuthRule, ClaimTest, Forward, Ingress, JwtProvider, JwtRequirement,  # noqa: E402
                                    Listener, Match, Mesh, Ref, RouteRule, Source, WeightedVersion)
from meshpolicy.pipeline import check_project  # noqa: E402
from meshpolicy.project import from_texts  # noqa: E402

BASE = """mesh bench { trust_domain "bench.test"; mtls strict; default deny }
service server { namespace bench; port 8080 http }
"""
PORTS = {"jwt": 34100, "jwt, no cache": 34300, "no jwt": 34200}
STRIDE = 10
CONNECTIONS = (1, 16)
ISSUER, AUDIENCE = "https://auth.bench.test/", "bench"


def mesh_for(with_jwt: bool, folder: Path) -> Mesh:
    """BASE plus an ingress `edge` routing everything to server; with_jwt: a
    provider and a claim test at the callee (the policy as a model: the
    lowering reads only the model)."""
    mesh = check_project(from_texts({"bench.mesh": BASE})).mesh
    rule = RouteRule.make(index=0, match=Match.make(), action=Forward.make(
        destinations=[WeightedVersion.make(version=Ref.make(name="server"))]))
    gw = Ingress.make(name="edge", namespace="bench", account="edge", hosts=["bench.test"], rules=[rule],
                      listeners=[Listener.make(port=8080, protocol="http")], file=str(folder / "bench.mesh"))
    token = JwtRequirement.make(claims=[ClaimTest.make(claim="scope", op="has", value="bench")]) if with_jwt else None
    allow = AuthRule.make(index=0, effect="allow", target=Ref.make(name="server"),
                          sources=[Source.make(kind="internet", jwt=token)])
    fields = {f: getattr(mesh, f) for f in Mesh.model_fields}
    fields.update(ingresses=[gw], auth_rules=[allow])
    if with_jwt:
        fields["jwt_providers"] = [JwtProvider.make(name="auth", issuer=ISSUER, audiences=[AUDIENCE],
                                                    jwks_file="auth.jwks.json", file=str(folder / "bench.mesh"))]
    return Mesh.make(**fields)


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


def without_jwt_cache(text: str) -> str:
    """A bootstrap with every jwt_authn provider's `jwt_cache_config` removed."""
    from meshpolicy.targets.envoy.json_lines import dump, load

    cfg = load(text)
    for li in cfg["static_resources"]["listeners"]:
        for chain in li.get("filter_chains", []):
            for f in chain.get("filters", []):
                for hf in f.get("typed_config", {}).get("http_filters", []):
                    for prov in hf.get("typed_config", {}).get("providers", {}).values():
                        prov.pop("jwt_cache_config", None)
    return dump(cfg)


def wait_ready(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        if proc.poll() is not None:
            raise SystemExit(f"envoy on admin port {port} exited")
        time.sleep(0.1)
    raise SystemExit(f"admin port {port}: not ready")


def start(stack: contextlib.ExitStack, name: str, folder: Path, jwks: Path) -> tuple[int, list[int]]:
    """The gateway and the callee's sidecar of one variant, with nginx as the
    callee's app: (the gateway's listener port, the Envoys' pids)."""
    base = PORTS[name]
    folder.mkdir()
    shutil.copy(jwks, folder / "auth.jwks.json")  # next to the declaring file, as the policy names it
    mesh = mesh_for(name != "no jwt", folder)
    issue(mesh, folder / "certs")
    outputs, diags = compile_mesh(mesh, "envoy", CompileOptions(
        certs_dir=str(folder / "certs"), settings={"port_base": base, "ports_per_workload": STRIDE}))
    errors = [d.message for d in diags if d.is_error]
    if errors:
        raise SystemExit(f"{name}: {errors}")
    (folder / "nginx-tmp").mkdir()
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=folder, port=base + 3))  # server is workload 0: app at base + 3
    procs = [subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(folder), "-e", "stderr",
                               "-c", str(conf)], stderr=subprocess.DEVNULL)]
    pids = []
    for o in outputs:
        p = folder / "out" / o.path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(without_jwt_cache(o.content) if name == "jwt, no cache" else o.content)
        proc = subprocess.Popen(["envoy", "-c", str(p), "--use-dynamic-base-id", "-l", "error",
                                 "--drain-time-s", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        pids.append(proc.pid)
    for proc in procs:
        stack.callback(_stop, proc)
    wait_ready(base + 2, procs[1])  # server: workload 0
    wait_ready(base + STRIDE + 2, procs[2])  # the gateway: workload 1
    return base + STRIDE + 4, pids


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_wrk(port: int, connections: int, seconds: float, token: str) -> dict:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "5s",
            "-H", "Host: bench.test", "-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}/bench"]
    return parse_wrk(subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout)


def measure(seconds: float, rounds: int) -> None:
    if not shutil.which("wrk") or not shutil.which("envoy"):
        raise SystemExit("needs wrk and envoy")
    load0 = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    rows = tuple(PORTS)
    with tempfile.TemporaryDirectory(prefix="bench-jwt-") as t, contextlib.ExitStack() as stack:
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

    def med(name, c, key):
        return statistics.median(r[key] for r in results[(name, c)])

    print(f"{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {platform.machine()}, load average "
          f"{load0[0]:.1f} at start, {load1[0]:.1f} at end; wrk -t1 {seconds:g}s per run, median of {rounds} "
          "interleaved rounds; gateway -> mTLS -> callee sidecar -> nginx, RS256 (2048-bit) token\n")
    print("| path | conns | p50 ms | p99 ms | req/s | Envoy CPU us/req |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in rows:
        for c in CONNECTIONS:
            print(f"| {name} | {c} | {med(name, c, 'p50'):.3f} | {med(name, c, 'p99'):.3f} | "
                  f"{med(name, c, 'rps'):.0f} | {med(name, c, 'cpu_us'):.0f} |")
    print()
    for c in CONNECTIONS:
        for name in ("jwt", "jwt, no cache"):
            print(f"{c} conn, {name}: token validation (gateway + callee) adds "
                  f"{med(name, c, 'p50') - med('no jwt', c, 'p50'):.3f} ms p50, "
                  f"{med(name, c, 'cpu_us') - med('no jwt', c, 'cpu_us'):.0f} us CPU per request; "
                  f"throughput {med(name, c, 'rps') / med('no jwt', c, 'rps'):.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0, help="wrk duration per run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    a = ap.parse_args()
    measure(a.seconds, a.rounds)


if __name__ == "__main__":
    main()
