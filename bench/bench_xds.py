"""Control-plane pushes: `python bench/bench_xds.py [N] [--runs R]`.

A bench mesh of N services (bench/gen.py) is compiled to Envoy and served
by meshc's control plane to simulated Envoys: one gRPC ADS client per
workload that asks for every resource type and ACKs each response, as
Envoy does. Then one service's route is changed (a timeout added to every
rule), which changes the sidecars of that service's callers only. The
table shows how many workloads the change reaches (k of N), and the median
time from `publish` to the last affected workload's ACK, next to the time to
serve a whole mesh from scratch.
"""

from __future__ import annotations

import argparse
import queue
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
    """An ADS client: requests every type, ACKs every response, counts them."""

    def __init__(self, port: int, node: str) -> None:
        import grpc
        from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

        self.node, self.acks = node, 0
        self._req = discovery_pb2.DiscoveryRequest
        self._out: queue.Queue = queue.Queue()
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        for i, t in enumerate(PUSH_ORDER):
            req = self._req(type_url=t)
            if i == 0:
                req.node.id = node
            self._out.put(req)
        self._stream = stub.StreamAggregatedResources(iter(self._out.get, None))
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for resp in self._stream:
                self._out.put(self._req(type_url=resp.type_url, version_info=resp.version_info,
                                        response_nonce=resp.nonce))
                self.acks += 1
        except Exception:
            pass

    def close(self) -> None:
        self._out.put(None)
        self._channel.close()


def _mesh_texts(n: int, changed: str | None, service: str | None):
    files = generate(n)
    if changed:
        for path, text in files.items():
            marker = f"route {service} {{"
            if marker in text:
                head, rest = text.split(marker, 1)
                body, tail = rest.split("\n}", 1)
                lines = [ln + " timeout 7s" if "->" in ln and "timeout" not in ln else ln for ln in body.split("\n")]
                files[path] = head + marker + "\n".join(lines) + "\n}" + tail
    return files


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    base = check_project(from_texts(generate(args.n)))
    routed = [r.service.name for r in base.mesh.routes]
    service = routed[len(routed) // 2]
    before = {n: s for n, (_, s) in snapshots(compile_mesh(base.mesh, "envoy")[0]).items()}
    changed_mesh = check_project(from_texts(_mesh_texts(args.n, "timeout", service))).mesh
    after = {n: s for n, (_, s) in snapshots(compile_mesh(changed_mesh, "envoy")[0]).items()}
    cp = ControlPlane()
    port = cp.start()
    t0 = time.perf_counter()
    cp.publish(before)
    clients = [FakeEnvoy(port, node) for node in before]
    for node, snap in before.items():
        assert cp.wait_acked(node, snap, timeout=120), node
    initial = time.perf_counter() - t0
    times, k = [], 0
    for i in range(args.runs):
        target = after if i % 2 == 0 else before
        t0 = time.perf_counter()
        changed = cp.publish(target)
        for node in changed:
            assert cp.wait_acked(node, target[node], timeout=60), node
        times.append(time.perf_counter() - t0)
        k = len(changed)
    for c in clients:
        c.close()
    cp.stop()
    print("| workloads (N) | reached by the change (k) | serve all from scratch (s) | change to last ACK (median s) |")
    print("|---:|---:|---:|---:|")
    print(f"| {len(before)} | {k} | {initial:.2f} | {statistics.median(times):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
