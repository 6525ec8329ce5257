"""The destination's side: mTLS termination (client certificate required,
trusting the mesh CA, SANs limited to callers some rule could admit), the
authorization filters, the rate limit, then the local application."""

from __future__ import annotations

from ...semantics.identity_names import PEER, XFCC, spellings
from ...model.types import Service
from .clusters import speaks_http2
from .context import Ctx
from .conventions import APP_CLUSTER, ca_file
from .sds import tls_certificates
from .ratelimit import limits_on, ratelimit_filter
from .jwt_authn import AUDIENCE_401, authn_filter, validating
from .rbac import allowed_san_matchers, rbac_http_filters, rbac_network_filters, rbac_per_route
from .tracing import hcm_tracing

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
# docs/semantics.md, "Paths": match and authorize the normalized path (RFC 3986
# dot segments removed, unreserved escapes decoded, slashes merged); an
# escaped slash or backslash is refused, so `/%2e/admin` cannot dodge a deny.
PATH_NORMALIZATION = {
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "REJECT_REQUEST",
}
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TLS_INSPECTOR = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
PEER_HEADER = PEER


def router() -> dict:
    return {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}


def socket(address: str, port_value: int) -> dict:
    return {"socket_address": {"address": address, "port_value": port_value}}


def _tls(ctx: Ctx, svc: Service, instance: int = 0) -> dict:
    common: dict = {
        **tls_certificates(ctx, svc, instance),
        "validation_context": {
            "trusted_ca": {"filename": ca_file(ctx.options.certs_dir)},
            "match_typed_subject_alt_names": allowed_san_matchers(ctx, svc),
        },
        "alpn_protocols": ["h2", "http/1.1"] if svc.http else [],
    }
    if not common["alpn_protocols"]:
        del common["alpn_protocols"]
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": DOWNSTREAM_TLS, "require_client_certificate": True, "common_tls_context": common}}


def _http_filters(ctx: Ctx, svc: Service) -> list[dict]:
    filters = []
    providers = validating(ctx.mesh, svc.name)
    if providers:
        # Before RBAC and the rate limit, which read the validated claims.
        filters.append(authn_filter(ctx, providers))
    filters += rbac_http_filters(ctx)
    rl = ratelimit_filter(ctx, svc)
    if rl is not None:
        filters.append(rl)
    return filters + [router()]


def _network_filters(ctx: Ctx, svc: Service) -> list[dict]:
    if not svc.http:
        limits = limits_on(ctx, svc)
        if limits:
            lim = limits[0]
            ctx.unsupported("a rate limit on a tcp service", lim.span,
                            "Envoy's per-caller local rate limits count HTTP requests")
        return rbac_network_filters(ctx, svc) + [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": TCP_PROXY, "stat_prefix": "inbound", "cluster": APP_CLUSTER}}]
    hcm: dict = {
        "@type": HCM,
        "stat_prefix": "inbound",
        "codec_type": "AUTO",
        **PATH_NORMALIZATION,
        # Replace any client-sent XFCC with the verified peer's identity: the
        # rate limit keys on it and the application may read it.
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"uri": True},
        # meshproxy's peer header is an identity header too: a caller's copy is
        # dropped and the verified peer's URI SAN set (nothing without one), so
        # an app reads the same thing behind either proxy (docs/security.md).
        # So is every spelling with `_` (identity_names.py); XFCC itself is left to SANITIZE_SET.
        "route_config": {"name": "inbound", "request_headers_to_remove": [
                             n for n in spellings(PEER_HEADER) + spellings(XFCC) if n != XFCC],
                         "request_headers_to_add": [{
                             "header": {"key": PEER_HEADER, "value": "%DOWNSTREAM_PEER_URI_SAN%"},
                             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
                         "virtual_hosts": [{
            "name": "inbound", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": APP_CLUSTER, "timeout": "0s"}}],
            # Authorization: served by RDS, so a change applies to the next request (rbac.py).
            **({"typed_per_filter_config": authz} if (authz := rbac_per_route(ctx, svc)) else {})}]},
        "http_filters": _http_filters(ctx, svc),
    }
    if hcm["http_filters"][0]["name"] == "envoy.filters.http.jwt_authn":
        hcm.update(AUDIENCE_401)
    tracing = hcm_tracing(ctx, svc.name)
    if tracing:
        hcm["tracing"] = tracing
    return [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]


def inbound_listener(ctx: Ctx, svc: Service, port_value: int, instance: int = 0) -> dict:
    mode = ctx.mesh.mtls_of(svc)
    filters = _network_filters(ctx, svc)
    listener: dict = {"name": "inbound", "address": socket(ctx.settings.listen_address, port_value)}
    if mode == "strict":
        listener["filter_chains"] = [{"name": "mtls", "filters": filters,
                                      "transport_socket": _tls(ctx, svc, instance)}]
    elif mode == "permissive":
        # Plaintext callers are accepted too; they have no identity.
        listener["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector",
                                         "typed_config": {"@type": TLS_INSPECTOR}}]
        listener["filter_chains"] = [
            {"name": "mtls", "filter_chain_match": {"transport_protocol": "tls"},
             "filters": filters, "transport_socket": _tls(ctx, svc, instance)},
            {"name": "plaintext", "filter_chain_match": {"transport_protocol": "raw_buffer"}, "filters": filters},
        ]
    else:
        listener["filter_chains"] = [{"name": "plaintext", "filters": filters}]
    return listener


__all__ = ["inbound_listener", "router", "socket", "speaks_http2"]
