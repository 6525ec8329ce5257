"""The bootstraps run: real Envoy sidecars on loopback with certificates from
`meshc certs`, enforcing mTLS, authorization and per-caller rate limits."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from meshpolicy.certs import issue
from meshpolicy.compile import CompileOptions, compile_mesh

from .conftest import check_text, free_port_base

pytestmark = pytest.mark.skipif(shutil.which("envoy") is None, reason="needs the envoy binary")

MESH = """mesh m { trust_domain "example.org" }
service a { namespace ns; port 8080 http }
service b { namespace ns; port 8080 http }
service c { namespace ns; port 8080 http }
allow a -> b
allow a -> c
deny a -> c /admin/**
limit authenticated -> b 2/m
limit a -> c 3/m
"""
STRIDE = 10


def _free_block(n: int) -> int:
    """A base port with n free ports after it."""
    return free_port_base(n, STRIDE)


def _get(port: int, host: str, path: str = "/") -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _wait_ready(port: int, procs) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if any(p.poll() is not None for p in procs):
            raise AssertionError("a process exited early")
        time.sleep(0.2)
    raise AssertionError(f"admin port {port} never became ready")


def test_sidecars_enforce_policy(tmp_path):
    checked = check_text(MESH)
    assert checked.ok
    base = _free_block(3 * STRIDE)
    issue(checked.mesh, tmp_path / "certs")
    outputs, diags = compile_mesh(checked.mesh, "envoy", CompileOptions(
        certs_dir=str(tmp_path / "certs"), settings={"port_base": base, "ports_per_workload": STRIDE}))
    assert not [d for d in diags if d.is_error]
    procs = []
    try:
        for i, o in enumerate(outputs):  # a, b, c: workloads 0, 1, 2
            p = tmp_path / o.path
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(o.content)
            app_port = base + i * STRIDE + 3
            procs.append(subprocess.Popen([sys.executable, "-m", "http.server", str(app_port), "--bind",
                                           "127.0.0.1", "--directory", str(tmp_path)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            procs.append(subprocess.Popen(["envoy", "-c", str(p), "--use-dynamic-base-id", "-l", "error",
                                           "--drain-time-s", "1"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for i in range(3):
            _wait_ready(base + i * STRIDE + 2, procs)
        a_out = base + 1
        # `limit authenticated -> b 2/m`: a's own bucket holds 2.
        assert [_get(a_out, "b") for _ in range(3)] == [200, 200, 429]
        # RBAC: the deny carve-out, then the allow.
        assert _get(a_out, "c:8080", "/admin/keys") == 403
        # `limit a -> c 3/m`; the denied request took no token (RBAC runs before the rate limit).
        assert [_get(a_out, "c", "/") for _ in range(4)] == [200, 200, 200, 429]
        # b may not call c: no route to c in b's sidecar; its catch-all refuses it
        # with the 403 c's own sidecar would answer (the reference's decision).
        assert _get(base + STRIDE + 1, "c") == 403
        # Strict mTLS: plaintext straight to c's inbound listener is refused.
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{base + 2 * STRIDE}/", timeout=5)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_downstream_connections_are_limited(tmp_path):
    """`max_downstream_connections` (overload manager): past the limit a new
    connection is closed at once, the open ones stay; no start-up warning
    about an unlimited number of connections."""
    checked = check_text(MESH)
    base = _free_block(3 * STRIDE)
    issue(checked.mesh, tmp_path / "certs")
    outputs, diags = compile_mesh(checked.mesh, "envoy", CompileOptions(
        certs_dir=str(tmp_path / "certs"),
        settings={"port_base": base, "ports_per_workload": STRIDE, "max_downstream_connections": 2}))
    assert not [d for d in diags if d.is_error]
    cfg = tmp_path / "a.yaml"
    cfg.write_text(outputs[0].content)  # workload a
    log = tmp_path / "envoy.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(["envoy", "-c", str(cfg), "--use-dynamic-base-id", "-l", "warn"],
                                stdout=fh, stderr=subprocess.STDOUT)
    held = []
    try:
        _wait_ready(base + 2, [proc])
        for _ in range(2):
            held.append(socket.create_connection(("127.0.0.1", base + 1), timeout=5))
        time.sleep(0.5)  # Envoy counts them once accepted
        extra = socket.create_connection(("127.0.0.1", base + 1), timeout=5)
        extra.settimeout(5)
        assert extra.recv(1) == b""  # closed by Envoy
        extra.close()
        for s in held:
            s.settimeout(0.5)
            with pytest.raises(socket.timeout):
                s.recv(1)  # still open
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(10)
    assert "no configured limit" not in log.read_text()


def test_sds_bootstraps_pass_envoy_validate(tmp_path):
    """With sds_dir (what `meshc up` sets) every bootstrap names its
    certificate by file-based SDS, and still passes `envoy --mode validate`;
    without it the output keeps static certificate files."""
    from meshpolicy.pipeline import check_project
    from meshpolicy.project import load
    from meshpolicy.targets.envoy.sds import documents

    from .conftest import EXAMPLES

    mesh = check_project(load([EXAMPLES / "shop"])).mesh
    issue(mesh, tmp_path / "certs")
    options = CompileOptions(certs_dir=str(tmp_path / "certs"), sds_dir=str(tmp_path / "sds"))
    outputs, diags = compile_mesh(mesh, "envoy", options)
    assert not [d for d in diags if d.is_error]
    for o in documents(mesh, options) + [o for o in outputs]:
        root = tmp_path / ("sds" if o.path.endswith(".json") else "out")
        (root / o.path).parent.mkdir(parents=True, exist_ok=True)
        (root / o.path).write_text(o.content)
    for o in outputs:
        assert "tls_certificate_sds_secret_configs" in o.content and '"tls_certificates"' not in o.content
        r = subprocess.run(["envoy", "--mode", "validate", "-c", str(tmp_path / "out" / o.path), "-l", "error"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, o.path + r.stdout + r.stderr
    static, _ = compile_mesh(mesh, "envoy", CompileOptions(certs_dir=str(tmp_path / "certs")))
    assert all("tls_certificate_sds_secret_configs" not in o.content and "tls_certificates" in o.content
               for o in static)
