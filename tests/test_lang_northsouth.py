"""North-south syntax (issue 15): ingress gateways, jwt providers, the
`internet` source with claim tests, keyed limits, external services and the
egress stance, and the L7 rule options (query matches, header operations,
rewrite, CORS, retry on status codes). Each spec example parses into the
model, malformed items get stable codes, and the formatter round-trips them.
Assertions are on model values and codes, not wording."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshpolicy.fmt import format_text
from meshpolicy.model.build import build
from meshpolicy.syntax.parser import parse_text

from .conftest import check_text, check_texts, codes

NS = Path(__file__).parent / "fixtures" / "northsouth"
HEAD = 'mesh m {\n  trust_domain "example.org"\n}\n'
SERVICES = """
service frontend {
  namespace shop
  port 8080 http
}
service orders {
  namespace shop
  port 8080 http
  version v1
  version v2
}
service payments {
  namespace shop
  port 8080 http
}
service payments-db {
  namespace shop
  port 5432 tcp
}
"""

# The spec's example (notes/ns_spec.md), every construct once.
SPEC = f"""mesh shop {{
  egress registry_only
}}

jwt auth {{
  issuer "https://auth.shop.example/"
  audience "shop-api", "shop-web"
  jwks "{NS.as_posix()}/auth.jwks.json"
  token header "authorization" prefix "Bearer "
  token query "access_token"
  token cookie "session"
}}

ingress web {{
  namespace edge
  account web-gateway
  listen 8080 http
  listen 8443 https cert "{NS.as_posix()}/web.crt" key "{NS.as_posix()}/web.key"
  hosts "shop.example.com", "*.shop.example.com"
  jwt auth
  /api/orders/** -> orders rewrite "/orders/"
  GET /** -> frontend
  * -> respond 404 "no such page"
}}

external stripe {{
  namespace pay
  host "api.stripe.com"
  port 443 tls
  timeout 2s
  retry 2 on connect-failure
}}
{SERVICES}
allow payments -> stripe POST /v1/charges
allow internet -> frontend GET
allow internet with jwt scope has "orders:write" -> orders POST /orders
allow internet with jwt auth role = "admin" and scope has "admin" -> orders /admin/**
allow frontend -> orders
limit internet with jwt auth -> orders 10/s burst 5 per claim "sub"
limit frontend -> orders 100/s per header "X-Api-Key"
limit internet -> frontend 50/s per source_ip
assert never internet ~> payments-db
assert only internet with jwt role = "admin" -> orders /admin/**
assert can internet with jwt scope has "orders:write" -> orders POST /orders
assert never frontend -> payments-db

route orders {{
  GET /orders/** query "view" = "full" -> v2
  POST /orders -> v1 retry 2 on 503, 429, connect-failure
  GET /api/** -> v1 rewrite "/" host "orders.internal" set request header "X-From" "api" remove response header "server"
  * -> v1 cors origins "https://shop.example.com" methods GET, POST headers "Content-Type" expose "x-total" credentials max_age 1h
}}
"""


def _model(text: str, path: str = "ns.mesh"):
    tree, diags = parse_text(text, path)
    mesh, more = build([tree])
    return mesh, diags + more


@pytest.fixture(scope="module")
def spec():
    mesh, diags = _model(SPEC)
    assert diags == [], [(d.code, d.message) for d in diags]
    return mesh


def test_spec_example_validates_as_a_model(spec):
    type(spec).model_validate(spec.model_dump())


def test_egress_stance(spec):
    assert spec.settings.egress == "registry_only" and "egress" in spec.settings.spans
    mesh, _ = _model("mesh m {\n  egress allow_any\n}\n")
    assert mesh.settings.egress == "allow_any"
    mesh, _ = _model("mesh m {\n}\n")
    assert mesh.settings.egress == "registry_only" and "egress" not in mesh.settings.spans


def test_jwt_provider(spec):
    (p,) = spec.jwt_providers
    assert (p.name, p.issuer, p.audiences) == ("auth", "https://auth.shop.example/", ["shop-api", "shop-web"])
    assert p.jwks_file == f"{NS.as_posix()}/auth.jwks.json" and p.jwks_uri is None and p.file == "ns.mesh"
    assert [(t.kind, t.name, t.prefix) for t in p.token_from] == [
        ("header", "authorization", "Bearer "), ("query", "access_token", None), ("cookie", "session", None)]
    assert p.at("issuer").line == 6 and p.at("jwks_file").line == 8
    assert spec.provider_map["auth"] is p


def test_jwks_uri_and_no_token_lines():
    mesh, diags = _model('jwt idp {\n  issuer "i"\n  jwks_uri "https://idp.example/keys"\n}\n')
    assert not diags
    (p,) = mesh.jwt_providers
    assert p.jwks_uri == "https://idp.example/keys" and p.jwks_file is None and p.token_from == []


def test_ingress(spec):
    (g,) = spec.ingresses
    assert (g.name, g.namespace, g.account, g.hosts) == ("web", "edge", "web-gateway",
                                                          ["shop.example.com", "*.shop.example.com"])
    assert [(x.port, x.protocol, x.cert_file, x.key_file) for x in g.listeners] == [
        (8080, "http", None, None), (8443, "https", f"{NS.as_posix()}/web.crt", f"{NS.as_posix()}/web.key")]
    assert [r.name for r in g.jwt] == ["auth"] and g.file == "ns.mesh"
    r0, r1, r2 = g.rules
    assert [r.index for r in g.rules] == [0, 1, 2]
    assert r0.match.paths[0].value == "/api/orders/**" and r0.action.destinations[0].version.name == "orders"
    assert r0.rewrite.path == "/orders/" and r0.rewrite.host is None
    assert r1.match.methods == ["GET"] and r1.action.destinations[0].version.name == "frontend"
    assert r2.action.kind == "respond" and r2.action.status == 404
    assert spec.ingress_map["web"] is g


def test_ingress_account_defaults_to_its_name():
    mesh, _ = _model("ingress gw {\n  listen 80 http\n  * -> a\n}\n")
    (g,) = mesh.ingresses
    assert (g.account, g.namespace) == ("gw", "default")


def test_external(spec):
    (e,) = spec.externals
    assert (e.name, e.namespace, e.hosts) == ("stripe", "pay", ["api.stripe.com"])
    assert [(p.number, p.protocol) for p in e.ports] == [(443, "tls")]
    assert e.timeout_ms == 2000 and e.retry.attempts == 2 and e.retry.on == ["connect-failure"]
    mesh, diags = _model('external x {\n  host "a.example", "b.example"\n  host "c.example"\n'
                         "  port 80 http\n  port 5432 tcp\n}\n")
    assert not diags
    assert mesh.externals[0].hosts == ["a.example", "b.example", "c.example"]
    assert [p.protocol for p in mesh.externals[0].ports] == ["http", "tcp"]


def test_internet_sources_and_claims(spec):
    egress, plain, scoped, admin, _ = spec.auth_rules
    assert egress.target.name == "stripe" and egress.sources[0].kind == "service"
    assert plain.sources[0].kind == "internet" and plain.sources[0].jwt is None
    jwt = scoped.sources[0].jwt
    assert jwt.provider is None and [(c.claim, c.op, c.value) for c in jwt.claims] == [
        ("scope", "has", "orders:write")]
    jwt = admin.sources[0].jwt
    assert jwt.provider.name == "auth"
    assert [(c.claim, c.op, c.value) for c in jwt.claims] == [("role", "eq", "admin"), ("scope", "has", "admin")]
    assert admin.paths[0].value == "/admin/**"


def test_claim_names_may_be_strings_and_a_provider_alone():
    mesh, diags = _model('allow internet with jwt "https://shop.example/roles" has "admin" -> a\n'
                         "allow internet with jwt idp -> a\nallow internet, b -> a\n")
    assert not diags
    c = mesh.auth_rules[0].sources[0].jwt.claims[0]
    assert (c.claim, c.op, c.value) == ("https://shop.example/roles", "has", "admin")
    j = mesh.auth_rules[1].sources[0].jwt
    assert j.provider.name == "idp" and j.claims == []
    assert [s.kind for s in mesh.auth_rules[2].sources] == ["internet", "service"]
    mesh, diags = _model("allow internet with jwt -> a\nassert never internet with jwt ~> a\n")
    assert not diags
    j = mesh.auth_rules[0].sources[0].jwt
    assert j.provider is None and j.claims == [] and j.span.line == 1 and j.span.col == 7
    assert mesh.assertions[0].source_jwt.span.line == 2
    assert format_text("allow internet with jwt -> a\n").text == "allow internet with jwt -> a\n"


def test_limit_keys(spec):
    claim, header, ip = spec.rate_limits
    assert (claim.key.kind, claim.key.name, claim.burst) == ("claim", "sub", 5)
    assert claim.sources[0].jwt.provider.name == "auth"
    assert (header.key.kind, header.key.name) == ("header", "x-api-key")  # header names lower-cased
    assert (ip.key.kind, ip.key.name) == ("source_ip", None)
    mesh, _ = _model("limit b -> a 10/s\nlimit b -> a 1/m per claim sub\n")
    assert mesh.rate_limits[0].key is None and mesh.rate_limits[1].key.name == "sub"


def test_assertions_with_internet(spec):
    never, only, can, plain = spec.assertions
    assert never.kind == "never" and never.source.name == "internet" and never.transitive
    assert never.source_jwt is None and never.target.name == "payments-db"
    assert only.sources[0].kind == "internet" and only.sources[0].jwt.claims[0].claim == "role"
    assert can.source.name == "internet" and can.source_jwt.claims[0].value == "orders:write"
    assert can.methods == ["POST"]
    # `->` still reads as the never-assertion's arrow (it is also what `can` and rules use)
    assert plain.source.name == "frontend" and not plain.transitive


def test_never_with_a_token_and_an_arrow():
    mesh, diags = _model('assert never internet with jwt role = "x" -> a\n'
                         'assert never internet with jwt idp ~> a\n')
    assert not diags
    a, b = mesh.assertions
    assert a.source_jwt.claims[0].value == "x" and not a.transitive
    assert b.source_jwt.provider.name == "idp" and b.transitive


def test_route_rule_options(spec):
    q, retry, rewrite, cors = spec.routes[0].rules
    assert [(x.name, x.kind, x.value) for x in q.match.queries] == [("view", "exact", "full")]
    assert retry.retry.on == ["connect-failure"] and retry.retry.on_status == [503, 429]
    assert (rewrite.rewrite.path, rewrite.rewrite.host) == ("/", "orders.internal")
    assert [(h.side, h.op, h.name, h.value) for h in rewrite.headers] == [
        ("request", "set", "x-from", "api"), ("response", "remove", "server", None)]
    c = cors.cors
    assert c.origins == ["https://shop.example.com"] and c.methods == ["GET", "POST"]
    assert c.headers == ["content-type"] and c.expose == ["x-total"] and c.credentials and c.max_age_ms == 3_600_000


def test_query_tests_and_host_only_rewrite():
    mesh, diags = _model('route a {\n  query "a" prefix "x" query "b" ~ "[0-9]+" query "c" present -> v1 '
                         'rewrite host "h" add response header "x-a" "1"\n}\n')
    assert not diags
    (r,) = mesh.routes[0].rules
    assert [(x.name, x.kind, x.value) for x in r.match.queries] == [
        ("a", "prefix", "x"), ("b", "regex", "[0-9]+"), ("c", "present", None)]
    assert r.rewrite.path is None and r.rewrite.host == "h"
    assert [(h.op, h.side) for h in r.headers] == [("add", "response")]


def test_service_cors_and_cors_for(spec):
    mesh, diags = _model('service s {\n  cors origins "*"\n}\nroute s {\n  GET -> v1 cors origins "https://a.example"\n'
                         "  * -> v1\n}\n")
    assert not diags
    svc = mesh.services[0]
    own, inherited = mesh.routes[0].rules
    assert svc.cors.origins == ["*"]
    assert svc.cors_for(own).origins == ["https://a.example"] and svc.cors_for(inherited) is svc.cors


def test_spans_point_at_what_was_written(spec):
    lines = SPEC.splitlines()
    p = spec.jwt_providers[0]
    assert lines[p.at("audiences").line - 1].strip().startswith("audience")
    g = spec.ingresses[0]
    assert lines[g.listeners[1].at("cert").line - 1].strip().startswith("listen 8443")
    r = spec.routes[0].rules[1]
    status = r.retry.spans["on_status.1"]
    assert lines[status.line - 1][status.col - 1:status.end_col - 1] == "429"
    src = spec.auth_rules[3].sources[0]
    assert lines[src.span.line - 1][src.span.col - 1:src.span.end_col - 1] == (
        'internet with jwt auth role = "admin" and scope has "admin"')


# ---- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "jwt a {\n  jwks\n}\n",                      # jwks without a file
    "jwt a {\n  issuer auth\n}\n",               # issuer is a string
    "jwt a {\n  token body \"x\"\n}\n",           # no such token location
    "ingress g {\n  listen http\n}\n",           # listen without a port
    "ingress g {\n  listen 443 tls\n}\n",        # a listener is http or https
    "external e {\n  port 443 https\n}\n",       # an external port is http, tls or tcp
    "external e {\n  host api.example\n}\n",     # host is a string
    "mesh m {\n  egress open\n}\n",              # registry_only | allow_any
    "allow internet with jwt scope has admin -> a\n",  # claim values are strings
    "allow internet with -> a\n",              # `with` needs `jwt`
    "limit b -> a 10/s per cookie \"x\"\n",
    "route a {\n  * -> v1 set request header \"x\"\n}\n",  # set needs a value
    "route a {\n  * -> v1 cors\n}\n",            # cors needs an option
    "route a {\n  query \"x\" absent -> v1\n}\n",  # queries have no `absent`
])
def test_malformed_items_are_syntax_errors(text):
    _, diags = parse_text(text, "x.mesh")
    assert "MP002" in codes(diags), [(d.code, d.message) for d in diags]


def test_statements_in_the_wrong_block():
    _, diags = parse_text('service s {\n  issuer "x"\n}\njwt p {\n  port 80 http\n}\n', "x.mesh")
    assert codes(diags) == ["MP005", "MP005"]


def test_settings_given_twice():
    _, diags = _model('jwt p {\n  issuer "a"\n  issuer "b"\n}\ningress g {\n  jwt p\n  jwt p\n}\n'
                      'mesh m {\n  egress allow_any\n  egress registry_only\n}\n'
                      'route a {\n  * -> v1 rewrite "/a" rewrite "/b" cors origins "*" origins "*"\n}\n')
    assert codes(diags) == ["MP010", "MP010", "MP011", "MP011", "MP011"]


def test_internet_is_reserved():
    for kind in ("service", "ingress", "jwt", "external"):
        _, diags = _model(f"{kind} internet {{\n}}\n")
        assert codes(diags) == ["MP014"], kind
    # as a source it is the keyword, never a service name
    mesh, _ = _model("allow internet -> a\n")
    assert mesh.auth_rules[0].sources[0].kind == "internet"


def test_names_share_one_space():
    r = check_text(HEAD + "service orders {\n  port 80 http\n}\nallow * -> orders\n"
                   "ingress orders {\n  listen 80 http\n  * -> orders\n}\n"
                   'external orders {\n  host "o.example"\n  port 443 tls\n}\n'
                   'jwt orders {\n  issuer "i"\n  jwks_uri "https://i.example/k"\n}\n')
    clashes = [d for d in r.diagnostics if d.code == "MP103"]
    assert len(clashes) == 3 and all(d.is_error for d in clashes)


def test_egress_rule_target_is_known_but_a_misspelled_one_is_not():
    base = HEAD + SERVICES + 'external stripe {\n  host "api.stripe.com"\n  port 443 tls\n}\n'
    ok = check_text(base + "allow payments -> stripe POST /v1/charges\nlimit payments -> stripe 5/s\n"
                    "assert never frontend -> stripe\n")
    assert "MP101" not in codes(ok.diagnostics)
    bad = check_text(base + "allow payments -> strpe\n")
    (d,) = [d for d in bad.diagnostics if d.code == "MP101"]
    assert d.fixes and d.fixes[0].replacement == "stripe"


def test_internet_in_assertions_is_not_an_unknown_service():
    r = check_text(HEAD + SERVICES + "allow frontend -> orders\nassert never internet ~> payments-db\n"
                   "assert can internet -> frontend\n")
    assert "MP101" not in codes(r.diagnostics)


def test_meshc_check_of_the_spec_exits_clean(tmp_path):
    from .conftest import run_meshc

    (tmp_path / "shop.mesh").write_text(SPEC)
    res = run_meshc("check", str(tmp_path / "shop.mesh"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr


def test_multi_file_build_merges_the_new_blocks():
    r = check_texts({"a.mesh": HEAD + 'jwt p {\n  issuer "i"\n  jwks_uri "https://i.example/k"\n}\n',
                     "b.mesh": "ingress g {\n  listen 80 http\n  * -> s\n}\nservice s {\n  port 80 http\n}\n"
                               'external e {\n  host "e.example"\n  port 80 http\n}\nallow * -> s\n'})
    assert [p.name for p in r.mesh.jwt_providers] == ["p"] and r.mesh.jwt_providers[0].file == "a.mesh"
    assert [g.name for g in r.mesh.ingresses] == ["g"] and r.mesh.ingresses[0].file == "b.mesh"
    assert [e.name for e in r.mesh.externals] == ["e"]


# ---- formatting -------------------------------------------------------------------------------

def _strip(d):
    if isinstance(d, dict):
        return {k: _strip(v) for k, v in d.items() if k not in ("span", "spans", "file")}
    if isinstance(d, list):
        return [_strip(x) for x in d]
    return d


def test_fmt_round_trips_every_construct():
    first = format_text(SPEC)
    assert first.ok, [(d.code, d.message) for d in first.diagnostics]
    assert format_text(first.text).text == first.text  # a fixed point
    before, _ = _model(SPEC)
    after, diags = _model(first.text)
    assert not diags
    assert _strip(before.model_dump()) == _strip(after.model_dump())


def test_fmt_canonical_forms():
    text = ('limit internet with jwt  sub = "x" -> a 1/s per claim "sub"\n'
            'route a {\n  query "v" = "1" GET /x -> v1 cors credentials origins "https://a.example" '
            'remove response header "server" set request header "X-A" "1"\n}\n')
    out = format_text(text).text
    assert 'limit internet with jwt sub = "x" -> a 1/s per claim "sub"' in out
    # match: methods, paths, then queries; options: rewrite, header operations in written order, cors
    assert ('GET /x query "v" = "1" -> v1 remove response header "server" set request header "X-A" "1" '
            'cors origins "https://a.example" credentials') in out


# ---- checks (MP220-MP252) ---------------------------------------------------------------------

EDGE = 'ingress edge {\n  listen 8080 http\n  hosts "shop.example.com"\n  * -> web\n}\n'
WEB = "service web {\n  port 8080 http\n  version v1\n}\n"


def _codes_of(text: str, name: str = "test.mesh") -> list[str]:
    return codes(check_texts({name: text}).diagnostics)


@pytest.mark.parametrize("content, bad", [
    ((NS / "auth.jwks.json").read_bytes(), False),
    (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', True),     # symmetric keys are never used
    (b'{"keys": [{"kty": "RSA", "alg": "none", "n": "x", "e": "AQAB"}]}', True),
    (b'{"kid": "x"}', True),                                     # no keys list
    (b"not json", True),
    (b"\xff\xfe", True),                                         # not UTF-8
    (b'{"keys": []}' + b" " * (1 << 20), True),                  # over 1 MiB
    (None, True),                                                # missing
])
def test_jwks_file_is_read_relative_to_the_mesh_file(tmp_path, content, bad):
    from meshpolicy.project import load

    from .conftest import check_project

    sub = tmp_path / "policy"
    sub.mkdir()
    if content is not None:
        (sub / "keys.json").write_bytes(content)
    (sub / "p.mesh").write_text(HEAD + WEB + EDGE + 'jwt idp {\n  issuer "https://i.example/"\n'
                                '  jwks "keys.json"\n}\nallow internet with jwt idp -> web\n')
    diags = check_project(load([sub / "p.mesh"])).diagnostics
    assert ("MP223" in codes(diags)) == bad, [(d.code, d.message) for d in diags]


def test_jwks_that_is_not_a_regular_file(tmp_path):
    import os

    from meshpolicy.project import load

    from .conftest import check_project

    os.mkfifo(tmp_path / "fifo.json")  # opening it would block: never opened
    (tmp_path / "dir.json").mkdir()
    for name in ("fifo.json", "dir.json"):
        (tmp_path / "p.mesh").write_text(HEAD + WEB + EDGE + f'jwt idp {{\n  issuer "https://i.example/"\n'
                                         f'  jwks "{name}"\n}}\nallow internet with jwt idp -> web\n')
        assert "MP223" in codes(check_project(load([tmp_path / "p.mesh"])).diagnostics), name


def test_provider_settings():
    assert _codes_of(HEAD + 'jwt p {\n}\n').count("MP220") == 1
    assert "MP222" in _codes_of(HEAD + 'jwt p {\n}\n')
    got = _codes_of(HEAD + f'jwt p {{\n  issuer "i"\n  jwks "{NS.as_posix()}/auth.jwks.json"\n'
                    '  jwks_uri "https://i.example/k"\n}\n')
    assert "MP221" in got and "MP223" not in got
    for uri, bad in (("https://i.example/k", False), ("http://i.example/k", True), ("https://", True),
                     ("https://i.example/k\\nx", True), ("file:///etc/keys", True)):
        got = _codes_of(HEAD + f'jwt p {{\n  issuer "i"\n  jwks_uri "{uri}"\n}}\n')
        assert ("MP226" in got) == bad, uri


def test_unknown_provider_and_no_provider():
    idp = f'jwt idp {{\n  issuer "i"\n  jwks "{NS.as_posix()}/auth.jwks.json"\n}}\n'
    r = check_text(HEAD + WEB + idp + 'ingress edge {\n  listen 80 http\n  hosts "a.example"\n  jwt ipd\n'
                   '  * -> web\n}\nallow internet with jwt idq -> web\nassert never internet with jwt idz ~> web\n')
    unknown = [d for d in r.diagnostics if d.code == "MP224"]
    assert len(unknown) == 3 and unknown[0].fixes[0].replacement == "idp"
    r = check_text(HEAD + WEB + EDGE + 'allow internet with jwt role = "x" -> web\n'
                   'limit internet with jwt -> web 1/s per claim "sub"\n')
    assert codes(r.diagnostics).count("MP225") == 2 and "MP224" not in codes(r.diagnostics)


def test_ingress_shape():
    got = _codes_of(HEAD + WEB + 'ingress g {\n  listen 80 http\n  listen 80 http\n  listen 70000 http\n'
                    '  hosts "a.example"\n  from web -> web\n}\nallow internet -> web\n')
    assert got.count("MP233") == 1 and "MP230" in got and got.count("MP206") == 1
    got = _codes_of(HEAD + WEB + 'external e {\n  host "e.example"\n  port 443 tls\n  port 443 http\n  port 0 tcp\n}\n')
    assert got.count("MP206") == 2
    assert "MP234" in _codes_of(HEAD + WEB + 'ingress g {\n  listen 80 http\n  hosts "a.example"\n}\n')
    # without hosts an ingress takes any host (semantics): not MP234
    assert "MP234" not in _codes_of(HEAD + WEB + 'ingress g {\n  listen 80 http\n  * -> web\n}\nallow internet -> web\n')
    got = _codes_of(HEAD + WEB + 'external x {\n  host "x.example"\n  port 443 tls\n}\n'
                    'ingress g {\n  listen 80 http\n  hosts "a.example"\n  /x -> x\n  /y -> nothing\n  * -> web\n}\n'
                    "allow internet -> web\n")
    assert "MP231" in got and got.count("MP101") == 1  # `nothing` is unknown; `x` is an external


def test_listener_files(tmp_path):
    from meshpolicy.project import load

    from .conftest import check_project

    (tmp_path / "c.pem").write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    (tmp_path / "plain.txt").write_text("hello\n")
    cases = {'listen 443 https cert "c.pem" key "c.pem"': False, 'listen 443 https': True,
             'listen 443 https cert "c.pem"': True, 'listen 443 https cert "c.pem" key "nope.pem"': True,
             'listen 443 https cert "plain.txt" key "c.pem"': True, 'listen 80 http cert "c.pem"': True}
    for line, bad in cases.items():
        (tmp_path / "p.mesh").write_text(HEAD + WEB + f'ingress g {{\n  {line}\n  hosts "a.example"\n  * -> web\n}}\n'
                                         "allow internet -> web\n")
        got = codes(check_project(load([tmp_path / "p.mesh"])).diagnostics)
        assert ("MP232" in got) == bad, (line, got)


@pytest.mark.parametrize("line, bad", [
    ("allow internet -> web /admin/**", True),
    ('allow internet -> web prefix "/internal"', True),
    ("allow internet -> web /api/debug", True),
    ("allow internet -> web /Actuator/health", True),
    ("allow internet -> web /administrator", False),
    ("allow internet -> web /api/**", False),
    ('allow internet with jwt role = "admin" -> web /admin/**', False),
    ("deny internet -> web /admin/**", False),
])
def test_admin_paths_without_token(line, bad):
    idp = f'jwt idp {{\n  issuer "i"\n  jwks "{NS.as_posix()}/auth.jwks.json"\n}}\n'
    assert ("MP235" in _codes_of(HEAD + WEB + idp + EDGE + line + "\n")) == bad


def test_admin_paths_of_the_callees_routes_when_the_rule_names_none():
    route = 'route web {\n  /admin/** -> v1\n  * -> v1\n}\n'
    assert "MP235" in _codes_of(HEAD + WEB + EDGE + route + "allow internet -> web\n")
    assert "MP235" not in _codes_of(HEAD + WEB + EDGE + "allow internet -> web\n")


def test_internet_rules_that_cannot_match():
    idp = f'jwt idp {{\n  issuer "i"\n  jwks "{NS.as_posix()}/auth.jwks.json"\n}}\n'
    other = f'jwt other {{\n  issuer "o"\n  jwks "{NS.as_posix()}/auth.jwks.json"\n}}\n'
    gw = 'ingress edge {\n  listen 8080 http\n  hosts "a.example"\n  jwt idp\n  * -> web\n}\n'
    assert "MP236" in _codes_of(HEAD + WEB + idp + other + gw + "allow internet with jwt other -> web\n")
    assert "MP236" not in _codes_of(HEAD + WEB + idp + other + gw + "allow internet with jwt idp -> web\n")
    # no `jwt` list on the ingress: it accepts every declared provider
    assert "MP236" not in _codes_of(HEAD + WEB + idp + other + EDGE + "allow internet with jwt other -> web\n")
    assert "MP237" in _codes_of(HEAD + WEB + "allow internet -> web\n")
    assert "MP237" in _codes_of(HEAD + WEB + "service api {\n  port 80 http\n}\n" + EDGE + "allow internet -> api\n")


def test_per_claim_needs_a_token_on_every_source():
    idp = f'jwt idp {{\n  issuer "i"\n  jwks "{NS.as_posix()}/auth.jwks.json"\n}}\n'
    base = HEAD + WEB + idp + EDGE + "service b {\n  port 80 http\n}\n"
    assert "MP238" in _codes_of(base + 'limit internet with jwt, b -> web 1/s per claim "sub"\n')
    assert "MP238" not in _codes_of(base + 'limit internet with jwt -> web 1/s per claim "sub"\n')
    assert "MP238" not in _codes_of(base + 'limit b -> web 1/s per header "x-key"\n')


@pytest.mark.parametrize("host, ingress_ok, external_ok", [
    ("api.example.com", True, True),
    ("API.Example.com", True, True),
    ("*.example.com", True, False),
    ("*", True, False),
    ("a.*.example.com", False, False),
    ("-bad.example.com", False, False),
    ("under_score.example", False, False),
    ("a" * 64 + ".example", False, False),
    ("", False, False),
    ("10.0.0.5", True, True),
])
def test_host_names(host, ingress_ok, external_ok):
    from meshpolicy.checks.hosts import host_problem

    assert (host_problem(host, wildcard=True) is None) == ingress_ok
    assert (host_problem(host, wildcard=False) is None) == external_ok


def test_rewrite_host_may_carry_a_port():
    from meshpolicy.checks.hosts import host_problem

    assert host_problem("orders.internal:8080", wildcard=False, port=True) is None
    assert host_problem("orders.internal:99999", wildcard=False, port=True) is not None
    assert "MP240" in _codes_of(HEAD + WEB + 'route web {\n  * -> v1 rewrite host "a b"\n}\nallow * -> web\n')


def test_egress_checks():
    ext = 'external db {\n  host "db.example"\n  port 5432 tcp\n}\n'
    assert "MP241" in _codes_of(HEAD + WEB + ext + "allow web -> db /x\n")
    assert "MP241" in _codes_of(HEAD + WEB + ext + "limit web -> db 1/s\n")
    assert "MP241" not in _codes_of(HEAD + WEB + ext + "allow web -> db\n")
    assert "MP242" in _codes_of(HEAD + WEB + "external e {\n  port 443 tls\n}\n")
    assert "MP243" in _codes_of(HEAD + WEB + ext + "allow internet -> db\n")


@pytest.mark.parametrize("origin, ok", [
    ("https://shop.example.com", True), ("http://localhost:3000", True), ("https://[::1]:8443", True),
    ("*", True), ("https://shop.example.com/", False), ("shop.example.com", False),
    ("https://shop.example.com/app", False), ("https://*.example.com", False), ("null", False),
])
def test_cors_origins(origin, ok):
    got = _codes_of(HEAD + f'service web {{\n  port 80 http\n  cors origins "{origin}"\n}}\nallow * -> web\n')
    assert ("MP246" not in got) == ok


def test_cors_credentials_and_missing_origins():
    assert "MP245" in _codes_of(HEAD + WEB + 'route web {\n  * -> v1 cors origins "https://a.example", "*" '
                                'credentials\n}\nallow * -> web\n')
    assert "MP247" in _codes_of(HEAD + WEB + 'route web {\n  * -> v1 cors credentials\n}\nallow * -> web\n')


@pytest.mark.parametrize("op, bad", [
    ('set request header "x-a" "1"', False),
    ('remove response header "server"', False),
    ('set request header ":path" "/x"', True),
    ('set request header "Host" "a"', True),
    ('remove request header "connection"', True),
    ('set response header "content-length" "0"', True),
    ('add request header "x-forwarded-client-cert" "By=x"', True),
    ('remove response header "x-forwarded-client-cert"', False),
])
def test_header_operations(op, bad):
    assert ("MP252" in _codes_of(HEAD + WEB + f'route web {{\n  * -> v1 {op}\n}}\nallow * -> web\n')) == bad


def test_rewrites():
    assert "MP250" in _codes_of(HEAD + WEB + 'route web {\n  regex "/a/.*" -> v1 rewrite "/"\n}\nallow * -> web\n')
    assert "MP250" not in _codes_of(HEAD + WEB + 'route web {\n  regex "/a/.*" -> v1 rewrite host "b"\n}\n'
                                    "allow * -> web\n")
    assert "MP251" in _codes_of(HEAD + WEB + 'route web {\n  /a -> respond 200 rewrite "/b"\n}\nallow * -> web\n')


def test_existing_value_checks_cover_the_new_places():
    got = _codes_of(HEAD + WEB + 'ingress g {\n  listen 80 http\n  hosts "a.example"\n'
                    '  header "x y" present -> respond 700\n  * -> web 60%, web 30%\n}\n'
                    'route web {\n  * -> v1 retry 2 on 503, 42, conect-failure set request header "x-a" "a\\nb"\n'
                    '  query "q" ~ "(?=x)" -> v1\n}\nallow internet -> web\n')
    for code in ("MP210", "MP207", "MP201", "MP106", "MP214", "MP204"):
        assert code in got, code


# ---- language server lists ----------------------------------------------------------------------

def test_completion_in_the_new_blocks():
    from meshpolicy.lsp.complete import complete, context_at

    mesh = check_text(HEAD + WEB + 'external stripe {\n  host "api.stripe.com"\n  port 443 tls\n}\n').mesh

    def labels(text):
        return {i.label for i in complete(mesh, context_at(text, len(text)))}

    assert {"issuer", "jwks", "jwks_uri", "token", "audience"} <= labels("jwt p {\n  ")
    assert {"listen", "hosts", "jwt", "GET", "query"} <= labels("ingress g {\n  ")
    assert "web" in labels("ingress g {\n  GET /x -> ")                       # destinations are services
    assert {"rewrite", "set", "cors"} <= labels("ingress g {\n  GET /x -> web ")
    assert {"host", "port", "timeout"} <= labels("external e {\n  ")
    assert "stripe" in labels("allow web -> ")                                 # an egress rule's callee
    assert "internet" in labels("allow ")
    assert {"registry_only", "allow_any"} <= labels("mesh m {\n  egress ")


def test_outline_lists_the_new_blocks():
    from lsprotocol import types as lsp

    from meshpolicy.lsp.symbols import document_symbols
    from meshpolicy.span import SourceFile

    text = SPEC
    mesh, _ = _model(text, "ns.mesh")
    names = [s.name for s in document_symbols(mesh, SourceFile("ns.mesh", text), "utf-16")]
    assert {"auth", "web", "stripe"} <= set(names)
    web = next(s for s in document_symbols(mesh, SourceFile("ns.mesh", text), "utf-16") if s.name == "web")
    assert web.kind == lsp.SymbolKind.Module and len(web.children) == 3


def test_identities_of_ingresses_and_externals():
    got = _codes_of(HEAD + WEB + 'ingress Edge_1 {\n  listen 80 http\n  hosts "a.example"\n  * -> web\n}\n'
                    'external e {\n  namespace Pay\n  host "e.example"\n  port 443 tls\n}\nallow internet -> web\n')
    assert got.count("MP205") == 2  # the ingress's default account (its name), the external's namespace
    # a service presenting an ingress's certificate counts as the internet: an error once a rule names `internet`
    twin = HEAD + WEB + "service api {\n  namespace edge\n  account gw\n  port 80 http\n}\n" \
        'ingress g {\n  namespace edge\n  account gw\n  listen 80 http\n  hosts "a.example"\n  * -> web\n}\n'
    assert "MP108" in _codes_of(twin + "allow internet -> web\n")
    assert "MP108" not in _codes_of(twin + "allow api -> web\n")


def test_options_that_never_apply():
    base = HEAD + WEB + "allow * -> web\n"
    assert "MP253" in _codes_of(base + 'route web {\n  * -> respond 200 remove response header "server"\n}\n')
    assert "MP253" in _codes_of(base + 'route web {\n  * -> redirect "/x" cors origins "https://a.example"\n}\n')
    assert "MP253" not in _codes_of(base + 'route web {\n  * -> v1 remove response header "server"\n}\n')
    assert "MP254" in _codes_of(base + 'route web {\n  GET -> v1 cors origins "https://a.example"\n  * -> v1\n}\n')
    for match in ("GET, OPTIONS", "*", "/api/**"):
        assert "MP254" not in _codes_of(base + f'route web {{\n  {match} -> v1 cors origins "https://a.example"\n}}\n')
    assert "MP222" in _codes_of(HEAD + 'jwt p {\n  issuer " "\n  jwks_uri "https://i.example/k"\n}\n')
