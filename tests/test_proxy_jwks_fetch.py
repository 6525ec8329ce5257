"""Remote JWKS for meshproxy (`jwks_uri`, meshpolicy/proxy/jwks_fetch.py):
fetched over real HTTPS from a local server with a test CA; refused over
plain HTTP, from a server the CA does not vouch for, when too large, not a
JWKS, or a redirect; a proxy started on a compiled config fetches its
providers' keys before it listens and validates tokens with them."""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest
from aiohttp import web

from meshpolicy.certs import issue
from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.proxy import jwks_fetch
from meshpolicy.proxy.egress import egress_context
from meshpolicy.proxy.server import Proxy

from .conftest import check_text, codes, free_port_base
from .jwt_tokens import AUDIENCE, Keys
from .test_meshproxy_northsouth import make_ca, make_leaf, request


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An HTTPS JWKS server on localhost (certificate from a test CA)."""
    folder = tmp_path_factory.mktemp("jwks")
    keys = Keys()
    ca = make_ca()
    from cryptography.hazmat.primitives import serialization

    (folder / "ca.pem").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    crt, key = make_leaf(ca, "localhost", folder, "jwks")
    routes = {  # path -> (status, body, headers)
        "/jwks.json": (200, json.dumps(keys.jwks()), {}),
        "/big": (200, json.dumps({"keys": [], "pad": "x" * (jwks_fetch.MAX_BYTES + 10)}), {}),
        "/notjwks": (200, json.dumps({"hello": 1}), {}),
        "/oct": (200, json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}), {}),
        "/redirect": (302, "", {"location": "/jwks.json"}),
    }

    async def handler(request):
        status, body, headers = routes.get(request.path, (404, "", {}))
        return web.Response(status=status, text=body, headers=headers)

    loop = asyncio.new_event_loop()
    port = free_port_base(1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)

    async def setup():
        runner = web.ServerRunner(web.Server(handler), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
        return runner

    runner = loop.run_until_complete(setup())
    import threading

    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    yield {"url": f"https://localhost:{port}", "ca": folder / "ca.pem", "keys": keys, "folder": folder}
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def fetch(uri, ca):
    return asyncio.run(jwks_fetch.fetch_jwks(uri, egress_context(str(ca) if ca else None), timeout=5))


def test_fetches_a_jwks_over_https(server):
    text = fetch(server["url"] + "/jwks.json", server["ca"])
    assert json.loads(text) == server["keys"].jwks()


@pytest.mark.parametrize("path, why", [("/big", "larger"), ("/notjwks", "not a JWKS"), ("/oct", "no RSA"),
                                       ("/redirect", "status 302"), ("/missing", "status 404")])
def test_refuses_bad_answers(server, path, why):
    with pytest.raises(jwks_fetch.FetchError, match=why):
        fetch(server["url"] + path, server["ca"])


def test_refuses_plain_http_and_unverified_servers(server):
    with pytest.raises(jwks_fetch.FetchError, match="https"):
        fetch(server["url"].replace("https", "http") + "/jwks.json", server["ca"])
    with pytest.raises(jwks_fetch.FetchError, match="SSL|Certificate|certificate"):
        fetch(server["url"] + "/jwks.json", None)  # the system store does not know the test CA
    with pytest.raises(jwks_fetch.FetchError):  # a name the certificate does not carry
        fetch(server["url"].replace("localhost", "127.0.0.1") + "/jwks.json", server["ca"])


def test_proxy_fetches_before_listening_and_validates_with_the_keys(server, tmp_path):
    keys = server["keys"]
    base = free_port_base(40)
    text = f"""
mesh m {{ trust_domain "m.test"; default deny }}
jwt remote {{ issuer "https://remote.test/"; audience "{AUDIENCE}"; jwks_uri "{server['url']}/jwks.json" }}
ingress gw {{ namespace edge; listen 8080 http; * -> api }}
service api {{ namespace ns; port 8080 http }}
allow internet with jwt remote -> api
"""
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    issue(checked.mesh, tmp_path / "certs")
    outputs, diags = compile_mesh(checked.mesh, "meshproxy", CompileOptions(
        certs_dir=str(tmp_path / "certs"),
        settings={"ports": "mesh-unique", "port_base": base, "egress_ca": str(server["ca"])}))
    assert codes(diags) == []
    gw = json.loads(next(o.content for o in outputs if o.path == "edge/gw.json"))
    assert gw["jwt"][0]["jwks"] is None and gw["jwt"][0]["jwks_uri"] == f"{server['url']}/jwks.json"

    async def run():
        proxy = Proxy(gw)
        await proxy.start()
        try:
            assert proxy.verifiers["remote"].keys  # fetched before listening
            port = gw["ingress"]["listeners"][0]["port"]
            good = keys.token(iss="https://remote.test/")
            bad = keys.token(iss="https://remote.test/", aud="other")
            loop = asyncio.get_running_loop()
            got_bad = await loop.run_in_executor(None, lambda: request(port, "GET", "/x", {
                "Host": "a", "Authorization": f"Bearer {bad}"})[0])
            got_good = await loop.run_in_executor(None, lambda: request(port, "GET", "/x", {
                "Host": "a", "Authorization": f"Bearer {good}"})[0])
            return got_bad, got_good
        finally:
            await proxy.stop()

    got_bad, got_good = asyncio.run(run())
    assert got_bad == 401
    assert got_good == 503  # valid: forwarded, and api's sidecar is not running here


def test_a_failed_fetch_leaves_the_provider_without_keys(server, tmp_path):
    from meshpolicy.proxy.jwt_verify import Verifier

    v = Verifier.from_config({"name": "r", "issuer": "https://remote.test/", "audiences": [], "jwks": None,
                              "jwks_uri": server["url"] + "/missing", "tokens": [
                                  {"kind": "header", "name": "authorization", "prefix": "Bearer "}]})
    ctx = egress_context(str(server["ca"]))
    assert not asyncio.run(jwks_fetch.refresh_once(v, server["url"] + "/missing", ctx))
    assert v.keys == [] and v.verify(server["keys"].token(iss="https://remote.test/")) is None
    assert asyncio.run(jwks_fetch.refresh_once(v, server["url"] + "/jwks.json", ctx))
    assert v.verify(server["keys"].token(iss="https://remote.test/", aud=None)) is not None
