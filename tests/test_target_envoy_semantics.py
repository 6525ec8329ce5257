"""The Envoy bootstraps mean what the policy means.

A small evaluator of the Envoy semantics the bootstraps rely on (first
matching route of the virtual host, header/path/method matchers, weighted
clusters, the inbound TLS SAN check, then the DENY and ALLOW RBAC filters
with principals from the peer's SPIFFE URI SAN) runs over the emitted YAML
for generated policies and requests, and must agree with the reference
evaluator (meshpolicy.semantics.evaluate) on the decision and the route.
"""

from __future__ import annotations

import re2
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshpolicy.compile import CompileOptions
from meshpolicy.semantics.evaluate import Request, evaluate
from meshpolicy.targets.envoy import TARGET
from meshpolicy.targets.envoy.conventions import workloads

from .conftest import check_text
from .strategies import request_space, small_policies

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
REDIRECT_STATUS = {"MOVED_PERMANENTLY": 301, "FOUND": 302, "SEE_OTHER": 303, "TEMPORARY_REDIRECT": 307,
                   "PERMANENT_REDIRECT": 308}


# ---- a small Envoy -------------------------------------------------------------

def string_matches(m: dict, value: str) -> bool:
    if "exact" in m:
        return value == m["exact"]
    if "prefix" in m:
        return value.startswith(m["prefix"])
    if "suffix" in m:
        return value.endswith(m["suffix"])
    if "safe_regex" in m:
        return re2.fullmatch(m["safe_regex"]["regex"], value) is not None
    raise AssertionError(f"matcher the test evaluator does not know: {m}")


def header_holds(h: dict, req: Request) -> bool:
    value = req.method if h["name"] == ":method" else req.header_map.get(h["name"])
    if "present_match" in h:
        result = (value is not None) == h["present_match"]
    else:
        result = value is not None and string_matches(h["string_match"], value)
    return result != h.get("invert_match", False)


def route_matches(m: dict, req: Request) -> bool:
    path = req.path
    if "prefix" in m:
        ok = path.startswith(m["prefix"])
    elif "path" in m:
        ok = path == m["path"]
    else:
        ok = re2.fullmatch(m["safe_regex"]["regex"], path) is not None
    return ok and all(header_holds(h, req) for h in m.get("headers", []))


def version_of(cluster: str) -> str | None:
    return cluster.split("|", 1)[1] if "|" in cluster else None


def envoy_route(boot: dict, req: Request):
    """(kind, weights, mirror, status) as the caller's sidecar routes req,
    or None when the sidecar has no virtual host for the destination."""
    hcm = next(li for li in boot["static_resources"]["listeners"] if li["name"] == "outbound")
    hcm = hcm["filter_chains"][0]["filters"][0]["typed_config"]
    vhs = [vh for vh in hcm["route_config"]["virtual_hosts"] if req.destination in vh["domains"]]
    if not vhs:
        return None
    assert len(vhs) == 1
    for r in vhs[0]["routes"]:
        if not route_matches(r["match"], req):
            continue
        if "redirect" in r:
            return ("redirect", {}, None, REDIRECT_STATUS[r["redirect"].get("response_code", "MOVED_PERMANENTLY")])
        if "direct_response" in r:
            return ("respond", {}, None, r["direct_response"]["status"])
        a = r["route"]
        if "cluster" in a:
            raw = {version_of(a["cluster"]): 1.0}
        else:
            raw = {}
            for c in a["weighted_clusters"]["clusters"]:
                raw[version_of(c["name"])] = raw.get(version_of(c["name"]), 0) + c["weight"]
        total = sum(raw.values())
        weights = {v: 100.0 * w / total for v, w in raw.items()}
        mirror = None
        for m in a.get("request_mirror_policies", []):
            f = m["runtime_fraction"]["default_value"]
            assert f["denominator"] == "MILLION"
            mirror = (version_of(m["cluster"]), f["numerator"] / 10000)
        return ("forward", weights, mirror, None)
    return ("no_route", {}, None, 404)


def principal_matches(p: dict, peer: str | None) -> bool:
    if "any" in p:
        return True
    if "not_id" in p:
        return not principal_matches(p["not_id"], peer)
    if "authenticated" in p:
        if peer is None:
            return False
        name = p["authenticated"].get("principal_name")
        return name is None or string_matches(name, peer)
    if "and_ids" in p:
        return all(principal_matches(x, peer) for x in p["and_ids"]["ids"])
    if "or_ids" in p:
        return any(principal_matches(x, peer) for x in p["or_ids"]["ids"])
    if "metadata" in p and p["metadata"].get("filter") == "envoy.filters.http.jwt_authn":
        return False  # a validated token's claims: the probes here carry no token (the north-south tests do)
    raise AssertionError(f"principal the test evaluator does not know: {p}")


def permission_matches(p: dict, req: Request) -> bool:
    if "any" in p:
        return True
    if "header" in p:
        return header_holds(p["header"], req)
    if "url_path" in p:
        return string_matches(p["url_path"]["path"], req.path)
    if "and_rules" in p:
        return all(permission_matches(x, req) for x in p["and_rules"]["rules"])
    if "or_rules" in p:
        return any(permission_matches(x, req) for x in p["or_rules"]["rules"])
    raise AssertionError(f"permission the test evaluator does not know: {p}")


def policy_matches(pol: dict, req: Request, peer: str | None) -> bool:
    return (any(permission_matches(x, req) for x in pol["permissions"])
            and any(principal_matches(x, peer) for x in pol["principals"]))


def envoy_allows(boot: dict, req: Request, peer: str | None) -> bool:
    """peer: the caller's SPIFFE ID when it connects with mTLS, else None."""
    inbound = next(li for li in boot["static_resources"]["listeners"] if li["name"] == "inbound")
    want = "tls" if peer is not None else "raw_buffer"
    chains = [c for c in inbound["filter_chains"]
              if c.get("filter_chain_match", {}).get("transport_protocol", want) == want]
    if not chains:
        return False  # e.g. plaintext to a strict listener: refused
    chain = chains[0]
    tls = chain.get("transport_socket")
    if (tls is None) != (peer is None):
        # A mesh caller's sidecar uses TLS exactly when the destination does.
        return False
    if tls is not None:
        sans = tls["typed_config"]["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
        if sans and not any(string_matches(s["matcher"], peer) for s in sans):
            return False
    hcm = chain["filters"][0]["typed_config"]
    # The inbound route configuration has one virtual host for every request;
    # its typed_per_filter_config overrides an RBAC filter's own rules, as in Envoy.
    overrides = hcm["route_config"]["virtual_hosts"][0].get("typed_per_filter_config", {})
    for f in hcm["http_filters"]:
        if f["typed_config"]["@type"] != "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC":
            continue
        cfg = overrides[f["name"]]["rbac"] if f["name"] in overrides else f["typed_config"]
        if "rules" not in cfg:
            continue  # an RBAC filter without rules enforces nothing
        rules = cfg["rules"]
        hit = any(policy_matches(p, req, peer) for p in rules.get("policies", {}).values())
        if rules["action"] == "DENY" and hit:
            return False
        if rules["action"] == "ALLOW" and not hit:
            return False
    return True


# ---- the comparison --------------------------------------------------------------

def compile_boots(mesh) -> dict[str, dict]:
    """Service name -> its first workload's bootstrap (versions share the
    same listeners and routes; only ports differ)."""
    outputs, diags = TARGET.lower(mesh, CompileOptions(certs_dir="/certs"))
    assert not [d for d in diags if d.is_error], [(d.code, d.message) for d in diags]
    by_path = {o.path: o.content for o in outputs}
    boots = {}
    for w in workloads(mesh):
        boots.setdefault(w.service.name, yaml.load(by_path[w.path], Loader=Loader))
    return boots


def agree(mesh, boots, req: Request) -> None:
    ref = evaluate(mesh, req)
    dest = mesh.service(req.destination)
    if req.source is not None:
        peer = mesh.spiffe_id(mesh.service(req.source)) if mesh.mtls_of(dest) != "off" else None
        routed = envoy_route(boots[req.source], req)
        if routed is None:
            # Out of the caller's scope: only sound when the policy denies it.
            assert not ref.decision.allowed, f"{req}: allowed, but the caller's sidecar has no route to it"
            return
        kind, weights, mirror, status = routed
        want_kind = "forward" if ref.route.kind == "default" else ref.route.kind
        assert kind == want_kind, f"{req}: envoy routes {kind}, reference {ref.route.kind}"
        if kind == "forward":
            want = {v: w for v, w in ref.route.weights.items() if w > 0} or {None: 100.0}
            got = {v: w for v, w in weights.items() if w > 0}
            assert got.keys() == want.keys() and all(abs(got[v] - want[v]) < 1e-6 for v in got), \
                f"{req}: envoy weights {got}, reference {want}"
            assert mirror == ref.route.mirror, f"{req}: envoy mirror {mirror}, reference {ref.route.mirror}"
        else:
            assert status == ref.route.status, f"{req}: envoy status {status}, reference {ref.route.status}"
    else:
        if mesh.mtls_of(dest) == "strict":
            return  # refused at the handshake; the reference models authorization only
        peer = None
    allowed = envoy_allows(boots[req.destination], req, peer)
    assert allowed == ref.decision.allowed, f"{req}: envoy {'allows' if allowed else 'denies'}, reference " \
                                            f"{ref.decision.effect} ({ref.decision.rule and ref.decision.rule.span})"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bootstraps_agree_with_reference(data):
    text = data.draw(small_policies(assertions=False), label="policy")
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    mesh = checked.mesh
    boots = compile_boots(mesh)
    space = request_space(mesh)
    for req in data.draw(st.lists(st.sampled_from(space), min_size=40, max_size=40), label="requests"):
        agree(mesh, boots, req)


def test_examples_agree_on_every_probe():
    """Exhaustively over the examples' own vocabulary."""
    from meshpolicy.pipeline import check_project
    from meshpolicy.project import load

    from .conftest import EXAMPLES

    for ex in ("shop", "bookinfo"):
        mesh = check_project(load([EXAMPLES / ex])).mesh
        boots = compile_boots(mesh)
        names = sorted(mesh.service_map)
        headers = ((), (("x-canary", "always"),), (("end-user", "jason"),), (("x-chaos", "1"),))
        paths = ("/", "/items/42", "/search", "/search/abc", "/legacy/x", "/orders", "/orders/7", "/charge",
                 "/admin/x", "/stock/1", "/productpage", "/reviews/1", "/ratings/1", "/details/2")
        for src in names:
            for dst in names:
                if not mesh.service(dst).http:
                    continue
                for m in ("GET", "POST", "DELETE"):
                    for p in paths:
                        for h in headers:
                            agree(mesh, boots, Request(src, dst, m, p, h))
