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
from .context import Ctx

LOCAL_RATELIMIT = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
XFCC = "x-forwarded-client-cert"
UNLIMITED = 4294967295
MAX_DYNAMIC = 10000


def _named_callers(ctx: Ctx, lim: RateLimit, dest: Service) -> list[Service]:
    """The services a `NAME` or `namespace` source names, each to get a bucket
    (`authenticated` and `*` are keyed dynamically instead)."""
    mesh = ctx.mesh
    if mesh.mtls_of(dest) == "off":
        return []  # no caller identity is visible; only `*` matches, by address
    out: dict[str, Service] = {}
    for s in lim.sources:
        for svc in mesh.service_map.values():
            if (s.kind == "service" and svc.name == s.name) or (s.kind == "namespace" and svc.namespace == s.name):
                out[svc.name] = svc
    return [out[k] for k in sorted(out)]


def _bucket(lim: RateLimit) -> dict:
    return {"max_tokens": lim.burst or lim.requests, "tokens_per_fill": lim.requests,
            "fill_interval": f"{lim.per_seconds}s"}


def ratelimit_filter(ctx: Ctx, dest: Service) -> dict | None:
    limits = [lim for lim in ctx.mesh.rate_limits if lim.target.name == dest.name]
    if not limits:
        return None
    descriptors, rate_limits = [], []
    dynamic = False
    for i, lim in enumerate(limits):
        key = f"limit-{i}"
        kinds = {s.kind for s in lim.sources}
        bucket = _bucket(lim)
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
