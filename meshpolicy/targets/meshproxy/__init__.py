"""The meshproxy target: one versioned JSON config per workload, holding that
workload's resolved policy for the project's own small asyncio proxy.

The format is defined by `config.py` (published as targets/meshproxy/schema.json)
and documented in docs/targets/meshproxy.md; `evaluate.py` is the reference
for how a proxy evaluates it.
"""

from __future__ import annotations

import json

from ...codes import diag
from ...compile import CompileOptions, Output
from ...diagnostics import Diagnostic
from ...gc_pause import gc_paused
from ...model.types import Mesh, Service
from .lower import Lowering
from .ports import SettingsError, read_settings


def output_path(svc: Service, version: str | None) -> str:
    """`<ns>/<svc>.json`, or `<ns>/<svc>/<version>.json`: the Envoy target's layout."""
    return f"{svc.namespace}/{svc.name}/{version}.json" if version else f"{svc.namespace}/{svc.name}.json"


def dump(cfg: dict) -> str:
    """Compact, sorted, one line: byte-identical for the same policy, and
    written by json's C encoder (indenting takes the pure-Python path, which
    was 90% of compile time on 1000 services). `jq .` pretty-prints it."""
    return json.dumps(cfg, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"


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
        diags = unsupported(mesh)
        low = Lowering(mesh, options.certs_dir, settings)
        per, count = settings["ports_per_workload"], len(low.keys)
        need = low.ports_needed()
        if need > per:
            diags.append(diag("MP730", f"a workload needs {need} ports but [compile.meshproxy] "
                                       f"`ports_per_workload` is {per}"))
        top = settings["port_base"] + count * per - 1
        if count and top > 65535:
            diags.append(diag("MP730", f"{count} workloads at {per} ports each from port "
                                       f"{settings['port_base']} need ports up to {top}, past 65535"))
        if diags:
            return [], diags
        outputs = [Output(output_path(mesh.service_map[s], v), dump(low.workload(s, v)))
                   for s, v in low.keys]
        return outputs, []

    def validate(self, outputs: list[Output]) -> list[Diagnostic]:
        from .output_rules import check_outputs

        with gc_paused():
            return check_outputs(outputs)


def unsupported(mesh: Mesh) -> list[Diagnostic]:
    """MP701: a `NAME` source whose SPIFFE ID another service shares. The
    proxy knows callers only by certificate, so it cannot tell them apart."""
    by_id: dict[str, list[str]] = {}
    for svc in mesh.service_map.values():
        by_id.setdefault(mesh.spiffe_id(svc), []).append(svc.name)
    out = []
    for stmt in [*mesh.auth_rules, *mesh.rate_limits]:
        for s in stmt.sources:
            if s.kind != "service" or s.name not in mesh.service_map:
                continue
            sharing = by_id[mesh.spiffe_id(mesh.service_map[s.name])]
            if len(sharing) > 1:
                others = ", ".join(f"`{n}`" for n in sharing if n != s.name)
                out.append(diag(
                    "MP701",
                    f"meshproxy cannot express source `{s.name}`: it shares its SPIFFE identity with {others}, "
                    "and the proxy tells callers apart only by identity",
                    s.span,
                    help="give each service its own `account` (or namespace)"))
    return out


TARGET = MeshproxyTarget()
