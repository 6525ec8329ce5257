"""A small HTTP/1.1 client for sidecar-to-sidecar and sidecar-to-app calls.

aiohttp's client cannot check a peer's SPIFFE ID before the request is
sent, and it re-encodes request targets; so upstream calls use this instead:
mTLS connect, check the peer's URI SAN, then send the target bytes as given.

Connections are kept alive and pooled per endpoint, within bounds (at most
`max_idle` idle per endpoint, each closed after `idle_timeout` seconds
unused). A connection is reused only after an exchange whose framing was
exactly right: any doubt about where one response ends (a malformed status
or header line, a bad or conflicting content-length, bad chunk framing, a
premature close, bytes the server sent unasked) closes it, so no later
request can read another request's response.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .http_grammar import DIGITS, FIELD_CHAR, FIELD_VALUE, TOKEN, chunk_size, header_line
from .tls import peer_spiffe_id

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "content-length", "host", "expect"}  # expect: the sidecar answers 100-continue itself

# Full-line matches, CRLF included: a lone CR or LF anywhere is a framing error.
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: " + FIELD_CHAR + rb"*)?\r\n")
_HEADER_LINE = header_line(rb"\r\n")
_CHUNK_SIZE = chunk_size(rb"\r\n")
_DIGITS = DIGITS
_HEADER_NAME = re.compile(TOKEN.decode("ascii"))
_HEADER_VALUE = FIELD_VALUE
# Per endpoint: enough idle connections for a busy caller (16 concurrent
# requests kept 8 busy reconnecting over TLS), few enough that a burst's
# hundreds of connections are not all kept.
MAX_IDLE = 32
IDLE_TIMEOUT = 30.0
_MAX_LINE = 64 * 1024
_MAX_HEADERS = 200


class UpstreamError(Exception):
    """kind: connect-failure, reset, identity, protocol (a framing error)."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class FramingError(ValueError):
    """The response's framing cannot be trusted; its connection is closed."""


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class StreamedBody:
    """A request body too large to hold for retries: `head` was read already,
    the rest comes from `rest`. `length` is the whole body's length when the
    caller gave one (else it is sent chunked)."""

    head: bytes
    rest: AsyncIterator[bytes]
    length: int | None


class _Conn(asyncio.Protocol):
    """One upstream connection: an asyncio Protocol with its own read buffer,
    so a response already received is parsed without a task switch per line
    (a StreamReader costs a coroutine round trip per readuntil)."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.pos = 0  # start of what is not parsed yet
        self.eof = False
        self.exc: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.paused = False
        self.drain_waiter: asyncio.Future | None = None
        self.idle_since = 0.0

    # -- asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc) -> None:
        self.eof = True
        self.exc = exc
        self._wake()
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- writing
    def write(self, data: bytes) -> None:
        self.transport.write(data)

    async def drain(self) -> None:
        if self.transport.is_closing() or (self.eof and self.exc is not None):
            raise ConnectionResetError("Connection lost")
        while self.paused:
            self.drain_waiter = asyncio.get_running_loop().create_future()
            await self.drain_waiter
            if self.transport.is_closing():
                raise ConnectionResetError("Connection lost")

    # -- reading: take_* return None when the bytes are not here yet
    async def _more(self) -> None:
        """Wait for more bytes; at the end of the stream, the exchange is cut short."""
        if self.exc is not None:
            raise self.exc
        if self.eof:
            raise asyncio.IncompleteReadError(bytes(self.buf[self.pos:]), None)
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def take_line(self) -> bytes | None:
        i = self.buf.find(b"\n", self.pos)
        if i < 0:
            if len(self.buf) - self.pos > _MAX_LINE:  # as StreamReader's limit: the exchange is reset
                raise asyncio.LimitOverrunError("line too long", 0)
            return None
        if i + 1 - self.pos > _MAX_LINE:
            raise asyncio.LimitOverrunError("line too long", 0)
        line = bytes(self.buf[self.pos:i + 1])
        self.pos = i + 1
        return line

    async def line(self) -> bytes:
        while (line := self.take_line()) is None:
            await self._more()
        return line

    def take(self, n: int) -> bytes | None:
        if len(self.buf) - self.pos < n:
            return None
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return data

    async def exactly(self, n: int) -> bytes:
        while (data := self.take(n)) is None:
            await self._more()
        return data

    async def to_eof(self) -> bytes:
        while not self.eof:
            await self._more()
        if self.exc is not None:
            raise self.exc
        data = bytes(self.buf[self.pos:])
        self.pos = len(self.buf)
        return data

    def consumed(self) -> None:
        """The exchange is over: drop what it parsed (anything after it stays, and makes the connection unusable)."""
        del self.buf[:self.pos]
        self.pos = 0

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def reusable(self) -> bool:
        """Still open, and the server sent nothing since its last response
        (unasked bytes would be read as the next request's response)."""
        return not self.eof and not self.buf and not self.transport.is_closing()


class Pool:
    def __init__(self, ssl_context: ssl.SSLContext | None, max_idle: int = MAX_IDLE,
                 idle_timeout: float = IDLE_TIMEOUT):
        self.ssl = ssl_context
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.idle: dict[tuple[str, int], list[_Conn]] = {}
        self.open_count: dict[tuple[str, int], int] = {}

    def set_ssl(self, ctx: ssl.SSLContext | None) -> None:
        """New certificates: new connections use them; idle ones are dropped."""
        self.ssl = ctx
        self.close_idle()

    def close_idle(self, older_than: float | None = None) -> int:
        """Close idle connections (all, or those unused since `older_than`); how many."""
        closed = 0
        for key, conns in list(self.idle.items()):
            keep = [c for c in conns if older_than is not None and c.idle_since > older_than]
            for c in conns:
                if c not in keep:
                    self._drop(key, c)
                    closed += 1
            if keep:
                self.idle[key] = keep
            else:
                del self.idle[key]
        return closed

    def sweep(self) -> int:
        """Close connections idle longer than idle_timeout (called periodically)."""
        return self.close_idle(older_than=time.monotonic() - self.idle_timeout)

    async def _connect(self, addr: str, port: int, expected_id: str | None, use_tls: bool,
                       server_name: str | None = None) -> _Conn:
        """server_name: SNI and the name the certificate must carry (TLS
        origination to an external host); None: a mesh peer, checked by
        SPIFFE ID instead."""
        try:
            transport, conn = await asyncio.get_running_loop().create_connection(
                _Conn, addr, port, ssl=self.ssl if use_tls else None,
                server_hostname=(server_name or "") if use_tls else None)
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError("connect-failure", str(exc)) from None
        if use_tls and expected_id is not None:
            got = peer_spiffe_id(transport.get_extra_info("peercert"))
            if got != expected_id:
                transport.close()
                raise UpstreamError("identity", f"peer is {got!r}, expected {expected_id!r}")
        key = _key(addr, port, server_name)
        self.open_count[key] = self.open_count.get(key, 0) + 1
        return conn

    def connections(self, addr: str, port: int) -> int:
        return self.open_count.get((addr, port), 0)

    def _take_idle(self, key) -> _Conn | None:
        idle = self.idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.reusable():
                return conn
            self._drop(key, conn)
        return None

    async def request(self, addr: str, port: int, *, use_tls: bool, expected_id: str | None, method: str,
                      target: bytes, host: str, headers: list[tuple[str, str]],
                      body: bytes | StreamedBody, server_name: str | None = None) -> Response:
        key = _key(addr, port, server_name)  # one TLS name per pooled connection
        conn = self._take_idle(key) or await self._connect(addr, port, expected_id, use_tls, server_name)
        try:
            resp, keep = await _exchange(conn, method, target, host, headers, body)
        except FramingError as exc:
            self._drop(key, conn)
            raise UpstreamError("protocol", str(exc)) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self._drop(key, conn)
            raise UpstreamError("reset", str(exc) or type(exc).__name__) from None
        except BaseException:
            self._drop(key, conn)
            raise
        idle = self.idle.setdefault(key, [])
        if keep and conn.reusable() and len(idle) < self.max_idle:
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            self._drop(key, conn)
        return resp

    def _drop(self, key, conn: _Conn) -> None:
        conn.close()
        self.open_count[key] = max(0, self.open_count.get(key, 1) - 1)


def _key(addr: str, port: int, server_name: str | None) -> tuple:
    return (addr, port) if server_name is None else (addr, port, server_name)


def _head(method: str, target: bytes, host: str, headers, body) -> bytes:
    """The request head; every line is checked, so nothing a caller sent can end it early."""
    if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", method) or not re.fullmatch(rb"[!-~]+", target):
        raise ValueError("refusing to write an invalid request line")
    out = [method.encode("ascii") + b" " + target + b" HTTP/1.1", b"host: " + _value(host)]
    if isinstance(body, StreamedBody):
        out.append(b"content-length: %d" % body.length if body.length is not None else b"transfer-encoding: chunked")
    else:
        out.append(b"content-length: %d" % len(body))
    for k, v in headers:
        if k.lower() in HOP_BY_HOP:
            continue
        if not _HEADER_NAME.fullmatch(k):
            raise ValueError(f"refusing to write header name {k!r}")
        out.append(k.encode("ascii") + b": " + _value(v))
    return b"\r\n".join(out) + b"\r\n\r\n"


def _value(v: str) -> bytes:
    raw = v.encode("utf-8", "surrogateescape")  # the bytes the caller sent (aiohttp decodes this way)
    if not _HEADER_VALUE.fullmatch(raw):
        raise ValueError("refusing to write a header value with control bytes")
    return raw


async def _send_body(conn: _Conn, body: StreamedBody) -> None:
    chunked = body.length is None
    sent = 0

    def put(data: bytes) -> None:
        nonlocal sent
        sent += len(data)
        conn.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)

    if body.head:
        put(body.head)
    async for data in body.rest:
        if data:
            put(data)
            await conn.drain()
    if chunked:
        conn.write(b"0\r\n\r\n")
    elif sent != body.length:
        raise ValueError("the caller's body ended early")


async def _exchange(conn: _Conn, method: str, target: bytes, host: str, headers, body):
    head = _head(method, target, host, headers, body)
    if isinstance(body, bytes):
        conn.write(head + body)  # one write: one TLS record and one send for a small request
    else:
        conn.write(head)
        await _send_body(conn, body)
    await conn.drain()
    while True:
        status_line = conn.take_line() or await conn.line()
        m = _STATUS_LINE.fullmatch(status_line)
        if m is None:
            raise FramingError(f"bad status line {status_line[:40]!r}")
        status = int(m.group(2))
        keep = m.group(1) == b"1"
        out_headers, length, chunked, keep = await _read_headers(conn, keep)
        if status == 101:
            raise FramingError("unexpected protocol switch")
        if 100 <= status < 200:  # interim (100 Continue): the final response follows
            continue
        break
    if method == "HEAD" or status in (204, 304):
        data = b""
    elif chunked:
        data = await _read_chunked(conn)
    elif length is not None:
        data = conn.take(length)
        if data is None:
            data = await conn.exactly(length)
    else:  # delimited by close: never reused
        data = await conn.to_eof()
        keep = False
    conn.consumed()
    return Response(status, out_headers, data), keep


async def _read_headers(conn: _Conn, keep: bool):
    out: list[tuple[str, str]] = []
    length: int | None = None
    chunked = False
    other_coding = False
    while True:
        line = conn.take_line() or await conn.line()
        if line == b"\r\n":
            break
        m = _HEADER_LINE.fullmatch(line)
        if m is None or len(out) >= _MAX_HEADERS:
            raise FramingError(f"bad header line {line[:40]!r}")
        k, v = m.group(1).decode("ascii").lower(), _header_text(m.group(2))
        if k == "content-length":
            for item in m.group(2).split(b","):
                if not _DIGITS.fullmatch(item.strip()):
                    raise FramingError(f"bad content-length {v!r}")
                n = int(item.strip())
                if length is not None and n != length:
                    raise FramingError("conflicting content-length")
                length = n
        elif k == "transfer-encoding":
            # bytes: str.strip() would take \xa0 and \x85 for blanks and read `chunked\xa0` as chunked
            codings = [c.strip(b" \t").lower() for c in m.group(2).split(b",") if c.strip(b" \t")]
            if chunked or not codings:
                raise FramingError("bad transfer-encoding")
            chunked = codings[-1] == b"chunked"
            other_coding = not chunked
        elif k == "connection":
            tokens = {t.strip().lower() for t in v.split(",")}
            keep = (keep and "close" not in tokens) or (not keep and "keep-alive" in tokens)
        out.append((k, v))
    if (chunked or other_coding) and length is not None:
        raise FramingError("both content-length and transfer-encoding")  # RFC 9112 6.3: a smuggling sign
    if other_coding:
        length, keep = None, False  # read to close
    return out, length, chunked, keep


def _header_text(raw: bytes) -> str:
    """A response header value as text that aiohttp writes back as the same
    bytes (it encodes UTF-8): exact for ASCII and UTF-8 values; other
    obs-text bytes (rare, RFC 9110 deprecates them) come out as latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


async def _read_chunked(conn: _Conn) -> bytes:
    out = bytearray()
    while True:
        size_line = await conn.line()
        m = _CHUNK_SIZE.fullmatch(size_line)
        if m is None:
            raise FramingError(f"bad chunk size {size_line[:40]!r}")
        size = int(m.group(1), 16)
        if size == 0:
            while (line := await conn.line()) != b"\r\n":
                if _HEADER_LINE.fullmatch(line) is None:
                    raise FramingError("bad trailer")
            return bytes(out)
        out += await conn.exactly(size)
        if await conn.exactly(2) != b"\r\n":
            raise FramingError("chunk not followed by CRLF")
