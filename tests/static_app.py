"""A local app for tests with real Envoys: every GET is 200 with a fixed body."""

from __future__ import annotations

import http.server


class StaticApp(http.server.BaseHTTPRequestHandler):
    body = b"ok\n"
    protocol_version = "HTTP/1.1"  # keep-alive, as the sidecars' pooled connections expect

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass
