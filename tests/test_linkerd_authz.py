"""Method- and path-scoped authorization on the linkerd target: every request
is brought by Linkerd's route choice to an inbound route whose
authorization gives the decision the reference evaluator gives.

`linkerd_decision` simulates Linkerd's inbound policy from the generated
documents alone, as linkerd2-proxy implements it (linkerd/http/route:
lib.rs `find`, http/match.rs, http/match/path.rs) and the policy
reference documents it (linkerd.io, reference/authorization-policy):

- The Server for the destination's port; the HTTPRoutes whose parentRef is
  that Server are its inbound routes. Without any, the Server's own
  AuthorizationPolicies and accessPolicy decide (tests/route_meaning.py).
- With routes, each match that holds is summarized as (path length, has a
  method, number of headers, number of query params), compared in that
  order: an Exact match counts the path's length, a RegularExpression that
  spans the whole path (`find` starting at 0 and ending at the end) counts
  the path's length, a PathPrefix counts its value's length without
  trailing `/` (and must end at a segment boundary; `/` counts 1), and a
  rule without matches counts as PathPrefix `/`. The greatest summary
  wins; among equal ones the proxy keeps the first route, which the
  control plane orders by creation time, then name: something meshc does
  not control, so the simulation fails when two different routes tie.
- No route matches: refused (404). The winning route is authorized by the
  AuthorizationPolicies targeting it or its Server, an AuthorizationPolicy
  admitting when all its required authentications do (MeshTLSAuthentication:
  the caller's service account or `*`; NetworkAuthentication: every
  address, here 0.0.0.0/0 and ::/0). A route nobody authorizes is refused
  (403); meshc writes accessPolicy `deny` on such a Server, so the Server's
  default never applies, whatever Linkerd does with it on routes.
"""

from __future__ import annotations

import itertools
import json
import re

import pytest
import re2
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meshpolicy.semantics.evaluate import Request, authorize
from meshpolicy.targets.linkerd import lower_documents
from meshpolicy.targets.linkerd.route_authz import dialect_regex
from meshpolicy.verify.atoms import is_normalized

from . import kube_schema
from .conftest import EXAMPLES, ROOT, check_text, codes, run_meshc
from .route_meaning import linkerd_allowed
from .strategies import METHODS, PROBE_PATHS, small_policies

AUTHZ_CODES = {"MP750", "MP751"}


# ---- the simulator ---------------------------------------------------------------------

def _path_len(m: dict, path: str) -> int | None:
    p = m.get("path", {"type": "PathPrefix", "value": "/"})
    v = p["value"]
    if p["type"] == "Exact":
        return len(v.encode()) if v == path else None
    if p["type"] == "RegularExpression":
        got = re2.search(v, path)  # RE2 reads what dialect_regex writes as the regex crate does
        return len(path.encode()) if got and got.start() == 0 and got.end() == len(path) else None
    if v == "/":
        return 1
    prefix = v.rstrip("/")
    rest = path.rstrip("/")
    if not rest.startswith(prefix):
        return None
    suffix = rest[len(prefix):]
    return len(prefix.encode()) if suffix == "" or suffix.startswith("/") else None


def _summary(m: dict, req: Request) -> tuple | None:
    if "method" in m and m["method"] != req.method:
        return None
    n = _path_len(m, req.path)
    if n is None:
        return None
    assert not m.get("headers") and not m.get("queryParams"), "the authorization routes test only methods and paths"
    return (n, "method" in m, 0, 0)


def inbound_route(docs: list[dict], server: dict, req: Request) -> tuple[dict | None, list[dict]]:
    """(the route Linkerd picks or None, the inbound routes); fails on a tie
    between different routes."""
    ns, name = server["metadata"]["namespace"], server["metadata"]["name"]
    routes = [d for d in docs if d["kind"] == "HTTPRoute" and d["metadata"]["namespace"] == ns
              and any(p.get("kind") == "Server" and p["name"] == name for p in d["spec"]["parentRefs"])]
    best, winners = None, []
    for route in routes:
        for rule in route["spec"]["rules"]:
            sums = [s for m in (rule.get("matches") or [{}]) if (s := _summary(m, req)) is not None]
            if not sums:
                continue
            s = max(sums)
            if best is None or s > best:
                best, winners = s, [route]
            elif s == best and route not in winners:
                winners.append(route)
    assert len(winners) <= 1, f"{req}: routes {[w['metadata']['name'] for w in winners]} tie; " \
                              "Linkerd would pick by creation time"
    return (winners[0] if winners else None), routes


def linkerd_decision(docs: list[dict], mesh, req: Request) -> bool:
    dest = mesh.service(req.destination)
    port = dest.ports[0].number
    server = next(d for d in docs if d["kind"] == "Server" and d["metadata"]["namespace"] == dest.namespace
                  and d["spec"]["podSelector"]["matchLabels"].get("app") == dest.name and d["spec"]["port"] == port)
    route, routes = inbound_route(docs, server, req)
    if not routes:
        return linkerd_allowed(docs, mesh, req)
    assert server["spec"]["accessPolicy"] == "deny"
    if route is None:
        return False  # 404
    caller = mesh.service(req.source) if req.source is not None else None
    by_name = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}

    def satisfied(ref: dict) -> bool:
        auth = by_name[(ref["kind"], dest.namespace, ref["name"])]
        if ref["kind"] == "NetworkAuthentication":
            return {n["cidr"] for n in auth["spec"]["networks"]} == {"0.0.0.0/0", "::/0"}
        if caller is None:
            return False
        if "*" in auth["spec"].get("identities", []):
            return True
        return any(r["name"] == caller.account and r.get("namespace", dest.namespace) == caller.namespace
                   for r in auth["spec"].get("identityRefs", []))

    targets = {("HTTPRoute", route["metadata"]["name"]), ("Server", server["metadata"]["name"])}
    for d in docs:
        if d["kind"] == "AuthorizationPolicy" and d["metadata"]["namespace"] == dest.namespace \
                and (d["spec"]["targetRef"]["kind"], d["spec"]["targetRef"]["name"]) in targets:
            if all(satisfied(r) for r in d["spec"]["requiredAuthenticationRefs"]):
                return True
    return False


# ---- requests ------------------------------------------------------------------------

SEGMENTS = ("orders", "items", "admin", "adm", "1", "12", "x", "search", "")


def extra_paths(n: int = 3) -> list[str]:
    """Paths of up to n segments over the strategies' vocabulary (with an empty
    last segment for a trailing slash), beyond PROBE_PATHS."""
    out = set()
    for k in range(1, n + 1):
        for segs in itertools.product(SEGMENTS, repeat=k):
            if "" in segs[:-1]:
                continue
            out.add("/" + "/".join(segs))
    return sorted(out)


# Spellings the policy normalizes (or refuses) and Linkerd sees as sent.
UNNORMALIZED_PATHS = ("/orders/../admin", "/./orders", "//orders", "/orders/%2E%2E/admin", "/%61dmin", "/items/%31",
                      "/orders/7/..", "/admin/keys/.", "/.;/admin", "/a%2Fb", "/a%2fb", "/orders/7?x=1", "/items/1%",
                      "/items/%2", "/items/ 1", "/items/\u00e9", "*", "/admin\\x", "/orders/..;/admin")
PATHS = sorted(set(PROBE_PATHS) | set(extra_paths(2)) | set(UNNORMALIZED_PATHS))
MORE_PATHS = sorted(set(PATHS) | set(extra_paths(3)))  # for the generated policies, drawn from


def requests(mesh, paths=PATHS, methods=(*METHODS, "PATCH", "HEAD")) -> list[Request]:
    names = [s.name for s in mesh.services]
    return [Request(src, dst, m, p) for src, dst, m, p in itertools.product([*names, None], names, methods, paths)]


def documents_of(text: str):
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    docs, diags = lower_documents(checked.mesh)
    return checked.mesh, docs, diags


def route_scoped(docs, mesh, dest: str) -> bool:
    svc = mesh.service(dest)
    return any(d["kind"] == "HTTPRoute" and d["metadata"]["namespace"] == svc.namespace
               and d["spec"]["parentRefs"][0]["kind"] == "Server"
               and d["spec"]["parentRefs"][0]["name"] == f"{svc.name}-{svc.ports[0].number}" for d in docs)


def agree(mesh, docs, reqs) -> int:
    """Compare every request: on a normalized path, Linkerd's decision is the
    reference's; on any other path, a Server authorized per route refuses
    (the policy would normalize it first, Linkerd cannot: stricter, never looser)."""
    n = 0
    for req in reqs:
        seen = Request(req.source, req.destination, req.method, req.path.split("?", 1)[0])  # uri.path()
        if is_normalized(seen.path):
            want = authorize(mesh, req).allowed
        elif route_scoped(docs, mesh, req.destination):
            want = False
        else:
            continue  # server-wide authorization does not look at the path
        assert linkerd_decision(docs, mesh, seen) == want, f"authorization disagrees on {req} (expected: {want})"
        n += 1
    return n


# ---- focused policies ----------------------------------------------------------------

HEAD = """
mesh m {
  trust_domain "example.org"
  mtls MTLS
  default DEFAULT
}
service web { namespace front
  port 8080 http }
service mob { namespace front
  port 8080 http }
service ops { namespace tools
  port 8080 http }
service api { namespace back
  port 8080 http }
"""


def policy(rules: str, mtls: str = "strict", default: str = "deny") -> str:
    return HEAD.replace("MTLS", mtls).replace("DEFAULT", default) + rules


CASES = {
    # a method-specific exact path inside a method-less glob: method breaks the whole-path tie
    "method-over-methodless": "allow web -> api /orders/**\nallow mob -> api GET /orders/7\n",
    # a deny for one method on paths allowed for all methods
    "deny-one-method": "allow web, mob -> api /items/*\ndeny mob -> api DELETE /items/*\n",
    # an exact path and a glob the same path matches, same callers: one class
    "exact-and-glob": "allow web -> api GET /items/1, /items/*\nallow mob -> api POST /orders\n",
    # `/**` covers the root `/`, which the catch-all also matches with the same length
    "root-covering": "allow web -> api GET /**\nallow mob -> api /**\n",
    "deny-everything-but": "allow authenticated -> api /orders, /orders/*\ndeny ops -> api /orders/*\n",
    "string-prefix": 'allow web -> api prefix "/adm"\nallow mob -> api GET prefix "/orders"\n',
    "regex": 'allow web -> api regex "/items/\\\\d+"\nallow mob -> api GET regex "/admin(/[a-z0-9]+)*"\n',
    "default-allow": "deny ops -> api POST /orders/*\n",
    # a subtree allowed but a deeper glob: the subtree is a PathPrefix, which
    # every whole-path match outranks
    "subtree-except": "allow web -> api GET /orders, /orders/**\ndeny web -> api /orders/*/internal\n",
    "nested-subtrees": 'allow web, mob -> api /a, prefix "/a/"\nallow ops -> api /a/b, /a/b/**\n'
                       "deny mob -> api GET /a/b/**\n",
    "deny-subtree-default-allow": "allow ops -> api /admin, /admin/**\ndeny web -> api /admin, /admin/**\n",
}


@pytest.mark.parametrize("mtls,default", [("strict", "deny"), ("permissive", "deny"), ("strict", "allow"),
                                          ("permissive", "allow")])
@pytest.mark.parametrize("case", sorted(CASES))
def test_focused_policies_agree_with_the_reference(case, mtls, default):
    mesh, docs, diags = documents_of(policy(CASES[case], mtls, default))
    errors = [d for d in diags if d.is_error]
    if errors:
        # only what Linkerd cannot say: a permissive `*`-like class next to a denied identity
        assert codes(errors) == ["MP701"] and mtls == "permissive", [(d.code, d.message) for d in errors]
        return
    assert any(d["kind"] == "HTTPRoute" and d["spec"]["parentRefs"][0]["kind"] == "Server" for d in docs)
    assert agree(mesh, docs, requests(mesh)) > 1000


def test_a_method_less_route_would_tie_with_the_catch_all_on_the_root():
    """Regression guard of the catch-all's class: it is the root's, so no
    method-less match covers `/` (which would tie with it at length 1)."""
    mesh, docs, diags = documents_of(policy("allow web -> api /**\nallow mob -> api GET /orders\n"))
    assert not [d for d in diags if d.is_error]
    server = next(d for d in docs if d["kind"] == "Server" and d["metadata"]["name"] == "api-8080")
    route, _ = inbound_route(docs, server, Request("web", "api", "POST", "/"))
    assert route["metadata"]["name"] == "api-8080-default"
    assert agree(mesh, docs, requests(mesh)) > 1000


def test_the_simulator_sees_a_tie_between_routes():
    """The check that makes the layout test meaningful: two whole-path
    matches of different routes holding for one request are a failure."""
    mesh, docs, _ = documents_of(policy("allow web -> api GET /items/*\n"))
    server = next(d for d in docs if d["kind"] == "Server" and d["metadata"]["name"] == "api-8080")
    twin = next(d for d in docs if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "api-8080-class-1")
    docs = docs + [{**twin, "metadata": {**twin["metadata"], "name": "api-8080-twin"}}]
    with pytest.raises(AssertionError, match="tie"):
        inbound_route(docs, server, Request("web", "api", "GET", "/items/1"))


def test_overlapping_patterns_authorized_differently_are_mp750():
    _, docs, diags = documents_of(policy("allow web -> api /orders/**\ndeny web -> api /orders/admin/*\n"))
    assert codes([d for d in diags if d.is_error]) == ["MP750"]


@pytest.mark.parametrize("regex,code", [("/a\\\\b", "MP751"), ("/[\\\\D/]+", "MP751"), ("/[\\\\d]+", None),
                                        ("/\\\\w+/\\\\d", None)])
def test_regexes_are_spelled_for_the_rust_dialect(regex, code):
    mesh, docs, diags = documents_of(policy(f'allow web -> api regex "{regex}"\n'))
    errors = codes([d for d in diags if d.is_error])
    assert errors == ([code] if code else [])
    if code is None:
        rx = [m["path"]["value"] for d in docs if d["kind"] == "HTTPRoute"
              for r in d["spec"]["rules"] for m in r["matches"] if m["path"]["type"] == "RegularExpression"]
        assert rx and not any(re.search(r"\\[dwsDWS]", x) for x in rx)  # ASCII sets, not Unicode-aware classes
        assert agree(mesh, docs, requests(mesh, paths=PATHS + ["/7", "/a_1/ ", "/٣"])) > 100


def test_dialect_regex_keeps_meaning_under_re2():
    for rx, samples in ((r"/\d+", ["/12", "/x", "/٣"]), (r"/[\w.]+", ["/a.b", "/a-b", "/é"]),
                        (r"/[^\d]+", ["/x", "/1"]), (r"/[]a]+", ["/]a", "/b"]), (r"/[[:digit:]]\s", ["/1 ", "/1x"])):
        for s in samples:
            assert bool(re2.fullmatch(rx, s)) == bool(re2.fullmatch(dialect_regex(rx), s)), (rx, s)


# ---- the examples ----------------------------------------------------------------------

def _north_south(message: str) -> bool:
    """An MP701 about what Linkerd has no resource for at all (ingress, end-user
    tokens, TLS origination: docs/targets/linkerd.md), not about how the
    east-west authorization is laid out."""
    return any(w in message for w in ("`internet`", "token requirement", "egress rule", "external `"))


def _example(name: str):
    from meshpolicy.pipeline import check_project
    from meshpolicy.project import load

    checked = check_project(load([EXAMPLES / name]))
    assert checked.mesh is not None
    docs, diags = lower_documents(checked.mesh)
    return checked.mesh, docs, diags


@pytest.mark.parametrize("example", ["shop", "bookinfo"])
def test_example_authorization_agrees_with_the_reference(example):
    if not (EXAMPLES / example).is_dir():
        pytest.skip(f"no example {example}")
    mesh, docs, diags = _example(example)
    assert not [d for d in diags if d.code in AUTHZ_CODES], [(d.code, d.message) for d in diags]
    assert not [d for d in diags if d.code == "MP701" and ("allow rule" in d.message or "deny rule" in d.message)
                and not _north_south(d.message)]
    paths = sorted(set(PATHS) | {"/charge", "/refund", "/admin/x", "/stock/1", "/legacy/a/b", "/search/q",
                                 "/items/1", "/orders/1/x"})
    assert agree(mesh, docs, requests(mesh, paths=paths)) > 10000


def test_shop_authorization_is_schema_valid_and_route_scoped():
    reason = kube_schema.missing("linkerd")
    if reason:
        pytest.skip(reason)
    mesh, docs, _ = _example("shop")
    inbound = [d for d in docs if d["kind"] == "HTTPRoute" and d["spec"]["parentRefs"][0]["kind"] == "Server"]
    authz = [d for d in docs if d["kind"] in ("AuthorizationPolicy", "MeshTLSAuthentication",
                                              "NetworkAuthentication", "Server")]
    assert {d["metadata"]["name"].rsplit("-", 2)[0] for d in inbound} >= {"catalog", "orders", "payments", "inventory"}
    assert any(d["spec"]["targetRef"]["kind"] == "HTTPRoute" for d in authz if d["kind"] == "AuthorizationPolicy")
    problems = [(d["kind"], d["metadata"]["name"], e) for d in inbound + authz for e in kube_schema.errors(d)]
    assert problems == []


def test_shop_compiles_for_linkerd_but_for_what_linkerd_lacks(tmp_path):
    """No finding of the shop's linkerd compile is about authorization."""
    r = run_meshc("compile", str(EXAMPLES / "shop"), "--target", "linkerd", "-o", str(tmp_path / "out"),
                  "--format", "json")
    report = json.loads(r.stdout)
    about_auth = [d for d in report["diagnostics"] if d["code"] in AUTHZ_CODES
                  or (d["code"] == "MP701" and ("allow rule" in d["message"] or "deny rule" in d["message"]
                                                or "authoriz" in d["message"]) and not _north_south(d["message"]))]
    assert about_auth == []


# ---- generated policies ------------------------------------------------------------------

STATS = {"policies": 0, "laid_out": 0, "with_inbound_routes": 0, "refused": 0, "requests": 0}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(small_policies(mtls_modes=("strict", "permissive"), routes=False, assertions=False),
       st.lists(st.sampled_from(MORE_PATHS), min_size=20, max_size=60, unique=True))
def test_generated_policies_agree_with_the_reference(text, paths):
    # the strategies' `/admin(/.*)?` also matches `/admin/..`, which Linkerd
    # would see as sent (MP751): its segment-wise spelling instead
    text = text.replace('regex "/admin(/.*)?"', 'regex "/admin(/[a-z0-9]+)*"')
    checked = check_text(text)
    assume(checked.ok)
    mesh = checked.mesh
    docs, diags = lower_documents(mesh)
    errors = [d for d in diags if d.is_error]
    STATS["policies"] += 1
    assert all(d.code in ("MP701", *AUTHZ_CODES) for d in errors), [(d.code, d.message) for d in errors]
    if errors:
        STATS["refused"] += 1
        for d in errors:
            STATS[d.code] = STATS.get(d.code, 0) + 1
        return
    STATS["laid_out"] += 1
    if any(d["kind"] == "HTTPRoute" and d["spec"]["parentRefs"][0]["kind"] == "Server" for d in docs):
        STATS["with_inbound_routes"] += 1
    STATS["requests"] += agree(mesh, docs, requests(mesh, paths=sorted(set(paths) | set(PROBE_PATHS))))


def test_generated_policies_are_mostly_laid_out():
    """The run above is not vacuous: many generated policies compile (the
    rest overlap a string prefix such as `/orders` with `/orders/*`
    differently authorized: MP750), and their requests were compared (run
    after it; pytest keeps file order)."""
    if STATS["policies"] < 50:
        pytest.skip("the generated-policy test did not run first")
    assert STATS["laid_out"] >= STATS["policies"] // 3, STATS  # 86 to 116 of 150 in six runs
    assert STATS["with_inbound_routes"] >= 20, STATS  # 34 to 77 of 150 in five runs
    assert STATS["requests"] > 50_000, STATS


# ---- the code fixtures -----------------------------------------------------------------

@pytest.mark.parametrize("code", sorted(AUTHZ_CODES))
def test_code_fixtures(code, tmp_path):
    fx = ROOT / "tests" / "fixtures" / "codes" / code
    args = (fx / "command").read_text().split()
    for name, want in (("bad", 1), ("good", 0)):
        work = tmp_path / name
        work.mkdir()
        (work / "p.mesh").write_text((fx / f"{name}.mesh").read_text())
        r = run_meshc(*args[:1], str(work), *args[1:], "--format", "json")
        assert r.returncode == want, (name, r.stdout, r.stderr)
        found = r.stderr if "--stdout" in args else r.stdout
        report = json.loads(found) if found.strip() else {"diagnostics": []}
        errors = {d["code"] for d in report["diagnostics"] if d["severity"] == "error"}
        assert errors == ({code} if name == "bad" else set()), (name, errors)
        if name == "good":
            docs = [d for d in yaml.safe_load_all(r.stdout) if d]
            assert any(d["kind"] == "AuthorizationPolicy" for d in docs)


# ---- matches restricted to normalized paths ----------------------------------------------

def _automaton_spelling(rx: str) -> str:
    """An anchored regex of ours as the verifier's automata read it (they take
    whole-string RE2 without inline flags: `(?s:.)` is any character)."""
    body = rx[len("^(?:"):-2] if rx.startswith("^(?:") else rx[len("^(?s:"):-2]
    if rx.startswith("^(?s:"):
        body = re.sub(r"(?<!\\)\.", r"[\\s\\S]", body)
    return body


PATTERNS = [("glob", "/orders/**"), ("glob", "/orders/*"), ("glob", "/a/*/b"), ("glob", "/a/**/b"),
            ("prefix", "/adm"), ("prefix", "/orders/"), ("prefix", "/"), ("glob", "/**"), ("glob", "/*"),
            ("glob", "/a.*"), ("glob", "/.*/x"), ("glob", "/x/*.json"), ("prefix", "/a/."), ("glob", "/a/.**"),
            ("prefix", "/a%20"), ("glob", "/*/**/*"), ("glob", "/a;*"), ("prefix", "/a/..b"), ("glob", "/legacy/**")]


@pytest.mark.parametrize("key", PATTERNS, ids=lambda k: f"{k[0]}:{k[1]}")
def test_a_pattern_match_holds_for_exactly_its_normalized_paths(key):
    """Checked exactly by the verifier's automata: the written regex's
    language is the pattern's intersected with NORMALIZED_PATH."""
    from meshpolicy.targets.linkerd.normal_paths import pattern_regex
    from meshpolicy.verify.atoms import NORMALIZED_PATH
    from meshpolicy.verify.automata import witness

    rx = pattern_regex(*key)
    assert rx is not None and len(rx) <= 1024
    written, normal = ("regex", _automaton_spelling(rx)), ("regex", NORMALIZED_PATH)
    assert witness((written,), (normal,)) is None  # only normalized paths
    assert witness((written,), (key,)) is None  # only the pattern's
    assert witness((key, normal), (written,)) is None  # all of those


def test_the_unnormalized_route_matches_exactly_the_other_paths():
    from meshpolicy.targets.linkerd.normal_paths import UNNORMALIZED
    from meshpolicy.verify.atoms import NORMALIZED_PATH
    from meshpolicy.verify.automata import witness

    other, normal = ("regex", _automaton_spelling(UNNORMALIZED)), ("regex", NORMALIZED_PATH)
    assert witness((other, normal), ()) is None
    assert witness((("regex", r"[\s\S]*"),), (other, normal)) is None
    for p in UNNORMALIZED_PATHS:
        assert (re2.fullmatch(UNNORMALIZED, p.split("?")[0]) is not None) != is_normalized(p.split("?")[0]), p


def test_the_gateway_api_linkerd_flavour_refuses_route_scoped_rules_as_mp701():
    """Its Servers and authorizations are the linkerd target's, but it writes
    no per-route authorization: rules with methods or paths stay MP701
    there (not MP750/MP751, which belong to the linkerd target)."""
    from meshpolicy.compile import CompileOptions, compile_mesh

    for rules in ("allow web -> api GET\n", "allow web -> api /orders/**\ndeny web -> api /orders/admin/*\n"):
        checked = check_text(policy(rules))
        _, diags = compile_mesh(checked.mesh, "gateway-api", CompileOptions(settings={"mesh": "linkerd"}))
        assert {d.code for d in diags if d.is_error} == {"MP701"}


def test_a_method_linkerd_cannot_match_is_never_taken_for_any_other_method():
    checked = check_text(policy("allow web -> api PROPFIND /orders\n"))
    assert "MP105" in codes(checked.diagnostics)  # the checks refuse it first
    _, diags = lower_documents(checked.mesh)
    assert "MP701" in {d.code for d in diags if d.is_error}
