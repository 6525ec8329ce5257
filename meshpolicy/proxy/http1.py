"""meshproxy's HTTP/1.1 server for its inbound and outbound listeners: an
asyncio Protocol that parses each request head strictly and hands the
handlers a small request object with the attributes they read from
aiohttp's (method, raw_path, version, headers, host, content, ...); the
handlers' web.Response is written back in one send.

Why not aiohttp's server: on the sidecar's hot path its request and response
machinery cost more than the proxying (a Request and a StreamResponse per
request, keep-alive timers, a task switch per read); this is the part of it
meshproxy uses. The admin port and the ingress listener keep aiohttp.

What a caller sends is checked as the rest of meshproxy checks it
(docs/security.md, "meshproxy data plane"):
- the request line and every header line are full matches ending in CRLF
  (a lone CR or LF, a control byte, an obs-fold, a line over 8190 bytes,
  over 128 headers or a head over 64 KiB is a framing error);
- the body's framing is one Content-Length (digits, one copy) or
  `Transfer-Encoding: chunked` alone, never both; chunks are framed
  exactly; exactly one Host (HTTP/1.1);
- a framing error is answered 400 (a fixed text: nothing the caller sent is
  quoted back) and the connection is closed, so nothing after it can be read
  as a request; a body the handler did not read to its end closes the
  connection after the answer too;
- header values are kept as the bytes sent (decoded UTF-8 with
  surrogateescape, which encodes back to the same bytes);
- a slow caller is answered 408 and closed (HEAD_TIMEOUT, BODY_IDLE_TIMEOUT),
  and a partial head is scanned once, not again on each arrival.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE, HttpVersion
from multidict import CIMultiDict, CIMultiDictProxy

from .http_grammar import DIGITS, TOKEN, chunk_size, header_line

log = logging.getLogger("meshproxy")

MAX_LINE = 8190  # request line and each header line, as aiohttp's server
MAX_HEADERS = 128
MAX_HEAD = 64 * 1024  # the whole head, and what a partial one may hold per connection (Envoy: 60 KiB)
BODY_HIGH_WATER = 1 << 20  # stop reading from the caller while this much body waits
PIPELINE_HIGH_WATER = 1 << 18  # bytes of later requests held while one is served
KEEPALIVE_TIMEOUT = 3630.0  # an idle connection is closed after this (aiohttp's default)
# Slow callers (slowloris): a request head must be complete this long after
# its first byte (nginx's client_header_timeout), and a body that has not
# ended must not go this long without a byte (Envoy's stream_idle_timeout);
# else 408 and the connection is closed. Without them a connection waiting
# for the rest of a head or body was held until the caller closed it.
HEAD_TIMEOUT = 60.0
BODY_IDLE_TIMEOUT = 300.0

_REQUEST_LINE = re.compile(rb"(" + TOKEN + rb") ([!-\xff]+)(?: HTTP/([0-9])\.([0-9]))?")
_HEADER_LINE = header_line()  # lines are matched without their CRLF here
_CHUNK_SIZE = chunk_size()
_DIGITS = DIGITS
_NO_BODY = frozenset({204, 304})
INTERNAL_ERROR = "500 Internal Server Error\n\nServer got itself in trouble"


class BadRequest(ValueError):
    """The caller's bytes are not one well-framed HTTP/1.1 request."""


class Body:
    """A request body as it arrives (request.content): readany() returns what
    is buffered, b"" at its end."""

    def __init__(self, proto: HTTP1):
        self._proto = proto
        self._chunks: deque[bytes] = deque()
        self.size = 0
        self.received = 0  # bytes fed so far (the idle check's progress mark)
        self.done = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future | None = None

    def feed(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self.size += len(data)
            self.received += len(data)
            self._wake()

    def finish(self, exc: BaseException | None = None) -> None:
        if not self.done:
            self.done = True
            self._exc = exc
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def at_eof(self) -> bool:
        return self.done and not self._chunks

    async def readany(self) -> bytes:
        while not self._chunks:
            if self.done:
                if self._exc is not None:
                    raise self._exc
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self.size = 0
        self._proto.body_drained()
        return data


class _Writer:
    """request.writer: what read_body needs to answer `Expect: 100-continue`."""

    def __init__(self, transport):
        self._transport = transport
        self.output_size = 0

    async def write(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)
        self.output_size += len(data)


class Request:
    """The request as meshproxy's handlers read it (a subset of aiohttp's
    BaseRequest, the same types), plus a per-request mapping (request[key])."""

    __slots__ = (
        "_state",
        "_writer",
        "body_exists",
        "content",
        "content_length",
        "headers",
        "keep_alive",
        "method",
        "protocol",
        "raw_path",
        "transport",
        "version",
    )

    def __init__(self, method, raw_path, version, headers, protocol, content, content_length, keep_alive):
        self.method = method
        self.raw_path = raw_path
        self.version = version
        self.headers = headers
        self.protocol = protocol
        self.transport = protocol.transport
        self.content = content
        self.content_length = content_length
        self.body_exists = content is not None
        self.keep_alive = keep_alive
        self._writer = None
        self._state = None

    @property
    def writer(self) -> _Writer:
        if self._writer is None:
            self._writer = _Writer(self.transport)
        return self._writer

    @property
    def host(self) -> str:
        host = self.headers.get("Host")
        return host if host is not None else socket.getfqdn()  # as aiohttp

    @property
    def remote(self) -> str | None:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return peer[0] if isinstance(peer, (tuple, list)) else peer

    def __getitem__(self, key):
        if self._state is None:
            raise KeyError(key)
        return self._state[key]

    def __setitem__(self, key, value) -> None:
        if self._state is None:
            self._state = {}
        self._state[key] = value

    def __contains__(self, key) -> bool:
        return self._state is not None and key in self._state

    def get(self, key, default=None):
        return default if self._state is None else self._state.get(key, default)


class Answer:
    """A forwarded response as http1 writes it: what serialize() reads of a
    web.Response (building one costs more than the rest of the answer)."""

    __slots__ = ("body", "headers", "status")
    keep_alive = None

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status = status
        self.headers = CIMultiDict(headers)
        self.body = body

    @property
    def reason(self) -> str:
        return _REASONS.get(self.status, "")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


_REASONS = {s.value: s.phrase for s in HTTPStatus}


def answer(request, status: int, headers: list[tuple[str, str]], body: bytes) -> web.Response | Answer:
    """The response for request: an Answer when http1 serves it, else (the
    ingress listener, aiohttp's server) a web.Response."""
    if type(request) is Request:
        return Answer(status, headers, body)
    return web.Response(status=status, body=body, headers=headers)


_date_cache = [0, ""]


def _date() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0], _date_cache[1] = now, formatdate(now, usegmt=True)
    return _date_cache[1]


def serialize(resp: web.Response | Answer, version: HttpVersion, keep_alive: bool, head_only: bool) -> bytes:
    """The response as aiohttp writes it: its headers, then Content-Length,
    Date and Server unless set, and `Connection: close` when the connection
    ends; no body for HEAD, 204 and 304."""
    status = resp.status
    body = resp.body
    if body is None:
        body = b""
    elif not isinstance(body, (bytes, bytearray)):
        raise TypeError("meshproxy answers with whole bodies")
    hdrs = resp.headers
    lines = [f"HTTP/{version.major}.{version.minor} {status} {resp.reason}"]
    for k, v in hdrs.items():
        if "\n" in v or "\r" in v or "\n" in k or "\r" in k:
            raise ValueError("a response header with CR or LF")
        lines.append(f"{k}: {v}")
    no_body = status in _NO_BODY or status < 200
    if not no_body and "Content-Length" not in hdrs:
        lines.append(f"Content-Length: {len(body)}")
    if "Date" not in hdrs:
        lines.append(f"Date: {_date()}")
    if "Server" not in hdrs:
        lines.append(f"Server: {SERVER_SOFTWARE}")
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    return head if (head_only or no_body or not body) else head + body


def _bad_request() -> web.Response:
    from .server import BAD_TARGET

    return web.Response(status=400, text=BAD_TARGET)


class HTTP1(asyncio.Protocol):
    """One per connection; requests are served one at a time, in order."""

    # per connection, filled by the handlers (server._peer, server._identity)
    peer: tuple | None = None
    ident: tuple | None = None

    def __init__(self, handler):
        self._handler = handler
        self.transport = None
        self._buf = bytearray()
        self._busy = False  # a request is being served
        self._closing = False
        self._paused = False
        self._body: Body | None = None  # the body being received
        self._need = 0  # body bytes still to come (content-length), or chunk state below
        self._chunked = False
        self._chunk_left = -1  # bytes left in the current chunk; -1: a size line is next
        self._scanned = 0  # bytes of a partial head already checked (whole lines): never rescanned
        self._last = 0.0
        self._timer = None
        self._wait_timer = None  # the rest of a head or a body is awaited (HEAD_TIMEOUT, BODY_IDLE_TIMEOUT)

    # -- connection
    def connection_made(self, transport) -> None:
        self.transport = transport
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        self._timer = loop.call_later(KEEPALIVE_TIMEOUT, self._idle_check)

    def connection_lost(self, exc) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self._wait_timer is not None:
            self._wait_timer.cancel()
        if self._body is not None and not self._body.done:
            self._body.finish(ConnectionResetError("the caller closed the connection"))

    def _idle_check(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last
        if not self._busy and idle >= KEEPALIVE_TIMEOUT:
            self._close()
        else:
            self._timer = loop.call_later(max(1.0, KEEPALIVE_TIMEOUT - idle), self._idle_check)

    def _close(self) -> None:
        self._closing = True
        if not self.transport.is_closing():
            self.transport.close()

    def _pause(self) -> None:
        if not self._paused and not self.transport.is_closing():
            self._paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()

    def body_drained(self) -> None:
        if self._paused and self._busy and self._body is not None and len(self._buf) < PIPELINE_HIGH_WATER:
            self._resume()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._buf += data
        if self._body is not None and not self._body.done:
            self._feed_body()
        if not self._busy:
            self._next()
        elif len(self._buf) > PIPELINE_HIGH_WATER or (self._body is not None and
                                                      self._body.size > BODY_HIGH_WATER):
            self._pause()

    # -- parsing
    def _next(self) -> None:
        """Start serving the next request in the buffer, if its head is complete."""
        buf = self._buf
        while buf[:2] == b"\r\n":  # empty lines before a request line are ignored (RFC 9112 2.2)
            del buf[:2]
        # from where the last arrival's search stopped: a head trickled in small
        # pieces would otherwise cost time quadratic in its length
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end < 0:
            self._check_partial()
            return
        if end > MAX_HEAD:
            return self._refuse()
        head = bytes(buf[:end])
        del buf[:end + 4]
        self._scanned = 0
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None
        try:
            request = self._request(head)
        except BadRequest:
            return self._refuse()
        self._busy = True
        self._last = asyncio.get_running_loop().time()
        asyncio.get_running_loop().create_task(self._serve(request))

    def _check_partial(self) -> None:
        """A head not complete yet: refuse it as soon as a line of it is bad
        or it is too long, rather than wait for an end that cannot come."""
        buf = self._buf
        start = self._scanned  # the lines before it were checked on an earlier arrival
        while (i := buf.find(b"\n", start)) >= 0:
            if buf[i - 1:i] != b"\r" or i - start > MAX_LINE + 1 or i == 0:
                return self._refuse()
            if start == 0 and _REQUEST_LINE.fullmatch(buf[:i - 1]) is None:
                return self._refuse()
            start = i + 1
        self._scanned = start
        if len(buf) - start > MAX_LINE + 1 or len(buf) > MAX_HEAD:
            return self._refuse()
        if buf and self._wait_timer is None:
            self._wait_timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, self._head_late)

    def _request(self, head: bytes) -> Request:
        lines = head.split(b"\r\n")
        first = lines[0]
        m = _REQUEST_LINE.fullmatch(first) if len(first) <= MAX_LINE else None
        if m is None:
            raise BadRequest("request line")
        method, target, major, minor = m.groups()
        version = HttpVersion(int(major), int(minor)) if major is not None else HttpVersion(0, 9)
        if len(lines) - 1 > MAX_HEADERS:
            raise BadRequest("too many headers")
        items = []
        length = None
        codings = None
        conn_tokens = ()
        host_seen = False
        for line in lines[1:]:
            h = _HEADER_LINE.fullmatch(line) if len(line) <= MAX_LINE else None
            if h is None:
                raise BadRequest("header line")
            name = h.group(1).decode("ascii")
            raw = h.group(2)
            low = name.lower()
            if low == "content-length":
                if length is not None or _DIGITS.fullmatch(raw) is None:
                    raise BadRequest("content-length")
                length = int(raw)
            elif low == "transfer-encoding":  # bytes, not str: str.strip() would take \xa0 and \x85 for blanks
                codings = (codings or []) + [c.strip(b" \t").lower() for c in raw.split(b",")]
            elif low == "host":
                if host_seen:  # one Host only (RFC 9112 3.2): routing reads the first, others may read the last
                    raise BadRequest("host")
                host_seen = True
            elif low == "connection":
                conn_tokens = (*conn_tokens, *(t.strip().lower() for t in raw.decode("latin-1").split(",")))
            items.append((name, raw.decode("utf-8", "surrogateescape")))
        if not host_seen and version == (1, 1):
            raise BadRequest("no host")  # RFC 9112 3.2
        chunked = False
        if codings is not None:
            # both framings is a smuggling sign (RFC 9112 6.1); any coding but one
            # `chunked` is one meshproxy cannot pass on (Envoy answers 501)
            if length is not None or codings != [b"chunked"]:
                raise BadRequest("transfer-encoding")
            chunked = True
        body = None
        if chunked or (length or 0) > 0:
            body = self._body = Body(self)
            self._chunked = chunked
            self._need = length or 0
            self._chunk_left = -1
            self._feed_body()
            if not body.done:
                self._wait_timer = asyncio.get_running_loop().call_later(BODY_IDLE_TIMEOUT, self._body_idle, body,
                                                                         body.received)
        keep = version == (1, 1) and "close" not in conn_tokens
        headers = CIMultiDictProxy(CIMultiDict(items))
        return Request(method.decode("ascii"), target.decode("utf-8", "surrogateescape"), version, headers, self,
                       body, length, keep)

    def _feed_body(self) -> None:
        """Move body bytes from the buffer to the body; the rest of the
        buffer is the next request's."""
        body, buf = self._body, self._buf
        if not self._chunked:
            n = min(self._need, len(buf))
            if n:
                body.feed(bytes(buf[:n]))
                del buf[:n]
                self._need -= n
            if self._need == 0:
                body.finish()
            return
        try:
            while buf:
                if self._chunk_left > 0:
                    n = min(self._chunk_left, len(buf))
                    body.feed(bytes(buf[:n]))
                    del buf[:n]
                    self._chunk_left -= n
                    continue
                if self._chunk_left == 0:  # the CRLF after a chunk's data
                    if len(buf) < 2:
                        return
                    if buf[:2] != b"\r\n":
                        raise BadRequest("chunk not followed by CRLF")
                    del buf[:2]
                    self._chunk_left = -1
                    continue
                if self._chunk_left == -2:  # trailers, after the last chunk
                    i = buf.find(b"\n")
                    if i < 0:
                        if len(buf) > MAX_LINE:
                            raise BadRequest("trailer")
                        return
                    line = bytes(buf[:i + 1])
                    del buf[:i + 1]
                    if line == b"\r\n":
                        body.finish()
                        return
                    if not line.endswith(b"\r\n") or _HEADER_LINE.fullmatch(line[:-2]) is None:
                        raise BadRequest("trailer")
                    continue
                i = buf.find(b"\n")
                if i < 0:
                    if len(buf) > MAX_LINE:
                        raise BadRequest("chunk size")
                    return
                line = bytes(buf[:i + 1])
                del buf[:i + 1]
                m = _CHUNK_SIZE.fullmatch(line[:-2]) if line.endswith(b"\r\n") else None
                if m is None:
                    raise BadRequest("chunk size")
                size = int(m.group(1), 16)
                self._chunk_left = size if size else -2
        except BadRequest as exc:
            body.finish(exc)
            self._closing = True  # where the next request starts is unknown: no next request
            buf.clear()

    def _body_idle(self, body: Body, mark: int) -> None:
        """BODY_IDLE_TIMEOUT after the last check: the body must have grown
        since (unless meshproxy itself stopped reading: backpressure)."""
        self._wait_timer = None
        if body is not self._body or body.done or self._closing:
            return
        if body.received == mark and not self._paused:
            self._timed_out()
            body.finish(BadRequest("the body stalled"))  # the handler's read fails; its answer is not written
            return
        self._wait_timer = asyncio.get_running_loop().call_later(BODY_IDLE_TIMEOUT, self._body_idle, body,
                                                                 body.received)

    def _head_late(self) -> None:
        self._wait_timer = None
        if not self._busy and not self._closing:
            self._timed_out()

    def _timed_out(self) -> None:
        """The caller is too slow with a head or a body: 408, then the connection is closed."""
        self._closing = True
        self._buf.clear()
        if not self.transport.is_closing():
            self.transport.write(serialize(web.Response(status=408, text="meshproxy: request timeout\n"),
                                           HttpVersion(1, 1), False, False))
        self.transport.close()

    def _refuse(self) -> None:
        """A framing error: the fixed 400, then the connection is closed."""
        self._closing = True
        self._buf.clear()
        if not self.transport.is_closing():
            self.transport.write(serialize(_bad_request(), HttpVersion(1, 1), False, False))
        self.transport.close()

    # -- serving
    async def _serve(self, request: Request) -> None:
        try:
            resp = await self._handler(request)
        except BadRequest:  # the body's framing (chunks): the caller's error, answered as a bad head is
            resp = _bad_request()
            resp.force_close()
        except Exception as exc:  # a bug, not the caller's: the caller sees a fixed 500
            log.debug("error handling a request: %r", exc, exc_info=True)
            resp = web.Response(status=500, text=INTERNAL_ERROR)
            resp.force_close()
        body = self._body
        finished = body is None or (body.done and body._exc is None)
        keep = request.keep_alive and resp.keep_alive is not False and finished and not self._closing
        version = request.version if request.version == (1, 0) else HttpVersion(1, 1)
        try:
            data = serialize(resp, version, keep, request.method == "HEAD")
        except (ValueError, TypeError) as exc:
            log.debug("unwritable response: %r", exc)
            data, keep = serialize(web.Response(status=500, text=INTERNAL_ERROR), version, False, False), False
        if not self.transport.is_closing():
            self.transport.write(data)
        self._body = None
        if self._wait_timer is not None:  # the body's idle check
            self._wait_timer.cancel()
            self._wait_timer = None
        self._busy = False
        self._last = asyncio.get_running_loop().time()
        if not keep:
            self._close()
            return
        self._resume()
        if self._buf:
            self._next()


def server(handler):
    """A protocol factory for loop.create_server / connect_accepted_socket."""
    return lambda: HTTP1(handler)
