"""meshproxy's HTTP/1.1 server (meshpolicy/proxy/http1.py) over a real socket,
with a handler that reports what it was given: requests are framed strictly
(a framing error is a fixed 400 and a closed connection, so nothing after it
is read as a request), pipelined requests are answered in order, header
bytes reach the handler unchanged. The mesh-level behaviour is
tests/test_conformance.py's and tests/test_proxy_differential.py's."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp import web

from meshpolicy.proxy import http1, request_target
from meshpolicy.proxy.server import BAD_TARGET


async def _handler(request):
    body = b""
    if request.body_exists:
        while chunk := await request.content.readany():
            body += chunk
    return web.Response(text=json.dumps({
        "method": request.method, "target": request.raw_path, "version": list(request.version),
        "headers": [[k, v.encode("utf-8", "surrogateescape").decode("latin-1")] for k, v in request.headers.items()],
        "body": body.decode("latin-1")}))


def _exchange(raw: bytes, *, chunks: list[bytes] | None = None, wait: float = 0.3) -> tuple[bytes, bool]:
    """Send raw (or chunks, one by one) to a fresh server; (every byte
    answered until the server closed or went quiet, whether it closed)."""

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(http1.server(_handler), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        def client():
            s = socket.create_connection(("127.0.0.1", port), timeout=wait)
            for part in chunks or [raw]:
                s.sendall(part)
            out, closed = b"", False
            try:
                while data := s.recv(65536):
                    out += data
                closed = True
            except TimeoutError:
                pass
            s.close()
            return out, closed

        try:
            return await loop.run_in_executor(None, client)
        finally:
            server.close()

    return asyncio.run(main())


def _responses(out: bytes) -> list[tuple[int, dict, bytes]]:
    got = []
    while out:
        head, _, rest = out.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(line.decode("latin-1").lower().split(": ", 1) for line in lines[1:])
        n = int(headers.get("content-length", 0))
        got.append((int(lines[0].split(b" ")[1]), headers, rest[:n]))
        out = rest[n:]
    return got


def test_pipelined_requests_are_answered_in_order_on_one_connection():
    out, closed = _exchange(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n"
                            b"POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
                            b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\nxy\r\n1;e=1\r\nz\r\n0\r\n\r\n")
    answers = _responses(out)
    assert [json.loads(b)["target"] for _s, _h, b in answers] == ["/a", "/b", "/c"]
    assert [json.loads(b)["body"] for _s, _h, b in answers] == ["", "abc", "xyz"]
    assert not closed


def test_a_head_split_over_many_sends_is_one_request():
    raw = b"GET /split HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n\r\n"
    out, _ = _exchange(b"", chunks=[raw[i:i + 3] for i in range(0, len(raw), 3)])
    assert json.loads(_responses(out)[0][2])["target"] == "/split"


@pytest.mark.parametrize("raw", [
    # both framings: a front end and a back end could disagree on where the body ends
    b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n",
    b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n",
    b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 1, 1\r\n\r\nx",
    b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n",
    b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n",
    b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
    b"GET /a HTTP/1.1\nhost: x\n\n",  # bare LF line ends
    b"GET /a HTTP/1.1\r\nhost: x\nx-a: 1\r\n\r\n",
    b"GET /a HTTP/1.1\r\nhost: x\rx-a: 1\r\n\r\n",  # a lone CR inside a value
    b"GET /a HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n folded\r\n\r\n",  # obs-fold
    b"GET /a HTTP/1.1\r\nhost : x\r\n\r\n",  # space before the colon
    b"GET /a\x01b HTTP/1.1\r\nhost: x\r\n\r\n",
    b"GET  /a HTTP/1.1\r\nhost: x\r\n\r\n",
    b"GET /a HTTP/1.1 \r\nhost: x\r\n\r\n",
    b"G\xc3\x89T /a HTTP/1.1\r\nhost: x\r\n\r\n",
    b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nhost: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\nx-long: " + b"v" * 8200 + b"\r\n\r\n",
    b"GET /a HTTP/1.1\r\n" + b"x-h: 1\r\n" * 129 + b"\r\n",
])
def test_a_framing_error_is_400_and_the_connection_is_closed(raw):
    # a second request follows: it must never be served (the first one's end is unknown)
    out, closed = _exchange(raw + b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n")
    answers = _responses(out)
    assert [s for s, _h, _b in answers] == [400], out[:300]
    assert answers[0][2] == BAD_TARGET.encode()  # fixed text: nothing the caller sent is echoed
    assert answers[0][1]["connection"] == "close" and closed
    assert b"smuggled" not in out


def test_a_bad_line_is_refused_before_the_head_ends():
    """A bare-LF head never ends in CRLF CRLF: it is refused, not waited for."""
    out, closed = _exchange(b"GET /a HTTP/1.1\nhost: x\n", wait=2)
    assert _responses(out)[0][0] == 400 and closed


def test_bad_chunk_framing_closes_the_connection_after_the_answer():
    out, closed = _exchange(b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n"
                            b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n")
    assert closed and b"smuggled" not in out
    assert all(s >= 400 for s, _h, _b in _responses(out))


def test_header_bytes_reach_the_handler_unchanged():
    out, _ = _exchange(b"GET /a?q=%0d%0a HTTP/1.1\r\nhost: x\r\nX-Mixed-Case: a\xffb \xe2\x82\xac\t\r\n"
                       b"x-empty:\r\n\r\n")
    seen = json.loads(_responses(out)[0][2])
    assert seen["target"] == "/a?q=%0d%0a"
    assert ["X-Mixed-Case", "a\xffb \xe2\x82\xac"] in seen["headers"]  # latin-1 view of the raw bytes
    assert ["x-empty", ""] in seen["headers"]


def test_connection_close_and_http_1_0_end_the_connection():
    out, closed = _exchange(b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    assert [json.loads(b)["target"] for _s, _h, b in _responses(out)] == ["/a"] and closed
    out, closed = _exchange(b"GET /a HTTP/1.0\r\nhost: x\r\n\r\n")
    _status, headers, body = _responses(out)[0]
    assert json.loads(body)["version"] == [1, 0] and headers["connection"] == "close" and closed


def test_a_body_the_handler_did_not_read_closes_the_connection():
    async def early(request):
        return web.Response(status=403, text="no\n")

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(http1.server(early), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly-part")
        data = await asyncio.wait_for(reader.read(), 5)  # read to the close
        writer.close()
        server.close()
        return data

    data = asyncio.run(main())
    assert data.startswith(b"HTTP/1.1 403 ") and b"connection: close" in data.lower()


def test_the_target_memo_is_bounded_and_agrees_with_the_computation():
    request_target._MEMO.clear()
    targets = [f"/p/{i}/../q%41?x={i}" for i in range(request_target._MEMO_SIZE + 50)] + ["/a b", "/" + "x" * 300]
    for t in targets:
        assert request_target.forward_target(t) == request_target._forward_target(t)
        assert request_target.forward_target(t) == request_target._forward_target(t)  # from the memo
    assert len(request_target._MEMO) <= request_target._MEMO_SIZE
    assert "/" + "x" * 300 not in request_target._MEMO  # long targets are not kept


def test_a_forwarded_answer_is_written_as_the_same_web_response_would_be():
    headers = [("server", "nginx"), ("x-a", "b\xe2\x82\xac"), ("content-type", "text/plain")]
    version = http1.HttpVersion(1, 1)
    for status, body in [(200, b"ok\n"), (404, b""), (204, b""), (599, b"x")]:
        for keep, head_only in [(True, False), (False, False), (True, True)]:
            light = http1.serialize(http1.Answer(status, headers, body), version, keep, head_only)
            full = http1.serialize(web.Response(status=status, body=body, headers=headers), version, keep, head_only)
            assert light == full
