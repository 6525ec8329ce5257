"""meshc's gRPC access-log service: Envoy's callee-side figures, by caller.

Every Envoy sidecar of `meshc up` streams its inbound access log here
(targets/envoy/access_log.py). Each entry is folded into counters at once,
per (caller identity, destination service, version): status codes and a
latency histogram with meshproxy's buckets. Entries are never kept, so
memory is bounded by the number of series (at most MAX_SERIES; past it,
calls are counted under the caller `(other)`). The caller is the URI SAN of
the certificate the caller presented in the mTLS handshake, which the
callee's Envoy verified; a plaintext caller (permissive mTLS) is `unknown`.
The collector (collector.py) serves the counters as Prometheus text on
/metrics, where `meshc stat` scrapes them with the sidecars.
"""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)  # meshproxy's, in ms
MAX_SERIES = 4096

Series = tuple[str, str, str]  # (source, destination, version)


class InboundTally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.codes: dict[Series, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.buckets: dict[Series, list[int]] = {}  # per bucket, not cumulative; last = +Inf
        self.sums: dict[Series, float] = defaultdict(float)

    def add(self, source: str, destination: str, version: str, code: int, ms: float) -> None:
        key = (source, destination, version)
        with self._lock:
            if key not in self.buckets:
                if len(self.buckets) >= MAX_SERIES:
                    key = ("(other)", destination, version)
                self.buckets.setdefault(key, [0] * (len(BUCKETS_MS) + 1))
            self.codes[key][str(code)] += 1
            i = next((k for k, b in enumerate(BUCKETS_MS) if ms <= b), len(BUCKETS_MS))
            self.buckets[key][i] += 1
            self.sums[key] += ms

    def prometheus(self) -> str:
        with self._lock:
            codes = {k: dict(v) for k, v in self.codes.items()}
            buckets = {k: list(v) for k, v in self.buckets.items()}
            sums = dict(self.sums)
        out = ["# TYPE meshc_inbound_requests_total counter"]
        for (src, dst, ver), by_code in sorted(codes.items()):
            for code, n in sorted(by_code.items()):
                out.append(f"meshc_inbound_requests_total{{{_labels(src, dst, ver)},code=\"{code}\"}} {n}")
        out.append("# TYPE meshc_inbound_request_duration_ms histogram")
        for (src, dst, ver), counts in sorted(buckets.items()):
            labels = _labels(src, dst, ver)
            total = 0
            for bound, n in zip((*BUCKETS_MS, "+Inf"), counts):
                total += n
                out.append(f"meshc_inbound_request_duration_ms_bucket{{{labels},le=\"{bound}\"}} {total}")
            out.append(f"meshc_inbound_request_duration_ms_count{{{labels}}} {total}")
            out.append(f"meshc_inbound_request_duration_ms_sum{{{labels}}} {sums[(src, dst, ver)]}")
        return "\n".join(out) + "\n"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace('"', '\\"')


def _labels(src: str, dst: str, ver: str) -> str:
    return f'source="{_escape(src)}",destination="{_escape(dst)}",version="{_escape(ver)}"'


def workload_of(log_name: str) -> tuple[str, str] | None:
    """(service, version or "") from the log name `inbound|<service>[|<version>]`."""
    parts = log_name.split("|")
    if len(parts) not in (2, 3) or parts[0] != "inbound" or not parts[1]:
        return None
    return parts[1], parts[2] if len(parts) == 3 else ""


def _ms(d) -> float:
    return d.seconds * 1000 + d.nanos / 1e6


def fold(tally: InboundTally, workload: tuple[str, str], entries) -> None:
    """HTTPAccessLogEntry messages of one workload's inbound side into the tally."""
    for e in entries:
        common = e.common_properties
        sans = common.tls_properties.peer_certificate_properties.subject_alt_name
        source = next((s.uri for s in sans if s.uri), "unknown")
        code = e.response.response_code.value if e.response.HasField("response_code") else 0
        took = common.duration if common.HasField("duration") else common.time_to_last_downstream_tx_byte
        tally.add(source, workload[0], workload[1], code, _ms(took))


class AccessLogServer:
    """The gRPC service Envoy streams to; one thread per open stream."""

    def __init__(self, tally: InboundTally) -> None:
        self.tally = tally
        self._server = None

    def start(self, port: int, address: str = "127.0.0.1", max_streams: int = 256) -> int:
        from concurrent import futures

        import grpc
        from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

        tally = self.tally

        class Service(als_pb2_grpc.AccessLogServiceServicer):
            def StreamAccessLogs(self, request_iterator, context):  # noqa: N802 (gRPC's name)
                workload = None
                for msg in request_iterator:
                    if msg.HasField("identifier"):  # the first message of a stream names its log
                        workload = workload_of(msg.identifier.log_name)
                    if workload is not None and msg.HasField("http_logs"):
                        fold(tally, workload, msg.http_logs.log_entry)
                return als_pb2.StreamAccessLogsResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_streams,
                                                              thread_name_prefix="access-log"),
                                   maximum_concurrent_rpcs=max_streams)
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(Service(), self._server)
        bound = self._server.add_insecure_port(f"{address}:{port}")
        self._server.start()
        return bound

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=0.5)
            self._server = None
