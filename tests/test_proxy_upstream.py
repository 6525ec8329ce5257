"""meshproxy's upstream client (meshpolicy/proxy/upstream.py) against a real
socket server that answers with exact bytes (tests/proxy_raw_app.py): the
target goes out byte for byte, a connection is never reused after a
response whose framing is wrong, and the idle pool stays bounded."""

from __future__ import annotations

import asyncio
import json

import pytest

from meshpolicy.proxy.upstream import Pool, StreamedBody, UpstreamError

from . import proxy_raw_app


async def _serve():
    server = await asyncio.start_server(lambda r, w: proxy_raw_app.serve_conn(r, w, "app"), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _get(pool: Pool, port: int, target: bytes, headers=(), body=b""):
    return await pool.request("127.0.0.1", port, use_tls=False, expected_id=None, method="GET", target=target,
                              host="app", headers=list(headers), body=body)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


@pytest.mark.parametrize("target", [b"/a?x=%0d%0aGET%20/b%20HTTP/1.1%0d%0ahost:%20x%0d%0a%0d%0a", b"/a?a=%20b",
                                    b"/a?a=1+2", b"/a?a=%E2%82%AC", b"/a?a=b%23c", b"/a%2541?x=%2541",
                                    b"/a?x=%00", b"/a?" + b"x" * 8000])
def test_the_target_is_sent_byte_for_byte(target):
    async def main():
        server, port = await _serve()
        pool = Pool(None)
        async with server:
            first = await _get(pool, port, target)
            second = await _get(pool, port, b"/second")
        return first, second, pool.connections("127.0.0.1", port)

    first, second, conns = run(main())
    assert json.loads(first.body)["target"].encode("latin-1") == target
    assert json.loads(second.body)["target"] == "/second"
    assert conns == 1  # one kept-alive connection carried both: nothing extra was read on it


@pytest.mark.parametrize("target", [b"/a\r\nGET /b", b"/a b", b"/a\x00", b"/a\nx", b"/a\rx", b"/\xe2\x82\xac", b""])
def test_a_target_that_is_not_one_request_line_is_never_written(target):
    async def main():
        server, port = await _serve()
        pool = Pool(None)
        async with server:
            with pytest.raises(UpstreamError):
                await _get(pool, port, target)
            return await _get(pool, port, b"/after")

    assert json.loads(run(main()).body)["target"] == "/after"


@pytest.mark.parametrize("header", [("x-a", "1\r\nx-injected: 1"), ("x-a", "1\nx"), ("x-a", "1\rx"),
                                    ("x a", "1"), ("x-a:", "1"), ("x-a", "\x00")])
def test_a_header_that_would_break_the_request_head_is_refused(header):
    async def main():
        server, port = await _serve()
        pool = Pool(None)
        async with server:
            with pytest.raises(UpstreamError):
                await _get(pool, port, b"/h", [header])
            return await _get(pool, port, b"/after")

    assert "x-injected" not in run(main()).body.decode()


@pytest.mark.parametrize("mode", sorted(proxy_raw_app.MODES))
def test_no_reuse_after_a_framing_error(mode):
    """Each later request gets its own response, whatever the one before did."""
    async def main():
        server, port = await _serve()
        pool = Pool(None)
        async with server:
            try:
                first = await _get(pool, port, b"/bad", [("x-raw-frame", mode)])
            except UpstreamError as exc:
                first = exc
            later = [await _get(pool, port, b"/later/%d" % i) for i in range(5)]
        return first, later

    first, later = run(main())
    if mode == "extra":  # the first answer is well framed; what follows it is not an answer
        assert first.status == 200
    else:
        assert isinstance(first, UpstreamError) and first.kind in ("protocol", "reset"), first
    for i, r in enumerate(later):
        assert r.status == 200 and json.loads(r.body)["target"] == f"/later/{i}", (mode, r.body[:80])


def test_the_idle_pool_is_bounded_and_swept():
    async def main():
        server, port = await _serve()
        pool = Pool(None, max_idle=4, idle_timeout=0.2)
        async with server:
            await asyncio.gather(*(_get(pool, port, b"/burst", [("x-raw-hold", "100")]) for _ in range(30)))
            after_burst = pool.connections("127.0.0.1", port)
            idle = len(pool.idle.get(("127.0.0.1", port), []))
            await asyncio.sleep(0.3)
            swept = pool.sweep()
            left = pool.connections("127.0.0.1", port)
        return after_burst, idle, swept, left

    after_burst, idle, swept, left = run(main())
    assert after_burst == idle == 4
    assert swept == 4 and left == 0


def test_a_large_body_is_streamed_with_its_length_or_chunked():
    size = 5 * (1 << 20) + 3

    async def chunks():
        for _ in range(5):
            yield b"y" * (1 << 20)
        yield b"yyy"

    async def main():
        server, port = await _serve()
        pool = Pool(None)
        async with server:
            with_length = await _get(pool, port, b"/up", body=StreamedBody(b"", chunks(), size))
            chunked = await _get(pool, port, b"/up", body=StreamedBody(b"yy", chunks(), None))
        return json.loads(with_length.body), json.loads(chunked.body)

    with_length, chunked = run(main())
    assert with_length["body_len"] == size and chunked["body_len"] == size + 2
