"""Meaning preserved: an evaluator of Istio's own semantics, run on the
emitted YAML, must agree with meshpolicy.semantics.evaluate on every request
of generated small policies.

The evaluator reads only the YAML plus the deployment convention the target
documents: each service's pods run in its namespace with the label
`app: <service>` and its service account.

- VirtualService: the first http rule with no match, or with some
  HTTPMatchRequest whose every condition holds (uri/method/headers as
  exact/prefix/RE2 full match, withoutHeaders as not-matching,
  sourceLabels/sourceNamespace against the caller's pod).
- AuthorizationPolicy: policies that select the workload (root namespace
  without selector, or its namespace with a matching selector); any DENY
  rule match denies; if ALLOW policies apply, one must match; else allow.
  Peers have a principal only over mTLS (PeerAuthentication not DISABLE).
"""

from __future__ import annotations

import re

import pytest
import re2
import yaml
from hypothesis import HealthCheck, given, settings

from meshpolicy.compile import compile_mesh
from meshpolicy.semantics.evaluate import evaluate

from .conftest import check_text
from .strategies import request_space, small_policies

ROOT_NS = "istio-system"
PCHAR_SEGMENT = r"[A-Za-z0-9\-._~%!$&'()+,;:@=]+"  # Envoy URI template `{*}`


def string_match(m: dict, value: str | None) -> bool:
    if value is None:
        return False
    if "exact" in m:
        return value == m["exact"]
    if "prefix" in m:
        return value.startswith(m["prefix"])
    return re2.fullmatch(m["regex"], value) is not None


class Cluster:
    """The emitted resources, indexed the way Istio looks them up."""

    def __init__(self, mesh, docs: list[dict]):
        self.mesh = mesh
        self.docs = docs
        self.vs = {host: d for d in docs if d["kind"] == "VirtualService" for host in d["spec"]["hosts"]}

    def pod(self, name):
        svc = self.mesh.service(name)
        return {"app": svc.name}, svc.namespace, svc.account

    # ---- routing ----------------------------------------------------------------
    def request_holds(self, m: dict, req) -> bool:
        headers = req.header_map
        if "uri" in m and not string_match(m["uri"], req.path):
            return False
        if "method" in m and not string_match(m["method"], req.method):
            return False
        if any(not string_match(v, headers.get(k)) for k, v in m.get("headers", {}).items()):
            return False
        if any(string_match(v, headers.get(k)) for k, v in m.get("withoutHeaders", {}).items()):
            return False
        params = req.query_params
        for k, v in m.get("queryParams", {}).items():  # Envoy tests the first value; `*` is present_match
            if not params.get(k) or not (v.get("regex") == "*" or string_match(v, params[k][0])):
                return False
        if "sourceLabels" in m or "sourceNamespace" in m:
            if req.source is None or self.mesh.service(req.source) is None:
                return False
            labels, ns, _ = self.pod(req.source)
            if any(labels.get(k) != v for k, v in m.get("sourceLabels", {}).items()):
                return False
            if "sourceNamespace" in m and m["sourceNamespace"] != ns:
                return False
        return True

    def route(self, req):
        svc = self.mesh.service(req.destination)
        host = f"{svc.name}.{svc.namespace}.svc.cluster.local"
        vs = self.vs.get(host)
        if vs is None:
            return ("default", None, {}, None, None)
        for http in vs["spec"]["http"]:
            if "match" in http and not any(self.request_holds(m, req) for m in http["match"]):
                continue
            # `rule-N`, or `rule-N-K` for the K-th part of a rule split by its rewrites
            index = int(http["name"].split("-")[1]) if http["name"].startswith("rule-") else None
            if "directResponse" in http:
                if http["name"] == "no-route":
                    return ("no_route", None, {}, None, 404)
                return ("respond", index, {}, None, http["directResponse"]["status"])
            if "redirect" in http:
                return ("redirect", index, {}, None, http["redirect"]["redirectCode"])
            dests = http["route"]
            if "subset" not in dests[0]["destination"]:
                # the whole service: Istio balances over every endpoint (every version)
                n = len(svc.versions)
                return ("default", None, {v.name: 100.0 / n for v in svc.versions} if n else {}, None, None)
            weights: dict[str, float] = {}
            for d in dests:
                sub = d["destination"]["subset"]
                weights[sub] = weights.get(sub, 0.0) + float(d.get("weight", 100 if len(dests) == 1 else 0))
            mirror = None
            if "mirror" in http:
                mirror = (http["mirror"]["subset"], http.get("mirrorPercentage", {"value": 100.0})["value"])
            return ("forward", index, weights, mirror, None)
        return ("no_route", None, {}, None, 404)

    def can_reach(self, caller: str, dest: str) -> bool:
        """Whether the caller's Sidecar (if any) imports the destination's host."""
        labels, ns, _ = self.pod(caller)
        svc = self.mesh.service(dest)
        host = f"{svc.namespace}/{svc.name}.{svc.namespace}.svc.cluster.local"
        for d in self.docs:
            if d["kind"] == "Sidecar" and d["metadata"]["namespace"] == ns and all(
                    labels.get(k) == v for k, v in d["spec"]["workloadSelector"]["labels"].items()):
                hosts = [h for e in d["spec"]["egress"] for h in e["hosts"]]
                return host in hosts or f"{svc.namespace}/*" in hosts or "*/*" in hosts
        return True

    # ---- authorization ------------------------------------------------------------
    def mtls_mode(self, dest: str) -> str:
        labels, ns, _ = self.pod(dest)
        mode = None
        for d in self.docs:
            if d["kind"] != "PeerAuthentication":
                continue
            sel = d["spec"].get("selector", {}).get("matchLabels")
            if d["metadata"]["namespace"] == ns and sel and all(labels.get(k) == v for k, v in sel.items()):
                return d["spec"]["mtls"]["mode"]
            if d["metadata"]["namespace"] == ROOT_NS and not sel:
                mode = d["spec"]["mtls"]["mode"]
        return mode or "PERMISSIVE"

    def peer(self, req):
        """(principal, namespace) the destination sees, or (None, None)."""
        if req.source is None or self.mesh.service(req.source) is None:
            return None, None
        if self.mtls_mode(req.destination) == "DISABLE":
            return None, None
        _, ns, account = self.pod(req.source)
        return f"{self.mesh.settings.trust_domain}/ns/{ns}/sa/{account}", ns

    @staticmethod
    def path_matches(pattern: str, path: str) -> bool:
        if "{" in pattern:
            rx = "/".join(PCHAR_SEGMENT if s == "{*}" else ".*" if s == "{**}" else re.escape(s)
                          for s in pattern.split("/"))
            return re.fullmatch(rx, path) is not None
        if pattern == "*":
            return True
        if pattern.endswith("*"):
            return path.startswith(pattern[:-1])
        if pattern.startswith("*"):
            return path.endswith(pattern[1:])
        return path == pattern

    def rule_matches(self, rule: dict, req, principal, namespace) -> bool:
        if "from" in rule:
            ok = False
            for f in rule["from"]:
                s = f["source"]
                if "principals" in s and not (principal is not None and any(
                        p == "*" or p == principal for p in s["principals"])):
                    continue
                if "namespaces" in s and namespace not in s["namespaces"]:
                    continue
                ok = True
            if not ok:
                return False
        if "to" in rule:
            ok = False
            for t in rule["to"]:
                op = t["operation"]
                if "methods" in op and req.method not in op["methods"]:
                    continue
                if "paths" in op and not any(self.path_matches(p, req.path) for p in op["paths"]):
                    continue
                ok = True
            if not ok:
                return False
        return True

    def allowed(self, req) -> bool:
        labels, ns, _ = self.pod(req.destination)
        principal, namespace = self.peer(req)
        if principal is None and self.mtls_mode(req.destination) == "STRICT":
            return False  # PeerAuthentication STRICT refuses plaintext before any AuthorizationPolicy
        applies = []
        for d in self.docs:
            if d["kind"] != "AuthorizationPolicy":
                continue
            sel = d["spec"].get("selector", {}).get("matchLabels")
            if d["metadata"]["namespace"] == ROOT_NS and not sel:
                applies.append(d["spec"])
            elif d["metadata"]["namespace"] == ns and (not sel or all(labels.get(k) == v for k, v in sel.items())):
                applies.append(d["spec"])
        for spec in applies:
            if spec.get("action") == "DENY" and any(self.rule_matches(r, req, principal, namespace)
                                                    for r in spec.get("rules", [])):
                return False
        allows = [s for s in applies if s.get("action", "ALLOW") == "ALLOW"]
        if not allows:
            return True
        return any(self.rule_matches(r, req, principal, namespace) for s in allows for r in s.get("rules", []))


def reference(outcome):
    r = outcome.route
    index = r.rule.index if r.rule is not None else None
    return (r.kind, index, {k: round(v, 6) for k, v in r.weights.items()}, r.mirror,
            r.status if r.kind in ("redirect", "respond", "no_route") else None)


def compiled_cluster(text):
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics]
    outputs, diags = compile_mesh(checked.mesh, "istio")
    errors = [d for d in diags if d.is_error]
    docs = [d for o in outputs if o.path != "kustomization.yaml" for d in yaml.safe_load_all(o.content) if d]
    return checked.mesh, errors, Cluster(checked.mesh, docs)


def assert_same_meaning(text):
    mesh, errors, cluster = compiled_cluster(text)
    if errors:
        # Only constructs Istio cannot express may fail: regex paths in
        # authorization and splits with fractional weights.
        assert all(d.code == "MP701" for d in errors)
        lines = text.splitlines()
        for d in errors:
            written = lines[d.span.line - 1]
            assert "regex" in written or re.search(r"\d\.\d+%", written), (d.message, written)
        return
    for req in request_space(mesh):
        want = evaluate(mesh, req)
        got_allowed = cluster.allowed(req)
        assert got_allowed == want.decision.allowed, f"authorization differs for {req}: istio {got_allowed}"
        if want.decision.allowed and req.source is not None and req.source != req.destination:
            # Sidecar scoping must never hide a destination a caller may call.
            assert cluster.can_reach(req.source, req.destination), f"Sidecar of {req.source} hides {req}"
        if mesh.service(req.destination).http:
            got = cluster.route(req)
            got = (got[0], got[1], {k: round(v, 6) for k, v in got[2].items()}, got[3], got[4])
            assert got == reference(want), f"routing differs for {req}: istio {got} vs {reference(want)}"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_policies(assertions=False, max_services=3))
def test_istio_means_what_the_policy_means(text):
    assert_same_meaning(text)


@pytest.mark.parametrize("text", [
    # default deny, every source kind, glob/prefix/exact paths, deny over allow
    """mesh m { trust_domain "example.org"; mtls permissive }
service web { namespace front; port 8080 http; version v1 }
service api { namespace back; port 8080 http; version v1; version v2 }
service db { namespace back; port 8080 http; mtls off; version v1 }
route api {
  from web GET /orders/* header "x-user" prefix "al" -> v2
  header "x-canary" present -> v1 90%, v2 10%
  header "x-user" absent POST /orders -> respond 503 "no"
  /items/** -> redirect "https://example.org/x" 308
}
allow web, namespace back -> api GET /orders/*, /orders/**, prefix "/adm"
allow authenticated -> api PUT
allow * -> db
deny web -> api /orders/7
""",
    # default allow: allow rules change nothing, deny rules still deny
    """mesh m { trust_domain "example.org"; default allow }
service web { namespace front; port 8080 http; version v1 }
service api { namespace back; port 8080 http; version v1 }
allow web -> api GET
deny * -> api DELETE
""",
])
def test_handwritten_policies_mean_the_same(text):
    assert_same_meaning(text)


def test_query_matches_and_l7_options_mean_the_same():
    """Issue 15: query tests decide the rule, weights and answer as the
    evaluator's do, with rewrite, header operations, retry on status and
    CORS on the rules (what the callee then authorizes after a rewrite is
    checked in test_target_istio_northsouth.py)."""
    from dataclasses import replace

    text = """mesh m { trust_domain "example.org" }
service web { namespace front; port 8080 http; version v1 }
service api { namespace back; port 8080 http; version v1; version v2; cors origins "https://a.example" }
route api {
  GET /orders/* query "view" = "full" -> v2 rewrite "/o/" set request header "x-v" "2"
  query "debug" present -> v1 remove response header "server"
  query "tag" prefix "be" -> v1 50%, v2 50% retry 2 on 503
  * -> v1
}
allow web -> api GET, POST /o/**, /orders/**
"""
    mesh, errors, cluster = compiled_cluster(text)
    assert errors == []
    for base in request_space(mesh, headers=False):
        for query in ("", "view=full", "view=fuller", "debug", "debug=1&view=full", "tag=beta", "tag=alpha"):
            req = replace(base, query=query)
            want = evaluate(mesh, req)
            if mesh.service(req.destination).http and req.source != req.destination:
                got = cluster.route(req)
                got = (got[0], got[1], {k: round(v, 6) for k, v in got[2].items()}, got[3], got[4])
                assert got == reference(want), f"routing differs for {req}?{query}"
