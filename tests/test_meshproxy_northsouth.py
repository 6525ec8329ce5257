"""meshproxy north-south, end to end (issue 15): a compiled mesh with an
ingress gateway, a JWT provider and an external service runs on real
meshproxy sidecars (in this process, on loopback), with real mTLS between
them, real TLS on the ingress's https listener and to the external stand-in,
and real tokens (tests/jwt_tokens.py).

Checked: Host → 404; invalid tokens (expired, wrong issuer or audience,
tampered, alg=none, HS256 with the RSA public key, unknown kid) → 401 at the
ingress whatever the route; no token passes to authorization; claims
decide at the callee, which validates the forwarded token again (the token
bytes arrive unchanged); `internet` rules never admit an east-west caller;
forged identity and client-address headers are dropped; rewrite and header
operations; CORS preflight answered by the sidecar; per-claim rate limits;
egress: caller-side rules, TLS origination with SNI and certificate check,
absolute-form requests, registry_only refusal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import socket
import ssl
import threading
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshpolicy.certs import issue
from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.proxy.server import ConfigError, Proxy, load_config

from .conftest import check_text, codes, free_port_base, run_meshc
from .jwt_tokens import AUDIENCE, ISSUER, Keys, good_claims, hs256_with_public_key, tampered, unsigned

MESH = """
mesh ns {{ trust_domain "ns.test"; mtls strict; default deny; egress registry_only }}
jwt auth {{
  issuer "{issuer}"
  audience "{audience}"
  jwks "{dir}/auth.jwks.json"
  token header "authorization" prefix "Bearer "
  token query "access_token"
}}
ingress web {{
  namespace edge
  listen {http_port} http
  listen {https_port} https cert "{dir}/web.crt" key "{dir}/web.key"
  hosts "shop.example.com", "*.shop.example.com"
  /api/orders/** -> orders rewrite "/orders/" set request header "x-via" "web" remove response header "x-internal"
  /quota/** -> quota
  /app/** -> frontend
  * -> respond 404 "no such page"
}}
external pay {{ namespace pay; host "api.pay.test"; port 443 tls; timeout 5s; retry 2 on 503 }}
external db {{ namespace pay; host "db.pay.test"; port 5432 tcp }}
service frontend {{ namespace web; port 8080 http
  cors origins "https://shop.example.com" methods GET, POST credentials expose "x-total" }}
service orders {{ namespace shop; port 8080 http; version v1 }}
service quota {{ namespace shop; port 8080 http }}
service payments {{ namespace pay; port 8080 http }}
route orders {{
  GET /orders/special query "view" = "full" -> respond 418 "full view"
  GET /orders/flaky/** -> v1 retry 2 on 503
  GET /orders/via header "x-via" = "web" -> respond 299 "set by the ingress"
  * -> v1
}}
allow internet -> frontend
allow internet -> orders GET /orders/**
allow internet with jwt scope has "orders:write" -> orders POST /orders/**
allow internet with jwt auth role = "admin" -> orders /orders/admin/**
allow internet with jwt auth -> quota
deny internet with jwt auth -> quota /quota/denied/**
limit internet with jwt auth -> quota 2/m per claim "sub"
allow payments -> orders
allow payments -> pay POST /v1/charges
allow payments -> db
"""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca():
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("test ca")).issuer_name(_name("test ca"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_leaf(ca, host: str, folder: Path, stem: str) -> tuple[Path, Path]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    crt, pem = folder / f"{stem}.crt", folder / f"{stem}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


FAILS: dict[str, int] = {}  # target -> times answered 503 so far


async def app_handler(request: web.BaseRequest) -> web.Response:
    """Every service's app: reports what reached it; `x-fail-times: N`
    makes it answer 503 to the first N requests for that target."""
    body = await request.read()
    fail = int(request.headers.get("x-fail-times", "0"))
    if FAILS.get(request.raw_path, 0) < fail:
        FAILS[request.raw_path] = FAILS.get(request.raw_path, 0) + 1
        return web.Response(status=503, text="try again")
    doc = {"service": request.app_name, "method": request.method, "target": request.raw_path,
           "headers": [[k, v] for k, v in request.raw_headers and
                       [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]],
           "body": body.decode("latin-1")}
    return web.Response(text=json.dumps(doc), headers={"x-internal": "1", "x-total": "3"})


SNI: list[str | None] = []  # the server names TLS clients of the external stand-in sent


async def external_handler(request: web.BaseRequest) -> web.Response:
    fail = int(request.headers.get("x-fail-times", "0"))
    key = "ext" + request.raw_path
    if FAILS.get(key, 0) < fail:
        FAILS[key] = FAILS.get(key, 0) + 1
        return web.Response(status=503, text="try again")
    doc = {"method": request.method, "target": request.raw_path, "host": request.headers.get("Host"),
           "sni": SNI[-1] if SNI else None}
    return web.Response(text=json.dumps(doc))


class Loop:
    """An event loop in a thread, running the proxies and the apps."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class _TcpRunner:
    def __init__(self, server):
        self.server = server

    async def cleanup(self):
        self.server.close()


async def start_tcp_echo(port: int):
    """The tcp external's stand-in: echoes bytes, prefixed."""
    async def echo(reader, writer):
        while data := await reader.read(4096):
            writer.write(b"db:" + data)
            await writer.drain()
        writer.close()

    return _TcpRunner(await asyncio.start_server(echo, "127.0.0.1", port))


async def start_app(port: int, name: str, handler, ssl_ctx=None):
    async def wrapped(request):
        request.app_name = name
        return await handler(request)

    server = web.Server(wrapped)
    runner = web.ServerRunner(server, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_ctx).start()
    return runner


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    folder = tmp_path_factory.mktemp("northsouth")
    keys = Keys()
    (folder / "auth.jwks.json").write_text(json.dumps(keys.jwks()))
    ca = make_ca()
    (folder / "ca.pem").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    make_leaf(ca, "shop.example.com", folder, "web")
    ext_crt, ext_key = make_leaf(ca, "api.pay.test", folder, "ext")
    base = free_port_base(80)
    ports = {"http_port": base + 70, "https_port": base + 71, "ext": base + 72, "db": base + 73}
    text = MESH.format(dir=folder.as_posix(), issuer=ISSUER, audience=AUDIENCE, **ports)
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    issue(checked.mesh, folder / "certs")
    settings = {"ports": "mesh-unique", "port_base": base, "listen_address": "127.0.0.1",
                "egress_ca": str(folder / "ca.pem"),
                "external_endpoints": {"pay:443": f"127.0.0.1:{ports['ext']}", "db:5432": f"127.0.0.1:{ports['db']}"}}
    outputs, diags = compile_mesh(checked.mesh, "meshproxy",
                                  CompileOptions(certs_dir=str(folder / "certs"), settings=settings))
    assert codes(diags) == [], [d.message for d in diags]
    configs = {o.path: json.loads(o.content) for o in outputs}
    # mesh-unique: the ingress's listeners sit in its port block (as Envoy's
    # gateway), in the order written: http, then https
    listeners = configs["edge/web.json"]["ingress"]["listeners"]
    ports.update(http_port=listeners[0]["port"], https_port=listeners[1]["port"])
    loop = Loop()
    proxies, runners = [], []
    try:
        for path, cfg in sorted(configs.items()):
            proxy = Proxy(cfg)
            loop.run(proxy.start())
            proxies.append(proxy)
            for li in cfg["listeners"]["inbound"]:
                runners.append(loop.run(start_app(li["app"]["port"], cfg["workload"]["service"], app_handler)))
        ext_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ext_ctx.load_cert_chain(ext_crt, ext_key)
        ext_ctx.sni_callback = lambda _obj, name, _ctx: SNI.append(name)
        runners.append(loop.run(start_app(ports["ext"], "pay", external_handler, ext_ctx)))
        runners.append(loop.run(start_tcp_echo(ports["db"])))
        yield {"folder": folder, "keys": keys, "configs": configs, "ports": ports, "loop": loop, "ca": ca,
               "ext_key": ext_key}
    finally:
        for p in proxies:
            loop.run(p.stop())
        for r in runners:
            loop.run(r.cleanup())
        loop.close()


def request(port: int, method: str, target: str, headers: dict | None = None, body: bytes | None = None,
            tls_ca: Path | None = None, server_name: str | None = None):
    """One request; (status, headers dict lower-cased, body text)."""
    if tls_ca is not None:
        ctx = ssl.create_default_context(cafile=str(tls_ca))
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=15, context=ctx)
        conn._tunnel_host = None
        sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        conn.sock = ctx.wrap_socket(sock, server_hostname=server_name)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    hs = {"Host": "shop.example.com", **(headers or {})}
    if body is not None:
        hs["Content-Length"] = str(len(body))
    conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    for k, v in hs.items():
        conn.putheader(k, v)
    conn.endheaders(body)
    r = conn.getresponse()
    out = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode("latin-1")
    conn.close()
    return out


def seen(body: str) -> dict:
    doc = json.loads(body)
    doc["header_map"] = {}
    for k, v in doc["headers"]:
        doc["header_map"].setdefault(k.lower(), []).append(v)
    return doc


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# ---- ingress ----------------------------------------------------------------

def test_host_must_match(mesh):
    port = mesh["ports"]["http_port"]
    assert request(port, "GET", "/app/x")[0] == 200
    assert request(port, "GET", "/app/x", {"Host": "a.b.shop.example.com:8080"})[0] == 200
    assert request(port, "GET", "/app/x", {"Host": "evil.example.com"})[0] == 404
    assert request(port, "GET", "/app/x", {"Host": "shop.example.com.evil"})[0] == 404


def test_https_listener_terminates_tls(mesh):
    status, _, body = request(mesh["ports"]["https_port"], "GET", "/app/tls", tls_ca=mesh["folder"] / "ca.pem",
                              server_name="shop.example.com")
    assert status == 200 and seen(body)["service"] == "frontend"


@pytest.mark.parametrize("case", ["expired", "wrong-issuer", "wrong-audience", "tampered", "alg-none",
                                  "hs256-confusion", "unknown-kid", "garbage"])
def test_invalid_token_is_401_whatever_the_route(mesh, case):
    keys = mesh["keys"]
    token = {
        "expired": lambda: keys.token(exp_in=-600),
        "wrong-issuer": lambda: keys.token(iss="https://evil.example/"),
        "wrong-audience": lambda: keys.token(aud="other"),
        "tampered": lambda: tampered(keys.token({"scope": "orders:write"})),
        "alg-none": lambda: unsigned(good_claims(scope="orders:write")),
        "hs256-confusion": lambda: hs256_with_public_key(keys, good_claims(scope="orders:write")),
        "unknown-kid": lambda: keys.token(kid="nope"),
        "garbage": lambda: "abc.def.ghi",
    }[case]()
    port = mesh["ports"]["http_port"]
    for target in ("/app/open", "/api/orders/x", "/nothing-here"):
        status, headers, _ = request(port, "GET", target, bearer(token))
        assert status == 401, (case, target)
        assert headers["www-authenticate"].startswith("Bearer")
    # the same token in the query is checked too
    assert request(port, "GET", f"/app/open?access_token={token}")[0] == 401
    # before the host is looked at (jwt_authn runs before routing)
    assert request(port, "GET", "/app/open", {"Host": "evil.example.com", **bearer(token)})[0] == 401


def test_no_token_passes_to_authorization(mesh):
    port = mesh["ports"]["http_port"]
    assert request(port, "GET", "/api/orders/7")[0] == 200  # allow internet -> orders GET /orders/**
    assert request(port, "POST", "/api/orders/new", body=b"{}")[0] == 403  # needs a token with the scope
    assert request(port, "GET", "/nothing")[0] == 404  # the ingress's own respond rule


def test_claims_decide_at_the_callee_and_the_token_arrives_unchanged(mesh):
    keys, port = mesh["keys"], mesh["ports"]["http_port"]
    writer = keys.token({"scope": "orders:read orders:write"})
    status, _, body = request(port, "POST", "/api/orders/new", bearer(writer), b"{}")
    assert status == 200
    got = seen(body)
    assert got["service"] == "orders" and got["target"] == "/orders/new"  # rewritten
    assert got["header_map"]["authorization"] == [f"Bearer {writer}"]  # forwarded as it came
    reader = keys.token({"scope": "orders:read"})
    assert request(port, "POST", "/api/orders/new", bearer(reader), b"{}")[0] == 403
    # a token in the query (the provider's second location) counts too
    assert request(port, "POST", f"/api/orders/new?access_token={writer}", body=b"{}")[0] == 200
    # `with jwt auth role = "admin"`
    admin, user = keys.token({"role": "admin"}), keys.token({"role": "user"})
    assert request(port, "DELETE", "/api/orders/admin/1", bearer(admin))[0] == 200
    assert request(port, "DELETE", "/api/orders/admin/1", bearer(user))[0] == 403
    # other key types of the JWKS
    assert request(port, "POST", "/api/orders/e", bearer(keys.token({"scope": "orders:write"}, alg="ES256",
                                                                      kid="ec-1")), b"{}")[0] == 200


def test_rewrite_query_match_and_header_operations(mesh):
    port = mesh["ports"]["http_port"]
    status, headers, body = request(port, "GET", "/api/orders/list?x=%2F1", {"x-via": "forged"})
    got = seen(body)
    assert status == 200 and got["target"] == "/orders/list?x=%2F1"  # query bytes as they came
    assert got["header_map"]["x-via"] == ["web"]  # set: the caller's value replaced
    assert "x-internal" not in headers and headers["x-total"] == "3"  # removed on the response only
    # the service's route sees the ingress rule's header operations
    assert request(port, "GET", "/api/orders/via")[0] == 299
    # the orders route's query match, seen through the ingress (the rewritten path)
    assert request(port, "GET", "/api/orders/special?view=full")[0] == 418
    assert request(port, "GET", "/api/orders/special?view=fast")[0] == 200


def test_forged_identity_headers_never_reach_the_app(mesh):
    port = mesh["ports"]["http_port"]
    forged = {"x-meshproxy-peer": "spiffe://ns.test/ns/shop/sa/admin", "X_Meshproxy_Peer": "spiffe://x",
              "x-forwarded-client-cert": "By=x;URI=spiffe://ns.test/ns/pay/sa/payments",
              "x-meshproxy-client-ip": "10.9.9.9", "x-meshproxy-claims": '{"role":"admin"}'}
    status, _, body = request(port, "GET", "/app/who", forged)
    h = seen(body)["header_map"]
    assert status == 200
    assert h["x-meshproxy-peer"] == ["spiffe://ns.test/ns/edge/sa/web"]  # set by the callee's sidecar
    assert "x_meshproxy_peer" not in h and "x-meshproxy-client-ip" not in h
    assert all("pay/sa/payments" not in v for v in h["x-forwarded-client-cert"])
    # no header carries validated claims: a caller's such header grants nothing
    assert request(port, "DELETE", "/api/orders/admin/1", forged)[0] == 403


def test_cors_preflight_is_answered_by_the_sidecar(mesh):
    port = mesh["ports"]["http_port"]
    pre = {"Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST"}
    status, headers, body = request(port, "OPTIONS", "/app/cart", pre)
    assert status == 200 and body == ""  # the app was not reached (it answers JSON)
    assert headers["access-control-allow-origin"] == "https://shop.example.com"
    assert headers["access-control-allow-methods"] == "GET,POST"
    assert headers["access-control-allow-credentials"] == "true"
    status, headers, _ = request(port, "GET", "/app/cart", {"Origin": "https://shop.example.com"})
    assert status == 200 and headers["access-control-allow-origin"] == "https://shop.example.com"
    assert headers["access-control-expose-headers"] == "x-total"
    # another origin: no CORS headers, and the preflight is an ordinary request
    status, headers, body = request(port, "OPTIONS", "/app/cart", {**pre, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in headers and seen(body)["method"] == "OPTIONS"


def test_rate_limit_per_claim(mesh):
    keys, port = mesh["keys"], mesh["ports"]["http_port"]
    alice, bob = keys.token({"sub": "alice-q"}), keys.token({"sub": "bob-q"})
    got = [request(port, "GET", "/quota/x", bearer(alice))[0] for _ in range(3)]
    assert got == [200, 200, 429]
    assert request(port, "GET", "/quota/x", bearer(bob))[0] == 200  # a bucket of its own
    # authorization comes first: a request the rules refuse takes no token
    carol = keys.token({"sub": "carol-q"})
    assert [request(port, "GET", "/quota/denied/1", bearer(carol))[0] for _ in range(2)] == [403, 403]
    assert [request(port, "GET", "/quota/y", bearer(carol))[0] for _ in range(3)] == [200, 200, 429]


def test_retry_on_status(mesh):
    port = mesh["ports"]["http_port"]
    assert request(port, "GET", "/api/orders/flaky/a", {"x-fail-times": "2"})[0] == 200  # two retries
    assert request(port, "GET", "/api/orders/flaky/b", {"x-fail-times": "3"})[0] == 503
    assert request(port, "GET", "/api/orders/other/c", {"x-fail-times": "1"})[0] == 503  # no retry there


# ---- east-west: internet rules never admit a mesh caller -----------------------

def _outbound(mesh, service: str) -> int:
    cfg = next(c for c in mesh["configs"].values() if c["workload"]["service"] == service)
    return cfg["listeners"]["outbound"]["port"]


def test_internet_rules_do_not_admit_mesh_callers(mesh):
    keys = mesh["keys"]
    out = _outbound(mesh, "frontend")  # frontend may not call orders at all
    assert request(out, "GET", "/orders/1", {"Host": "orders"})[0] == 403
    out = _outbound(mesh, "payments")  # allowed east-west; an admin token grants it nothing more
    admin = keys.token({"role": "admin"})
    assert request(out, "GET", "/orders/1", {"Host": "orders"})[0] == 200
    # the callee validates tokens from every caller: an invalid one is 401 there too
    assert request(out, "GET", "/orders/1", {"Host": "orders", **bearer(keys.token(exp_in=-600))})[0] == 401
    assert request(out, "GET", "/orders/admin/1", {"Host": "orders", **bearer(admin)})[0] == 200  # allow payments


# ---- egress -----------------------------------------------------------------

def test_egress_tls_origination_and_caller_side_rules(mesh):
    out = _outbound(mesh, "payments")
    status, _, body = request(out, "POST", "/v1/charges", {"Host": "api.pay.test"}, b"{}")
    assert status == 200
    got = json.loads(body)
    assert got["sni"] == "api.pay.test" and got["target"] == "/v1/charges" and got["host"] == "api.pay.test"
    # absolute-form, as an HTTP proxy client sends it
    status, _, body = request(out, "POST", "http://api.pay.test:443/v1/charges?a=%41", {"Host": "ignored"}, b"{}")
    assert status == 200 and json.loads(body)["target"] == "/v1/charges?a=%41"
    assert request(out, "GET", "/v1/charges", {"Host": "api.pay.test"})[0] == 403  # only POST is allowed
    assert request(out, "POST", "/v1/refunds", {"Host": "api.pay.test"}, b"{}")[0] == 403
    # a caller no rule allows
    assert request(_outbound(mesh, "frontend"), "POST", "/v1/charges", {"Host": "api.pay.test"}, b"{}")[0] == 403
    # registry_only: a host nobody declared
    assert request(out, "GET", "/", {"Host": "example.org"})[0] == 403


def relocated(cfg: dict) -> dict:
    """A copy of a workload's config on fresh ports, without tcp listeners
    (a second proxy for the same workload beside the first)."""
    cfg = json.loads(json.dumps(cfg))
    ls = cfg["listeners"]
    for ep in (ls["outbound"], ls["admin"], ls["inbound"][0], ls["inbound"][0]["app"]):
        ep["port"] = free_port_base(1)
    for e in cfg["outbound"]["externals"]:
        for p in e["ports"]:
            p["listener"] = None
    return cfg


def test_egress_retries_and_timeout_of_the_external(mesh):
    out = _outbound(mesh, "payments")
    assert request(out, "POST", "/v1/charges?r=1", {"Host": "api.pay.test", "x-fail-times": "2"}, b"{}")[0] == 200
    assert request(out, "POST", "/v1/charges?r=2", {"Host": "api.pay.test", "x-fail-times": "3"}, b"{}")[0] == 503


def test_egress_tcp_port(mesh):
    cfg = next(c for c in mesh["configs"].values() if c["workload"]["service"] == "payments")
    listener = next(e for e in cfg["outbound"]["externals"] if e["name"] == "db")["ports"][0]["listener"]
    with socket.create_connection(("127.0.0.1", listener["port"]), timeout=10) as s:
        s.sendall(b"select 1")
        assert s.recv(100) == b"db:select 1"
    fe = next(c for c in mesh["configs"].values() if c["workload"]["service"] == "frontend")
    assert next(e for e in fe["outbound"]["externals"] if e["name"] == "db")["ports"][0]["listener"] is None


def test_egress_refuses_a_certificate_for_another_host(mesh, tmp_path):
    """The stand-in now serves a certificate for another name: TLS
    origination must fail (503), not send the request."""
    cfg = next(c for c in mesh["configs"].values() if c["workload"]["service"] == "payments")
    wrong_crt, wrong_key = make_leaf(mesh["ca"], "other.pay.test", tmp_path, "wrong")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(wrong_crt, wrong_key)
    from .conftest import free_port_base as fpb

    port = fpb(1)
    loop = mesh["loop"]
    runner = loop.run(start_app(port, "wrong", external_handler, ctx))
    cfg2 = relocated(cfg)
    next(e for e in cfg2["outbound"]["externals"] if e["name"] == "pay")["ports"][0]["dial"]["port"] = port
    out = cfg2["listeners"]["outbound"]["port"]
    proxy = Proxy(cfg2)
    loop.run(proxy.start())
    try:
        assert request(out, "POST", "/v1/charges", {"Host": "api.pay.test"}, b"{}")[0] == 503
    finally:
        loop.run(proxy.stop())
        loop.run(runner.cleanup())


def test_allow_any_passes_undeclared_hosts_through(mesh, tmp_path):
    """The same payments workload under `egress allow_any`: a host nobody
    declares is forwarded as plain HTTP, unchecked; registry_only: 403."""
    from .conftest import free_port_base as fpb

    cfg = relocated(next(c for c in mesh["configs"].values() if c["workload"]["service"] == "payments"))
    loop = mesh["loop"]
    plain = fpb(1)
    runner = loop.run(start_app(plain, "outside", app_handler))
    cfg["egress"]["stance"] = "allow_any"
    out = cfg["listeners"]["outbound"]["port"]
    proxy = Proxy(cfg)
    loop.run(proxy.start())
    try:
        status, _, body = request(out, "GET", "/anything?q=%0d", {"Host": f"127.0.0.1:{plain}"})
        assert status == 200 and seen(body)["target"] == "/anything?q=%0d"
        # the external's rules still apply to the external
        assert request(out, "GET", "/v1/charges", {"Host": "api.pay.test"})[0] == 403
    finally:
        loop.run(proxy.stop())
        loop.run(runner.cleanup())
    assert request(_outbound(mesh, "payments"), "GET", "/", {"Host": f"127.0.0.1:{plain}"})[0] == 403


def _served_cert(port: int, ca: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="shop.example.com") as tls_sock:
            return tls_sock.getpeercert(binary_form=True)


def test_https_listener_takes_new_certificate_files(mesh):
    import time

    port, folder = mesh["ports"]["https_port"], mesh["folder"]
    before = _served_cert(port, folder / "ca.pem")
    make_leaf(mesh["ca"], "shop.example.com", folder, "web")  # the same files, a new certificate
    deadline = time.monotonic() + 10
    while _served_cert(port, folder / "ca.pem") == before and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _served_cert(port, folder / "ca.pem") != before
    assert request(port, "GET", "/app/tls", tls_ca=folder / "ca.pem", server_name="shop.example.com")[0] == 200


def test_meshc_proxy_starts_an_ingress_from_its_compiled_file(mesh, tmp_path):
    """The documented way to run an ingress: `meshc proxy --config <ns>/<ingress>.json`."""
    import subprocess
    import sys
    import time
    import urllib.request

    cfg = json.loads(json.dumps(mesh["configs"]["edge/web.json"]))
    cfg["listeners"]["admin"]["port"] = admin = free_port_base(1)
    cfg["listeners"]["outbound"]["port"] = free_port_base(1)
    for li in cfg["ingress"]["listeners"]:
        li["port"] = free_port_base(1)
    path = tmp_path / "web.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "meshpolicy.cli", "proxy", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
                time.sleep(0.2)
        port = cfg["ingress"]["listeners"][0]["port"]
        assert request(port, "GET", "/app/x", bearer(mesh["keys"].token(exp_in=-600)))[0] == 401
        assert request(port, "GET", "/app/x")[0] == 200  # through to frontend's sidecar, started in-process
    finally:
        proc.terminate()
        proc.wait(10)


# ---- config versions --------------------------------------------------------

def test_version_1_config_is_refused_clearly(mesh, tmp_path):
    cfg = json.loads(json.dumps(next(iter(mesh["configs"].values()))))
    cfg["version"] = 1
    path = tmp_path / "old.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="version 1.*recompile"):
        load_config(path)
    r = run_meshc("proxy", "--config", str(path))
    assert r.returncode == 2 and "recompile" in r.stderr and "Traceback" not in r.stderr
