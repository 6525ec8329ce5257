"""The control plane: an ADS server (state of the world, xDS v3) over gRPC.

Each workload's Envoy opens one ADS stream and asks for clusters and
listeners, then for the endpoints and routes they name. The server answers
from that workload's current Snapshot. A new policy is `publish`ed as new
snapshots: only workloads whose resources of a type changed (by content
hash) are sent that type, so a change that touches k of N workloads costs
O(k) pushes. An ACK records the version a workload runs; a NACK (a response
Envoy rejected) is recorded with Envoy's message and the rejected version,
and the workload keeps its last good configuration: the same version is not
sent again, the next publish replaces it.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

from .resources import PUSH_ORDER, Snapshot


@dataclass
class Nack:
    node: str
    type_url: str
    version: str  # the version Envoy rejected
    message: str  # Envoy's reason
    at: float = field(default_factory=time.time)


def _load_types(resource: dict) -> None:
    from ..targets.envoy.output_check import _load_type

    stack = [resource]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("@type"), str):
                _load_type(item["@type"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _pack(type_url: str, resource: dict):
    """A resource dict as google.protobuf.Any, parsed strictly (unknown fields refused)."""
    from google.protobuf import any_pb2, json_format, symbol_database

    _load_types({"@type": type_url})
    _load_types(resource)
    cls = symbol_database.Default().GetSymbol(type_url.rsplit("/", 1)[-1])
    message = json_format.ParseDict(resource, cls(), ignore_unknown_fields=False)
    out = any_pb2.Any()
    out.Pack(message)
    return out


class ControlPlane:
    """Snapshots per workload, the ADS servicer, and what each workload ACKed or NACKed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}
        self._packed: dict[tuple[str, str, str], list] = {}  # (node, type, version) -> [Any]
        self._streams: dict[int, tuple[str | None, queue.Queue]] = {}
        self._ids = itertools.count()
        self.acked: dict[tuple[str, str], str] = {}  # (node, type) -> version Envoy runs
        self.nacks: list[Nack] = []
        self.pushes = 0  # responses sent because a publish changed something
        self._server = None
        self.port: int | None = None

    # ---- policy side
    def publish(self, snapshots: dict[str, Snapshot]) -> list[str]:
        """Replace the snapshots; returns the workloads that something changed for."""
        changed = []
        with self._lock:
            for node, snap in snapshots.items():
                old = self._snapshots.get(node)
                if old is None or any(old.version(t) != snap.version(t) for t in PUSH_ORDER):
                    changed.append(node)
                self._snapshots[node] = snap
            streams = [(n, q) for n, q in self._streams.values() if n in changed]
        for _, q in streams:
            q.put(("publish", None))
        return changed

    def wait_acked(self, node: str, snap: Snapshot, timeout: float = 10.0) -> bool:
        """True once the workload runs every type of snap (for tests and `meshc up`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.acked.get((node, t)) == snap.version(t) for t in PUSH_ORDER if snap.resources.get(t)):
                return True
            time.sleep(0.02)
        return False

    def _response(self, node: str, type_url: str, nonce: str):
        from envoy.service.discovery.v3 import discovery_pb2

        snap = self._snapshots.get(node)
        if snap is None:
            return None
        version = snap.version(type_url)
        key = (node, type_url, version)
        packed = self._packed.get(key)
        if packed is None:
            packed = [_pack(type_url, r) for _, r in sorted(snap.resources.get(type_url, {}).items())]
            self._packed[key] = packed
        return discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce,
                                               resources=packed)

    # ---- the ADS stream
    def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802 (gRPC's name)
        inbox: queue.Queue = queue.Queue()
        stream = next(self._ids)

        def read() -> None:
            try:
                for req in request_iterator:
                    inbox.put(("request", req))
            except Exception:  # the stream broke: Envoy went away
                pass
            inbox.put(("end", None))

        threading.Thread(target=read, daemon=True, name=f"ads-read-{stream}").start()
        node: str | None = None
        sent: dict[str, str] = {}  # type -> version last sent
        wanted: list[str] = []
        nonces = itertools.count(1)
        try:
            while True:
                kind, req = inbox.get()
                if kind == "end" or not context.is_active():
                    return
                if kind == "request":
                    if req.node.id:
                        node = req.node.id
                        with self._lock:
                            self._streams[stream] = (node, inbox)
                    tu = req.type_url
                    if tu not in wanted:
                        wanted.append(tu)
                    if req.response_nonce:
                        if req.HasField("error_detail"):
                            self.nacks.append(Nack(node or "?", tu, sent.get(tu, ""), req.error_detail.message))
                            continue  # keep the last good config: never resend a rejected version
                        self.acked[(node, tu)] = req.version_info
                        if sent.get(tu) == self._current(node, tu):
                            continue
                    types = [tu]
                else:  # a publish: what changed, in dependency order
                    types = [t for t in PUSH_ORDER if t in wanted]
                for tu in types:
                    current = self._current(node, tu)
                    if current is None or (kind == "publish" and sent.get(tu) == current):
                        continue
                    with self._lock:
                        resp = self._response(node, tu, str(next(nonces)))
                    if resp is None:
                        continue
                    sent[tu] = resp.version_info
                    if kind == "publish":
                        self.pushes += 1
                    yield resp
        finally:
            with self._lock:
                self._streams.pop(stream, None)

    def _current(self, node: str | None, type_url: str) -> str | None:
        snap = self._snapshots.get(node) if node else None
        return snap.version(type_url) if snap is not None else None

    # ---- serving
    def start(self, port: int = 0, address: str = "127.0.0.1", max_streams: int = 2048) -> int:
        """Serve on address:port (0: a free port); returns the port. Each ADS
        stream holds a worker thread for its life, so the pool is sized for
        one stream per workload (max_streams), not for request bursts."""
        import os

        # meshc up (and tests in this process) fork apps and sidecars after the
        # plane starts; with gRPC's fork support on, a child could die in its
        # fork handler ("epoll_wait error: Bad file descriptor") before exec.
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
        import grpc
        from envoy.service.discovery.v3 import ads_pb2_grpc

        plane = self

        class Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # delta xDS: UNIMPLEMENTED, Envoy falls back
            def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802
                return plane.StreamAggregatedResources(request_iterator, context)

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_streams),
                                   maximum_concurrent_rpcs=max_streams)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Servicer(), self._server)
        self.port = self._server.add_insecure_port(f"{address}:{port}")
        self._server.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=0.5)
            self._server = None
