"""Compile-time structural checks of the gateway-api and linkerd targets'
output: each rendered file is parsed back and every document checked
against a closed shape of its kind (unknown fields, missing required ones,
wrong types, and the CRDs' value rules meshc's output could break: names,
durations, weights, redirect codes, match counts). This needs nothing
outside the package; tests/kube_schema.py checks the same output against
the real CRDs in ../shared/schemas/.
"""

from __future__ import annotations

import re

import yaml

from ..codes import diag
from ..compile import Output
from ..diagnostics import Diagnostic

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DURATION = re.compile(r"([0-9]{1,5}(h|m|s|ms)){1,4}")
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")

# A shape: "str", "int", "bool", "any"; a dict of key -> shape (closed; a key
# starting with "!" is required); [shape] for a list; {"*": shape} for a map.
REF = {"group": "str", "kind": "str", "!name": "str", "namespace": "str", "port": "int", "sectionName": "str"}
BACKEND = {"group": "str", "kind": "str", "!name": "str", "namespace": "str", "port": "int", "weight": "int"}
HEADER = {"type": "str", "!name": "header", "!value": "str"}
PATH = {"type": "str", "value": "path"}
FILTER = {"!type": "str",
          "requestMirror": {"!backendRef": BACKEND, "percent": "int", "fraction": {"!numerator": "int",
                                                                                  "denominator": "int"}},
          "requestRedirect": {"scheme": "str", "hostname": "str", "port": "int", "statusCode": "redirect",
                              "path": {"!type": "str", "replaceFullPath": "str", "replacePrefixMatch": "str"}},
          "requestHeaderModifier": {"set": [{"!name": "header", "!value": "str"}],
                                    "add": [{"!name": "header", "!value": "str"}], "remove": ["header"]},
          "responseHeaderModifier": {"set": [{"!name": "header", "!value": "str"}],
                                     "add": [{"!name": "header", "!value": "str"}], "remove": ["header"]},
          "urlRewrite": {"hostname": "name",
                         "path": {"!type": "str", "replaceFullPath": "str", "replacePrefixMatch": "str"}},
          "cors": {"allowOrigins": ["str"], "allowMethods": ["str"], "allowHeaders": ["str"],
                   "exposeHeaders": ["str"], "allowCredentials": "bool", "maxAge": "int"}}
QUERY = {"type": "str", "!name": "str", "!value": "str"}
HTTP_RULE = {"name": "label", "matches": [{"path": PATH, "method": "method", "headers": [HEADER],
                                          "queryParams": [QUERY]}], "filters": [FILTER],
             "backendRefs": [BACKEND], "timeouts": {"request": "duration", "backendRequest": "duration"}}
GRPC_RULE = {"matches": [{"method": {"type": "str", "service": "str", "method": "str"}, "headers": [HEADER]}],
             "filters": [FILTER], "backendRefs": [BACKEND]}
META = {"!name": "name", "namespace": "label", "labels": {"*": "str"}, "annotations": {"*": "str"}}
TARGET_REF = {"group": "str", "!kind": "str", "!name": "name"}
CLIENT_REF = {"group": "str", "!kind": "str", "!name": "str", "namespace": "str"}

LISTENER = {"!name": "label", "!port": "int", "!protocol": "str", "hostname": "str",
            "tls": {"mode": "str", "certificateRefs": [{"group": "str", "kind": "str", "!name": "name",
                                                        "namespace": "label"}]},
            "allowedRoutes": {"namespaces": {"from": "str"}}}

SHAPES: dict[tuple[str, str], dict] = {
    ("gateway.networking.k8s.io/v1", "Gateway"): {"!gatewayClassName": "name", "!listeners": [LISTENER],
                                                  "addresses": [{"type": "str", "!value": "name"}]},
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): {"!parentRefs": [REF], "!rules": [HTTP_RULE], "hostnames": ["str"]},
    ("gateway.networking.k8s.io/v1", "GRPCRoute"): {"!parentRefs": [REF], "!rules": [GRPC_RULE], "hostnames": ["str"]},
    ("policy.linkerd.io/v1beta3", "HTTPRoute"): {"!parentRefs": [REF], "!rules": [HTTP_RULE], "hostnames": ["str"]},
    ("v1", "Service"): {"!selector": {"*": "str"}, "!ports": [{"name": "str", "!port": "int", "targetPort": "int",
                                                               "appProtocol": "str"}]},
    ("v1", "Namespace"): None,
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"): {
        "!from": [{"!group": "str", "!kind": "str", "!namespace": "label"}],
        "!to": [{"!group": "str", "!kind": "str", "name": "name"}]},
    ("policy.linkerd.io/v1beta3", "Server"): {"!podSelector": {"matchLabels": {"*": "str"}}, "!port": "int",
                                              "proxyProtocol": "str", "accessPolicy": "str"},
    ("policy.linkerd.io/v1alpha1", "AuthorizationPolicy"): {"!targetRef": TARGET_REF,
                                                            "!requiredAuthenticationRefs": [CLIENT_REF]},
    ("policy.linkerd.io/v1alpha1", "MeshTLSAuthentication"): {"identities": ["str"], "identityRefs": [CLIENT_REF]},
    ("policy.linkerd.io/v1alpha1", "NetworkAuthentication"): {"!networks": [{"!cidr": "str", "except": ["str"]}]},
    ("policy.linkerd.io/v1alpha1", "EgressNetwork"): {"!trafficPolicy": "str",
                                                      "networks": [{"!cidr": "str", "except": ["str"]}]},
    ("policy.linkerd.io/v1alpha1", "HTTPLocalRateLimitPolicy"): {
        "!targetRef": TARGET_REF, "total": {"!requestsPerSecond": "int"}, "identity": {"!requestsPerSecond": "int"},
        "overrides": [{"!requestsPerSecond": "int", "!clientRefs": [CLIENT_REF]}]},
}
# Istio's resources (mesh = "istio") are the istio target's, checked by its own models.
ISTIO_KINDS = {("security.istio.io/v1", "PeerAuthentication"), ("security.istio.io/v1", "AuthorizationPolicy"),
               ("networking.istio.io/v1", "DestinationRule"), ("telemetry.istio.io/v1", "Telemetry"),
               ("networking.istio.io/v1alpha3", "EnvoyFilter"), ("security.istio.io/v1", "RequestAuthentication"),
               ("networking.istio.io/v1", "ServiceEntry"), ("networking.istio.io/v1", "VirtualService"),
               ("networking.istio.io/v1", "Sidecar")}

_SCALARS = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "bool": lambda v: isinstance(v, bool),
    "any": lambda v: True,
    "name": lambda v: isinstance(v, str) and len(v) <= 253 and DNS_SUBDOMAIN.fullmatch(v) is not None,
    "label": lambda v: isinstance(v, str) and len(v) <= 63 and DNS_LABEL.fullmatch(v) is not None,
    "duration": lambda v: isinstance(v, str) and DURATION.fullmatch(v) is not None,
    "path": lambda v: isinstance(v, str) and v.startswith(("/", "^")) and len(v) <= 1024,
    "header": lambda v: isinstance(v, str) and HEADER_NAME.fullmatch(v) is not None,
    "method": lambda v: v in METHODS,
    "redirect": lambda v: v in (301, 302, 303, 307, 308),
}


def _check(value, shape, where: str, out: list[str]) -> None:
    if isinstance(shape, str):
        if not _SCALARS[shape](value):
            out.append(f"{where}: {value!r} is not a valid {shape}")
        return
    if isinstance(shape, list):
        if not isinstance(value, list):
            out.append(f"{where}: expected a list")
            return
        for i, item in enumerate(value):
            _check(item, shape[0], f"{where}[{i}]", out)
        return
    if not isinstance(value, dict):
        out.append(f"{where}: expected a mapping")
        return
    if "*" in shape:
        for k, v in value.items():
            _check(v, shape["*"], f"{where}.{k}", out)
        return
    keys = {k.lstrip("!"): k.startswith("!") for k in shape}
    for k in value:
        if k not in keys:
            out.append(f"{where}: unknown field `{k}`")
    for k, required in keys.items():
        if k in value:
            _check(value[k], shape["!" + k] if required else shape[k], f"{where}.{k}", out)
        elif required:
            out.append(f"{where}: missing `{k}`")


def check_document(doc) -> list[str]:
    if not isinstance(doc, dict):
        return ["a document is not a mapping"]
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in ISTIO_KINDS:
        from .istio.output_check import check_document as istio_check

        return istio_check(doc)
    if key not in SHAPES:
        return [f"unexpected resource {key[0]}/{key[1]}"]
    out: list[str] = []
    where = f"{key[1]} {doc.get('metadata', {}).get('name')}"
    allowed = {"apiVersion", "kind", "metadata"} | ({"spec"} if SHAPES[key] is not None else set())
    for k in doc:
        if k not in allowed:
            out.append(f"{where}: unknown field `{k}`")
    _check(doc.get("metadata"), META, f"{where}.metadata", out)
    if SHAPES[key] is not None:
        _check(doc.get("spec"), SHAPES[key], f"{where}.spec", out)
    if key[1] in ("HTTPRoute", "GRPCRoute") and isinstance(doc.get("spec"), dict):
        rules = doc["spec"].get("rules") or []
        if len(rules) > 16 or sum(len(r.get("matches") or []) for r in rules if isinstance(r, dict)) > 128:
            out.append(f"{where}: more than 16 rules or 128 matches")
    return out


def check_outputs(target: str, outputs: list[Output]) -> list[Diagnostic]:
    problems: list[str] = []
    for o in outputs:
        if o.path == "kustomization.yaml":
            continue
        try:
            docs = [d for d in yaml.load_all(o.content, Loader=_LOADER) if d is not None]
        except yaml.YAMLError as exc:
            problems.append(f"{o.path}: not YAML: {exc}")
            continue
        for d in docs:
            problems += [f"{o.path}: {p}" for p in check_document(d)]
    return [diag("MP702", f"{target} output failed validation: {p}") for p in problems[:20]]
