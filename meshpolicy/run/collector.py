"""A local trace collector for `meshc up`, and reading its traces back.

Envoy's Zipkin tracer posts JSON v2 spans to /api/v2/spans, its
OpenTelemetry tracer posts OTLP to /v1/traces (protobuf or JSON). The
collector keeps every span as one JSON line in `<workdir>/traces/spans.jsonl`
in one shape (trace id, span id, parent, service, name, start, duration,
tags), so `meshc trace ID` can print a trace's hops after the fact.
meshproxy reports its spans in the same Zipkin JSON. The file is rotated
at MAX_SPANS_FILE bytes (one previous generation, `spans.1.jsonl`, is
kept), so a long run holds at most twice that on disk.

For Envoy meshes it also runs the gRPC access-log service
(access_logs.py) and serves its callee-side counters on GET /metrics.
"""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass
from pathlib import Path

MAX_BODY = 8 * 1024 * 1024  # a sidecar's batch of spans is far smaller
MAX_SPANS_FILE = 32 * 1024 * 1024


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    service: str
    name: str
    kind: str
    start_us: int
    duration_us: int
    tags: dict


def from_zipkin(doc) -> list[Span]:
    out = []
    for s in doc if isinstance(doc, list) else []:
        if not isinstance(s, dict) or "traceId" not in s or "id" not in s:
            continue
        out.append(Span(str(s["traceId"]).rjust(32, "0"), str(s["id"]), s.get("parentId"),
                        str((s.get("localEndpoint") or {}).get("serviceName", "?")), str(s.get("name", "")),
                        str(s.get("kind", "")).lower(), int(s.get("timestamp", 0)), int(s.get("duration", 0)),
                        {str(k): str(v) for k, v in (s.get("tags") or {}).items()}))
    return out


def from_otlp(body: bytes, content_type: str) -> list[Span]:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    if "json" in content_type:
        json_format.Parse(body.decode("utf-8"), req, ignore_unknown_fields=True)
    else:
        req.ParseFromString(body)
    out = []
    for rs in req.resource_spans:
        attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
        service = attrs.get("service.name", "?")
        for ss in rs.scope_spans:
            for s in ss.spans:
                tags = {a.key: (a.value.string_value or str(a.value.int_value)) for a in s.attributes}
                kinds = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
                out.append(Span(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex() or None, service, s.name,
                                kinds.get(s.kind, ""), s.start_time_unix_nano // 1000,
                                (s.end_time_unix_nano - s.start_time_unix_nano) // 1000, tags))
    return out


class Collector:
    def __init__(self, workdir: Path) -> None:
        from .access_logs import InboundTally

        self.path = workdir / "traces" / "spans.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self.tally = InboundTally()
        self._als = None

    def record(self, spans: list[Span]) -> None:
        if not spans:
            return
        lines = "".join(json.dumps(s.__dict__, sort_keys=True) + "\n" for s in spans)
        with self._lock:
            try:
                if self.path.stat().st_size + len(lines) > MAX_SPANS_FILE:
                    self.path.replace(self.path.with_name("spans.1.jsonl"))  # the older generation goes
            except FileNotFoundError:
                pass
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(lines)

    def start_access_log(self, port: int, address: str = "127.0.0.1") -> int:
        """The gRPC access-log service, folding into the counters /metrics
        serves. Started after the sidecars: a process forked while gRPC
        threads run can die in gRPC's fork handler."""
        from .access_logs import AccessLogServer

        self._als = AccessLogServer(self.tally)
        return self._als.start(port, address)

    def start(self, port: int = 0, address: str = "127.0.0.1") -> int:
        """Serve spans and /metrics on port."""
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _body(self) -> bytes | None:
                """The request body, sized or chunked (Envoy's tracers send chunked);
                None past MAX_BODY or when malformed."""
                if "chunked" not in self.headers.get("transfer-encoding", "").lower():
                    length = self.headers.get("content-length") or "0"
                    if not length.isdigit() or int(length) > MAX_BODY:
                        return None
                    return self.rfile.read(int(length))
                out = b""
                while True:
                    line = self.rfile.readline(64).split(b";", 1)[0].strip()
                    try:
                        size = int(line, 16)
                    except ValueError:
                        return None
                    if size == 0:
                        self.rfile.readline(64)  # the empty line after the last chunk
                        return out
                    if len(out) + size > MAX_BODY:
                        return None
                    out += self.rfile.read(size)
                    self.rfile.readline(64)

            def do_POST(self):  # noqa: N802
                body = self._body()
                if body is None:
                    self.send_error(413)
                    return
                try:
                    if self.path.split("?", 1)[0] == "/api/v2/spans":
                        spans = from_zipkin(json.loads(body or b"[]"))
                    elif self.path.split("?", 1)[0] == "/v1/traces":
                        spans = from_otlp(body, self.headers.get("content-type", ""))
                    else:
                        self.send_error(404)
                        return
                except Exception:  # a malformed batch: refuse it, keep serving
                    self.send_error(400)
                    return
                collector.record(spans)
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self):  # noqa: N802
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                body = collector.tally.prometheus().encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer((address, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="trace-collector").start()
        return self._server.server_address[1]

    def stop(self) -> None:
        if self._als is not None:
            self._als.stop()
            self._als = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def spans_of(workdir: Path, trace_id: str | None = None) -> list[dict]:
    paths = [workdir / "traces" / name for name in ("spans.1.jsonl", "spans.jsonl")]  # older first
    out = []
    want = trace_id.lower().rjust(32, "0") if trace_id else None
    lines = [ln for p in paths if p.is_file() for ln in p.read_text(encoding="utf-8").split("\n")]
    for line in lines:
        try:
            s = json.loads(line)
        except ValueError:
            continue
        if want is None or s.get("trace_id") == want:
            out.append(s)
    return out


def render_trace(spans: list[dict]) -> str:
    """The hops of one trace as an indented tree, parents first, by start time."""
    by_parent: dict[str | None, list[dict]] = {}
    ids = {s["span_id"] for s in spans}
    for s in sorted(spans, key=lambda s: s["start_us"]):
        parent = s.get("parent_id") if s.get("parent_id") in ids else None
        by_parent.setdefault(parent, []).append(s)
    start = min((s["start_us"] for s in spans), default=0)
    lines: list[str] = []

    def walk(parent, depth):
        for s in by_parent.get(parent, []):
            tags = s.get("tags", {})
            what = " ".join(x for x in (tags.get("http.method"), tags.get("http.url") or tags.get("url.full"),
                                        tags.get("http.status_code")) if x)
            lines.append(f"{'  ' * depth}{s['service']} [{s['kind'] or 'span'}] +{(s['start_us'] - start) / 1000:.1f}ms "
                         f"{s['duration_us'] / 1000:.1f}ms  {what or s['name']}")
            walk(s["span_id"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)
