"""`limit SOURCES -> DEST N/s burst B` as the destination's local rate limit filter.

Each matching caller gets its own token bucket: one descriptor per caller
identity. The descriptor comes from the x-forwarded-client-cert header, which
the inbound connection manager rewrites (SANITIZE_SET) from the verified peer
certificate, so a caller cannot forge it. Requests matching no descriptor
use the filter's default bucket, which is effectively unlimited.

`authenticated` and `*` cover every identity: rather than one descriptor per
service (30 limits x 1000 services made a 1.5 MB gateway config), a dynamic
descriptor keys the bucket on the sanitized XFCC value, which is fixed per
client certificate and so per identity. `*` also covers callers without an
identity; a sidecar can tell those apart only by address, so each client IP
without a certificate gets its own bucket (a dynamic descriptor on the
remote address). At most MAX_DYNAMIC dynamic buckets are remembered. On one
machine every anonymous caller shares 127.0.0.1 and so one bucket.
"""

from __future__ import annotations

from ...model.types import RateLimit, Service
from ...semantics.ingress import providers_admitted
from .context import Ctx
from .jwt_authn import JWT_FILTER
from .rbac import ingress_id

LOCAL_RATELIMIT = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
XFCC = "x-forwarded-client-cert"
# The client's address as an ingress gateway saw it (set there, overwriting).
CLIENT_IP = "x-meshc-client-ip"
UNLIMITED = 4294967295
MAX_DYNAMIC = 10000


def _named_callers(ctx: Ctx, lim: RateLimit, dest: Service) -> list[Service]:
    """The services a `NAME` or `namespace` source names, each to get a bucket
    (`authenticated` and `*` are keyed dynamically instead)."""
    mesh = ctx.mesh
    if mesh.mtls_of(dest) == "off":
        return []  # no caller identity is visible; only `*` matches, by address
    by_ns = _indexes(ctx)[1]
    out: dict[str, Service] = {}
    for s in lim.sources:
        if s.kind == "service":
            svc = mesh.service_map.get(s.name)
            if svc is not None:
                out[svc.name] = svc
        elif s.kind == "namespace":
            for svc in by_ns.get(s.name, ()):
                out[svc.name] = svc
    return [out[k] for k in sorted(out)]


def limits_on(ctx: Ctx, dest: Service) -> list[RateLimit]:
    """The mesh's rate limits on dest, in declaration order."""
    return _indexes(ctx)[0].get(dest.name, [])


def _indexes(ctx: Ctx) -> tuple[dict[str, list[RateLimit]], dict[str, list[Service]]]:
    """Limits by destination name and services by namespace, built once per
    compile: scanning the mesh for each workload was quadratic (a third of
    the Envoy compile at 10,000 services)."""
    got = ctx.cache.get("ratelimit.indexes")
    if got is None:
        limits: dict[str, list[RateLimit]] = {}
        for lim in ctx.mesh.rate_limits:
            limits.setdefault(lim.target.name, []).append(lim)
        by_ns: dict[str, list[Service]] = {}
        for svc in ctx.mesh.service_map.values():
            by_ns.setdefault(svc.namespace, []).append(svc)
        got = ctx.cache["ratelimit.indexes"] = (limits, by_ns)
    return got


def _match_peer(key: str, value: str, sid: str) -> dict:
    """The verified peer is sid (the connection manager appends its URI last)."""
    return {"header_value_match": {"descriptor_key": key, "descriptor_value": value, "expect_match": True,
                                   "headers": [{"name": XFCC, "string_match": {"suffix": f";URI={sid}"}}]}}


def _validated_by(provider: str) -> dict:
    """A descriptor entry only when `provider` validated the request's token:
    its payload's `iss` (jwt_authn checked it against the provider's issuer)."""
    return {"metadata": {"descriptor_key": f"token-{provider}", "source": "DYNAMIC", "skip_if_absent": True,
                         "metadata_key": {"key": JWT_FILTER, "path": [{"key": provider}, {"key": "iss"}]}}}


def _internet_conditions(ctx: Ctx, lim: RateLimit, key: str, value: str) -> list[tuple[list[dict], list[dict]]]:
    """(actions, descriptor entries) per way an `internet` source of lim can
    match: the peer is an ingress and, with `with jwt`, a provider that can
    meet it validated the token. Claim tests are MP701."""
    mesh = ctx.mesh
    out = []
    for s in lim.sources:
        if s.kind != "internet":
            continue
        if s.jwt is not None and s.jwt.claims:
            ctx.unsupported("claim tests in the source of a rate limit", s.jwt.span,
                            "Envoy's rate limit actions cannot compare a token's claims")
            continue
        for g in sorted(mesh.ingress_map.values(), key=lambda g: g.name):
            providers = providers_admitted(mesh, s, g)
            if providers is None:
                continue
            sid = ingress_id(mesh, g)
            if not providers:
                out.append(([_match_peer(key, value, sid)], [{"key": key, "value": value}]))
            for prov in sorted(providers):
                iss = mesh.provider_map[prov].issuer or ""
                out.append(([_match_peer(key, value, sid), _validated_by(prov)],
                            [{"key": key, "value": value}, {"key": f"token-{prov}", "value": iss}]))
    return out


def _internet_sources(ctx: Ctx, lim: RateLimit, key: str) -> list[tuple[list[dict], list[dict]]]:
    """An unkeyed limit's internet sources: one bucket per ingress (and provider)."""
    return [(a, e) for a, e in _internet_conditions(ctx, lim, key, "internet")]


# A claim's value when the validated token has no such claim (or not as a
# string): requests without one share this bucket. A token whose claim is
# this very string shares it too.
NO_CLAIM = "meshc:no-claim"


def _keyed(ctx: Ctx, lim: RateLimit, dest: Service, key: str) -> tuple[list[dict], list[dict]]:
    """`per claim|header|source_ip`: one bucket per distinct value among the
    requests lim's sources match, and one shared by those without a value.
    Every way of matching names the same first entry, so one value is one
    bucket whichever source matched it (a claim's: per provider)."""
    mesh = ctx.mesh
    conds: list[tuple[list[dict], list[dict], bool]] = []  # actions, entries, through an ingress
    kinds = {s.kind for s in lim.sources}
    first = [{"key": key, "value": "keyed"}]
    if "any" in kinds:
        conds.append(([{"generic_key": {"descriptor_key": key, "descriptor_value": "keyed"}}], first, False))
    else:
        if "authenticated" in kinds and mesh.mtls_of(dest) != "off":
            conds.append(([{"header_value_match": {"descriptor_key": key, "descriptor_value": "keyed",
                                                   "expect_match": True,
                                                   "headers": [{"name": XFCC, "present_match": True}]}}],
                          first, False))
        else:
            for svc in _named_callers(ctx, lim, dest):
                conds.append(([_match_peer(key, "keyed", mesh.spiffe_id(svc))], first, False))
        conds += [(a, e, True) for a, e in _internet_conditions(ctx, lim, key, "keyed")]
    k = lim.key
    rate_limits, descriptors = [], []
    bucket = _bucket(lim)
    for actions, entries, via_ingress in conds:
        absent = None
        if k.kind == "header":
            value = {"request_headers": {"header_name": k.name, "descriptor_key": "key"}}
            absent = {"header_value_match": {"descriptor_key": "key-absent", "descriptor_value": k.name,
                                             "expect_match": False,
                                             "headers": [{"name": k.name, "present_match": True}]}}
        elif k.kind == "source_ip":
            # East-west the caller's address; through an ingress the client's,
            # which the ingress sets (overwriting any copy the client sent).
            value = ({"request_headers": {"header_name": CLIENT_IP, "descriptor_key": "key"}} if via_ingress
                     else {"remote_address": {}})
        else:  # claim: of the provider that validated the token
            tokens = [a["metadata"]["metadata_key"]["path"][0]["key"] for a in actions if "metadata" in a]
            if not tokens:
                ctx.unsupported(f"`per claim` on the rate limit on `{lim.target.name}` for a source without a token",
                                k.span, "only a validated token has claims")
                continue
            value = {"metadata": {"descriptor_key": "key", "source": "DYNAMIC", "default_value": NO_CLAIM,
                                  "metadata_key": {"key": JWT_FILTER,
                                                   "path": [{"key": tokens[0]}, {"key": k.name}]}}}
        key_name = "remote_address" if "remote_address" in value else "key"
        rate_limits.append({"actions": actions + [value]})
        descriptors.append({"entries": entries + [{"key": key_name, "value": ""}], "token_bucket": bucket})
        if absent is not None:
            rate_limits.append({"actions": actions + [absent]})
            descriptors.append({"entries": entries + [{"key": "key-absent", "value": k.name}],
                                "token_bucket": bucket})
    return rate_limits, descriptors


def _bucket(lim: RateLimit) -> dict:
    return {"max_tokens": lim.burst or lim.requests, "tokens_per_fill": lim.requests,
            "fill_interval": f"{lim.per_seconds}s"}


def ratelimit_filter(ctx: Ctx, dest: Service) -> dict | None:
    limits = limits_on(ctx, dest)
    if not limits:
        return None
    descriptors, rate_limits = [], []
    dynamic = False
    for i, lim in enumerate(limits):
        key = f"limit-{i}"
        kinds = {s.kind for s in lim.sources}
        bucket = _bucket(lim)
        if lim.key is not None:
            rl, ds = _keyed(ctx, lim, dest, key)
            rate_limits += rl
            descriptors += ds
            dynamic = True
            continue
        if "any" in kinds:
            dynamic = True
            # Requests without a verified certificate (no XFCC once sanitized):
            # one bucket per client address.
            rate_limits.append({"actions": [
                {"header_value_match": {"descriptor_key": key, "descriptor_value": "anonymous",
                                        "expect_match": False, "headers": [{"name": XFCC, "present_match": True}]}},
                {"remote_address": {}}]})
            descriptors.append({"entries": [{"key": key, "value": "anonymous"},
                                            {"key": "remote_address", "value": ""}], "token_bucket": bucket})
        if kinds & {"any", "authenticated"}:
            if ctx.mesh.mtls_of(dest) != "off":
                dynamic = True
                # Every identified caller: one bucket per verified client
                # certificate, i.e. per identity (meshc certs issues one each).
                rate_limits.append({"actions": [
                    {"header_value_match": {"descriptor_key": key, "descriptor_value": "identified",
                                            "expect_match": True,
                                            "headers": [{"name": XFCC, "present_match": True}]}},
                    {"request_headers": {"header_name": XFCC, "descriptor_key": "peer"}}]})
                descriptors.append({"entries": [{"key": key, "value": "identified"},
                                                {"key": "peer", "value": ""}], "token_bucket": bucket})
            continue
        for cond, entries in _internet_sources(ctx, lim, key):
            rate_limits.append({"actions": cond})
            descriptors.append({"entries": entries, "token_bucket": bucket})
        for svc in _named_callers(ctx, lim, dest):
            sid = ctx.mesh.spiffe_id(svc)
            rate_limits.append({"actions": [{"header_value_match": {
                "descriptor_key": key, "descriptor_value": sid, "expect_match": True,
                # The connection manager appends the verified peer's URI last.
                "headers": [{"name": XFCC, "string_match": {"suffix": f";URI={sid}"}}]}}]})
            descriptors.append({"entries": [{"key": key, "value": sid}], "token_bucket": bucket})
    if not descriptors:
        return None
    enabled = {"default_value": {"numerator": 100, "denominator": "HUNDRED"},
               "runtime_key": "meshpolicy.ratelimit.enabled"}
    return {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "@type": LOCAL_RATELIMIT,
        "stat_prefix": "inbound_ratelimit",
        "token_bucket": {"max_tokens": UNLIMITED, "tokens_per_fill": UNLIMITED, "fill_interval": "1s"},
        "filter_enabled": enabled,
        "filter_enforced": {**enabled, "runtime_key": "meshpolicy.ratelimit.enforced"},
        "always_consume_default_token_bucket": False,
        "rate_limits": rate_limits,
        "descriptors": descriptors,
        **({"max_dynamic_descriptors": MAX_DYNAMIC} if dynamic else {}),
    }}
