"""The built-in echo app: what `meshc up` runs for a service without a command.

It answers every request with JSON naming its service, version and instance,
the request's method, path and headers, and the trace ids it saw. Request
headers make its behaviour observable through the mesh:

- `x-echo-status: 503`  answer with that status;
- `x-echo-fail: N` with `x-echo-id: ID`  fail (503) the first N attempts
  carrying that id, then succeed (retries become countable);
- `x-echo-delay: 250ms`  wait before answering (timeouts, fault tests);
- `x-echo-call: svc-a:/path,svc-b:/path`  call the first service (at that
  path, `/` if none) through the outbound sidecar, passing the rest of the
  chain and the trace headers on, and embed its answer (trace propagation).

`GET /__echo/attempts?id=ID` reports how many attempts with that id arrived;
`POST /__echo/mode?status=503` makes this instance answer every request with
that status until `POST /__echo/mode?status=0` (a failing instance for
outlier-detection tests); `&delay=300ms` (or `delay` alone) makes it wait that
long before every answer (a slow instance, for least-request balancing). Each
`mode` call sets both: what it leaves out is reset.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys

from aiohttp import ClientSession, ClientTimeout, web

TRACE_HEADERS = ("traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
                 "x-b3-sampled", "x-b3-flags", "b3", "x-request-id")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)$")


def parse_delay(text: str) -> float:
    m = _DURATION.fullmatch(text.strip())
    if not m:
        return 0.0
    value = float(m.group(1))
    return value / 1000 if m.group(2) == "ms" else value


def trace_ids(headers) -> dict:
    out = {}
    tp = headers.get("traceparent")
    if tp and len(tp.split("-")) >= 3:
        out["w3c"] = tp.split("-")[1]
    if headers.get("x-b3-traceid"):
        out["b3"] = headers["x-b3-traceid"]
    elif headers.get("b3"):
        out["b3"] = headers["b3"].split("-")[0]
    return out


class EchoApp:
    def __init__(self, service: str, version: str, instance: str, outbound: str | None, run: str = ""):
        self.run = run  # the `meshc up` run's token: shows which run's app answered
        self.service = service
        self.version = version
        self.instance = instance
        self.outbound = outbound
        self.attempts: dict[str, int] = {}
        self.total = 0
        self.forced_status = 0
        self.forced_delay = 0.0  # seconds, before every answer

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/__echo/attempts":
            rid = request.query.get("id", "")
            return web.json_response({"id": rid, "attempts": self.attempts.get(rid, 0), "total": self.total,
                                      "run": self.run})
        if request.path == "/__echo/mode" and request.method == "POST":
            status = request.query.get("status", "0") or "0"
            if not status.isdigit():
                return web.json_response({"error": "status must be a number"}, status=400)
            self.forced_status = int(status)
            self.forced_delay = parse_delay(request.query.get("delay", "0ms"))
            return web.json_response({"forced_status": self.forced_status, "forced_delay_s": self.forced_delay})
        self.total += 1
        h = request.headers
        rid = h.get("x-echo-id")
        if rid:
            self.attempts[rid] = self.attempts.get(rid, 0) + 1
        if h.get("x-echo-delay"):
            await asyncio.sleep(parse_delay(h["x-echo-delay"]))
        if self.forced_delay:
            await asyncio.sleep(self.forced_delay)
        body = {
            "service": self.service,
            "version": self.version,
            "instance": self.instance,
            "run": self.run,
            "method": request.method,
            "path": request.path,
            "headers": {k.lower(): v for k, v in h.items()},
            "trace": trace_ids({k.lower(): v for k, v in h.items()}),
        }
        if rid and h.get("x-echo-fail", "").isdigit() and self.attempts[rid] <= int(h["x-echo-fail"]):
            body["failed_attempt"] = self.attempts[rid]
            return web.json_response(body, status=503)
        if h.get("x-echo-call") and self.outbound:
            chain = [s.strip() for s in h["x-echo-call"].split(",") if s.strip()]
            body["downstream"] = await self.call(chain, h)
        status = int(h["x-echo-status"]) if h.get("x-echo-status", "").isdigit() else 200
        if self.forced_status:
            status = self.forced_status
        return web.json_response(body, status=status)

    async def call(self, chain: list[str], incoming) -> dict:
        (target, _, path), rest = chain[0].partition(":"), chain[1:]
        headers = {k: v for k, v in incoming.items() if k.lower() in TRACE_HEADERS}
        headers["host"] = target
        if rest:
            headers["x-echo-call"] = ",".join(rest)
        try:
            async with ClientSession(timeout=ClientTimeout(total=10)) as s:
                async with s.get(f"{self.outbound}{path or '/'}", headers=headers) as resp:
                    text = await resp.text()
                    try:
                        return {"status": resp.status, "body": json.loads(text)}
                    except ValueError:
                        return {"status": resp.status, "body": text}
        except Exception as exc:  # reported in the answer: the chain test reads it
            return {"status": 0, "error": f"{type(exc).__name__}: {exc}"}


def make_app(service: str, version: str, instance: str = "0", outbound: str | None = None,
             run: str = "") -> web.Application:
    echo = EchoApp(service, version, instance, outbound, run)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo.handle)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="meshpolicy.run.echo", description="meshc's built-in echo app")
    p.add_argument("--service", required=True)
    p.add_argument("--version", default="")
    p.add_argument("--instance", default="0")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--outbound", default=os.environ.get("MESH_OUTBOUND"),
                   help="URL of this workload's outbound sidecar listener")
    p.add_argument("--run-token", default="", help="returned in every answer (which `meshc up` run this is)")
    a = p.parse_args(argv)
    app = make_app(a.service, a.version, a.instance, a.outbound, a.run_token)
    try:
        web.run_app(app, host=a.host, port=a.port, print=lambda *_: None, access_log=None,
                    handle_signals=True)
    except OSError as exc:  # one line in the log, not a traceback
        print(f"echo app for {a.service}: cannot listen on {a.host}:{a.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
