"""The Istio target, north-south (issue 15): the L7 rule options, egress,
ingress and tokens. Each construct compiles to resources valid against
Istio 1.30's CRDs, means what meshpolicy/semantics says (checked by
emulating what Envoy does with the emitted fields: Istio's translation in
pilot/pkg/networking/core/route/route.go), and what Istio cannot express
is MP701 naming the construct."""

from __future__ import annotations

import itertools

import pytest
import re2
import yaml

from meshpolicy.compile import compile_mesh
from meshpolicy.semantics import cors as cors_sem
from meshpolicy.semantics.header_ops import apply_header_ops
from meshpolicy.semantics.patterns import normalize_path, path_matches
from meshpolicy.semantics.query import parse_query, query_matches_raw
from meshpolicy.semantics.rewrite import rewrite_for
from meshpolicy.targets.istio.output_check import check_document

from . import istio_schema
from .conftest import check_text, codes
from .test_target_istio_meaning import Cluster

pytestmark = pytest.mark.skipif(istio_schema.MISSING is not None, reason=istio_schema.MISSING or "")


def compiled(text: str, files: dict[str, str] | None = None):
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics]
    outputs, diags = compile_mesh(checked.mesh, "istio")
    docs = [d for o in outputs if o.path != "kustomization.yaml" for d in yaml.safe_load_all(o.content) if d]
    return checked.mesh, docs, diags


def assert_valid(docs):
    for d in docs:
        assert istio_schema.errors(d) == [], (d["kind"], d["metadata"]["name"], istio_schema.errors(d))
        assert check_document(d) == [], (d["kind"], d["metadata"]["name"], check_document(d))


def find(docs, kind, name=None):
    got = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert got, (kind, name)
    return got[0]


def errors(diags):
    return [d for d in diags if d.is_error]


# ---- Envoy, as Istio configures it from a VirtualService http rule ------------------

def string_match(m: dict, value: str | None) -> bool:
    if value is None:
        return False
    if "exact" in m:
        return value == m["exact"]
    if "prefix" in m:
        return value.startswith(m["prefix"])
    if m["regex"] == "*":  # Istio: present_match
        return True
    return re2.fullmatch(m["regex"], value) is not None


def match_holds(m: dict, method: str, path: str, query: dict, headers: dict) -> bool:
    if "uri" in m and not string_match(m["uri"], path):
        return False
    if "method" in m and not string_match(m["method"], method):
        return False
    if any(not string_match(v, headers.get(k)) for k, v in m.get("headers", {}).items()):
        return False
    if any(string_match(v, headers.get(k)) for k, v in m.get("withoutHeaders", {}).items()):
        return False
    for name, sm in m.get("queryParams", {}).items():
        values = query.get(name)
        if not values or not string_match(sm, values[0]):  # Envoy tests the first value
            return False
    return True


def pick(vs: dict, method: str, path: str, query=None, headers=None) -> tuple[dict, dict | None] | None:
    """The http rule and the match a request meets (first match wins)."""
    for http in vs["spec"]["http"]:
        if "match" not in http:
            return http, None
        for m in http["match"]:
            if match_holds(m, method, path, query or {}, headers or {}):
                return http, m
    return None


def envoy_rewrite(http: dict, m: dict | None, path: str) -> str:
    """Envoy's prefix_rewrite (the route's matched prefix; the whole path of
    a path or regex match; `/` when the route tests no path) or regex_rewrite."""
    rw = http.get("rewrite", {})
    if "uriRegexRewrite" in rw:
        r = rw["uriRegexRewrite"]
        return re2.sub(r["match"], r["rewrite"].replace("\\\\", "\\"), path, count=1)
    if "uri" not in rw:
        return path
    uri = (m or {}).get("uri")
    if uri is None:
        return rw["uri"] + path[1:]
    if "prefix" in uri:
        return rw["uri"] + path[len(uri["prefix"]):]
    return rw["uri"]


def envoy_headers(http: dict, side: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Envoy removes first, then Istio's `set` options (overwrite), then its `add`s (append)."""
    ops = http.get("headers", {}).get(side, {})
    out = [(k, v) for k, v in headers if k not in ops.get("remove", [])]
    for k, v in sorted(ops.get("set", {}).items()):
        out = [(a, b) for a, b in out if a != k] + [(k, v)]
    for k, v in sorted(ops.get("add", {}).items()):
        out.append((k, v))
    return out


def envoy_cors(policy: dict | None, method: str, headers: dict) -> tuple[str, list[tuple[str, str]]] | None:
    """Envoy's CORS filter from Istio's corsPolicy: ("preflight", headers) for
    a preflight it answers, ("actual", headers) for headers it adds, None."""
    origin = headers.get("origin")
    if policy is None or not origin:
        return None
    if not any(string_match(o, origin) for o in policy["allowOrigins"]):
        return None
    if method == "OPTIONS" and headers.get("access-control-request-method"):
        out = [("access-control-allow-origin", origin)]
        if policy.get("allowMethods"):
            out.append(("access-control-allow-methods", ",".join(policy["allowMethods"])))
        if policy.get("allowHeaders"):
            out.append(("access-control-allow-headers", ",".join(policy["allowHeaders"])))
        if "maxAge" in policy:
            out.append(("access-control-max-age", str(int(float(policy["maxAge"][:-1])))))
        if policy.get("allowCredentials"):
            out.append(("access-control-allow-credentials", "true"))
        return "preflight", out
    out = [("access-control-allow-origin", origin)]
    if policy.get("allowCredentials"):
        out.append(("access-control-allow-credentials", "true"))
    if policy.get("exposeHeaders"):
        out.append(("access-control-expose-headers", ",".join(policy["exposeHeaders"])))
    return "actual", out


# ---- L7 rule options -------------------------------------------------------------

L7 = """mesh m { trust_domain "example.org" }
service web { namespace front; port 8080 http; version v1 }
service api { namespace back; port 8080 http; version v1; version v2; cors origins "*" }
route api {
  GET /api/** prefix "/old/" exact "/x" query "view" = "full" -> v2 rewrite "/v2/" host "api.internal" set request header "x-from" "api" remove response header "server"
  POST /orders -> v1 retry 2 on 503, 429, connect-failure
  /q/* query "tag" prefix "a.b" query "debug" present -> v1 add request header "x-q" "1"
  header "x-rw" present -> v1 rewrite "/all"
  * -> v1 cors origins "https://shop.example.com" methods GET, POST headers "content-type" expose "x-total" credentials max_age 1h
}
allow web -> api
"""

PATHS = ["/", "/api", "/api/", "/api/orders/7", "/old/", "/old/x/y", "/x", "/x/", "/orders", "/q/a", "/q/a/b",
         "/all", "/apix"]
QUERIES = ["", "?view=full", "?view=fully", "?tag=a.bc&debug", "?tag=axbc&debug=1", "?debug&tag=a.b",
           "?tag=b&tag=a.b&debug"]
HEADER_SETS = [{}, {"x-rw": "1"}]


def test_l7_options_compile_to_valid_virtual_service():
    _, docs, diags = compiled(L7)
    assert errors(diags) == [], [(d.code, d.message) for d in diags]
    assert_valid(docs)
    vs = find(docs, "VirtualService", "api")
    names = [h["name"] for h in vs["spec"]["http"]]
    # the glob needs another rewrite than the prefix and the exact path: two http rules, in written order
    assert names[:3] == ["rule-0", "rule-0-2", "rule-1"]
    first = vs["spec"]["http"][0]
    assert first["rewrite"]["uriRegexRewrite"]["match"].startswith("^")
    assert first["rewrite"]["authority"] == "api.internal"
    assert first["headers"] == {"request": {"set": {"x-from": "api"}}, "response": {"remove": ["server"]}}
    assert vs["spec"]["http"][1]["rewrite"]["uri"] == "/v2/"
    retry = next(h for h in vs["spec"]["http"] if h["name"] == "rule-1")["retries"]
    assert retry["retryOn"].split(",") == ["connect-failure", "503", "429"]
    last = next(h for h in vs["spec"]["http"] if h["name"] == "rule-4")
    assert last["corsPolicy"]["allowOrigins"] == [{"exact": "https://shop.example.com"}]
    assert last["corsPolicy"]["maxAge"] == "3600s" and last["corsPolicy"]["allowCredentials"] is True
    # the service's own CORS applies to the rules without one
    assert first["corsPolicy"] == {"allowOrigins": [{"regex": ".*"}]}


def test_l7_options_mean_what_semantics_says():
    mesh, docs, _ = compiled(L7)
    vs = find(docs, "VirtualService", "api")
    rules = mesh.route_map["api"].rules
    checked = 0
    for method, path, q, hs in itertools.product(["GET", "POST", "OPTIONS"], PATHS, QUERIES, HEADER_SETS):
        params = parse_query(q)
        # the reference: the first route rule whose match holds (semantics' tests)
        want = None
        for r in rules:
            m = r.match
            if m.methods and method not in m.methods:
                continue
            if m.paths and not any(path_matches(p, path) for p in m.paths):
                continue
            if any(not query_matches_raw(t.name, t.kind, t.value, params) for t in m.queries):
                continue
            if any(h.kind == "present" and h.name not in hs for h in m.headers):
                continue
            want = r
            break
        got = pick(vs, method, path, params, hs)
        assert got is not None and want is not None
        http, m = got
        assert http["name"].split("-")[1] == str(want.index), (method, path, q, hs, http["name"])
        if want.rewrite is not None and want.rewrite.path is not None:
            expect = rewrite_for([(p.kind, p.value) for p in want.match.paths],
                                 lambda k, v, p: path_matches(next(x for x in want.match.paths
                                                                   if (x.kind, x.value) == (k, v)), p),
                                 path, want.rewrite.path)
            assert envoy_rewrite(http, m, path) == expect, (path, http["name"])
            checked += 1
        base = [("x-from", "client"), ("server", "app"), ("x-q", "0")]
        for side in ("request", "response"):
            assert envoy_headers(http, side, base) == apply_header_ops(want.headers, side, base), (side, path)
    assert checked > 10


@pytest.mark.parametrize("origin, method, extra", [
    ("https://shop.example.com", "OPTIONS", {"access-control-request-method": "POST"}),
    ("https://shop.example.com", "GET", {}),
    ("https://evil.example", "OPTIONS", {"access-control-request-method": "POST"}),
    ("https://any.example", "GET", {}),
    (None, "GET", {}),
])
@pytest.mark.parametrize("path", ["/api/x", "/other"])
def test_cors_answers_as_semantics_says(origin, method, extra, path):
    mesh, docs, _ = compiled(L7)
    vs = find(docs, "VirtualService", "api")
    headers = {**extra, **({"origin": origin} if origin else {})}
    http, _ = pick(vs, method, path, {}, headers)
    rule = mesh.route_map["api"].rules[int(http["name"].split("-")[1])]
    policy = mesh.service("api").cors_for(rule)
    got = envoy_cors(http.get("corsPolicy"), method, headers)
    if not cors_sem.origin_allowed(policy, origin):
        assert got is None
    elif cors_sem.is_preflight(method, headers):
        assert got == ("preflight", cors_sem.preflight_headers(policy, origin))
    else:
        assert got == ("actual", cors_sem.response_headers(policy, origin))


@pytest.mark.parametrize("ops, lowered", [
    ('set request header "x-a" "1" add request header "x-a" "2"', None),         # two values left
    ('add request header "x-a" "1" add request header "x-a" "2"', None),
    ('add request header "x-a" "1" set request header "x-a" "2"', {"request": {"set": {"x-a": "2"}}}),
    ('remove request header "x-a" add request header "x-a" "2"', {"request": {"set": {"x-a": "2"}}}),
    ('set response header "x-a" "1" remove response header "x-a"', {"response": {"remove": ["x-a"]}}),
])
def test_header_sequences_fold_or_are_refused(ops, lowered):
    text = f"""mesh m {{ trust_domain "example.org" }}
service api {{ namespace back; port 8080 http; version v1 }}
route api {{ * -> v1 {ops} }}
"""
    _, docs, diags = compiled(text)
    if lowered is None:
        assert codes(errors(diags)) == ["MP701"] and "x-a" in errors(diags)[0].message
    else:
        assert errors(diags) == []
        assert find(docs, "VirtualService", "api")["spec"]["http"][0]["headers"] == lowered


def test_second_test_of_one_query_parameter_is_mp701():
    text = """mesh m { trust_domain "example.org" }
service api { namespace back; port 8080 http; version v1 }
route api { query "a" = "1" query "a" prefix "x" -> v1 }
"""
    checked = check_text(text)
    assert checked.ok
    _, diags = compile_mesh(checked.mesh, "istio")
    assert codes(errors(diags)) == ["MP701"] and "`a`" in errors(diags)[0].message


# ---- egress ----------------------------------------------------------------------

EGRESS = """mesh m { trust_domain "example.org"; egress %(stance)s; default %(default)s }
service orders { namespace shop; port 8080 http; version v1 }
service pay { namespace shop; port 8080 http; version v1 }
service web { namespace front; port 8080 http; version v1 }
external stripe { namespace billing; host "api.stripe.com"; port 443 tls; port 80 http; timeout 2s; retry 2 on connect-failure }
external db { namespace billing; host "db.example.com"; port 5432 tcp }
allow orders -> stripe POST /v1/charges, /v1/tokens/*
deny pay -> stripe /v1/refunds/**
allow pay -> stripe
allow namespace shop -> db
%(extra)s
"""


def egress_text(stance="registry_only", default="deny", extra=""):
    return EGRESS % {"stance": stance, "default": default, "extra": extra}


def test_externals_compile_to_valid_service_entries_and_tls_origination():
    _, docs, diags = compiled(egress_text())
    assert errors(diags) == [], [(d.code, d.message) for d in diags]
    assert_valid(docs)
    se = find(docs, "ServiceEntry", "stripe")
    assert se["metadata"]["namespace"] == "billing"
    assert se["spec"]["hosts"] == ["api.stripe.com"] and se["spec"]["location"] == "MESH_EXTERNAL"
    # the app speaks plain HTTP to its sidecar on both ports; 443 is originated as TLS
    assert {(p["number"], p["protocol"]) for p in se["spec"]["ports"]} == {(443, "HTTP"), (80, "HTTP")}
    assert find(docs, "ServiceEntry", "db")["spec"]["ports"] == [{"number": 5432, "name": "tcp-5432",
                                                                    "protocol": "TCP"}]
    dr = find(docs, "DestinationRule", "stripe")
    assert dr["spec"]["trafficPolicy"]["portLevelSettings"] == [
        {"port": {"number": 443}, "tls": {"mode": "SIMPLE", "sni": "api.stripe.com",
                                           "subjectAltNames": ["api.stripe.com"]}}]
    vs = find(docs, "VirtualService", "stripe")
    assert [h["name"] for h in vs["spec"]["http"]] == ["deny-1", "allow-0", "allow-2", "default"]
    assert vs["spec"]["http"][1]["timeout"] == "2s" and vs["spec"]["http"][1]["retries"]["attempts"] == 2


@pytest.mark.parametrize("stance, mode", [("registry_only", "REGISTRY_ONLY"), ("allow_any", "ALLOW_ANY")])
@pytest.mark.parametrize("default", ["deny", "allow"])
def test_every_sidecar_carries_the_egress_stance(stance, mode, default):
    extra = "" if default == "deny" else "deny web -> db"
    _, docs, diags = compiled(egress_text(stance, default, extra))
    sidecars = [d for d in docs if d["kind"] == "Sidecar"]
    root = find(docs, "Sidecar", "default")
    assert root["metadata"]["namespace"] == "istio-system" and "workloadSelector" not in root["spec"]
    assert all(s["spec"]["outboundTrafficPolicy"] == {"mode": mode} for s in sidecars)
    assert len(sidecars) == (4 if default == "deny" else 1)
    if default == "allow" or stance == "allow_any":
        # refusing `web` the tcp external needs web's own Sidecar under registry_only
        assert codes(errors(diags)) == ["MP701"] and "db" in errors(diags)[0].message
    else:
        assert errors(diags) == []
        assert_valid(docs)


def test_sidecars_import_the_externals_their_service_may_reach():
    _, docs, _ = compiled(egress_text())
    hosts = {d["metadata"]["name"]: d["spec"]["egress"][0]["hosts"] for d in docs
             if d["kind"] == "Sidecar" and d["metadata"]["namespace"] != "istio-system"}
    assert "billing/api.stripe.com" in hosts["orders"] and "billing/db.example.com" in hosts["orders"]
    assert "billing/api.stripe.com" in hosts["pay"]
    assert not any(h.startswith("billing/") for h in hosts["web"])  # nothing admits web
    # under allow_any a host left out would pass through: every HTTP external is imported
    _, docs, _ = compiled(egress_text("allow_any", extra="allow web -> db"))
    web = find(docs, "Sidecar", "web")["spec"]["egress"][0]["hosts"]
    assert "billing/api.stripe.com" in web


def test_wildcard_host_with_tls_origination_is_mp701():
    # The checker refuses wildcard external hosts (MP240); a model built
    # another way (an importer, the LSP) must still never lower one with TLS.
    text = """mesh m { trust_domain "example.org" }
service a { namespace ns; port 8080 http }
external cdn { namespace ns; host "a.cdn.example.com"; port 443 tls }
allow a -> cdn
"""
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics]
    checked.mesh.external_map["cdn"].hosts = ["*.cdn.example.com"]
    outputs, diags = compile_mesh(checked.mesh, "istio")
    assert codes(errors(diags)) == ["MP701"] and "*.cdn.example.com" in errors(diags)[0].message


# ---- ingress and tokens: Istio's gateway and the callee's sidecar, emulated --------

def host_ok(patterns: list[str], host: str) -> bool:
    """Envoy's virtual host domains: exact (any case), `*.suffix`, `*`."""
    h = host.lower()
    return any(p == "*" or p.lower() == h or (p.startswith("*.") and h.endswith(p[1:].lower()) and len(h) > len(p) - 1)
               for p in patterns)


class Istio:
    """The emitted resources, and what Istio's gateway and sidecars do with them."""

    def __init__(self, mesh, docs):
        self.mesh, self.docs = mesh, docs

    def selecting(self, kind, namespace, app):
        for d in self.docs:
            if d["kind"] == kind and d["metadata"]["namespace"] == namespace and \
                    d["spec"].get("selector", {}).get("matchLabels", {}).get("app") == app:
                yield d

    def token_check(self, namespace, app, token):
        """RequestAuthentication: None (passes; the validated provider or no
        token) or 401. A token whose issuer no jwtRule names fails too."""
        ras = list(self.selecting("RequestAuthentication", namespace, app))
        if token is None or not ras:
            return None
        if token.provider is None:
            return 401
        issuers = {r["issuer"] for ra in ras for r in ra["spec"]["jwtRules"]}
        return None if self.mesh.provider_map[token.provider].issuer in issuers else 401

    def split_claims(self, namespace, app):
        out = {"scope", "permission"}
        for ra in self.selecting("RequestAuthentication", namespace, app):
            for r in ra["spec"]["jwtRules"]:
                out.update(r.get("spaceDelimitedClaims", []))
        return out

    @staticmethod
    def claim_holds(claims, name, values, split):
        """Envoy's metadata matcher as Istio builds it for request.auth.claims."""
        if name not in claims:
            return False
        v = claims[name]
        if isinstance(v, str) and name in split:
            v = [w for w in v.split(" ") if w]
        if isinstance(v, str):
            return v in values
        if isinstance(v, list):
            return any(isinstance(x, str) and x in values for x in v)
        return False

    def gateway(self, gname, method, path, query, headers, host, token):
        """('status', code) or ('forward', svc, {subset: weight}, delivered path)."""
        g = self.mesh.ingress_map[gname]
        status = self.token_check(g.namespace, g.name, token)
        if status is not None:
            return ("status", status)
        gw = find(self.docs, "Gateway", gname)
        if not host_ok(gw["spec"]["servers"][0]["hosts"], host):
            return ("status", 404)
        vs = next(d for d in self.docs if d["kind"] == "VirtualService" and d["spec"].get("gateways"))
        got = pick(vs, method, path, parse_query("?" + query) if query else {}, dict(headers))
        if got is None:
            return ("status", 404)
        http, m = got
        if "directResponse" in http:
            return ("status", http["directResponse"]["status"])
        if "redirect" in http:
            return ("status", http["redirect"]["redirectCode"])
        by_host = {f"{s.name}.{s.namespace}.svc.cluster.local": s for s in self.mesh.services}
        weights: dict[tuple[str, str], float] = {}
        for d in http["route"]:
            svc = by_host[d["destination"]["host"]]
            share = float(d.get("weight", 100))
            sub = d["destination"].get("subset")
            for v, w in ({v.name: 100.0 / len(svc.versions) for v in svc.versions} if sub is None
                         else {sub: 100.0}).items():
                weights[(svc.name, v)] = weights.get((svc.name, v), 0.0) + share * w / 100
        return ("forward", {k: round(v, 6) for k, v in weights.items()}, envoy_rewrite(http, m, path))

    def allowed(self, gname, svc_name, method, path, token) -> bool | int:
        """The callee's sidecar: its RequestAuthentication (401), then its
        AuthorizationPolicies, the caller being the ingress gateway."""
        svc = self.mesh.service(svc_name)
        status = self.token_check(svc.namespace, svc.name, token)
        if status is not None:
            return status
        # the sidecar normalizes the path first (MeshConfig MERGE_SLASHES, docs/targets/istio.md)
        path = normalize_path(path)
        ras = list(self.selecting("RequestAuthentication", svc.namespace, svc.name))
        claims = token.claims if token is not None and token.provider is not None and ras else None
        if claims is not None:
            claims = {**claims, "iss": self.mesh.provider_map[token.provider].issuer}
        split = self.split_claims(svc.namespace, svc.name)
        g = self.mesh.ingress_map[gname]
        principal = f"{self.mesh.settings.trust_domain}/ns/{g.namespace}/sa/{g.account or g.name}"

        def rule_holds(rule):
            if "from" in rule and not any(principal in f["source"].get("principals", []) or
                                          "*" in f["source"].get("principals", []) for f in rule["from"]):
                return False
            if "to" in rule:
                op = rule["to"][0]["operation"]
                if "methods" in op and method not in op["methods"]:
                    return False
                if "paths" in op and not any(Cluster.path_matches(p, path) for p in op["paths"]):
                    return False
            for c in rule.get("when", []):
                name = c["key"][len("request.auth.claims["):-1]
                if claims is None or not self.claim_holds(claims, name, c["values"], split):
                    return False
            return True

        applies = [d["spec"] for d in self.docs if d["kind"] == "AuthorizationPolicy" and (
            (d["metadata"]["namespace"] == "istio-system" and "selector" not in d["spec"]) or
            (d["metadata"]["namespace"] == svc.namespace and
             d["spec"].get("selector", {}).get("matchLabels", {}).get("app") == svc.name))]
        if any(s.get("action") == "DENY" and any(rule_holds(r) for r in s.get("rules", [])) for s in applies):
            return False
        allows = [s for s in applies if s.get("action", "ALLOW") == "ALLOW"]
        return not allows or any(rule_holds(r) for s in allows for r in s.get("rules", []))


NS_FILES = {
    "shop.mesh": """mesh shop { trust_domain "example.org" }
jwt auth {
  issuer "https://auth.shop.example/"
  audience "shop-api"
  jwks "auth.jwks.json"
}
jwt partner {
  issuer "https://partner.example/"
  jwks_uri "https://partner.example/jwks"
  token header "x-partner-token"
  token query "access_token"
}
service orders { namespace shop; port 8080 http; version v1; version v2 }
service frontend { namespace web; port 8080 http; version v1 }
ingress web {
  namespace edge
  account web-gateway
  listen 8080 http
  listen 8443 https cert "web.crt" key "web.key"
  hosts "shop.example.com", "*.shop.example.com"
  /api/orders/** -> orders rewrite "/orders/"
  /api/** -> orders rewrite "/"
  header "x-beta" present GET /** -> frontend set request header "x-beta" "1"
  GET /** -> frontend
  * -> respond 404 "no such page"
}
route orders {
  GET /orders/** query "view" = "full" -> v2
  PUT /orders -> v1 retry 2 on 503, 429
  /admin/** -> v2
  /orders/legacy/** -> v1 rewrite "/v1/"
  prefix "/orders" -> v1 80%, v2 20% rewrite "/o"
}
allow internet -> frontend GET
allow internet with jwt scope has "orders:write" -> orders POST /orders
allow internet with jwt auth role = "admin" and scope has "admin" -> orders /admin/**
allow internet with jwt partner -> orders GET /orders/*
deny internet with jwt tier = "banned" -> orders
""",
}


@pytest.fixture(scope="module")
def ns_mesh(tmp_path_factory):
    import base64
    import json as _json

    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    from meshpolicy.pipeline import check_project
    from meshpolicy.project import load

    d = tmp_path_factory.mktemp("ns")
    for name, text in NS_FILES.items():
        (d / name).write_text(text)
    n = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()

    def b64(i):
        return base64.urlsafe_b64encode(i.to_bytes((i.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    (d / "auth.jwks.json").write_text(_json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256",
                                                             "n": b64(n.n), "e": b64(n.e)}]}))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (d / "web.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop.example.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (d / "web.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    checked = check_project(load([d]))
    assert checked.ok, [(x.code, x.message) for x in checked.diagnostics]
    outputs, diags = compile_mesh(checked.mesh, "istio")
    docs = [x for o in outputs if o.path != "kustomization.yaml" for x in yaml.safe_load_all(o.content) if x]
    return checked.mesh, docs, diags, outputs, (d / "web.key").read_text()


def test_ingress_and_tokens_compile_to_valid_resources(ns_mesh):
    mesh, docs, diags, outputs, private_key = ns_mesh
    assert errors(diags) == [], [(d.code, d.message) for d in diags]
    assert_valid(docs)
    gw = find(docs, "Gateway", "web")
    assert gw["metadata"]["namespace"] == "edge" and gw["spec"]["selector"] == {"app": "web"}
    https = next(s for s in gw["spec"]["servers"] if s["port"]["number"] == 8443)
    assert https["tls"] == {"mode": "SIMPLE", "credentialName": "web-tls-8443"}
    vs = find(docs, "VirtualService", "web")
    assert vs["spec"]["gateways"] == ["edge/web"]
    # no private key in the output: the Secret is the user's (docs/targets/istio.md)
    assert not any(d["kind"] == "Secret" for d in docs)
    body = private_key.splitlines()[1]
    assert all(body not in o.content for o in outputs)
    ra = find(docs, "RequestAuthentication", "web-jwt")
    rules = {r["issuer"]: r for r in ra["spec"]["jwtRules"]}
    assert set(rules) == {"https://auth.shop.example/", "https://partner.example/"}
    assert rules["https://auth.shop.example/"]["fromHeaders"] == [{"name": "authorization", "prefix": "Bearer "}]
    assert rules["https://partner.example/"]["fromHeaders"] == [{"name": "x-partner-token"}]
    assert rules["https://partner.example/"]["fromParams"] == ["access_token"]
    assert rules["https://partner.example/"]["jwksUri"] == "https://partner.example/jwks"
    assert all(r["forwardOriginalToken"] for r in rules.values())
    callee = find(docs, "RequestAuthentication", "orders-jwt")
    assert callee["spec"]["jwtRules"][0]["spaceDelimitedClaims"] == ["scope"]
    # the gateway's pods are allowed everything by the default-deny mesh
    assert find(docs, "AuthorizationPolicy", "web-ingress")["spec"]["rules"] == [{}]


def expected_shares(mesh, want) -> dict[tuple[str, str], float]:
    """(service, version) -> percent: the ingress's split over services, then
    each service's own weights (every version evenly without a route)."""
    out: dict[tuple[str, str], float] = {}
    for svc, outcome in want.forwarded.items():
        share = want.route.weights[svc]
        weights = outcome.route.weights or {v.name: 100.0 / len(mesh.service(svc).versions)
                                            for v in mesh.service(svc).versions}
        for v, w in weights.items():
            out[(svc, v)] = round(out.get((svc, v), 0.0) + share * w / 100, 6)
    return out


def _tokens(mesh):
    from meshpolicy.semantics.evaluate import INVALID_TOKEN, Token

    return [None, INVALID_TOKEN,
            Token("auth", {"sub": "a", "scope": "orders:write read"}),
            Token("auth", {"sub": "a", "scope": ["orders:write"]}),
            Token("auth", {"sub": "a", "role": "admin", "scope": "admin"}),
            Token("auth", {"sub": "a", "role": "admin", "scope": "read"}),
            Token("auth", {"sub": "a", "role": "admin", "scope": "admin", "tier": "banned"}),
            Token("partner", {"sub": "p"})]


NS_REQUESTS = [(m, p, q, h) for m, p, q, h in itertools.product(
    ["GET", "POST", "DELETE"],
    ["/", "/api/orders/7", "/api/orders/", "/api/orders", "/api/admin/x", "/api/x", "/app", "/orders",
     "/api/orders/legacy/a/b", "/api/orders/legacy"],
    ["", "view=full"],
    [(), (("x-beta", "yes"),)])]


def test_ingress_and_tokens_mean_what_the_evaluator_says(ns_mesh):
    from meshpolicy.semantics.evaluate import Request, evaluate

    mesh, docs = ns_mesh[:2]
    istio = Istio(mesh, docs)
    checked = 0
    for (method, path, query, headers), token, host in itertools.product(
            NS_REQUESTS, _tokens(mesh), ["shop.example.com", "a.b.shop.example.com", "evil.example"]):
        req = Request(None, "web", method, path, headers, query, host, token)
        want = evaluate(mesh, req)
        got = istio.gateway("web", method, path, query, headers, host, token)
        where = f"{req}"
        if want.route.kind != "forward":
            assert got == ("status", want.route.status), where
            continue
        (svc, outcome), = want.forwarded.items()
        if outcome.route.kind in ("respond", "redirect", "no_route"):
            assert got == ("status", outcome.route.status), where
            continue
        assert got[0] == "forward", (where, got)
        assert got[1] == expected_shares(mesh, want), (where, got)
        delivered = outcome.delivered or outcome.request
        assert got[2] == delivered.path, (where, got)
        verdict = istio.allowed("web", svc, method, got[2], token)
        if outcome.decision.refused and "401" in outcome.decision.refused:
            assert verdict == 401, where
        else:
            assert verdict == outcome.decision.allowed, (where, verdict)
            checked += 1
    assert checked > 100


def egress_verdict(docs, mesh, caller: str, ext_name: str, method: str, path: str) -> bool:
    """What Istio does with a request from `caller`'s sidecar to an external:
    its Sidecar must import the host (else REGISTRY_ONLY refuses it, ALLOW_ANY
    passes it through unchecked); then the host's VirtualService, keeping
    only the matches whose source conditions select the caller."""
    svc = mesh.service(caller)
    ext = mesh.external_map[ext_name]
    host = ext.hosts[0]
    own = [d for d in docs if d["kind"] == "Sidecar" and d["metadata"]["namespace"] == svc.namespace
           and d["spec"].get("workloadSelector", {}).get("labels") == {"app": svc.name}]
    sidecar = own[0] if own else find(docs, "Sidecar", "default")
    hosts = [h for e in sidecar["spec"]["egress"] for h in e["hosts"]]
    if f"{ext.namespace}/{host}" not in hosts and "*/*" not in hosts:
        return sidecar["spec"]["outboundTrafficPolicy"]["mode"] == "ALLOW_ANY"
    vs = [d for d in docs if d["kind"] == "VirtualService" and d["spec"]["hosts"] == [host]]
    if not vs:
        return True  # a tcp port: the import decides
    for http in vs[0]["spec"]["http"]:
        ms = http.get("match")
        if ms is not None:
            ms = [m for m in ms if m.get("sourceLabels", {"app": svc.name}) == {"app": svc.name}
                  and m.get("sourceNamespace", svc.namespace) == svc.namespace]
            if not any(match_holds({k: v for k, v in m.items() if not k.startswith("source")}, method, path, {}, {})
                       for m in ms):
                continue
        return "route" in http
    raise AssertionError("no http rule matched")


@pytest.mark.parametrize("stance", ["registry_only", "allow_any"])
@pytest.mark.parametrize("default", ["deny", "allow"])
def test_egress_means_what_the_evaluator_says(stance, default):
    from meshpolicy.semantics.evaluate import Request, evaluate

    extra = "allow web -> db\nallow namespace front -> stripe GET\ndeny authenticated -> stripe DELETE"
    mesh, docs, diags = compiled(egress_text(stance, default, extra))
    assert errors(diags) == [], [(d.code, d.message) for d in diags]
    checked = 0
    for caller, ext, method, path in itertools.product(
            ["orders", "pay", "web"], ["stripe", "db"], ["GET", "POST", "DELETE"],
            ["/", "/v1/charges", "/v1/tokens/x", "/v1/tokens/x/y", "/v1/refunds/1"]):
        if ext == "db" and (method, path) != ("GET", "/"):
            continue  # tcp: no methods or paths
        want = evaluate(mesh, Request(caller, ext, method, path)).decision.allowed
        got = egress_verdict(docs, mesh, caller, ext, method, path)
        assert got == want, (caller, ext, method, path, got)
        checked += 1
    assert checked == 3 * 3 * 5 + 3  # every request of the space


def test_undeclared_hosts_follow_the_stance():
    from meshpolicy.semantics.evaluate import Request, evaluate

    for stance, mode in (("registry_only", "REGISTRY_ONLY"), ("allow_any", "ALLOW_ANY")):
        mesh, docs, _ = compiled(egress_text(stance, "deny", "allow web -> db"))
        want = evaluate(mesh, Request("orders", "example.net", "GET", "/")).decision.allowed
        assert want == (mode == "ALLOW_ANY")
        assert {d["spec"]["outboundTrafficPolicy"]["mode"] for d in docs if d["kind"] == "Sidecar"} == {mode}


NS_BASE = """mesh m { trust_domain "example.org" }
jwt auth { issuer "https://auth.example/"; jwks_uri "https://auth.example/jwks" }
service orders { namespace shop; port 8080 http; version v1; version v2 }
service frontend { namespace web; port 8080 http; version v1 }
service static { namespace web; port 8080 http; version v1 }
"""


@pytest.mark.parametrize("extra, named", [
    # the ingress path and the route's path, neither implying the other, cannot be one Istio match
    ('ingress web { namespace edge; listen 8080 http; /a/*/x -> orders }\n'
     'route orders { /a/b/* -> v2\n * -> v1 }', "/a/*/x"),
    # a regex path of the route after the ingress rule's rewrite
    ('ingress web { namespace edge; listen 8080 http; /api/** -> orders rewrite "/" }\n'
     'route orders { regex "/o[0-9]+" -> v2\n * -> v1 }', "regex"),
    # a split across services one of which routes
    ('ingress web { namespace edge; listen 8080 http; * -> orders 50%, frontend 50% }\n'
     'route orders { /x -> respond 418 "t"\n * -> v1 }', "split across services"),
    ('ingress web { namespace edge; listen 8080 http; * -> orders 50%, frontend 50% }\n'
     'route orders { * -> v1 timeout 2s }', "split across services"),
    ('ingress web { namespace edge; listen 8080 http; * -> orders 50%, frontend 50% }\n'
     'route orders { * -> v1 33%, v2 67% }', "share"),
    ('ingress web { namespace edge; listen 8080 http; * -> frontend }\n'
     'allow internet with jwt scope = "read" -> frontend', "scope"),
    ('ingress web { namespace edge; listen 8080 http; * -> frontend }\n'
     'allow internet with jwt admin = "true" -> frontend', "admin"),
    ('ingress web { namespace edge; listen 8080 http; * -> frontend }\n'
     'allow internet with jwt "a[0]" = "x" -> frontend', "a[0]"),
    ('ingress web { namespace edge; listen 8080 http; * -> frontend }\n'
     'limit internet -> frontend 10/s', "internet"),
    ('limit static -> frontend 10/s per header "x-api-key"', "per header"),
    ('external db { namespace pay; host "db.example.com"; port 5432 tcp; timeout 2s }\nallow static -> db',
     "timeout"),
    # Kubernetes names: an ingress's name and account, an external's name
    ('ingress Web_gw { namespace edge; account web-gw; listen 8080 http; hosts "a.example"; * -> frontend }', "Web_gw"),
    ('external Pay_x { namespace pay; host "api.pay.example"; port 443 tls }\nallow static -> Pay_x', "Pay_x"),
])
def test_what_istio_cannot_hold_is_mp701(extra, named):
    checked = check_text(NS_BASE + extra)
    assert not [d for d in checked.diagnostics if d.is_error], [(d.code, d.message) for d in checked.diagnostics]
    _, diags = compile_mesh(checked.mesh, "istio")
    errs = errors(diags)
    assert errs and {d.code for d in errs} == {"MP701"}, [(d.code, d.message) for d in diags]
    assert any(named in d.message and "istio" in d.message for d in errs), [d.message for d in errs]


def test_split_across_unrouted_services_is_exact():
    _, docs, diags = compiled(NS_BASE + 'ingress web { namespace edge; listen 8080 http\n'
                                        '  * -> frontend 30%, static 70% }\n')
    assert errors(diags) == [], [(d.code, d.message) for d in diags]
    assert_valid(docs)
    http = find(docs, "VirtualService", "web")["spec"]["http"]
    assert http[0]["route"] == [{"destination": {"host": "frontend.web.svc.cluster.local"}, "weight": 30},
                                {"destination": {"host": "static.web.svc.cluster.local"}, "weight": 70}]


def test_has_on_a_custom_claim_splits_it_and_scope_needs_no_listing():
    _, docs, diags = compiled(NS_BASE + 'ingress web { namespace edge; listen 8080 http; * -> frontend }\n'
                                        'allow internet with jwt roles has "admin" and scope has "x" -> frontend\n')
    assert errors(diags) == []
    ra = find(docs, "RequestAuthentication", "frontend-jwt")
    assert ra["spec"]["jwtRules"][0]["spaceDelimitedClaims"] == ["roles", "scope"]
    ap = find(docs, "AuthorizationPolicy", "frontend-allow")
    assert ap["spec"]["rules"][0]["when"] == [
        {"key": "request.auth.claims[iss]", "values": ["https://auth.example/"]},
        {"key": "request.auth.claims[roles]", "values": ["admin"]},
        {"key": "request.auth.claims[scope]", "values": ["x"]}]


def test_ingress_rule_settings_replace_the_services():
    _, docs, diags = compiled(NS_BASE + 'service api { namespace shop; port 8080 http; timeout 5s; retry 3 }\n'
                                        'ingress web { namespace edge; listen 8080 http\n'
                                        '  /slow/** -> api timeout 30s\n  * -> api }\n')
    assert errors(diags) == [], [(d.code, d.message) for d in diags]
    http = find(docs, "VirtualService", "web")["spec"]["http"]
    assert (http[0]["timeout"], http[0]["retries"]["attempts"]) == ("30s", 3)
    assert (http[1]["timeout"], http[1]["retries"]["attempts"]) == ("5s", 3)


def test_limits_the_ingress_would_be_charged_by_are_mp701():
    checked = check_text(NS_BASE + 'ingress web { namespace edge; listen 8080 http; * -> frontend }\n'
                                   'limit authenticated -> frontend 10/s\n')
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics]
    _, diags = compile_mesh(checked.mesh, "istio")
    assert codes(errors(diags)) == ["MP701"] and "`web`" in errors(diags)[0].message


def test_ingress_mirror_copies_to_the_whole_service():
    _, docs, diags = compiled(NS_BASE + 'ingress web { namespace edge; listen 8080 http\n'
                                        '  * -> frontend mirror static 10% }\n')
    assert errors(diags) == [], [(d.code, d.message) for d in diags]
    assert_valid(docs)
    http = find(docs, "VirtualService", "web")["spec"]["http"][0]
    assert http["mirror"] == {"host": "static.web.svc.cluster.local"} and http["mirrorPercentage"] == {"value": 10.0}
    checked = check_text(NS_BASE + 'route static { * -> v1 }\ningress web { namespace edge; listen 8080 http\n'
                                   '  * -> frontend mirror static 10% }\n')
    _, diags = compile_mesh(checked.mesh, "istio")
    assert codes(errors(diags)) == ["MP701"] and "mirror static" in errors(diags)[0].message


# ---- generated ingresses: the merge against the evaluator -------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

GEN_PATHS = ("/api/**", "/api/orders/*", 'prefix "/api/"', 'prefix "/api/o"', 'exact "/api/orders"', "/**",
             "/a/*/b")
GEN_SERVICE_PATHS = ("/orders/**", "/orders/*", 'prefix "/orders"', 'prefix "/o"', 'exact "/orders"', 'exact "/"',
                     "/x/**", "/**", "/*/b")
GEN_REWRITES = ("", ' rewrite "/"', ' rewrite "/orders/"', ' rewrite "/v2"')
GEN_PROBES = ("/", "/api", "/api/", "/api/orders", "/api/orders/", "/api/orders/7", "/api/orders/7/x", "/api/o",
              "/api/x/b", "/a/x/b", "/orders", "/orders/1", "/x/y", "/other")


@st.composite
def ingress_meshes(draw):
    route = []
    for _ in range(draw(st.integers(1, 3))):
        p = draw(st.sampled_from(GEN_SERVICE_PATHS))
        m = draw(st.sampled_from(("", "GET ", "POST ")))
        hdr = draw(st.sampled_from(("", ' header "x-t" present', ' header "x-t" absent')))
        act = draw(st.sampled_from(("v1", "v2", "v1 50%, v2 50%", 'respond 418 "t"')))
        rw = draw(st.sampled_from(GEN_REWRITES)) if not act.startswith("respond") else ""
        route.append(f"  {m}{p}{hdr} -> {act}{rw}")
    if draw(st.booleans()):
        route.append("  * -> v1")
    rules = []
    for _ in range(draw(st.integers(1, 3))):
        p = draw(st.sampled_from(GEN_PATHS))
        m = draw(st.sampled_from(("", "GET ")))
        rw = draw(st.sampled_from(GEN_REWRITES))
        op = draw(st.sampled_from(("", ' set request header "x-t" "1"', ' remove request header "x-t"')))
        dest = draw(st.sampled_from(("orders", "orders", "orders 50%, static 50%", "orders 30%, static 70%")))
        rules.append(f"  {m}{p} -> {dest}{rw}{op}")
    claim = draw(st.sampled_from(('scope has "w"', 'role = "admin"', 'role has "admin"')))
    static_route = draw(st.sampled_from(("", 'route static { * -> v1 }', 'route static { GET /** -> v1\n  * -> v1 }',
                                         'route static { /x/** -> v1 rewrite "/"\n  * -> v1 }')))
    return f"""mesh m {{ trust_domain "example.org" }}
jwt auth {{ issuer "https://auth.example/"; jwks_uri "https://auth.example/jwks" }}
service orders {{ namespace shop; port 8080 http; version v1; version v2 }}
service static {{ namespace shop; port 8080 http; version v1 }}
{static_route}
ingress web {{
  namespace edge
  listen 8080 http
{chr(10).join(rules)}
}}
route orders {{
{chr(10).join(route)}
}}
allow internet with jwt {claim} -> orders POST
allow internet -> orders GET /orders/**, /v2/**, /, prefix "/o"
allow internet -> static GET
"""


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ingress_meshes())
def test_generated_ingresses_mean_what_the_evaluator_says(text):
    from meshpolicy.semantics.evaluate import INVALID_TOKEN, Request, Token, evaluate

    checked = check_text(text)
    if not checked.ok:
        return  # a combination the checker refuses (e.g. a rule shadowed entirely)
    mesh = checked.mesh
    outputs, diags = compile_mesh(mesh, "istio")
    if errors(diags):
        assert {d.code for d in errors(diags)} == {"MP701"}, [(d.code, d.message) for d in diags]
        return
    docs = [x for o in outputs if o.path != "kustomization.yaml" for x in yaml.safe_load_all(o.content) if x]
    assert_valid(docs)
    istio = Istio(mesh, docs)
    tokens = [None, INVALID_TOKEN, Token("auth", {"sub": "a", "scope": "r w", "role": "admin"}),
              Token("auth", {"sub": "a", "scope": "r", "role": "user"})]
    for method, path, headers, token in itertools.product(("GET", "POST"), GEN_PROBES,
                                                          ((), (("x-t", "9"),)), tokens):
        req = Request(None, "web", method, path, headers, "", "h.example", token)
        want = evaluate(mesh, req)
        got = istio.gateway("web", method, path, "", headers, "h.example", token)
        if want.route.kind != "forward":
            assert got == ("status", want.route.status), (req, got)
            continue
        answered = [o.route.status for o in want.forwarded.values()
                    if o.route.kind in ("respond", "redirect", "no_route")]
        if answered:
            assert len(want.forwarded) == 1 and got == ("status", answered[0]), (req, got)
            continue
        assert got[0] == "forward", (req, got)
        assert got[1] == expected_shares(mesh, want), (req, got)
        for svc, outcome in want.forwarded.items():
            assert got[2] == (outcome.delivered or outcome.request).path, (req, got)
            verdict = istio.allowed("web", svc, method, got[2], token)
            if not (outcome.decision.refused and "401" in outcome.decision.refused):
                assert verdict == outcome.decision.allowed, (req, verdict)
