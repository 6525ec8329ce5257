"""Control-plane pushes: `python bench/bench_xds.py [N] [--runs R] [--change route|cluster]`.

A bench mesh of N services (bench/gen.py) is compiled to Envoy and served
by meshc's control plane to simulated Envoys: one gRPC ADS client per
workload that asks for every resource type and ACKs each response, as
Envoy does, over state of the world (SotW) and over delta xDS (where the
simulated client subscribes to every type as a wildcard). Then one service
is changed, which changes the sidecars of that service's callers only:
`--change route` (default) adds a timeout to every rule of its route block
(each caller's one outbound route configuration changes), `--change
cluster` raises its circuit's max_connections (each caller's cluster for
it changes, one of many). The table shows, per protocol,
how many workloads the change reaches (k of N), the time to serve the whole
mesh from scratch, the median time from `publish` to the last affected
workload's ACK, and what one change sent (responses, resources, bytes).
"""

from __future__ import annotations

import argparse
import collections
import queue
import re
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gen import generate  # noqa: E402
from meshpolicy.compile import compile_mesh  # noqa: E402
from meshpolicy.pipeline import check_project  # noqa: E402
from meshpolicy.project import from_texts  # noqa: E402
from meshpolicy.xds.resources import PUSH_ORDER, snapshots  # noqa: E402
from meshpolicy.xds.server import ControlPlane  # noqa: E402


class FakeEnvoy:
    """An ADS client: requests every type, ACKs every response, counts what it received."""

    def __init__(self, port: int, node: str, delta: bool) -> None:
        import grpc
        from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

        self.node, self.acks, self.bytes, self.resources = node, 0, 0, 0
        self.delta = delta
        self._req = discovery_pb2.DeltaDiscoveryRequest if delta else discovery_pb2.DiscoveryRequest
        self._out: queue.Queue = queue.Queue()
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        for i, t in enumerate(PUSH_ORDER):
            req = self._req(type_url=t)
            if i == 0:
                req.node.id = node
            self._out.put(req)
        rpc = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
        self._stream = rpc(iter(self._out.get, None))
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for resp in self._stream:
                self.bytes += resp.ByteSize()
                self.resources += len(resp.resources)
                if self.delta:
                    self._out.put(self._req(type_url=resp.type_url, response_nonce=resp.nonce))
                else:
                    self._out.put(self._req(type_url=resp.type_url, version_info=resp.version_info,
                                            response_nonce=resp.nonce))
                self.acks += 1
        except Exception:
            pass

    def close(self) -> None:
        self._out.put(None)
        self._channel.close()


def _mesh_texts(n: int, change: str, service: str):
    """The bench mesh with one change to `service`: `route` adds a timeout to
    every rule of its route block (its callers' route configurations change);
    `cluster` raises its circuit's max_connections by one (its callers' cluster
    for it changes)."""
    files = generate(n)
    marker = f"route {service} {{" if change == "route" else f"service {service} {{"
    for path, text in files.items():
        if marker in text:
            head, rest = text.split(marker, 1)
            body, tail = rest.split("\n}", 1)
            if change == "route":
                lines = [ln + " timeout 7s" if "->" in ln and "timeout" not in ln else ln for ln in body.split("\n")]
                body = "\n".join(lines)
            else:
                body = re.sub(r"circuit max_connections (\d+)", lambda m: f"circuit max_connections {int(m[1]) + 1}",
                              body, count=1)
            files[path] = head + marker + body + "\n}" + tail
    return files


def _target(mesh, change: str) -> str:
    """route: the middle one of the routed services; cluster: of the services
    with a circuit, the one the most allow rules name as a destination."""
    if change == "route":
        routed = [r.service.name for r in mesh.routes]
        return routed[len(routed) // 2]
    callers = collections.Counter(r.target.name for r in mesh.auth_rules if r.effect == "allow")
    circuits = [s.name for s in mesh.services if s.circuit is not None and s.circuit.max_connections]
    return max(circuits, key=lambda name: (callers[name], name))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--change", choices=["route", "cluster"], default="route")
    args = ap.parse_args(argv)
    base = check_project(from_texts(generate(args.n)))
    service = _target(base.mesh, args.change)
    before = {n: s for n, (_, s) in snapshots(compile_mesh(base.mesh, "envoy")[0]).items()}
    changed_mesh = check_project(from_texts(_mesh_texts(args.n, args.change, service))).mesh
    after = {n: s for n, (_, s) in snapshots(compile_mesh(changed_mesh, "envoy")[0]).items()}
    print("| change | xDS | workloads (N) | reached by the change (k) | serve all from scratch (s) "
          "| change to last ACK (median s) | responses per change | resources per change | KiB per change |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for delta in (False, True):
        row = _serve(before, after, args.runs, delta)
        print(f"| {args.change} of `{service}` | {'delta' if delta else 'SotW'} | {len(before)} | {row['k']} | {row['initial']:.2f} "
              f"| {row['median']:.3f} | {row['responses']:.0f} | {row['resources']:.0f} | {row['kib']:.1f} |")
    return 0


def _serve(before: dict, after: dict, runs: int, delta: bool) -> dict:
    cp = ControlPlane()
    port = cp.start()
    t0 = time.perf_counter()
    cp.publish(before)
    clients = [FakeEnvoy(port, node, delta) for node in before]
    for node, snap in before.items():
        assert cp.wait_acked(node, snap, timeout=120), node
    initial = time.perf_counter() - t0
    times, k, responses, resources, sent = [], 0, [], [], []
    for i in range(runs):
        target = after if i % 2 == 0 else before
        bytes_before, resources_before = sum(c.bytes for c in clients), sum(c.resources for c in clients)
        pushes_before = cp.pushes
        t0 = time.perf_counter()
        changed = cp.publish(target)
        for node in changed:
            assert cp.wait_acked(node, target[node], timeout=60), node
        times.append(time.perf_counter() - t0)
        time.sleep(0.05)  # the clients' byte counts settle
        k = len(changed)
        responses.append(cp.pushes - pushes_before)
        resources.append(sum(c.resources for c in clients) - resources_before)
        sent.append(sum(c.bytes for c in clients) - bytes_before)
    for c in clients:
        c.close()
    cp.stop()
    return {"k": k, "initial": initial, "median": statistics.median(times), "responses": statistics.median(responses),
            "resources": statistics.median(resources), "kib": statistics.median(sent) / 1024}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
