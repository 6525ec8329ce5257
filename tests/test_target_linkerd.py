"""The linkerd target: output valid against Linkerd's real CRDs, meaning
preserved against the reference evaluator, and every construct Linkerd
lacks named (MP701) rather than dropped."""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.semantics.evaluate import evaluate

from . import kube_schema
from .conftest import EXAMPLES, check_text, codes, run_meshc
from .route_meaning import linkerd_allowed, routes
from .test_linkerd_authz import linkerd_decision
from .strategies import request_space, small_policies

POLICY = """
mesh m {
  trust_domain "example.org"
  mtls strict
  default deny
}
service web {
  namespace front
  port 8080 http
}
service api {
  namespace back
  port 8080 http
  version v1 { version: "v1" }
  version v2 { version: "v2" }
  timeout 2s
  retry 2 per_try 500ms on 5xx, gateway-error non_idempotent
}
service grpcs {
  namespace back
  port 9000 grpc
  version v1
  version v2
}
route api {
  GET exact "/health" -> v1
  POST exact "/old" -> redirect "https://example.org/new" 301
  header "x-canary" = "always" -> v2
  * -> v1 80%, v2 20%
}
allow web -> api
allow namespace front -> grpcs
allow authenticated -> web
deny api -> web
limit web -> api 10/s
"""


def documents(outputs) -> list[dict]:
    return [d for o in outputs if o.path != "kustomization.yaml" for d in yaml.safe_load_all(o.content) if d]


def compiled(text: str, target: str = "linkerd", settings: dict | None = None):
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    outputs, diags = compile_mesh(checked.mesh, target, CompileOptions(settings=settings or {}))
    return checked.mesh, outputs, diags


def test_policy_compiles_and_validates_against_the_crds():
    mesh, outputs, diags = compiled(POLICY)
    assert [d for d in diags if d.is_error] == []
    reason = kube_schema.missing("linkerd")
    if reason:
        pytest.skip(reason)
    docs = documents(outputs)
    kinds = {d["kind"] for d in docs}
    assert {"Server", "AuthorizationPolicy", "MeshTLSAuthentication", "HTTPRoute", "HTTPLocalRateLimitPolicy",
            "Service", "Namespace"} <= kinds
    problems = [(d["kind"], d["metadata"]["name"], e) for d in docs for e in kube_schema.errors(d)]
    assert problems == []


def test_the_crd_check_rejects_what_linkerd_would():
    reason = kube_schema.missing("linkerd")
    if reason:
        pytest.skip(reason)
    _, outputs, _ = compiled(POLICY)
    server = next(d for d in documents(outputs) if d["kind"] == "Server")
    assert kube_schema.errors({**server, "spec": {**server["spec"], "colour": "red"}})
    route = next(d for d in documents(outputs) if d["kind"] == "HTTPRoute")
    rules = route["spec"]["rules"]
    redirect = rules[1]["filters"][0]
    assert redirect["type"] == "RequestRedirect"
    bad_filter = {**redirect, "requestRedirect": {**redirect["requestRedirect"], "statusCode": 308}}
    bad = {**route, "spec": {**route["spec"], "rules": [{**rules[1], "filters": [bad_filter]}]}}
    assert kube_schema.errors(bad)  # Linkerd's HTTPRoute redirects with 301 or 302 only


def test_deny_is_written_by_leaving_the_caller_out():
    mesh, outputs, _ = compiled(POLICY)
    docs = documents(outputs)
    auth = next(d for d in docs if d["kind"] == "MeshTLSAuthentication" and d["metadata"]["namespace"] == "front")
    accounts = {(r["namespace"], r["name"]) for r in auth["spec"]["identityRefs"]}
    assert ("back", "api") not in accounts and ("front", "web") in accounts
    for src in (None, "web", "api", "grpcs"):
        for dst in ("web", "api", "grpcs"):
            req = next(r for r in request_space(mesh, headers=False) if r.source == src and r.destination == dst)
            assert linkerd_allowed(docs, mesh, req) == evaluate(mesh, req).decision.allowed, req


def test_retries_and_timeouts_are_route_annotations_and_fields():
    _, outputs, _ = compiled(POLICY)
    route = next(d for d in documents(outputs) if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "api")
    assert route["metadata"]["annotations"] == {"retry.linkerd.io/limit": "2", "retry.linkerd.io/http": "5xx,gateway-error",
                                                "retry.linkerd.io/timeout": "500ms"}
    assert route["spec"]["rules"][0]["timeouts"] == {"request": "2s"}


def test_retries_apply_to_every_method_and_need_conditions_linkerd_has():
    """Retries apply to every method a rule matches (non_idempotent only says
    it is safe), as Linkerd's do; without `on`, the default conditions are
    connection-level ones Linkerd cannot name."""
    _, outputs, diags = compiled(POLICY.replace(" non_idempotent", ""))
    assert [d for d in diags if d.is_error] == [] and outputs
    _, outputs, diags = compiled(POLICY.replace(" on 5xx, gateway-error", ""))
    assert codes(diags) == ["MP701"] and outputs == []


@pytest.mark.parametrize("snippet", [
    "  fault abort 503 5%",  # no fault injection
    "  circuit max_connections 10",
])
def test_constructs_linkerd_lacks_are_mp701(snippet):
    text = POLICY.replace("  timeout 2s\n", f"  timeout 2s\n{snippet}\n")
    _, outputs, diags = compiled(text)
    assert codes(diags) == ["MP701"] and outputs == []


def test_shop_names_what_it_cannot_express_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    r = run_meshc("compile", str(EXAMPLES / "shop"), "--target", "linkerd", "-o", str(out), "--format", "json")
    assert r.returncode == 1
    assert not out.exists()
    import json

    errors = [d for d in json.loads(r.stdout)["diagnostics"] if d["severity"] == "error"]
    assert errors and {d["code"] for d in errors} == {"MP701"}


# ---- meaning ------------------------------------------------------------------------

def expressible(text: str) -> str:
    """A generated policy without what the linkerd target refuses by design:
    `from` in route rules, and the strategies' `/admin(/.*)?`, which also
    matches unnormalized paths (MP751), in its segment-wise spelling."""
    out = []
    for line in text.splitlines():
        line = line.replace('regex "/admin(/.*)?"', 'regex "/admin(/[a-z0-9]+)*"')
        if line.startswith("  ") and "->" in line and line.lstrip().startswith("from "):
            match, action = line.split("->", 1)
            rest = re.sub(r"^\s*from [\w-]+(, [\w-]+)*\s*", "", match)
            line = "  " + (rest.strip() or "*") + " ->" + action
        out.append(line)
    return "\n".join(out) + "\n"


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(small_policies(mtls_modes=("strict", "permissive"), actions=("forward", "split", "redirect"),
                      header_kinds=("exact", "prefix", "regex", "present"), assertions=False))
def test_linkerd_meaning_agrees_with_the_reference(text):
    text = expressible(text)
    checked = check_text(text)
    assume(checked.ok)
    mesh = checked.mesh
    outputs, diags = compile_mesh(mesh, "linkerd", CompileOptions())
    assert all(d.code in ("MP701", "MP750", "MP751") for d in diags if d.is_error), \
        [(d.code, d.message) for d in diags]
    assume(not any(d.is_error for d in diags))
    docs = documents(outputs)
    for req in request_space(mesh):
        want = evaluate(mesh, req)
        # Linkerd's inbound routes for rules with methods or paths (tests/test_linkerd_authz.py)
        assert linkerd_decision(docs, mesh, req) == want.decision.allowed, f"authorization disagrees on {req}"
        r = want.route
        if r.kind == "rejected":
            continue
        got = routes(docs, mesh, req)
        kind = "forward" if r.kind == "default" and got[0] == "forward" else r.kind
        assert got[0] == kind, f"route kind disagrees on {req}: {got} vs {r.kind}"
        if kind in ("forward", "default"):
            want_w = r.weights or {None: 100.0}
            assert {k: round(v, 6) for k, v in got[2].items() if v} == {k: round(v, 6) for k, v in want_w.items() if v}, req
        if kind == "redirect":
            assert got[4] == r.status, req
        if r.rule is not None:
            assert got[1] == r.rule.index, f"route rule disagrees on {req}"


# ---- north-south (issue 15): L7 options Linkerd carries -----------------------------

def test_retry_on_status_codes_joins_the_http_retry_annotation():
    text = POLICY.replace("on 5xx, gateway-error non_idempotent", "on 5xx, 503, 429")
    _, outputs, diags = compiled(text)
    assert [d for d in diags if d.is_error] == []
    route = next(d for d in documents(outputs) if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "api")
    assert route["metadata"]["annotations"]["retry.linkerd.io/http"] == "5xx,429,503"
    # status codes alone: no default conditions are added
    _, outputs, diags = compiled(POLICY.replace("on 5xx, gateway-error non_idempotent", "on 503"))
    route = next(d for d in documents(outputs) if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "api")
    assert route["metadata"]["annotations"]["retry.linkerd.io/http"] == "503"
    reason = kube_schema.missing("linkerd")
    if reason:
        pytest.skip(reason)
    assert kube_schema.errors(route) == []


def test_retry_on_status_codes_of_a_grpc_route_is_mp701():
    text = POLICY.replace("  version v1\n  version v2\n}", "  version v1\n  version v2\n  retry 2 on 503\n}")
    _, outputs, diags = compiled(text)
    assert codes(diags) == ["MP701"] and outputs == []


HEADER_OPS = ('GET exact "/health" -> v1 set request header "x-a" "1" add request header "x-b" "2" '
              'remove request header "x-c" add request header "x-d" "3" remove request header "x-d" '
              'remove request header "x-e" add request header "x-e" "4"')


def test_request_header_operations_are_one_request_header_modifier():
    _, outputs, diags = compiled(POLICY.replace('GET exact "/health" -> v1', HEADER_OPS))
    assert [d for d in diags if d.is_error] == []
    route = next(d for d in documents(outputs) if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "api")
    filters = route["spec"]["rules"][0]["filters"]
    assert filters == [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
        "set": [{"name": "x-a", "value": "1"}, {"name": "x-e", "value": "4"}],
        "add": [{"name": "x-b", "value": "2"}],
        "remove": ["x-c", "x-d"]}}]
    reason = kube_schema.missing("linkerd")
    if reason:
        pytest.skip(reason)
    assert kube_schema.errors(route) == []


@pytest.mark.parametrize("ops", [
    'add request header "x-b" "1" add request header "x-b" "2"',  # two values on one header
    'set request header "x-b" "1" add request header "x-b" "2"',
])
def test_header_sequences_linkerd_cannot_hold_are_mp701(ops):
    _, outputs, diags = compiled(POLICY.replace('GET exact "/health" -> v1', f'GET exact "/health" -> v1 {ops}'))
    assert codes(diags) == ["MP701"] and outputs == []


@pytest.mark.parametrize("option", [
    'remove response header "server"',  # no ResponseHeaderModifier on a rule
    'rewrite "/v1/"',  # no URLRewrite filter
    'cors origins "https://shop.example.com"',
])
def test_rule_options_linkerd_lacks_are_mp701(option):
    text = POLICY.replace('GET exact "/health" -> v1', f'GET exact "/health" -> v1 {option}')
    _, outputs, diags = compiled(text)
    assert codes(diags) == ["MP701"] and outputs == []


# ---- north-south (issue 15): egress as EgressNetworks ------------------------------

EGRESS = """
mesh m {
  trust_domain "example.org"
  mtls strict
  default STANCE
  egress EGRESS
}
service web {
  namespace front
  port 8080 http
}
service pay {
  namespace back
  port 8080 http
}
service audit {
  namespace back
  port 8080 http
}
external stripe {
  host "api.stripe.com", "b.stripe.net"
  port 80 http
  timeout 2s
  retry 2 on 503, gateway-error
}
external maps {
  host "maps.example.com"
  port 8080 http
}
allow web -> pay
RULES
"""


def egress_policy(egress: str, rules: str, default: str = "deny") -> str:
    return EGRESS.replace("STANCE", default).replace("EGRESS", egress).replace("RULES", rules)


def linkerd_egress(docs: list[dict], namespace: str, host: str, port: int, method: str = "GET",
                   path: str = "/") -> bool:
    """Whether the client proxy of a pod in `namespace` lets a request out,
    as Linkerd's docs describe it: the namespace's EgressNetwork decides; a
    rule of a route attached to it (parentRef port, hostnames holding the
    host) whose match holds lets the request through to the original
    destination, else the trafficPolicy (Deny: 403 from the proxy)."""
    nets = [d for d in docs if d["kind"] == "EgressNetwork" and d["metadata"]["namespace"] == namespace]
    if not nets:
        return True  # no EgressNetwork: Linkerd does not police egress
    assert len(nets) == 1
    net = nets[0]
    for d in docs:
        if d["kind"] != "HTTPRoute" or d["metadata"]["namespace"] != namespace:
            continue
        for ref in d["spec"]["parentRefs"]:
            if ref.get("kind") == "EgressNetwork" and ref["name"] == net["metadata"]["name"] and ref["port"] == port \
                    and host in d["spec"].get("hostnames", []):
                for rule in d["spec"]["rules"]:
                    assert rule["backendRefs"][0]["kind"] == "EgressNetwork"
                    if any(_egress_match(m, method, path) for m in rule.get("matches") or [{}]):
                        return True
    return net["spec"]["trafficPolicy"] == "Allow"


def _egress_match(m: dict, method: str, path: str) -> bool:
    if m.get("method", method) != method:
        return False
    p = m.get("path")
    if p is None:
        return True
    if p["type"] == "Exact":
        return path == p["value"]
    assert p["type"] == "RegularExpression"
    return re.fullmatch(p["value"], path) is not None


EGRESS_REQUESTS = [("GET", "/v1/status"), ("POST", "/v1/charges"), ("GET", "/v1/charges"), ("POST", "/v1/refunds/12"),
                   ("POST", "/v1/refunds/12/x"), ("DELETE", "/v1/other")]
UNNORMALIZED = [("POST", "/v1/refunds/../charges"), ("POST", "/v1/refunds/./12"), ("POST", "/v1//charges")]


@pytest.mark.parametrize("egress,default,rules", [
    ("registry_only", "deny", "allow namespace back -> stripe"),
    ("registry_only", "deny", "allow pay, audit -> stripe\nallow * -> maps"),
    ("registry_only", "allow", "deny namespace front -> maps"),
    ("registry_only", "allow", ""),
    ("registry_only", "deny", ""),
    ("allow_any", "deny", "allow * -> stripe\nallow * -> maps"),
    ("allow_any", "allow", ""),
    ("registry_only", "deny", "allow namespace back -> stripe POST /v1/charges, /v1/refunds/*\n"
                              "allow * -> stripe GET /v1/status\nallow * -> maps GET"),
    ("registry_only", "deny", "allow * -> stripe POST /v1/refunds/**\nallow namespace front -> stripe\n"
                              "deny web -> maps"),
    ("registry_only", "allow", "allow pay -> stripe POST /v1/charges"),  # default allow: the allow changes nothing
])
def test_egress_meaning_agrees_with_the_reference(egress, default, rules):
    from meshpolicy.semantics.egress import destination_for_host
    from meshpolicy.semantics.evaluate import Request

    mesh, outputs, diags = compiled(egress_policy(egress, rules, default))
    assert [d for d in diags if d.is_error] == []
    docs = documents(outputs)
    assert {d["spec"]["trafficPolicy"] for d in docs if d["kind"] == "EgressNetwork"} == \
        {"Deny" if egress == "registry_only" else "Allow"}
    checked = 0
    for caller in ("web", "pay", "audit"):
        ns = mesh.service_map[caller].namespace
        for host, port in (("api.stripe.com", 80), ("b.stripe.net", 80), ("maps.example.com", 8080),
                           ("undeclared.example.net", 80)):
            for method, path in EGRESS_REQUESTS + UNNORMALIZED:
                want = evaluate(mesh, Request(source=caller, destination=destination_for_host(mesh, host),
                                              method=method, path=path, host=host)).decision.allowed
                got = linkerd_egress(docs, ns, host, port, method, path)
                if (method, path) in UNNORMALIZED:
                    assert want or not got, (caller, host, method, path)  # Linkerd may be stricter, never looser
                else:
                    assert got == want, (caller, host, method, path)
                checked += 1
    assert checked == 3 * 4 * 9
    reason = kube_schema.missing("linkerd")
    if reason:
        pytest.skip(reason)
    problems = [(d["kind"], d["metadata"]["name"], e) for d in docs for e in kube_schema.errors(d)]
    assert problems == []


def test_egress_routes_carry_the_externals_timeout_and_retry():
    _, outputs, _ = compiled(egress_policy("registry_only", "allow namespace back -> stripe"))
    docs = documents(outputs)
    routes_ = [d for d in docs if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "egress-stripe-80"]
    assert [r["metadata"]["namespace"] for r in routes_] == ["back"]
    route = routes_[0]
    assert route["spec"]["hostnames"] == ["api.stripe.com", "b.stripe.net"]
    assert route["spec"]["rules"][0]["timeouts"] == {"request": "2s"}
    assert route["metadata"]["annotations"] == {"retry.linkerd.io/limit": "2",
                                                "retry.linkerd.io/http": "gateway-error,503"}
    reason = kube_schema.missing("linkerd")
    if reason:
        pytest.skip(reason)
    net = next(d for d in docs if d["kind"] == "EgressNetwork")
    assert kube_schema.errors({**net, "spec": {"trafficPolicy": "Maybe"}})  # the CRD's enum is checked


@pytest.mark.parametrize("egress,rules", [
    ("registry_only", "allow pay -> stripe"),  # pay may, audit (same namespace) may not: per namespace only
    ("allow_any", "allow namespace back -> stripe\nallow * -> maps"),  # Allow lets stripe through for front too
    ("registry_only", "deny pay -> stripe POST /v1/charges\nallow * -> stripe"),  # needs the deny's complement
    ("registry_only", "allow pay, audit -> stripe POST /v1/charges\nallow audit -> stripe GET"),  # back split
    ("registry_only", "allow pay -> stripe\nallow audit -> stripe GET /x"),  # all of it vs some of it
    ("registry_only", 'allow * -> stripe regex "/v1/.*"'),  # matches unnormalized paths Linkerd would take as sent
])
def test_egress_linkerd_cannot_decide_is_mp701(egress, rules):
    _, outputs, diags = compiled(egress_policy(egress, rules))
    assert codes(diags) == ["MP701"] and outputs == []


@pytest.mark.parametrize("port,egress", [("443 tls", "registry_only"), ("5432 tcp", "registry_only")])
def test_external_ports_linkerd_cannot_police_are_mp701(port, egress):
    text = egress_policy(egress, "allow * -> maps").replace("port 8080 http\n}\nallow", f"port {port}\n}}\nallow")
    _, outputs, diags = compiled(text)
    assert codes(diags) == ["MP701"] and outputs == []


def test_a_tcp_external_under_allow_any_needs_no_route():
    text = egress_policy("allow_any", "allow * -> maps", "allow").replace("port 8080 http\n}\nallow",
                                                                         "port 5432 tcp\n}\nallow")
    _, outputs, diags = compiled(text)
    assert [d for d in diags if d.is_error] == []
    assert not any(d["metadata"]["name"].startswith("egress-maps") for d in documents(outputs))


def test_an_egress_route_named_like_a_service_route_is_mp741():
    """`egress-stripe-80` is also the route of port 80 of a service named
    `egress-stripe` with two ports: reported, never one replacing the other."""
    text = egress_policy("registry_only", "allow namespace back -> stripe") + """
service egress-stripe {
  namespace back
  port 80 http
  port 81 http
  version v1
}
"""
    _, outputs, diags = compiled(text)
    assert codes(diags) == ["MP741"] and outputs == []
    _, outputs, diags = compiled(text.replace("namespace back\n  port 80", "namespace front\n  port 80")
                                 .replace("allow namespace back", "allow namespace back, namespace front"))
    assert codes(diags) == ["MP741"] and outputs == []
    _, outputs, diags = compiled(text.replace("port 81 http\n  version v1\n", ""))  # one port: route `egress-stripe`
    assert [d for d in diags if d.is_error] == []


def test_an_external_reached_by_address_is_mp701():
    text = egress_policy("registry_only", "allow * -> stripe").replace('"b.stripe.net"', '"203.0.113.7"')
    _, outputs, diags = compiled(text)
    assert codes(diags) == ["MP701"] and outputs == []


def _linkerd_modify(f: dict, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """linkerd2-proxy's ModifyHeader::apply: every `add` appended, then each
    `set` replacing the name's values, then each `remove`."""
    body = f["requestHeaderModifier"]
    out = list(headers)
    for h in body.get("add", []):
        out.append((h["name"], h["value"]))
    for h in body.get("set", []):
        out = [(k, v) for k, v in out if k != h["name"]] + [(h["name"], h["value"])]
    for name in body.get("remove", []):
        out = [(k, v) for k, v in out if k != name]
    return out


def _by_name(headers):
    out: dict[str, list[str]] = {}
    for k, v in headers:
        out.setdefault(k, []).append(v)
    return out



_OPS = st.lists(st.tuples(st.sampled_from(["set", "add", "remove"]), st.sampled_from(["x-a", "x-b"]),
                          st.sampled_from(["1", "2"])), max_size=5)


@settings(max_examples=300, deadline=None)
@given(_OPS, st.lists(st.tuples(st.sampled_from(["x-a", "x-b", "x-c"]), st.sampled_from(["0", "9"])), max_size=3))
def test_the_header_modifier_does_what_the_written_operations_do(ops, start):
    """The folded RequestHeaderModifier, applied the way Linkerd applies it,
    leaves each header with the values the policy's operations in written
    order leave (semantics/header_ops.py); or the sequence is MP701."""
    from meshpolicy.model.types import HeaderOp
    from meshpolicy.semantics.header_ops import apply_header_ops
    from meshpolicy.targets.linkerd import dialect
    from meshpolicy.targets.linkerd.routes import header_modifier

    model = [HeaderOp(side="request", op=op, name=name, value=None if op == "remove" else value)
             for op, name, value in ops]
    diags: list = []
    f = header_modifier(model, dialect("linkerd", diags), "in a test")
    if f is None:
        assert [d.code for d in diags] == ["MP701"]
        return
    assert diags == []
    want = _by_name(apply_header_ops(model, "request", start))
    assert _by_name(_linkerd_modify(f, start)) == want


def test_more_header_names_than_a_modifier_holds_is_mp701():
    ops = " ".join(f'set request header "x-h{i}" "v"' for i in range(17))
    _, outputs, diags = compiled(POLICY.replace('GET exact "/health" -> v1', f'GET exact "/health" -> v1 {ops}'))
    assert codes(diags) == ["MP701"] and outputs == []
    _, outputs, diags = compiled(POLICY.replace('GET exact "/health" -> v1', 'GET exact "/health" -> v1 '
                                                + " ".join(f'set request header "x-h{i}" "v"' for i in range(16))))
    assert [d for d in diags if d.is_error] == []
    reason = kube_schema.missing("linkerd")
    if reason:
        pytest.skip(reason)
    route = next(d for d in documents(outputs) if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "api")
    assert kube_schema.errors(route) == []


def test_egress_hostnames_are_lower_case_and_at_most_sixteen():
    text = egress_policy("registry_only", "allow * -> stripe").replace('"b.stripe.net"', '"B.Stripe.net"')
    _, outputs, diags = compiled(text)
    assert [d for d in diags if d.is_error] == []
    route = next(d for d in documents(outputs) if d["metadata"]["name"] == "egress-stripe-80")
    assert route["spec"]["hostnames"] == ["api.stripe.com", "b.stripe.net"]
    hosts = ", ".join(f'"h{i}.stripe.com"' for i in range(17))
    _, outputs, diags = compiled(egress_policy("registry_only", "allow * -> stripe")
                                 .replace('"api.stripe.com", "b.stripe.net"', hosts))
    assert codes(diags) == ["MP701"] and outputs == []
    reason = kube_schema.missing("linkerd")
    if reason:
        pytest.skip(reason)
    assert kube_schema.errors(route) == []
