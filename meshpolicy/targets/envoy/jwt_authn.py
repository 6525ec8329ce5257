"""End-user tokens: Envoy's jwt_authn filter and the RBAC principals that
test a validated token's claims (docs/semantics.md, "Ingress, tokens and
egress", items 1 and 2).

Each provider writes its validated payload into the filter's dynamic
metadata under the provider's own name (`payload_in_metadata`), so a rule
can ask which provider validated the token and what its claims are. Nothing
a caller sends can write dynamic metadata: only a token that passed the
signature, issuer, audience and time checks gets there.

At the ingress, and at every destination that validates tokens (the
plan's `jwt_providers`: those of the ingresses that forward to it and those
its rules name), an invalid token is refused (401) whatever the route; a
missing one passes (authorization decides).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import re2

from ...model.jwks_text import jwks_label, jwks_text
from ...model.types import ClaimTest, Ingress, JwtProvider, JwtRequirement, Mesh
from ...plan import plan_of
from ...semantics.ingress import accepted_providers
from ...semantics.tokens import locations_of
from .context import Ctx

JWT_AUTHN = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
JWT_FILTER = "envoy.filters.http.jwt_authn"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
# exp/nbf leeway in seconds, as docs/semantics.md fixes it (Envoy's default too).
CLOCK_SKEW_S = 60
JWKS_CACHE_S = 300
JWT_CACHE_SIZE = 1000  # verified tokens kept per provider and worker thread


def accepted(mesh: Mesh, g: Ingress) -> list[JwtProvider]:
    """The providers an ingress accepts (semantics/ingress.py)."""
    return [mesh.provider_map[n] for n in accepted_providers(mesh, g)]


def validating(mesh: Mesh, dest: str) -> list[JwtProvider]:
    """The providers a destination's sidecar validates tokens with (the plan's)."""
    sp = plan_of(mesh).service(dest)
    return [mesh.provider_map[n] for n in sorted(sp.jwt_providers)] if sp is not None else []


def jwks_cluster(p: JwtProvider) -> str:
    return f"jwks|{p.name}"


MAX_PREFIX_LETTERS = 8  # 2^8 spellings of a token prefix at most


def letter_cases(prefix: str) -> list[str]:
    """Every spelling of prefix in upper and lower case letters: Envoy
    compares `value_prefix` with letter case, the policy without
    (semantics/tokens.py: `bearer x` is a Bearer token, RFC 7235)."""
    out = [""]
    for c in prefix:
        variants = sorted({c.lower(), c.upper()}, reverse=True)
        out = [o + v for o in out for v in variants]
    return out


def _locations(ctx: Ctx, p: JwtProvider) -> dict:
    """from_headers/params/cookies; always written, since with none Envoy
    would also read the `access_token` query parameter."""
    out: dict = {}
    for loc in locations_of(p):
        if loc.kind == "header":
            if not loc.prefix:
                out.setdefault("from_headers", []).append({"name": loc.name})
                continue
            letters = sum(c.isalpha() for c in loc.prefix)
            if letters > MAX_PREFIX_LETTERS:
                ctx.unsupported(f"the token prefix `{loc.prefix}` of jwt provider `{p.name}`", p.at("token_from"),
                                f"Envoy compares token prefixes with letter case: more than {MAX_PREFIX_LETTERS} "
                                "letters are too many spellings to list")
                continue
            out.setdefault("from_headers", []).extend(
                {"name": loc.name, "value_prefix": v} for v in letter_cases(loc.prefix))
        elif loc.kind == "query":
            out.setdefault("from_params", []).append(loc.name)
        else:
            out.setdefault("from_cookies", []).append(loc.name)
    return out


def provider_config(ctx: Ctx, p: JwtProvider) -> dict:
    out: dict = {"forward": True, "payload_in_metadata": p.name, "clock_skew_seconds": CLOCK_SKEW_S,
                 # Tokens already verified skip the signature check; each
                 # lookup still checks exp/nbf (Envoy's jwt_cache).
                 "jwt_cache_config": {"jwt_cache_size": JWT_CACHE_SIZE},
                 **_locations(ctx, p)}
    if p.issuer:
        out["issuer"] = p.issuer
    if p.audiences:
        out["audiences"] = list(p.audiences)
    if p.jwks_file is not None:
        key = ("jwks", p.name)
        text = ctx.cache.get(key)
        if text is None:
            text, problem = jwks_text(p)
            if text is None:
                # The checks read it too: only a file changed since is unreadable here.
                ctx.report("MP001", f"the {jwks_label(p)} of jwt provider `{p.name}` {problem}",
                           p.at("jwks_file"))
                text = ""
            ctx.cache[key] = text
        # Inline: the keys travel with the bootstrap, no file to mount.
        out["local_jwks"] = {"inline_string": text}
    elif p.jwks_uri is not None:
        out["remote_jwks"] = {"http_uri": {"uri": p.jwks_uri, "cluster": jwks_cluster(p), "timeout": "5s"},
                              "cache_duration": f"{JWKS_CACHE_S}s",
                              # Fetched at start, not on the first request's path.
                              "async_fetch": {}}
    return out


def carries_token(providers: list[JwtProvider]) -> list[dict]:
    """RouteMatches, one per token location, for requests that carry a token
    there as semantics/tokens.py reads them: a header whose value STARTS with
    the prefix (any letter case), a query parameter, a cookie. Envoy's
    extractor would find a prefix anywhere in a value (`Basic Bearer <t>`
    gave it a token), so verification is only asked for requests these
    match; any other request carries no token."""
    out, seen = [], set()
    for p in providers:
        for loc in locations_of(p):
            key = (loc.kind, loc.name, (loc.prefix or "").lower())
            if key in seen:
                continue
            seen.add(key)
            if loc.kind == "header":
                value = {"safe_regex": {"regex": "(?i)" + re2.escape(loc.prefix) + ".*"}} if loc.prefix else None
                h: dict = {"name": loc.name, **({"string_match": value} if value else {"present_match": True})}
                out.append({"prefix": "/", "headers": [h]})
            elif loc.kind == "query":
                out.append({"prefix": "/", "query_parameters": [{"name": loc.name, "present_match": True}]})
            else:
                cookie = re2.escape(loc.name)
                out.append({"prefix": "/", "headers": [{"name": "cookie", "string_match": {"safe_regex": {
                    "regex": f"(?:.*;)? *{cookie}=.*"}}}]})
    return out


def authn_filter(ctx: Ctx, providers: list[JwtProvider]) -> dict:
    """jwt_authn over providers: a token none of them validates is refused
    (401, see AUDIENCE_401), a missing one passes (authorization decides).
    A request that carries no token where the policy reads tokens is not
    verified at all (the last rule has no requirement)."""
    alternatives = [{"provider_name": p.name} for p in providers] + [{"allow_missing": {}}]
    requires = {"requires_any": {"requirements": alternatives}}
    rules = [{"match": m, "requires": requires} for m in carries_token(providers)]
    return {"name": JWT_FILTER, "typed_config": {
        "@type": JWT_AUTHN,
        "providers": {p.name: provider_config(ctx, p) for p in providers},
        "rules": rules + [{"match": {"prefix": "/"}}],
    }}


CEL_FILTER = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
# jwt_authn answers a token for another audience with 403; the policy's
# meaning is 401 for every invalid token. Only jwt_authn's own local reply is
# remapped (a rule's `respond 403` and an RBAC denial keep their status).
AUDIENCE_401 = {"local_reply_config": {"mappers": [{"filter": {"extension_filter": {
    "name": "envoy.access_loggers.extension_filters.cel", "typed_config": {
        "@type": CEL_FILTER,
        "expression": "response.code == 403 && response.code_details.startsWith('jwt_authn_access_denied')"}}},
    "status_code": 401}]}}


def remote_jwks_cluster(ctx: Ctx, p: JwtProvider) -> dict | None:
    """The cluster a `jwks_uri` is fetched through: DNS to its host, TLS for
    https with SNI and the server verified against the egress CA bundle."""
    if p.jwks_uri is None:
        return None
    parts = urlsplit(p.jwks_uri)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    c: dict = {"name": jwks_cluster(p), "type": "STRICT_DNS", "connect_timeout": "5s",
               "dns_lookup_family": "V4_PREFERRED",
               "load_assignment": {"cluster_name": jwks_cluster(p), "endpoints": [{"lb_endpoints": [{"endpoint": {
                   "address": {"socket_address": {"address": host, "port_value": port}}}}]}]}}
    if tls:
        c["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": UPSTREAM_TLS, "sni": host, "common_tls_context": {"validation_context": {
                "trusted_ca": {"filename": ctx.settings.egress_ca},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}]}}}}
    return c


def _meta(provider: str, claim: str | None, value: dict) -> dict:
    path = [{"key": provider}] + ([{"key": claim}] if claim is not None else [])
    return {"metadata": {"filter": JWT_FILTER, "path": path, "value": value}}


def _scalar_matchers(text: str) -> list[dict]:
    """ValueMatchers for a claim (or list element) whose JSON text is `text`
    (semantics/tokens.py `claim_passes_raw`): the string itself, and the
    number or bool it spells. Payload numbers are doubles in Envoy's
    metadata: only integers below 2^53 are compared, and a claim written
    `3.0` matches `"3"` there (its JSON text is `3.0`)."""
    out = [{"string_match": {"exact": text}}]
    if re.fullmatch(r"-?(?:0|[1-9][0-9]{0,15})", text) and abs(int(text)) < 2 ** 53:
        out.append({"double_match": {"exact": float(int(text))}})
    if text in ("true", "false"):
        out.append({"bool_match": text == "true"})
    return out


def claim_principal(provider: str, t: ClaimTest) -> dict:
    """One claim test on provider's validated payload.

    eq: the claim is the string (or the number/bool whose JSON text it is).
    has: the claim is a list with such an element, or a string whose
    space-separated words include it: Envoy's metadata matcher does not split
    strings, so that is a whole-string RE2 match `(?:.* )?WORD(?: .*)?` over
    the escaped value (`.` never crosses a newline, as splitting on spaces
    does not). A value with a space, or empty, is never one word: only the
    list test remains.
    """
    scalars = _scalar_matchers(t.value)
    if t.op == "eq":
        alts = [_meta(provider, t.claim, m) for m in scalars]
    else:
        alts = [_meta(provider, t.claim, {"list_match": {"one_of": m}}) for m in scalars]
        if " " not in t.value and t.value:
            word = re2.escape(t.value)
            alts.append(_meta(provider, t.claim, {"string_match": {"safe_regex": {
                "regex": f"(?:.* )?{word}(?: .*)?"}}}))
    return alts[0] if len(alts) == 1 else {"or_ids": {"ids": alts}}


def token_principal(provider: str, req: JwtRequirement) -> dict:
    """A token validated by provider whose claims pass every test."""
    parts = [_meta(provider, None, {"present_match": True})]
    parts += [claim_principal(provider, t) for t in req.claims]
    return parts[0] if len(parts) == 1 else {"and_ids": {"ids": parts}}
