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
from meshpolicy.semantics.patterns import path_matches
from meshpolicy.semantics.query import parse_query, query_matches_raw
from meshpolicy.semantics.rewrite import rewrite_for
from meshpolicy.targets.istio.output_check import check_document

from . import istio_schema
from .conftest import check_text, codes

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
    text = """mesh m { trust_domain "example.org" }
service a { namespace ns; port 8080 http }
external cdn { namespace ns; host "*.cdn.example.com"; port 443 tls }
allow a -> cdn
"""
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics]
    outputs, diags = compile_mesh(checked.mesh, "istio")
    assert codes(errors(diags)) == ["MP701"] and "*.cdn.example.com" in errors(diags)[0].message
