"""Every construct of the model is handled or rejected by every target.

- The construct list (meshpolicy/targets/constructs.py) covers the model:
  every field of every model class, and every value of its enumerations,
  maps to a construct (or is declared not to be one). A new field fails here
  until it is given one, and then every manifest must say what it does.
- Every target's pack manifest lists every construct exactly once.
- For each construct, a small policy that uses it is compiled to every
  target (and every mesh flavour a target offers): where the manifest says
  the target expresses it, no MP701 points into the lines that use it and the
  output validates; where it says it cannot, an MP701 does. Any other error is
  a failure: a target must neither crash nor write what it cannot express.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.model import types as model
from meshpolicy.targets import TARGETS
from meshpolicy.targets.base import manifest
from meshpolicy.targets.constructs import CONSTRUCTS, MODEL_FIELDS, MODEL_VALUES

from .conftest import check_text

# ---- the construct list covers the model ---------------------------------------


def _node_classes():
    out = []
    for obj in vars(model).values():
        if isinstance(obj, type) and issubclass(obj, model.Node) and obj.__module__ == model.__name__:
            out.append(obj)
    return out


def test_every_model_field_maps_to_a_construct():
    missing = []
    for cls in _node_classes():
        for name in cls.model_fields:
            owner = next(c for c in cls.__mro__ if name in getattr(c, "__annotations__", {}))
            key = f"{owner.__name__}.{name}"
            if key not in MODEL_FIELDS:
                missing.append(key)
    assert not missing, f"model fields with no construct in targets/constructs.py: {missing}"
    assert all(c is None or c in CONSTRUCTS for c in MODEL_FIELDS.values())


def _literal_values(tp) -> set[str]:
    return {a for a in typing.get_args(tp) if isinstance(a, str)}


def test_every_enumeration_value_maps_to_a_construct():
    enums = {
        "MtlsMode": _literal_values(model.MtlsMode),
        "Effect": _literal_values(model.Effect),
        "Protocol": _literal_values(model.Protocol),
        "LoadBalancer.policy": _literal_values(model.LoadBalancer.model_fields["policy"].annotation),
        "PathPattern.kind": _literal_values(model.PathPattern.model_fields["kind"].annotation),
        "HeaderMatch.kind": _literal_values(model.HeaderMatch.model_fields["kind"].annotation),
        "Source.kind": _literal_values(model.Source.model_fields["kind"].annotation),
        "EgressStance": _literal_values(model.EgressStance),
        "ExternalPort.protocol": _literal_values(model.ExternalPort.model_fields["protocol"].annotation),
        "Listener.protocol": _literal_values(model.Listener.model_fields["protocol"].annotation),
        "QueryMatch.kind": _literal_values(model.QueryMatch.model_fields["kind"].annotation),
        "HeaderOp.side": _literal_values(model.HeaderOp.model_fields["side"].annotation),
        "Action": {_literal_values(c.model_fields["kind"].annotation).pop()
                   for c in typing.get_args(typing.get_args(model.Action)[0])},
    }
    for name, values in enums.items():
        assert values and values == set(MODEL_VALUES[name]), (name, values)
        assert all(c in CONSTRUCTS for c in MODEL_VALUES[name].values())


@pytest.mark.parametrize("target", TARGETS)
def test_manifest_lists_every_construct(target):
    m = manifest(target)  # raises on a missing or unknown construct
    assert m.name == target and list(m.constructs) == list(CONSTRUCTS)


# ---- each construct, compiled to each target ----------------------------------------

BASE_MESH = ['  trust_domain "example.org"', "  mtls permissive", "  default allow"]
BASE_A = ["  namespace ns", "  port 8080 http", "  version v1", "  version v2"]
BASE_B = ["  namespace ns", "  port 8080 http"]

_NS = (Path(__file__).parent / "fixtures" / "northsouth").as_posix()  # a JWKS, a certificate and its key

# construct -> (mesh block lines, lines for service a, top-level lines); a
# construct the base itself uses names the base line instead (`base:`).
CASES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "trust-domain": ([], [], ["base:" + BASE_MESH[0]]),
    "mtls-strict": ([], ["  mtls strict"], []),
    "mtls-permissive": ([], [], ["base:" + BASE_MESH[1]]),
    "mtls-off": ([], ["  mtls off"], []),
    "default-allow": ([], [], ["base:" + BASE_MESH[2]]),
    "default-deny": (["  default deny"], [], []),
    "tracing": (["  tracing w3c sample 10%"], [], []),
    "metrics": (["  metrics on"], [], []),
    "metrics-off": (["  metrics off"], [], []),
    "port-http": ([], [], ["base:" + BASE_A[1]]),
    "port-http2": ([], [], ["service c {", "  namespace ns", "  port 9090 http2", "}"]),
    "port-grpc": ([], [], ["service c {", "  namespace ns", "  port 9090 grpc", "}"]),
    "port-tcp": ([], [], ["service c {", "  namespace ns", "  port 5432 tcp", "}"]),
    "account": ([], ["  account app-a"], []),
    "versions": ([], [], ["base:" + BASE_A[2]]),
    "timeout": ([], ["  timeout 2s"], []),
    "retry": ([], ["  retry 2 per_try 500ms on 5xx"], []),
    "retry-backoff": ([], ["  retry 2 per_try 500ms on 5xx backoff 10ms"], []),
    "retry-budget": ([], ["  retry 2 per_try 500ms on 5xx budget 20% min 5"], []),
    "retry-non-idempotent": ([], ["  retry 2 per_try 500ms on 5xx non_idempotent"], []),
    "retry-off": ([], ["  retry off"], []),
    "circuit": ([], ["  circuit max_connections 10 max_pending 5"], []),
    "outlier": ([], ["  outlier consecutive_5xx 5 interval 10s eject 30s max 50%"], []),
    "balance": ([], ["  balance least_request"], []),
    "balance-hash": ([], ['  balance hash header "x-user"'], []),
    "fault-delay": ([], ["  fault delay 50ms 1%"], []),
    "fault-abort": ([], ["  fault abort 503 5%"], []),
    "match-method": ([], [], ["route a {", "  GET -> v1", "}"]),
    "match-path-exact": ([], [], ["route a {", '  exact "/x" -> v1', "}"]),
    "match-path-prefix": ([], [], ["route a {", '  prefix "/x/" -> v1', "}"]),
    "match-path-glob": ([], [], ["route a {", "  /x/*/y -> v1", "}"]),
    "match-path-regex": ([], [], ["route a {", '  regex "/x/[0-9]+" -> v1', "}"]),
    "match-header": ([], [], ["route a {", '  header "x-user" = "ann" -> v1', "}"]),
    "match-header-regex": ([], [], ["route a {", '  header "x-user" ~ "a.*" -> v1', "}"]),
    "match-header-presence": ([], [], ["route a {", '  header "x-user" present -> v1', "}"]),
    "match-source": ([], [], ["route a {", "  from b -> v1", "}"]),
    "forward": ([], [], ["route a {", "  * -> v1", "}"]),
    "split": ([], [], ["route a {", "  * -> v1 90%, v2 10%", "}"]),
    "mirror": ([], [], ["route a {", "  * -> v1 mirror v2 5%", "}"]),
    "redirect": ([], [], ["route a {", '  * -> redirect "/y" 301', "}"]),
    "respond": ([], [], ["route a {", '  * -> respond 404 "gone"', "}"]),
    "allow": ([], [], ["allow b -> a"]),
    "deny": ([], [], ["deny b -> a"]),
    "source-service": ([], [], ["allow b -> a"]),
    "source-namespace": ([], [], ["allow namespace ns -> a"]),
    "source-authenticated": ([], [], ["allow authenticated -> a"]),
    "source-any": ([], [], ["allow * -> a"]),
    "auth-methods": ([], [], ["allow b -> a GET"]),
    "auth-paths": ([], [], ["allow b -> a GET /x/*"]),
    "rate-limit": ([], [], ["limit b -> a 10/s"]),
    # north-south (issue 15): files a policy names are the test fixtures', by absolute path
    "rate-limit-key": ([], [], ['limit b -> a 10/s per header "x-api-key"']),
    "retry-status": ([], ["  retry 2 on 503, 429"], []),
    "match-query": ([], [], ["route a {", '  query "view" = "full" -> v1', "}"]),
    "request-headers": ([], [], ["route a {", '  * -> v1 set request header "x-from" "mesh"', "}"]),
    "response-headers": ([], [], ["route a {", '  * -> v1 remove response header "server"', "}"]),
    "rewrite": ([], [], ["route a {", '  prefix "/x/" -> v1 rewrite "/y/"', "}"]),
    "rewrite-host": ([], [], ["route a {", '  * -> v1 rewrite host "a.internal"', "}"]),
    "cors": ([], ['  cors origins "https://a.example" methods GET'], []),
    "ingress": ([], [], ["ingress gw {", "  namespace ns", "  listen 8080 http", '  hosts "a.example"',
                         "  * -> a", "}"]),
    "ingress-https": ([], [], ["ingress gw {", "  namespace ns",
                               f'  listen 8443 https cert "{_NS}/web.crt" key "{_NS}/web.key"',
                               '  hosts "a.example"', "  * -> a", "}"]),
    "jwt-provider": ([], [], ["jwt idp {", '  issuer "https://idp.example/"', f'  jwks "{_NS}/auth.jwks.json"', "}"]),
    "jwt-jwks-uri": ([], [], ["jwt idp {", '  issuer "https://idp.example/"',
                              '  jwks_uri "https://idp.example/jwks.json"', "}"]),
    "jwt-token-location": ([], [], ["jwt idp {", '  issuer "https://idp.example/"', f'  jwks "{_NS}/auth.jwks.json"',
                                    '  token query "access_token"', "}"]),
    "source-internet": ([], [], ["allow internet -> a GET"]),
    "jwt-claims": ([], [], ["jwt idp {", '  issuer "https://idp.example/"', f'  jwks "{_NS}/auth.jwks.json"', "}",
                            'allow internet with jwt idp scope has "a:read" -> a GET']),
    "external-http": ([], [], ["external e {", "  namespace ns", '  host "e.example"', "  port 80 http", "}"]),
    "external-tls": ([], [], ["external e {", "  namespace ns", '  host "e.example"', "  port 443 tls", "}"]),
    "external-tcp": ([], [], ["external e {", "  namespace ns", '  host "e.example"', "  port 5432 tcp", "}"]),
    "egress-rule": ([], [], ["external e {", "  namespace ns", '  host "e.example"', "  port 443 tls", "}",
                             "allow b -> e POST /v1/charges"]),
    "egress-registry-only": (["  egress registry_only"], [], []),
    "egress-allow-any": (["  egress allow_any"], [], []),
}


def program(construct: str) -> tuple[str, set[int]]:
    """The policy for a construct, and the (1-based) lines that use it."""
    mesh_extra, a_extra, top = CASES[construct]
    base_refs = [t[len("base:"):] for t in top if t.startswith("base:")]
    top = [t for t in top if not t.startswith("base:")]
    lines, marked = [], set()

    def add(text: str, mark: bool) -> None:
        lines.append(text)
        if mark or text in base_refs:
            marked.add(len(lines))

    add("mesh m {", False)
    mesh_lines = [x for x in BASE_MESH if not (mesh_extra and x.split()[0] == mesh_extra[0].split()[0])]
    for x in mesh_lines:
        add(x, False)
    for x in mesh_extra:
        add(x, True)
    add("}", False)
    add("service a {", False)
    for x in BASE_A:
        add(x, False)
    for x in a_extra:
        add(x, True)
    add("}", False)
    add("service b {", False)
    for x in BASE_B:
        add(x, False)
    add("}", False)
    for x in top:
        add(x, True)
    return "\n".join(lines) + "\n", marked


def _flavours(target: str) -> list[str | None]:
    mesh_setting = manifest(target).settings.get("mesh")
    return [None, *mesh_setting["values"]] if mesh_setting else [None]


TARGET_FLAVOURS = [(t, f) for t in TARGETS for f in _flavours(t)]
# meshproxy's own setting for http2/grpc apps is off here: the manifest says what it does by default.


@pytest.mark.parametrize("construct", list(CASES))
@pytest.mark.parametrize("target, flavour", TARGET_FLAVOURS, ids=[f"{t}-{f or 'plain'}" for t, f in TARGET_FLAVOURS])
def test_construct_is_handled_or_rejected(target, flavour, construct):
    text, marked = program(construct)
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    settings = {"mesh": flavour} if flavour else {}
    outputs, diags = compile_mesh(checked.mesh, target, CompileOptions(settings=settings))
    errors = [d for d in diags if d.is_error]
    assert all(d.code == "MP701" for d in errors), [(d.code, d.message) for d in errors]
    rejected = any(d.span is None or d.span.line in marked for d in errors)
    support = manifest(target).constructs[construct]
    if support.support == "partial":
        return  # some values are expressed, some rejected: the target's own tests say which
    assert rejected == (not support.expressible(flavour)), (
        f"{target} ({flavour or 'no flavour'}): manifest says `{construct}` is {support.support}, "
        f"but compiling it gave {[(d.code, d.message) for d in errors]}")
    if not errors:
        assert outputs


def test_docs_table_is_the_generated_one():
    from meshpolicy.targets.table import BEGIN, END, render

    from .conftest import ROOT

    doc = (ROOT / "docs" / "targets.md").read_text(encoding="utf-8")
    committed = doc[doc.index(BEGIN):doc.index(END) + len(END)] + "\n"
    assert committed == render(), "regenerate the table in docs/targets.md (see 'Adding a target' there)"
