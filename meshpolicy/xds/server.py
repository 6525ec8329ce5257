"""The control plane: an ADS server (xDS v3) over gRPC, incremental (delta
xDS, what `meshc up` bootstraps ask for) and state of the world.

Each workload's Envoy opens one ADS stream and asks for clusters and
listeners, then for the endpoints and routes they name. The server answers
from that workload's current Snapshot. A new policy is `publish`ed as new
snapshots: only workloads whose resources changed (by content hash) are sent
anything, so a change that touches k of N workloads costs O(k) pushes. Over
delta xDS a push carries only the resources whose hash changed and the names
of those removed; over state of the world, every resource of a changed type.

An ACK records the version a workload runs; a NACK (a response Envoy
rejected) is recorded with Envoy's message, the rejected version and the
resources that response carried, and the workload keeps its last good
configuration: the same version is not sent again, the next publish
replaces it. meshpolicy/xds/nack.py turns a NACK into a diagnostic at the
policy construct the rejected resource came from.
"""

from __future__ import annotations

import collections
import itertools
import queue
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

from .resources import PUSH_ORDER, Snapshot

_ABSENT = ""  # delta: a named resource the workload was told does not exist


@dataclass
class Nack:
    node: str
    type_url: str
    version: str  # the version Envoy rejected
    message: str  # Envoy's reason
    resources: tuple[str, ...] = ()  # the names the rejected response carried
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Sent:
    """One response on a stream (for tests and benchmarks: what a push cost)."""

    node: str
    type_url: str
    names: tuple[str, ...]  # resources carried
    removed: tuple[str, ...]  # delta only: names removed
    push: bool  # sent because of a publish (not asked for by a request)
    delta: bool


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


# sockaddr_un holds 108 bytes with the final NUL; keep a margin.
MAX_SOCKET_PATH = 100


def socket_path(state_dir) -> str | None:
    """Where `meshc up` serves the control plane: a Unix socket in its state
    directory (0700), so only its user can read a workload's configuration,
    answer for a workload, or take the address before meshc binds it (a
    loopback port can be taken by any local process in the moment between
    choosing it and serving on it). None when the path is too long for a
    socket address: then a loopback port is used (docs/security.md)."""
    import os

    path = os.path.join(os.fspath(state_dir), "ads.sock")
    return path if len(os.fsencode(path)) <= MAX_SOCKET_PATH else None


class ControlPlane:
    """Snapshots per workload, the ADS servicer, and what each workload ACKed or NACKed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}
        self._packed: dict[tuple[str, str, str], object] = {}  # (type, name, resource version) -> Any
        self._streams: dict[int, tuple[str | None, queue.Queue]] = {}
        self._ids = itertools.count()
        self.acked: dict[tuple[str, str], str] = {}  # (node, type) -> version Envoy runs
        self.acked_at: dict[tuple[str, str], float] = {}  # (node, type) -> time.monotonic() of that ACK
        self.nacks: list[Nack] = []
        self.pushes = 0  # responses sent because a publish changed something
        self.sent: collections.deque[Sent] = collections.deque(maxlen=100_000)
        self.on_nack = None  # called with each Nack, from the stream's thread
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
            live = {(t, n, v) for s in self._snapshots.values() for t in PUSH_ORDER for n, v in s.versions(t).items()}
            for key in [k for k in self._packed if k not in live]:
                del self._packed[key]
            streams = [(n, q) for n, q in self._streams.values() if n in changed]
        for _, q in streams:
            q.put(("publish", None))
        return changed

    def snapshot(self, node: str) -> Snapshot | None:
        return self._snapshots.get(node)

    def wait_acked(self, node: str, snap: Snapshot, timeout: float = 10.0) -> bool:
        """True once the workload runs every type of snap (for tests and `meshc up`); False at the
        timeout, or at once when the workload rejected (NACKed) a version of snap: it is never resent,
        so waiting on would only hold `meshc up --watch` (and a rollout's push) for the whole timeout."""
        wanted = {t: snap.version(t) for t in PUSH_ORDER if snap.resources.get(t)}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.acked.get((node, t)) == v for t, v in wanted.items()):
                return True
            if any(n.node == node and wanted.get(n.type_url) == n.version for n in list(self.nacks)):
                return False
            time.sleep(0.005)
        return False

    def _any(self, snap: Snapshot, type_url: str, name: str):
        """Under the lock: one resource packed, shared by every workload serving the same content."""
        key = (type_url, name, snap.versions(type_url)[name])
        packed = self._packed.get(key)
        if packed is None:
            packed = self._packed[key] = _pack(type_url, snap.resources[type_url][name])
        return packed

    def _ack(self, node: str | None, type_url: str, version: str) -> None:
        if self.acked.get((node, type_url)) != version:
            self.acked_at[(node, type_url)] = time.monotonic()
        self.acked[(node, type_url)] = version

    def _nacked(self, nack: Nack) -> None:
        self.nacks.append(nack)
        if self.on_nack is not None:
            self.on_nack(nack)

    def _stream(self, request_iterator, context):
        """Register a stream: its inbox gets ("request", req), ("publish", None) and ("end", None)."""
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
        return stream, inbox

    def _joined(self, stream: int, node: str, inbox: queue.Queue) -> None:
        with self._lock:
            self._streams[stream] = (node, inbox)

    def _left(self, stream: int) -> None:
        with self._lock:
            self._streams.pop(stream, None)

    def _events(self, stream: int, inbox: queue.Queue, context):
        """(kind, request, node) for each request the workload sends and each
        publish meant for it, in order, until the stream ends; node is the id
        of the last request that named one (the first joins the stream to it)."""
        node: str | None = None
        while True:
            kind, req = inbox.get()
            if kind == "end" or not context.is_active():
                return
            if kind == "request" and req.node.id:
                node = req.node.id
                self._joined(stream, node, inbox)
            yield kind, req, node

    # ---- state of the world
    def _response(self, node: str, type_url: str, nonce: str):
        from envoy.service.discovery.v3 import discovery_pb2

        snap = self._snapshots.get(node)
        if snap is None:
            return None
        packed = [self._any(snap, type_url, name) for name in sorted(snap.resources.get(type_url, {}))]
        return discovery_pb2.DiscoveryResponse(version_info=snap.version(type_url), type_url=type_url, nonce=nonce,
                                               resources=packed)

    def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802 (gRPC's name)
        stream, inbox = self._stream(request_iterator, context)
        sent: dict[str, str] = {}  # type -> version last sent
        wanted: list[str] = []
        nonces = itertools.count(1)
        try:
            for kind, req, node in self._events(stream, inbox, context):
                if kind == "request":
                    tu = req.type_url
                    if tu not in wanted:
                        wanted.append(tu)
                    if req.response_nonce:
                        if req.HasField("error_detail"):
                            snap = self._snapshots.get(node or "")
                            names = tuple(sorted(snap.resources.get(tu, {}))) if snap else ()
                            self._nacked(Nack(node or "?", tu, sent.get(tu, ""), req.error_detail.message, names))
                            continue  # keep the last good config: never resend a rejected version
                        self._ack(node, tu, req.version_info)
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
                    self.sent.append(Sent(node, tu, tuple(sorted(self._snapshots[node].resources.get(tu, {}))), (),
                                          kind == "publish", False))
                    yield resp
        finally:
            self._left(stream)

    def _current(self, node: str | None, type_url: str) -> str | None:
        snap = self._snapshots.get(node) if node else None
        return snap.version(type_url) if snap is not None else None

    # ---- incremental (delta xDS)
    def DeltaAggregatedResources(self, request_iterator, context):  # noqa: N802 (gRPC's name)
        """Per type: what the workload subscribed to (None: every resource, a
        wildcard), and name -> version of what it has. A response carries the
        subscribed resources whose version differs and the names removed."""
        from envoy.service.discovery.v3 import discovery_pb2

        stream, inbox = self._stream(request_iterator, context)
        subscribed: dict[str, set[str] | None] = {}
        has: dict[str, dict[str, str]] = {}
        answered: set[str] = set()  # types sent at least one response (a first wildcard request needs one)
        pending: dict[str, tuple[str, str, tuple[str, ...]]] = {}  # nonce -> (type, system version, names)
        nonces = itertools.count(1)
        try:
            for kind, req, node in self._events(stream, inbox, context):
                if kind == "request":
                    tu = req.type_url
                    if req.response_nonce:
                        tu_sent, version, names = pending.pop(req.response_nonce, (tu, "", ()))
                        if req.HasField("error_detail"):
                            self._nacked(Nack(node or "?", tu_sent, version, req.error_detail.message, names))
                        elif version:
                            self._ack(node, tu_sent, version)
                    self._subscribe(req, subscribed, has)
                    types = [tu]
                else:
                    types = [t for t in PUSH_ORDER if t in subscribed]
                for tu in types:
                    snap = self._snapshots.get(node or "")
                    if snap is None or tu not in subscribed:
                        continue
                    nonce = str(next(nonces))
                    with self._lock:
                        resp = self._delta(snap, tu, subscribed[tu], has.setdefault(tu, {}), nonce,
                                           discovery_pb2, first=tu not in answered)
                    if resp is None:
                        continue
                    answered.add(tu)
                    names = tuple(r.name for r in resp.resources)
                    pending[nonce] = (tu, resp.system_version_info, names)
                    if kind == "publish":
                        self.pushes += 1
                    self.sent.append(Sent(node, tu, names, tuple(resp.removed_resources), kind == "publish", True))
                    yield resp
        finally:
            self._left(stream)

    @staticmethod
    def _subscribe(req, subscribed: dict, has: dict) -> None:
        tu = req.type_url
        names = set(req.resource_names_subscribe)
        if tu not in subscribed:
            # A first request naming nothing (or `*`) subscribes to everything of its type.
            subscribed[tu] = None if (not names or "*" in names) else set()
        current = subscribed[tu]
        if current is not None:
            current |= names - {"*"}
            current -= set(req.resource_names_unsubscribe)
        mine = has.setdefault(tu, {})
        for name in req.resource_names_unsubscribe:
            mine.pop(name, None)
        # A reconnecting Envoy says what it still has: send only what differs.
        for name, version in req.initial_resource_versions.items():
            mine[name] = version

    def _delta(self, snap: Snapshot, tu: str, subscribed, has: dict[str, str], nonce: str, pb, first: bool):
        versions = snap.versions(tu)
        wanted = versions.keys() if subscribed is None else subscribed
        changed = sorted(n for n in wanted if n in versions and has.get(n) != versions[n])
        if subscribed is None:
            removed = sorted(n for n in has if n not in versions)
        else:
            removed = sorted(n for n in wanted if n not in versions and has.get(n) != _ABSENT)
        if not changed and not removed and not first:
            return None
        resources = []
        for name in changed:
            resources.append(pb.Resource(name=name, version=versions[name], resource=self._any(snap, tu, name)))
            has[name] = versions[name]
        for name in removed:
            if subscribed is None:
                del has[name]
            else:
                has[name] = _ABSENT
        # The type's version once the workload has all of it: an ACK of a response
        # that leaves a resource out (not subscribed to yet) does not count as running it.
        complete = all(has.get(n) == v for n, v in versions.items())
        version = snap.version(tu) if complete else "partial:" + snap.version(tu)
        return pb.DeltaDiscoveryResponse(system_version_info=version, type_url=tu, nonce=nonce,
                                         resources=resources, removed_resources=removed)

    # ---- serving
    def start(self, port: int = 0, address: str = "127.0.0.1", max_streams: int = 2048,
              unix: str | None = None) -> int:
        """Serve on address:port (0: a free port), or on the Unix socket `unix`
        (see socket_path); returns the port (0 for a socket). Each ADS
        stream holds a worker thread for its life, so the pool is sized for
        one stream per workload (max_streams), not for request bursts."""
        import os
        import stat

        # meshc up (and tests in this process) fork apps and sidecars after the
        # plane starts; with gRPC's fork support on, a child could die in its
        # fork handler ("epoll_wait error: Bad file descriptor") before exec.
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
        import grpc
        from envoy.service.discovery.v3 import ads_pb2_grpc

        plane = self

        class Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
            def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802
                return plane.StreamAggregatedResources(request_iterator, context)

            def DeltaAggregatedResources(self, request_iterator, context):  # noqa: N802
                return plane.DeltaAggregatedResources(request_iterator, context)

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_streams),
                                   maximum_concurrent_rpcs=max_streams)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Servicer(), self._server)
        if unix is not None:
            try:  # a previous run's socket; anything else there is not ours to delete
                if stat.S_ISSOCK(os.lstat(unix).st_mode):
                    os.unlink(unix)
            except FileNotFoundError:
                pass
            try:
                self._server.add_insecure_port(f"unix:{unix}")
            except RuntimeError:  # gRPC's "failed to bind"
                self._server = None
                raise OSError(f"cannot serve the control plane on {unix}: the path is taken") from None
            self.port = 0
        else:
            self.port = self._server.add_insecure_port(f"{address}:{port}")
        self._server.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=0.5)
            self._server = None
