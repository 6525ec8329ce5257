"""An HTTP/1.1 app that reports the bytes it was sent, for the data-plane tests
(tests/test_proxy_*.py). Unlike the echo app it decodes nothing: the answer is
JSON with the request line's target, the header lines (latin-1, so every byte
shows as one character) and the body's length and SHA-256.

`python tests/proxy_raw_app.py --port N [--service S]`; keep-alive. Request
headers steer it: `x-raw-hold: MS` answers after that many milliseconds,
`x-raw-status: N` with that status, `x-raw-frame: MODE` with a response whose
framing is wrong (MODES). `GET /__raw/log` returns the last requests seen.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json

LOG: list[dict] = []
# Responses a broken or hostile app might send; after each, a proxy must not
# reuse the connection (the bytes after the first response are not an answer).
MODES = {
    "extra": lambda out: (b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(out) + out
                          + b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"),
    "cl-te": lambda out: (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"
                          b"%x\r\n%s\r\n0\r\n\r\n" % (len(out), out)),
    "bad-cl": lambda out: b"HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n" + out,
    "two-cl": lambda out: (b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\ncontent-length: 2\r\n\r\n"
                           % len(out) + out),
    "short": lambda out: b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (len(out) + 100) + out,
    "bare-lf": lambda out: b"HTTP/1.1 200 OK\ncontent-length: %d\n\n" % len(out) + out,
    "bad-chunk": lambda out: (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                              b"%x\r\n%sXX0\r\n\r\n" % (len(out), out)),
}


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    names = {k.lower(): v for k, v in headers}
    if "chunked" in names.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            size = int((await reader.readuntil(b"\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\n")).strip():
                    pass
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readuntil(b"\n")
    n = int(names.get("content-length", "0") or 0)
    return await reader.readexactly(n) if n else b""


async def serve_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, service: str) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head[:-4].split(b"\r\n")
            method, _, rest = lines[0].partition(b" ")
            target, _, version = rest.rpartition(b" ")
            headers = []
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                headers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
            body = await _read_body(reader, headers)
            steer = {k.lower(): v for k, v in headers if k.lower().startswith("x-raw-")}
            if steer.get("x-raw-hold", "").isdigit():
                await asyncio.sleep(int(steer["x-raw-hold"]) / 1000)
            if target == b"/__raw/log":
                out = json.dumps(LOG).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(out) + out)
                await writer.drain()
                continue
            doc = {"service": service, "method": method.decode("latin-1"), "target": target.decode("latin-1"),
                   "version": version.decode("latin-1"), "headers": headers, "body_len": len(body),
                   "body_sha256": hashlib.sha256(body).hexdigest()}
            LOG.append(doc)
            del LOG[:-50]
            out = json.dumps(doc).encode()
            mode = MODES.get(steer.get("x-raw-frame", ""))
            if mode:  # kept open (a hostile app would), except "short", which closes early
                writer.write(mode(out))
                await writer.drain()
                if steer["x-raw-frame"] == "short":
                    return
                continue
            status = int(steer["x-raw-status"]) if steer.get("x-raw-status", "").isdigit() else 200
            extra = b"".join(b"x-raw-reply: %s\r\n" % v.encode("latin-1") for k, v in headers
                             if k.lower() == "x-raw-reply")  # echoed back as a response header
            writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
                         % (status, len(out), extra) + out)
            await writer.drain()
            if any(k.lower() == "connection" and v.lower() == "close" for k, v in headers):
                return
    except (ConnectionError, OSError, ValueError):
        pass
    finally:
        writer.close()


async def main(host: str, port: int, service: str) -> None:
    server = await asyncio.start_server(lambda r, w: serve_conn(r, w, service), host, port, limit=1 << 20)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--service", default="app")
    a = p.parse_args()
    asyncio.run(main(a.host, a.port, a.service))
