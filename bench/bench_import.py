"""Reading Istio YAML: `python bench/bench_import.py [N ...] [--runs R]`.

For each N, a bench mesh (bench/gen.py) is compiled to Istio and given the
Services and Deployments a cluster would hold (and, with --north-south, a
gateway with a VirtualService for every tenth service, a RequestAuthentication,
token rules and ServiceEntries with TLS origination); the table shows the median
time of `import_sources` over that manifest set (YAML read with marks,
resources resolved, model built) and of printing it as .mesh files, with
the input size. Peak memory is the process's max RSS after the runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gen import generate  # noqa: E402
from meshpolicy.compile import compile_mesh  # noqa: E402
from meshpolicy.importers import import_sources  # noqa: E402
from meshpolicy.importers.emit import files_for  # noqa: E402
from meshpolicy.pipeline import check_project  # noqa: E402
from meshpolicy.project import from_texts  # noqa: E402
from meshpolicy.span import SourceFile  # noqa: E402


def workloads(mesh) -> str:
    docs = []
    for s in mesh.services:
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": s.name, "namespace": s.namespace},
                     "spec": {"selector": {"app": s.name},
                              "ports": [{"port": p.number, "name": f"{p.protocol}-{p.number}"} for p in s.ports]}})
        for v in s.versions:
            docs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": f"{s.name}-{v.name}", "namespace": s.namespace},
                         "spec": {"template": {"metadata": {"labels": {"app": s.name, **v.labels}},
                                               "spec": {"serviceAccountName": s.account}}}})
    return "---\n".join(json.dumps(d) + "\n" for d in docs)


def north_south(mesh) -> str:
    """Gateways, gateway routes with L7 options, tokens and egress, as a cluster exposing some services holds."""
    docs = [{"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
             "metadata": {"name": "auth", "namespace": "istio-system"},
             "spec": {"jwtRules": [{"issuer": "https://auth.bench.example/", "forwardOriginalToken": True,
                                    "jwksUri": "https://auth.bench.example/jwks"}]}}]
    for i, s in enumerate(mesh.services[::10]):
        host = f"{s.name}.bench.example"
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                     "metadata": {"name": f"{s.name}-gw", "namespace": s.namespace},
                     "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
                         {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [host]},
                         {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": [host],
                          "tls": {"mode": "SIMPLE", "credentialName": f"{s.name}-cert"}}]}})
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                     "metadata": {"name": f"{s.name}-public", "namespace": s.namespace},
                     "spec": {"hosts": [host], "gateways": [f"{s.name}-gw"], "http": [
                         {"match": [{"uri": {"prefix": "/api/"}, "queryParams": {"v": {"exact": "2"}}}],
                          "rewrite": {"uri": "/"}, "headers": {"request": {"set": {"x-edge": "1"}}},
                          "corsPolicy": {"allowOrigins": [{"exact": f"https://{host}"}], "allowMethods": ["GET"]},
                          "retries": {"attempts": 2, "retryOn": "503,connect-failure"},
                          "route": [{"destination": {"host": s.name}}]},
                         {"directResponse": {"status": 404}}]}})
        docs.append({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                     "metadata": {"name": f"{s.name}-tokens", "namespace": s.namespace},
                     "spec": {"selector": {"matchLabels": {"app": s.name}}, "rules": [
                         {"from": [{"source": {"requestPrincipals": ["https://auth.bench.example//*"]}}],
                          "to": [{"operation": {"methods": ["GET"]}}],
                          "when": [{"key": "request.auth.claims[scope]", "values": ["read", "admin"]}]}]}})
        if i % 2 == 0:
            docs.append({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                         "metadata": {"name": f"api-{i}", "namespace": s.namespace},
                         "spec": {"hosts": [f"api{i}.partner.example"], "resolution": "DNS",
                                  "ports": [{"number": 443, "name": "http", "protocol": "HTTP"}]}})
            docs.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                         "metadata": {"name": f"api-{i}", "namespace": s.namespace},
                         "spec": {"host": f"api{i}.partner.example", "trafficPolicy": {"tls": {"mode": "SIMPLE"}}}})
    return "---\n".join(json.dumps(d) + "\n" for d in docs)


def manifests(n: int, with_north_south: bool = False) -> dict[str, SourceFile]:
    checked = check_project(from_texts(generate(n)))
    outputs, _ = compile_mesh(checked.mesh, "istio")
    texts = {o.path: o.content for o in outputs if o.path != "kustomization.yaml"}
    texts["workloads.yaml"] = workloads(checked.mesh)
    if with_north_south:
        texts["north-south.yaml"] = north_south(checked.mesh)
    return {k: SourceFile(k, v) for k, v in texts.items()}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[100, 1000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--north-south", action="store_true", help="add gateways, tokens and egress resources")
    args = ap.parse_args(argv)
    print("| services | YAML files | YAML MB | resources | import (median s) | print .mesh (median s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        sources = manifests(n, args.north_south)
        size = sum(len(s.text) for s in sources.values()) / 1e6
        imports, prints, count = [], [], 0
        for _ in range(args.runs):
            t0 = time.perf_counter()
            result = import_sources(sources)
            t1 = time.perf_counter()
            files_for(result.mesh)
            t2 = time.perf_counter()
            imports.append(t1 - t0)
            prints.append(t2 - t1)
            count = sum(result.coverage.resources.values())
        print(f"| {n} | {len(sources)} | {size:.1f} | {count} | {statistics.median(imports):.2f} | "
              f"{statistics.median(prints):.2f} |")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
