"""The meshproxy target: one versioned JSON config per workload, holding that
workload's resolved policy for the project's own small asyncio proxy.

The format is defined by `meshpolicy/wire/config.py` (published as targets/meshproxy/schema.json)
and documented in docs/targets/meshproxy.md; `evaluate.py` is the reference
for how a proxy evaluates it.
"""

from __future__ import annotations

import json

from ...codes import diag
from ...compile import CompileOptions, Output
from ...compile.json_escape import yaml_safe
from ...diagnostics import Diagnostic
from ...gc_pause import gc_paused
from ...model.types import Mesh, Service
from ..base import cannot_express
from .lower import Lowering
from ..port_layout import ADMIN_PORT, MESH_UNIQUE, OUTBOUND_PORT
from .northsouth import jwks_diagnostics
from ..port_layout import instance_suffix
from .ports import SettingsError, per_workload_problems, read_settings


def output_path(svc: Service, version: str | None, instance: int = 0) -> str:
    """`<ns>/<svc>.json`, or `<ns>/<svc>/<version>.json`, `@k` before `.json`
    for instance k > 0 (mesh-unique `replicas`): the Envoy target's layout."""
    at = instance_suffix(instance)
    return f"{svc.namespace}/{svc.name}/{version}{at}.json" if version else f"{svc.namespace}/{svc.name}{at}.json"


def dump(cfg: dict) -> str:
    """Compact, sorted, one line: byte-identical for the same policy, and
    written by json's C encoder (indenting takes the pure-Python path, which
    was 90% of compile time on 1000 services). `jq .` pretty-prints it.
    Characters YAML 1.1 readers break or refuse are escaped, as in the other
    targets, for tools that read it as YAML."""
    return yaml_safe(json.dumps(cfg, sort_keys=True, ensure_ascii=False, separators=(",", ":"))) + "\n"


class MeshproxyTarget:
    name = "meshproxy"

    def lower(self, mesh: Mesh, options: CompileOptions) -> tuple[list[Output], list[Diagnostic]]:
        with gc_paused():
            return self._lower(mesh, options)

    def _lower(self, mesh: Mesh, options: CompileOptions) -> tuple[list[Output], list[Diagnostic]]:
        try:
            settings = read_settings(options.settings)
        except SettingsError as exc:
            return [], [diag("MP730", f"[compile.meshproxy] in meshc.toml: {exc}")]
        # shared identities are MP108's (meshc check): they never reach a target
        diags: list[Diagnostic] = http2_ports(mesh, settings["http1_apps"])
        low = Lowering(mesh, options.certs_dir, settings)
        if settings["ports"] == MESH_UNIQUE:
            diags += _mesh_unique_problems(low, settings)
        else:
            for name in sorted({s for s, _ in low.keys}):
                diags += [diag("MP730", f"[compile.meshproxy]: {p}", mesh.service_map[name].span)
                          for p in per_workload_problems(mesh.service_map[name], low.tcp_listeners(name))]
            for g in mesh.ingress_map.values():  # a gateway's own admin and outbound ports
                diags += [diag("MP730", f"[compile.meshproxy]: ingress `{g.name}` listens on port {li.port}, which "
                                        "its sidecar's admin or outbound listener uses in the per-workload layout",
                               li.span)
                          for li in g.listeners if li.port in (ADMIN_PORT, OUTBOUND_PORT)]
        diags += jwks_diagnostics(mesh, low._jwks) + ingress_rule_problems(mesh) + tcp_external_problems(mesh)
        if diags:
            return [], diags
        outputs = [Output(output_path(mesh.service_map[s], v, k), dump(low.workload(s, v, k)))
                   for s, v, k in low.instances]
        outputs += [Output(f"{g.namespace}/{g.name}.json", dump(low.ingress_workload(g)))
                    for g in mesh.ingress_map.values()]
        return outputs, []

    def validate(self, outputs: list[Output]) -> list[Diagnostic]:
        from .output_rules import check_outputs

        with gc_paused():
            return check_outputs(outputs)


def _mesh_unique_problems(low: Lowering, settings: dict) -> list[Diagnostic]:
    diags = []
    per, count = settings["ports_per_workload"], low.workload_count()
    need = low.ports_needed()
    if need > per:
        diags.append(diag("MP730", f"a workload needs {need} ports but [compile.meshproxy] "
                                   f"`ports_per_workload` is {per}"))
    top = settings["port_base"] + count * per - 1
    if count and top > 65535:
        diags.append(diag("MP730", f"{count} workloads at {per} ports each from port "
                                   f"{settings['port_base']} need ports up to {top}, past 65535"))
    return diags


def ingress_rule_problems(mesh: Mesh) -> list[Diagnostic]:
    """MP701: retries, faults and mirrors on an ingress rule. The ingress
    forwards to a service, whose own route then applies its retries, faults
    and mirrors; retrying around that again would multiply attempts."""
    out = []
    for g in mesh.ingress_map.values():
        for r in g.rules:
            where = f"in rule {r.index + 1} of ingress `{g.name}`"
            for what, present, span in (("`retry`", r.retry is not None, r.retry and r.retry.span),
                                        ("`fault`", r.fault is not None, r.fault and r.fault.span),
                                        ("`mirror`", r.action.kind == "forward" and r.action.mirror is not None,
                                         r.span)):
                if present:
                    out.append(cannot_express("meshproxy", f"{what} {where}", span or r.span,
                                              "meshproxy applies them on the service's own route",
                                              help="write it on the service's `route` instead"))
    return out


def tcp_external_problems(mesh: Mesh) -> list[Diagnostic]:
    """MP701: a tcp port of an external with several hosts (a tcp
    connection carries no host to choose one by; the Envoy target refuses it
    alike), and `timeout`/`retry` on an external with only tcp ports (they
    apply to HTTP requests; nothing would apply them)."""
    out = [cannot_express("meshproxy", f"tcp port {p.number} of external `{e.name}` with {len(e.hosts)} hosts",
                          e.at("hosts") if "hosts" in e.spans else e.span,
                          "a tcp connection carries no host name to choose one by",
                          help="declare one external per host for tcp ports")
           for e in mesh.external_map.values() for p in e.ports if p.protocol == "tcp" and len(e.hosts) > 1]
    for e in mesh.external_map.values():
        if e.ports and all(p.protocol == "tcp" for p in e.ports):
            for what, value in (("timeout", e.timeout_ms), ("retry", e.retry)):
                if value is not None:
                    out.append(cannot_express("meshproxy", f"`{what}` on external `{e.name}`",
                                              e.at(what) if what in e.spans else e.span,
                                              "its ports are all tcp, and meshproxy applies timeouts and "
                                              "retries to HTTP requests only"))
    return out


def http2_ports(mesh: Mesh, http1_apps: list[str]) -> list[Diagnostic]:
    """MP701: an http2 or grpc port. meshproxy speaks HTTP/1.1 on both sides,
    so an HTTP/2-only client or app (every gRPC one) could not talk through it;
    refused rather than served as HTTP/1.1. A service in `http1_apps` (its
    app speaks HTTP/1.1 as well, like `meshc up`'s echo app) is accepted."""
    out = []
    for svc in sorted(mesh.service_map.values(), key=lambda s: s.name):
        if svc.name in http1_apps:
            continue
        for port in svc.ports:
            if port.protocol in ("http2", "grpc"):
                out.append(cannot_express(
                    "meshproxy", f"`port {port.number} {port.protocol}` of service `{svc.name}`",
                    port.span, "meshproxy speaks HTTP/1.1 only",
                    help="compile to the envoy target, declare the port `http`, or list the service in "
                         "[compile.meshproxy] `http1_apps` if its application also speaks HTTP/1.1"))
    return out


TARGET = MeshproxyTarget()
