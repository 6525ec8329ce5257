"""A small HTTP/1.1 client for sidecar-to-sidecar calls.

aiohttp's client cannot check a peer's SPIFFE ID before the request is
sent, so upstream calls use this instead: mTLS connect, check the peer's URI
SAN, then send. Connections are kept alive and pooled per endpoint.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from .tls import peer_spiffe_id

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "content-length", "host"}


class UpstreamError(Exception):
    """kind: connect-failure, reset, identity."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class Pool:
    def __init__(self, ssl_context: ssl.SSLContext | None):
        self.ssl = ssl_context
        self.idle: dict[tuple[str, int], list[_Conn]] = {}
        self.open_count: dict[tuple[str, int], int] = {}

    def set_ssl(self, ctx: ssl.SSLContext | None) -> None:
        """New certificates: new connections use them; idle ones are dropped."""
        self.ssl = ctx
        for conns in self.idle.values():
            for c in conns:
                c.close()
        self.idle.clear()

    async def _connect(self, addr: str, port: int, expected_id: str | None, use_tls: bool) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(
                addr, port, ssl=self.ssl if use_tls else None, server_hostname="" if use_tls else None)
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError("connect-failure", str(exc)) from None
        if use_tls and expected_id is not None:
            got = peer_spiffe_id(writer.get_extra_info("peercert"))
            if got != expected_id:
                writer.close()
                raise UpstreamError("identity", f"peer is {got!r}, expected {expected_id!r}")
        key = (addr, port)
        self.open_count[key] = self.open_count.get(key, 0) + 1
        return _Conn(reader, writer)

    def connections(self, addr: str, port: int) -> int:
        return self.open_count.get((addr, port), 0)

    async def request(self, addr: str, port: int, *, use_tls: bool, expected_id: str | None, method: str,
                      target: str, host: str, headers: list[tuple[str, str]], body: bytes) -> Response:
        key = (addr, port)
        idle = self.idle.get(key)
        conn = idle.pop() if idle else await self._connect(addr, port, expected_id, use_tls)
        try:
            resp, keep = await self._exchange(conn, method, target, host, headers, body)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self._drop(key, conn)
            raise UpstreamError("reset", str(exc) or type(exc).__name__) from None
        except BaseException:
            self._drop(key, conn)
            raise
        if keep:
            self.idle.setdefault(key, []).append(conn)
        else:
            self._drop(key, conn)
        return resp

    def _drop(self, key, conn: _Conn) -> None:
        conn.close()
        self.open_count[key] = max(0, self.open_count.get(key, 1) - 1)

    @staticmethod
    async def _exchange(conn: _Conn, method: str, target: str, host: str, headers, body: bytes):
        lines = [f"{method} {target} HTTP/1.1", f"host: {host}", f"content-length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in HOP_BY_HOP]
        conn.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await conn.writer.drain()
        status_line = await conn.reader.readuntil(b"\r\n")
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError(f"bad status line {status_line[:40]!r}")
        status = int(parts[1])
        out_headers: list[tuple[str, str]] = []
        length = None
        chunked = False
        keep = parts[0] == "HTTP/1.1"
        while True:
            line = await conn.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            k, _, v = line.decode("latin-1").partition(":")
            k, v = k.strip().lower(), v.strip()
            if k == "content-length":
                length = int(v)
            elif k == "transfer-encoding" and "chunked" in v.lower():
                chunked = True
            elif k == "connection":
                keep = v.lower() != "close" if keep else v.lower() == "keep-alive"
            out_headers.append((k, v))
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            data = b""
        elif chunked:
            data = await _read_chunked(conn.reader)
        elif length is not None:
            data = await conn.reader.readexactly(length)
        else:
            data = await conn.reader.read()
            keep = False
        return Response(status, out_headers, data), keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)
