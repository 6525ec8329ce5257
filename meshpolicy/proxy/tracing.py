"""Trace propagation: W3C traceparent and B3, one trace id across every hop.

A request that arrives without trace headers starts a trace (sampled at the
mesh's rate); each hop gets a new span id whose parent is the caller's.
"""

from __future__ import annotations

import random
import re
import secrets
import time
from json.encoder import encode_basestring_ascii as _quote  # JSON string escaping (C)


# W3C trace context and B3 ids, full matches: a caller's malformed id is
# ignored (a new trace starts, as the W3C spec asks), never passed on to the
# app, the next hop or the collector.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACE_ID = re.compile(r"[0-9a-f]{16}|[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")


def _valid(trace_id: str | None, span_id: str | None) -> bool:
    return (trace_id is not None and _TRACE_ID.fullmatch(trace_id) is not None and trace_id.strip("0") != ""
            and (span_id is None or (_SPAN_ID.fullmatch(span_id) is not None and span_id.strip("0") != "")))


def _ids(headers: dict[str, str]) -> tuple[str | None, str | None, bool | None]:
    tp = headers.get("traceparent")
    if tp:
        m = _TRACEPARENT.fullmatch(tp.strip(" \t"))
        if m and m.group(1) != "ff" and _valid(m.group(2), m.group(3)):
            return m.group(2), m.group(3), m.group(4) == "01"
    if headers.get("x-b3-traceid"):
        sampled = headers.get("x-b3-sampled")
        trace_id, span_id = headers["x-b3-traceid"], headers.get("x-b3-spanid")
        if _valid(trace_id, span_id):
            return trace_id.rjust(32, "0"), span_id, None if sampled is None else sampled == "1"
    if headers.get("b3"):
        parts = headers["b3"].split("-")
        if len(parts) >= 2 and _valid(parts[0], parts[1]):
            return parts[0].rjust(32, "0"), parts[1], (parts[2] == "1") if len(parts) > 2 else None
    return None, None, None


_TRACE_HEADERS = {"traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
                  "b3"}


def propagate(headers: list[tuple[str, str]], tracing: dict) -> list[tuple[str, str]]:
    """Headers for the next hop: the same trace id, a new span id."""
    if not tracing["enabled"]:
        return headers
    return _propagate(headers, tracing)[0]


def _propagate(headers: list[tuple[str, str]], tracing: dict):
    """propagate's headers, and (trace id, new span id, parent span id, sampled)."""
    hs = {k.lower(): v for k, v in headers}
    trace_id, parent, sampled = _ids(hs)
    if trace_id is None:
        trace_id = secrets.token_hex(16)
        sampled = random.random() * 100 < tracing["sample_percent"]
    if sampled is None:
        sampled = random.random() * 100 < tracing["sample_percent"]
    span = secrets.token_hex(8)
    out = [(k, v) for k, v in headers if k.lower() not in _TRACE_HEADERS or k.lower() == "tracestate"]
    if "w3c" in tracing["formats"]:
        out.append(("traceparent", f"00-{trace_id}-{span}-{'01' if sampled else '00'}"))
    if "b3" in tracing["formats"]:
        out += [("x-b3-traceid", trace_id), ("x-b3-spanid", span), ("x-b3-sampled", "1" if sampled else "0")]
        if parent:
            out.append(("x-b3-parentspanid", parent))
    return out, (trace_id, span, parent, sampled)


# ---- span reporting ----------------------------------------------------------
# meshproxy reports a client span per call it forwards and a server span per
# call it receives, as Envoy's Zipkin tracer does, to a collector (Zipkin v2
# JSON, `--trace-collector URL`; `meshc up` points it at its own). Recording is
# a tuple appended to a bounded list on the request path; the JSON is built
# and posted by a background task once a second, off the request path.

SPAN_KEY = "meshproxy.span"  # where a request's client span waits for its answer
MAX_PENDING = 10_000  # spans held between flushes; past it new spans are dropped (counted)
FLUSH_SECONDS = 1.0


def _request_tags(request) -> str:
    """Envoy's per-request span tags, as Zipkin JSON members: protocol, peer
    address (the app for a client span, the calling sidecar for a server
    span) and user agent."""
    q = _quote
    version = request.version
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    return (f'"http.protocol":"HTTP/{int(version.major)}.{int(version.minor)}",'
            f'"peer.address":{q(str(peer[0]) if peer else "")},'
            f'"user_agent":{q(request.headers.get("User-Agent", ""))}')


def collector_problem(url: str) -> str | None:
    """Why url cannot be a span collector (None: it can): an http(s) URL
    with a host, no whitespace or control characters."""
    import re

    if re.fullmatch(r"https?://[^\s/?#@]+(/[^\s]*)?", url) is None or not url.isprintable():
        return f"--trace-collector must be an http(s) URL such as http://127.0.0.1:9411/api/v2/spans, not {url!r}"
    return None


class Spans:
    def __init__(self, tracing: dict, service: str, collector: str | None):
        self.enabled = bool(collector) and tracing["enabled"]
        self.tracing = tracing
        self.service = service
        self.collector = collector
        self.pending: list[tuple] = []
        self.dropped = 0
        self._task = None

    def configure(self, tracing: dict, service: str) -> None:
        """A reload: the mesh may have turned tracing on or off."""
        self.tracing, self.service = tracing, service
        self.enabled = bool(self.collector) and tracing["enabled"]

    def _keep(self, span: tuple) -> None:
        if len(self.pending) < MAX_PENDING:
            self.pending.append(span)
        else:
            self.dropped += 1

    def client(self, headers: list[tuple[str, str]], request, host: str) -> list[tuple[str, str]]:
        """propagate(), and a client span for the call when it is sampled (its
        end is recorded by finish(request, status))."""
        if not self.enabled:
            return propagate(headers, self.tracing)
        out, (trace_id, span_id, parent, sampled) = _propagate(headers, self.tracing)
        if sampled:
            request[SPAN_KEY] = (trace_id, span_id, parent, "client", f"egress {host}", time.time(),
                                 time.monotonic(), request.method, host + request.raw_path, request)
        return out

    def server(self, request) -> tuple | None:
        """The server span of a sampled incoming call, a child of the caller's
        client span (its span id is the one the caller sent)."""
        trace_id, parent, sampled = _ids({k.lower(): v for k, v in request.headers.items()
                                          if k.lower() in _TRACE_HEADERS})
        if not sampled or trace_id is None:
            return None
        return (trace_id, secrets.token_hex(8), parent, "server", "ingress", time.time(), time.monotonic(),
                request.method, request.host + request.raw_path, request)

    def for_app(self, headers: list[tuple[str, str]], span: tuple) -> list[tuple[str, str]]:
        """The headers for the app, whose trace context names the server span,
        so that the calls the app makes for this one become its children."""
        trace_id, span_id, parent = span[:3]
        out = [(k, v) for k, v in headers if k.lower() not in _TRACE_HEADERS or k.lower() == "tracestate"]
        if "w3c" in self.tracing["formats"]:
            out.append(("traceparent", f"00-{trace_id}-{span_id}-01"))
        if "b3" in self.tracing["formats"]:
            out += [("x-b3-traceid", trace_id), ("x-b3-spanid", span_id), ("x-b3-sampled", "1")]
            if parent:
                out.append(("x-b3-parentspanid", parent))
        return out

    def finish(self, span: tuple | None, status: int) -> None:
        if span is not None:
            *head, request = span
            self._keep((*head, _request_tags(request), time.monotonic(), status))

    def finish_request(self, request, status: int) -> None:
        if self.enabled:
            self.finish(request.get(SPAN_KEY), status)

    # ---- export (background)
    def zipkin(self, spans: list[tuple]) -> bytes:
        """Zipkin v2 JSON, written directly (a dict per span and json.dumps cost 3x
        as much); every string, the caller's trace ids included, goes through
        JSON's own escaping."""
        q = _quote
        service = q(self.service)
        parts = []
        for trace_id, span_id, parent, kind, name, wall, start, method, url, extra, end, status in spans:
            parts.append(
                f'{{"traceId":{q(trace_id)},"id":{q(span_id)},'
                f'{f""""parentId":{q(parent)},""" if parent else ""}"name":{q(name)},"kind":"{kind.upper()}",'
                f'"timestamp":{int(wall * 1_000_000)},"duration":{max(1, int((end - start) * 1_000_000))},'
                f'"localEndpoint":{{"serviceName":{service}}},"tags":{{"http.method":{q(method)},'
                f'"http.url":{q(url)},"http.status_code":"{int(status)}",{extra},"component":"meshproxy"}}}}')
        return ("[" + ",".join(parts) + "]").encode()

    def start(self) -> None:
        if self.collector and self._task is None:
            import asyncio

            self._task = asyncio.get_running_loop().create_task(self._export())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
            await self.flush()

    async def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        import aiohttp

        body = self.zipkin(batch)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                async with session.post(self.collector, data=body,
                                        headers={"content-type": "application/json"}) as resp:
                    await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:  # the collector is away: the batch is lost
            self.dropped += len(batch)
            import logging

            logging.getLogger("meshproxy").debug("span export failed: %s", exc)

    async def _export(self) -> None:
        import asyncio

        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()
