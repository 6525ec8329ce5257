"""A local stand-in for an external service (`meshc up`, docs/up.md).

Answers every request with JSON naming the external it stands in for and
what it received; over TLS for an external's `tls` port, with a certificate
from the run's CA for the external's hosts (the sidecars trust that CA for
egress in a local run), plain HTTP for an `http` port.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def handler(name: str, run: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if 0 < length <= 1 << 20:
                self.rfile.read(length)
            body = json.dumps({"external": name, "run": run, "method": self.command, "path": self.path,
                               "host": self.headers.get("host"), "tls": isinstance(self.connection, ssl.SSLSocket),
                               "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer

        def log_message(self, *_args) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="meshpolicy.run.standin", description="a local stand-in for an external host")
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--run-token", default="")
    a = p.parse_args(argv)
    try:
        srv = ThreadingHTTPServer(("127.0.0.1", a.port), handler(a.name, a.run_token))
    except OSError as exc:
        print(f"stand-in for {a.name}: cannot listen on 127.0.0.1:{a.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(a.cert, a.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.daemon_threads = True
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
