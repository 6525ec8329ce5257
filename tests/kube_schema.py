"""Test-side validation of the gateway-api and linkerd targets' documents
against the real CRDs: ../shared/schemas/gateway-api/*-v1.6.1.yaml and
../shared/schemas/linkerd/*.yaml. Same method as tests/istio_schema.py
(whose closed JSON Schema conversion and CEL translation table are reused):
unknown fields are rejected, and every x-kubernetes-validations rule met on
the way is evaluated through a Python translation; a rule without one is
reported, never skipped. Core `v1` kinds (Service, Namespace) have no CRD
and are checked by shape here.
"""

from __future__ import annotations

import re
from functools import lru_cache

import jsonschema
import yaml

from tests import istio_schema
from tests.conftest import shared_missing, shared_path

GATEWAY_FILES = ("httproutes-v1.6.1.yaml", "grpcroutes-v1.6.1.yaml", "referencegrants-v1.6.1.yaml",
                 "gateways-v1.6.1.yaml")
LINKERD_FILES = ("server.yaml", "httproute.yaml", "authorization-policy.yaml", "meshtls-authentication.yaml",
                 "network-authentication.yaml", "http-local-ratelimit-policy.yaml", "egress-network.yaml")
PARTS = [("schemas", "gateway-api", f) for f in GATEWAY_FILES] + [("schemas", "linkerd", f) for f in LINKERD_FILES]


def missing(*packs: str) -> str | None:
    """The skip reason naming the first absent CRD file of these packs
    (default: both), else None."""
    parts = [p for p in PARTS if not packs or p[1] in packs]
    return next((r for r in (shared_missing(*p) for p in parts) if r), None)


@lru_cache(maxsize=None)
def _crds() -> dict[tuple[str, str], dict]:
    out = {}
    for parts in PARTS:
        if shared_missing(*parts):
            continue  # the tests needing it skip (missing())
        for d in yaml.safe_load_all(shared_path(*parts).read_text(encoding="utf-8")):
            if not d or d.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = d["spec"]["group"], d["spec"]["names"]["kind"]
            for v in d["spec"]["versions"]:
                if v.get("served", True):
                    out[(f"{group}/{v['name']}", kind)] = v["schema"]["openAPIV3Schema"]
    return out


# ---- CEL: the rule texts of these CRDs, translated to Python -----------------------
# Rules are recognised by pattern (the CRDs repeat one rule text per filter type,
# per path check, ...); each pattern gives a function of the rule's regex match.

def _has(d, k) -> bool:
    return isinstance(d, dict) and k in d


def _ns_same(p1, p2) -> bool:
    return (not p1.get("namespace") and not p2.get("namespace")) or (
        "namespace" in p1 and "namespace" in p2 and p1["namespace"] == p2["namespace"])


def _same_parent(p1, p2) -> bool:
    return p1.get("group") == p2.get("group") and p1.get("kind") == p2.get("kind") and \
        p1.get("name") == p2.get("name") and _ns_same(p1, p2)


def _section_empty(p) -> bool:
    return not p.get("sectionName")


def _port_empty(p) -> bool:
    return not p.get("port")


def _parents_unique(refs) -> bool:
    return all(sum(1 for p2 in refs if _same_parent(p1, p2) and (
        (_section_empty(p1) and _section_empty(p2)) or p1.get("sectionName") == p2.get("sectionName")
        and not _section_empty(p1))) == 1 for p1 in refs)


def _parents_uniform(refs, ports: bool) -> bool:
    return all(not _same_parent(p1, p2) or (_section_empty(p1) == _section_empty(p2) and (
        not ports or _port_empty(p1) == _port_empty(p2))) for p1 in refs for p2 in refs)


def _match_count(rules) -> int:
    return sum(len(r.get("matches") or []) for r in rules[:16])


_PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$")
_GRPC_METHOD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")
_GRPC_SERVICE = re.compile(r"^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$", re.I)

def _replaces_prefix(filters, kind: str) -> bool:
    return sum(1 for f in filters or [] if isinstance(f.get(kind), dict)
               and (f[kind].get("path") or {}).get("type") == "ReplacePrefixMatch"
               and "replacePrefixMatch" in f[kind]["path"]) == 1


def _prefix_match_rule(rule, where: str, kind: str) -> bool:
    if where == "filters":
        uses = _replaces_prefix(rule.get("filters"), kind)
    else:
        uses = sum(1 for b in rule.get("backendRefs") or [] if _replaces_prefix(b.get("filters"), kind)) == 1
    if not uses:
        return True
    ms = rule.get("matches") or []
    return len(ms) == 1 and (ms[0].get("path") or {}).get("type") == "PathPrefix"


def _unique_by(items, key) -> bool:
    keys = [key(x) for x in items]
    return len(keys) == len(set(keys))


_HOSTNAME_ADDRESS = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

# The Gateway's rules (gateways-v1.6.1.yaml) meshc's Gateways meet.
_GATEWAY_PATTERNS: list[tuple[str, object]] = [
    (r"self\.all\(a1, a1\.type == '(IPAddress|Hostname)'\s+&& has\(a1\.value\) \? self\.exists_one\(a2, .*\)",
     lambda m: lambda v: _unique_by([a for a in v if a.get("type") == m[1] and "value" in a], lambda a: a["value"])),
    (r"self\.type == 'Hostname' \? \(!has\(self\.value\) \|\| self\.value\.matches\(.*\)\): true",
     lambda m: lambda v: v.get("type") != "Hostname" or "value" not in v
     or _HOSTNAME_ADDRESS.fullmatch(v["value"]) is not None),
    (r"self\.all\(l, l\.protocol in \['HTTP', 'TCP', 'UDP'\] \? !has\(l\.tls\) : true\)",
     lambda m: lambda v: all(not (x.get("protocol") in ("HTTP", "TCP", "UDP") and "tls" in x) for x in v)),
    (r"self\.all\(l, \(l\.protocol == 'HTTPS' && has\(l\.tls\)\) \? \(l\.tls\.mode == '' \|\| "
     r"l\.tls\.mode == 'Terminate'\) : true\)",
     lambda m: lambda v: all(x.get("tls", {}).get("mode", "") in ("", "Terminate") for x in v
                             if x.get("protocol") == "HTTPS")),
    (r"self\.all\(l, \(l\.protocol == 'TLS' \? .*\)\)",
     lambda m: lambda v: all(x.get("protocol") != "TLS" or x.get("tls", {}).get("mode") for x in v)),
    (r"self\.all\(l, l\.protocol in \['TCP', 'UDP'\]\s+\? \(!has\(l\.hostname\) \|\| l\.hostname == ''\) : true\)",
     lambda m: lambda v: all(x.get("protocol") not in ("TCP", "UDP") or not x.get("hostname") for x in v)),
    (r"self\.all\(l1, self\.exists_one\(l2, l1\.name == l2\.name\)\)",
     lambda m: lambda v: _unique_by(v, lambda x: x.get("name"))),
    (r"self\.all\(l1, self\.exists_one\(l2, l1\.port == l2\.port && l1\.protocol == l2\.protocol && .*\)\)",
     lambda m: lambda v: _unique_by(v, lambda x: (x.get("port"), x.get("protocol"), x.get("hostname")))),
    (r"self\.mode == 'Terminate' \? size\(self\.certificateRefs\) > 0 \|\| size\(self\.options\) > 0 : true",
     lambda m: lambda v: v.get("mode", "Terminate") != "Terminate" or bool(v.get("certificateRefs"))
     or bool(v.get("options"))),
]

_PATTERNS: list[tuple[str, object]] = [
    *_GATEWAY_PATTERNS,
    (r"!\('\*' in self && self\.size\(\) > 1\)", lambda m: lambda v: not ("*" in v and len(v) > 1)),
    (r"!\(has\(self\.(\w+)\) && self\.type != '(\w+)'\)",
     lambda m: lambda v: not (_has(v, m[1]) and v.get("type") != m[2])),
    (r"!\(!has\(self\.(\w+)\) && self\.type == '(\w+)'\)",
     lambda m: lambda v: not (not _has(v, m[1]) and v.get("type") == m[2])),
    (r"self\.filter\(f, f\.type == '(\w+)'\)\.size\(\) <= 1",
     lambda m: lambda v: sum(1 for f in v if f.get("type") == m[1]) <= 1),
    (r"!\(self\.exists\(f, f\.type == 'RequestRedirect'\) && self\.exists\(f, f\.type == 'URLRewrite'\)\)",
     lambda m: lambda v: not (any(f.get("type") == "RequestRedirect" for f in v)
                              and any(f.get("type") == "URLRewrite" for f in v))),
    (r"\(self\.type in \['Exact','PathPrefix'\]\) \? !self\.value\.contains\('([^']*)'\) : true",
     lambda m: lambda v: v.get("type") not in ("Exact", "PathPrefix") or m[1] not in v.get("value", "")),
    (r"\(self\.type in \['Exact','PathPrefix'\]\) \? !self\.value\.endsWith\('([^']*)'\) : true",
     lambda m: lambda v: v.get("type") not in ("Exact", "PathPrefix") or not v.get("value", "").endswith(m[1])),
    (r"\(self\.type in \['Exact','PathPrefix'\]\) \? self\.value\.startsWith\('/'\) : true",
     lambda m: lambda v: v.get("type") not in ("Exact", "PathPrefix") or v.get("value", "").startswith("/")),
    (r"\(self\.type in \['Exact','PathPrefix'\]\) \? self\.value\.matches\(.*",
     lambda m: lambda v: v.get("type") not in ("Exact", "PathPrefix") or bool(_PATH_CHARS.match(v.get("value", "")))),
    (r"self\.type in \['Exact','PathPrefix'\] \|\| self\.type == 'RegularExpression'",
     lambda m: lambda v: v.get("type") in ("Exact", "PathPrefix", "RegularExpression")),
    (r"\(size\(self\.group\) == 0 && self\.kind == 'Service'\) \? has\(self\.port\) : true",
     lambda m: lambda v: not (not v.get("group") and v.get("kind", "Service") == "Service") or "port" in v),
    (r"has\(self\.(replaceFullPath|replacePrefixMatch)\) \? self\.type == '(\w+)' : true",
     lambda m: lambda v: m[1] not in v or v.get("type") == m[2]),
    (r"self\.type == '(\w+)' \? has\(self\.(\w+)\) : true",
     lambda m: lambda v: v.get("type") != m[1] or m[2] in v),
    (r"\(has\(self\.backendRefs\) && size\(self\.backendRefs\) > 0\) \? \(!has\(self\.filters\) \|\| "
     r"self\.filters\.all\(f, !has\(f\.requestRedirect\)\)\): true",
     lambda m: lambda v: not v.get("backendRefs") or all("requestRedirect" not in f for f in v.get("filters", []))),
    # ReplacePrefixMatch (of a URLRewrite or a RequestRedirect, on the rule's
    # filters or on one backendRef's) needs exactly one PathPrefix match
    (r"\(has\(self\.(filters|backendRefs)\) && .*has\(f\.(urlRewrite|requestRedirect)\).*ReplacePrefixMatch.*",
     lambda m: lambda v: _prefix_match_rule(v, m[1], m[2])),
    (r"\(self\.size\(\) > 0 \? .*<= 128", lambda m: lambda v: _match_count(v) <= 128),
    (r"self\.all\(p1, self\.exists_one\(p2, .*", lambda m: _parents_unique),
    (r"self\.all\(p1, self\.all\(p2, .*\(!has\(p1\.port\).*", lambda m: lambda v: _parents_uniform(v, True)),
    (r"self\.all\(p1, self\.all\(p2, .*", lambda m: lambda v: _parents_uniform(v, False)),
    (r"\(!has\(self\.type\) \|\| self\.type == 'Exact'\) && has\(self\.method\) \? .*",
     lambda m: lambda v: not (v.get("type", "Exact") == "Exact" and "method" in v) or bool(_GRPC_METHOD.match(v["method"]))),
    (r"\(!has\(self\.type\) \|\| self\.type == 'Exact'\) && has\(self\.service\) \? .*",
     lambda m: lambda v: not (v.get("type", "Exact") == "Exact" and "service" in v)
     or bool(_GRPC_SERVICE.match(v["service"]))),
    (r"has\(self\.type\) \? has\(self\.service\) \|\| has\(self\.method\) : true",
     lambda m: lambda v: "type" not in v or "service" in v or "method" in v),
    (r"!\(has\(self\.percent\) && has\(self\.fraction\)\)",
     lambda m: lambda v: not ("percent" in v and "fraction" in v)),
    (r"self\.numerator <= self\.denominator",
     lambda m: lambda v: v["numerator"] <= v.get("denominator", 100)),
    (r"!\(has\(self\.request\) && has\(self\.backendRequest\) .*",
     lambda m: lambda v: not ("request" in v and "backendRequest" in v)
     or istio_schema.cel_duration(v["request"]) == 0
     or istio_schema.cel_duration(v["backendRequest"]) <= istio_schema.cel_duration(v["request"])),
]


def _install_cel() -> None:
    """Add a translation to istio_schema's table for every rule text of these
    CRDs a pattern recognises; the others stay untranslated (reported if met)."""
    def rules(node):
        if isinstance(node, dict):
            for r in node.get("x-kubernetes-validations", []):
                yield r["rule"]
            for v in node.values():
                yield from rules(v)
        elif isinstance(node, list):
            for v in node:
                yield from rules(v)

    for schema in _crds().values():
        for text in rules(schema):
            if text in istio_schema.CEL:
                continue
            for pattern, make in _PATTERNS:
                m = re.fullmatch(pattern, text, re.S)
                if m:
                    istio_schema.CEL[text] = make(m)
                    break


@lru_cache(maxsize=None)
def _validator(api_version: str, kind: str):
    schema = istio_schema.to_json_schema(_crds()[(api_version, kind)])
    schema["properties"] = {**OBJECT, **schema.get("properties", {})}
    schema["required"] = ["apiVersion", "kind", "metadata"] + (["spec"] if "spec" in schema["properties"] else [])
    return jsonschema.Draft7Validator(schema)


_DNS1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
OBJECT = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
        "name": {"type": "string", "pattern": _DNS1123, "maxLength": 253},
        "namespace": {"type": "string", "pattern": _DNS1123, "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}},
}
CORE = {
    ("v1", "Service"): {"type": "object", "additionalProperties": False, "required": ["selector", "ports"],
                        "properties": {"selector": {"type": "object", "additionalProperties": {"type": "string"}},
                                       "ports": {"type": "array", "minItems": 1, "items": {
                                           "type": "object", "additionalProperties": False, "required": ["port"],
                                           "properties": {"name": {"type": "string", "pattern": _DNS1123,
                                                                   "maxLength": 15},
                                                          "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                                          "targetPort": {"type": "integer", "minimum": 1,
                                                                         "maximum": 65535},
                                                          "appProtocol": {"type": "string"}}}}}},
    ("v1", "Namespace"): None,
}


def errors(doc: dict) -> list[str]:
    """Every way `doc` breaks its CRD (closed schema and CEL), or its core kind's shape."""
    _install_cel_once()
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CORE:
        schema = {"type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata"],
                  "properties": {**OBJECT}}
        if CORE[key] is not None:
            schema["properties"]["spec"] = CORE[key]
            schema["required"].append("spec")
        return [f"{'.'.join(map(str, e.absolute_path)) or '.'}: {e.message}"
                for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    if key[0] and key[0].split("/")[0] in ("security.istio.io", "networking.istio.io", "telemetry.istio.io"):
        return istio_schema.errors(doc)
    if key not in _crds():
        return [f"no CRD for {key[0]}/{key[1]}"]
    out = [f"{'.'.join(map(str, e.absolute_path)) or '.'}: {e.message}"
           for e in _validator(*key).iter_errors(doc)]
    return out + istio_schema.cel_errors(doc, _crds()[key])


_installed: list[bool] = []


def _install_cel_once() -> None:
    if not _installed:
        _install_cel()
        _installed.append(True)
