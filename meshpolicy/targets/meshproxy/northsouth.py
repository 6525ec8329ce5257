"""Model -> meshproxy config for north-south (issue 15): the L7 options of a
rule (query tests, header operations, rewrite, CORS), `internet` principals
and the providers they need, egress to external services, and ingress
gateways as workloads of their own.

What a construct means lives in meshpolicy.semantics (tokens, rewrite,
cors, header_ops, query, hosts); this module only writes the values the
proxy hands to those functions.
"""

from __future__ import annotations

import json

from ...codes import diag
from ...diagnostics import Diagnostic
from ...model import types as m
from ...model.jwks_text import jwks_label, usable_jwks
from ...semantics.ingress import accepted_providers
from ...semantics.tokens import locations_of


def query_test(q: m.QueryMatch) -> dict:
    return {"name": q.name, "kind": q.kind, "value": q.value if q.kind != "present" else None}


def cors(c: m.Cors | None) -> dict | None:
    if c is None:
        return None
    return {"origins": list(c.origins), "methods": list(dict.fromkeys(c.methods)), "headers": list(c.headers),
            "expose": list(c.expose), "credentials": c.credentials, "max_age_ms": c.max_age_ms}


def l7(rule: m.RouteRule, cors_policy: m.Cors | None) -> dict:
    """The rule options every rule carries (route and ingress rules alike)."""
    rw = rule.rewrite
    return {
        "headers": [{"side": h.side, "op": h.op, "name": h.name, "value": h.value if h.op != "remove" else None}
                    for h in rule.headers],
        "rewrite": {"path": rw.path, "host": rw.host} if rw is not None else None,
        "cors": cors(cors_policy),
    }


# ---- who: internet principals ---------------------------------------------

def ingress_spiffe_id(mesh: m.Mesh, g: m.Ingress) -> str:
    return f"spiffe://{mesh.settings.trust_domain}/ns/{g.namespace}/sa/{g.account or g.name}"


def internet_principal(mesh: m.Mesh, s: m.Source) -> dict:
    """`internet [with jwt [P] tests]`: requests whose peer is one of the
    mesh's ingresses, each with the providers it accepts."""
    req = s.jwt
    return {"kind": "internet",
            "ingresses": [{"spiffe_id": ingress_spiffe_id(mesh, g), "providers": list(accepted_providers(mesh, g))}
                          for g in mesh.ingress_map.values()],
            "jwt": req is not None,
            "provider": req.provider.name if req is not None and req.provider is not None else None,
            "claims": [{"claim": t.claim, "op": t.op, "value": t.value} for t in (req.claims if req else [])]}


def provider_configs(mesh: m.Mesh, names: set[str] | list[str], cache: dict) -> list[dict]:
    """The `jwt` section: each provider with its JWKS read from its file
    (relative to the .mesh file that declares it). Unreadable or unusable
    JWKS: the provider is left out, and `jwks_diagnostics` reports it."""
    out = []
    for name in sorted(set(names)):
        p = mesh.provider_map[name]
        jwks = None
        if p.jwks_uri is None:
            text = read_jwks(p, cache)[0]
            if text is None:
                continue
            jwks = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))  # compact, one line
        out.append({"name": p.name, "issuer": p.issuer or "", "audiences": list(p.audiences), "jwks": jwks,
                    "jwks_uri": p.jwks_uri,
                    "tokens": [{"kind": loc.kind, "name": loc.name, "prefix": loc.prefix if loc.kind == "header"
                                else None} for loc in locations_of(p)]})
    return out


def read_jwks(p: m.JwtProvider, cache: dict) -> tuple[str | None, str | None]:
    """usable_jwks, read once per compile."""
    if p.name not in cache:
        cache[p.name] = usable_jwks(p)
    return cache[p.name]


def jwks_diagnostics(mesh: m.Mesh, cache: dict) -> list[Diagnostic]:
    """MP223 (the checker's finding, wire.jwks's reading) when a JWKS file
    changed between check and compile so that meshproxy could not verify
    with it: refused rather than compiled with the provider left out."""
    out = []
    for p in mesh.provider_map.values():
        if p.jwks_uri is not None:
            continue  # the manifest refuses it (MP701)
        problem = read_jwks(p, cache)[1]
        if problem:
            out.append(diag("MP223", f"the {jwks_label(p)} of jwt provider `{p.name}` {problem}",
                            p.at("jwks_file") if "jwks_file" in p.spans else p.span))
    return out
