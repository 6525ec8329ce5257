"""Inbound access logs to a gRPC access-log service (callee-side figures).

Envoy's own stats count a call at the caller (its clusters name the
destination); the callee's sidecar knows the caller only as a TLS peer, and
no stat carries it. With `access_log_service` set ([compile.envoy]; `meshc
up` sets it to its collector), every sidecar's inbound HTTP connection
manager streams one entry per request over Envoy's gRPC access-log service
(envoy.service.accesslog.v3, HttpGrpcAccessLogConfig): status, duration and
the TLS properties of the connection, whose peer certificate URI SAN is the
caller's verified identity (never a header). Envoy buffers the entries and
flushes them every second; the service keeps counters, not entries
(meshpolicy/run/access_logs.py). Off by default: a production mesh has its
own telemetry pipeline.
"""

from __future__ import annotations

from .clusters import _http2_options, endpoint
from .context import Ctx

ACCESS_LOG_CLUSTER = "telemetry|access-log"
HTTP_GRPC_LOG = "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
HCM_FILTER = "envoy.filters.network.http_connection_manager"


def log_name(workload_cluster: str) -> str:
    """The stream's name: which workload's inbound side logged (`inbound|<service>[|<version>]`)."""
    return f"inbound|{workload_cluster}"


def access_log_cluster(ctx: Ctx) -> dict | None:
    address = ctx.settings.access_log_service
    if address is None:
        return None
    host, port_value = address
    return {"name": ACCESS_LOG_CLUSTER, "type": "STRICT_DNS", "connect_timeout": "1s",
            "load_assignment": endpoint(ACCESS_LOG_CLUSTER, host, port_value),
            "typed_extension_protocol_options": _http2_options()}  # gRPC


def add_inbound_access_log(ctx: Ctx, workload_cluster: str, listener: dict) -> None:
    """Every HTTP connection manager of the inbound listener logs to the service."""
    if ctx.settings.access_log_service is None:
        return
    log = {"name": "envoy.access_loggers.http_grpc", "typed_config": {
        "@type": HTTP_GRPC_LOG,
        "common_config": {"log_name": log_name(workload_cluster),
                          "grpc_service": {"envoy_grpc": {"cluster_name": ACCESS_LOG_CLUSTER}},
                          "transport_api_version": "V3", "buffer_flush_interval": "1s"}}}
    for chain in listener.get("filter_chains", []):
        for f in chain["filters"]:
            if f["name"] == HCM_FILTER:
                f["typed_config"]["access_log"] = [log]
