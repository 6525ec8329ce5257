"""Test-side validation of emitted documents against Istio's real CRDs.

Loads the CustomResourceDefinition of a kind and version from
../shared/schemas/istio/crds-1.30.3.yaml, turns its openAPIV3Schema into a
JSON Schema that rejects unknown fields (additionalProperties: false wherever
`properties` is given, unless x-kubernetes-preserve-unknown-fields), and
evaluates the CRDs' x-kubernetes-validations CEL rules. No CEL package is
installed, so each rule text these CRDs use is translated to Python below;
a rule without a translation is reported, never skipped.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import urlsplit

import jsonschema
import yaml

from tests.conftest import shared_missing, shared_path

CRDS_PARTS = ("schemas", "istio", "crds-1.30.3.yaml")
CRDS = shared_path(*CRDS_PARTS)
MISSING = shared_missing(*CRDS_PARTS)  # the skip reason, naming the file, when it is absent


@lru_cache(maxsize=None)
def _crds() -> dict[tuple[str, str, str], dict]:
    out = {}
    for d in yaml.safe_load_all(CRDS.read_text(encoding="utf-8")):
        if not d:
            continue
        group, kind = d["spec"]["group"], d["spec"]["names"]["kind"]
        for v in d["spec"]["versions"]:
            out[(f"{group}/{v['name']}", kind)] = v["schema"]["openAPIV3Schema"]
    return out


def crd_schema(api_version: str, kind: str) -> dict:
    return _crds()[(api_version, kind)]


def to_json_schema(s: dict) -> dict:
    """OpenAPI v3 (Kubernetes structural schema) -> JSON Schema, closed."""
    if not isinstance(s, dict):
        return s
    out = {}
    for k, v in s.items():
        if k.startswith("x-kubernetes-") or k in ("description", "nullable", "format"):
            continue
        if k == "properties":
            out[k] = {name: to_json_schema(sub) for name, sub in v.items()}
        elif k in ("items", "additionalProperties", "not"):
            out[k] = to_json_schema(v) if isinstance(v, dict) else v
        elif k in ("oneOf", "anyOf", "allOf"):
            # a structural schema's branches only constrain the fields the
            # node itself declares: they stay open
            out[k] = [{kk: vv for kk, vv in to_json_schema(x).items() if kk != "additionalProperties"}
                      if isinstance(x, dict) else x for x in v]
        else:
            out[k] = v
    if s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in s and not s.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in s:
        out["additionalProperties"] = False
    if s.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if s.get("format") == "int32":
        out["minimum"], out["maximum"] = max(out.get("minimum", -(2**31)), -(2**31)), min(
            out.get("maximum", 2**31 - 1), 2**31 - 1)
    return out


# ---- CEL: the rule texts these CRDs use, as Python ------------------------------
_GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+$")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def cel_duration(text: str) -> float:
    """CEL duration(): Go's time.ParseDuration syntax; error if malformed."""
    if not isinstance(text, str) or not _GO_DURATION.match(text):
        raise ValueError(f"duration({text!r}): invalid duration")
    return sum(float(n) * _UNIT[u] for n, _, u in re.findall(r"([0-9]+(\.[0-9]*)?)(ns|us|µs|ms|s|m|h)", text))


CEL = {
    "duration(self) >= duration('1ms')": lambda v: cel_duration(v) >= 1e-3,
    'self.all(key, !key.contains("*"))': lambda v: all("*" not in k for k in v),
    "self.all(key, key.size() != 0)": lambda v: all(len(k) != 0 for k in v),
    '!self.contains("*")': lambda v: "*" not in v,
    "(has(self.workloadSelector) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1":
        lambda v: ("workloadSelector" in v) + ("targetRefs" in v) <= 1,
    "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1":
        lambda v: ("selector" in v) + ("targetRef" in v) + ("targetRefs" in v) <= 1,
    'has(self.context) ? ((self.context == "WAYPOINT") ? has(self.waypoint) : !has(self.waypoint)) '
    ': !has(self.waypoint)':
        lambda v: ("waypoint" in v) == (v.get("context") == "WAYPOINT"),
    "0 < self && self <= 65535": lambda v: 0 < v <= 65535,
    "self.size() == 0": lambda v: len(v) == 0,
    "(has(self.serviceAccounts) || has(self.notServiceAccounts)) ? (!has(self.principals) &&\n"
    "!has(self.notPrincipals) && !has(self.namespaces) && !has(self.notNamespaces)) : true":
        lambda v: not ({"serviceAccounts", "notServiceAccounts"} & v.keys())
        or not ({"principals", "notPrincipals", "namespaces", "notNamespaces"} & v.keys()),
    "has(self.portLevelMtls) ? (((has(self.selector) && has(self.selector.matchLabels)) ? "
    "self.selector.matchLabels : {}).size() > 0) : true":
        lambda v: "portLevelMtls" not in v or bool(v.get("selector", {}).get("matchLabels")),
    "self.all(key, 0 < int(key) && int(key) <= 65535)": lambda v: all(0 < int(k) <= 65535 for k in v),
    # ServiceEntry, Gateway, RequestAuthentication (issue 15)
    '!((has(self.addresses) ? self.addresses : []).exists(k, k.contains("/")) && '
    '!((has(self.resolution) ? self.resolution : "NONE") in ["STATIC", "NONE"]))':
        lambda v: not (any("/" in k for k in v.get("addresses", []))
                       and v.get("resolution", "NONE") not in ("STATIC", "NONE")),
    '((has(self.resolution) ? self.resolution : "") == "DNS_ROUND_ROBIN") ? '
    '((has(self.endpoints) ? self.endpoints : []).size() <= 1) : true':
        lambda v: v.get("resolution") != "DNS_ROUND_ROBIN" or len(v.get("endpoints", [])) <= 1,
    '((has(self.resolution) ? self.resolution : "NONE") == "NONE") ? !has(self.endpoints) : true':
        lambda v: v.get("resolution", "NONE") != "NONE" or "endpoints" not in v,
    '(has(self.address) ? self.address : "").startsWith("unix://") ? !has(self.ports) : true':
        lambda v: not v.get("address", "").startswith("unix://") or "ports" not in v,
    "(has(self.workloadSelector) ? 1 : 0) + (has(self.endpoints) ? 1 : 0) <= 1":
        lambda v: ("workloadSelector" in v) + ("endpoints" in v) <= 1,
    "has(self.address) || has(self.network)": lambda v: "address" in v or "network" in v,
    'self != "*"': lambda v: v != "*",
    'self.all(key, size(key) < 63 && key.matches("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$"))':
        lambda v: all(len(k) < 63 and re.fullmatch(r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?", k) for k in v),
    "self.all(l1, self.exists_one(l2, l1.number == l2.number))":
        lambda v: all(sum(1 for b in v if b.get("number") == a.get("number")) == 1 for a in v),
    'self.startsWith("unix://") ? !self.endsWith("/") : true':
        lambda v: not v.startswith("unix://") or not v.endswith("/"),
    'self.startsWith("unix://") ? (self.substring(7, 8) == "/" || self.substring(7, 8) == "@") : true':
        lambda v: not v.startswith("unix://") or v[7:8] in ("/", "@"),
    "(has(self.credentialName) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1":
        lambda v: ("credentialName" in v) + ("credentialNames" in v) <= 1,
    "(has(self.credentialNames) ? 1 : 0) + (has(self.tlsCertificates) ? 1 : 0) <= 1":
        lambda v: ("credentialNames" in v) + ("tlsCertificates" in v) <= 1,
    "(has(self.tlsCertificates) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1":
        lambda v: ("credentialNames" in v) + ("tlsCertificates" in v) <= 1,
    "(has(self.jwksUri) ? 1 : 0) + (has(self.jwks_uri) ? 1 : 0) + (has(self.jwks) ? 1 : 0) <= 1":
        lambda v: ("jwksUri" in v) + ("jwks_uri" in v) + ("jwks" in v) <= 1,
    'url(self).getScheme() in ["http", "https"]': lambda v: urlsplit(v).scheme in ("http", "https"),
}


def cel_errors(value, schema: dict, where: str = "") -> list[str]:
    out = []
    for r in schema.get("x-kubernetes-validations", []):
        fn = CEL.get(r["rule"])
        if fn is None:
            out.append(f"{where or '.'}: CEL rule not translated for the tests: {r['rule']!r}")
            continue
        try:
            ok = fn(value)
        except (ValueError, TypeError, AttributeError) as exc:
            ok, r = False, {**r, "message": f"{r['message']} ({exc})"}
        if not ok:
            out.append(f"{where or '.'}: {r['message']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            if k in props:
                out += cel_errors(v, props[k], f"{where}.{k}")
            elif isinstance(extra, dict):
                out += cel_errors(v, extra, f"{where}.{k}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            out += cel_errors(v, schema["items"], f"{where}[{i}]")
    return out


# Every Kubernetes object also has these, which CRDs leave implicit; the
# metadata we emit is name and namespace only (DNS-1123 names).
_DNS1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_OBJECT = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object", "additionalProperties": False, "required": ["name", "namespace"], "properties": {
        "name": {"type": "string", "pattern": _DNS1123, "maxLength": 253},
        "namespace": {"type": "string", "pattern": _DNS1123, "maxLength": 63}}},
}


@lru_cache(maxsize=None)
def _validator(api_version: str, kind: str):
    schema = to_json_schema(crd_schema(api_version, kind))
    schema["properties"] = {**_OBJECT, **schema["properties"]}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return jsonschema.Draft7Validator(schema)


def errors(doc: dict) -> list[str]:
    """Every way `doc` breaks its CRD: schema (closed) and CEL rules."""
    try:
        raw = crd_schema(doc["apiVersion"], doc["kind"])
    except KeyError:
        return [f"no CRD for {doc.get('apiVersion')}/{doc.get('kind')}"]
    out = [f"{'.'.join(map(str, e.absolute_path)) or '.'}: {e.message}"
           for e in _validator(doc["apiVersion"], doc["kind"]).iter_errors(doc)]
    return out + cel_errors(doc, raw)
