"""Egress: the app's requests to hosts outside the mesh, decided at its own
sidecar (docs/targets/meshproxy.md, "Egress").

- A Host (or absolute-form authority) that names an external service: the
  caller-side rules decide (deny, then allow, then the default: 403 when
  refused); the port is the Host's, else the external's only http/tls port
  (403 when the Host names a port the external does not declare). `tls`
  ports: the sidecar originates TLS, with SNI = the host and the server's
  certificate verified for that host against the system trust store, or
  `egress.ca_file` when set (meshc up's local stand-in); `http` ports:
  plain HTTP. The request target is forwarded as the bytes that came.
- Any other Host under `allow_any`: forwarded as plain HTTP to that
  host:port (80 when none), no L7 policy; under `registry_only`: 403.
- A `tcp` port: a local listener of its own (only where the workload may
  reach the external); each connection is decided by the rules without
  methods or paths (the checker refuses those on tcp) and piped to the
  host:port (or `dial`), bytes as they are.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time

from aiohttp import web

from ..semantics.hosts import host_of
from ..wire import evaluate as ev
from .identity_headers import forwardable
from .upstream import HOP_BY_HOP, Pool, UpstreamError

log = logging.getLogger("meshproxy")


def egress_context(ca_file: str | None) -> ssl.SSLContext:
    """TLS origination: the system store (or ca_file), host name checked."""
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class EgressMixin:
    cfg: dict

    def _load_egress(self) -> None:
        ca = self.cfg["egress"]["ca_file"]
        if getattr(self, "_egress_ca", object()) == ca and hasattr(self, "egress_pool"):
            return
        self._egress_ca = ca
        ctx = egress_context(ca) if self.cfg["outbound"]["externals"] else None
        if hasattr(self, "egress_pool"):
            self.egress_pool.set_ssl(ctx)
        else:
            self.egress_pool = Pool(ctx)
            self.plain_pool = Pool(None)  # allow_any pass-through

    async def start_egress(self) -> None:
        for ext in self.cfg["outbound"]["externals"]:
            for port in ext["ports"]:
                ep = port["listener"]
                if ep is not None:
                    self._servers.append(await asyncio.start_server(
                        lambda r, w, ext=ext, port=port: self._tcp_external(r, w, ext, port),
                        ep["address"], ep["port"]))

    async def _tcp_external(self, reader, writer, ext: dict, port: dict) -> None:
        from .server import _pipe_both

        if not ev.egress_decision(ext, "", "").allowed:
            writer.close()
            return
        dial = port["dial"]
        addr, number = (dial["address"], dial["port"]) if dial else (ext["hosts"][0], port["port"])
        try:
            ur, uw = await asyncio.wait_for(asyncio.open_connection(addr, number), 10)
        except (OSError, asyncio.TimeoutError):
            writer.close()
            return
        await _pipe_both(reader, writer, ur, uw)

    async def handle_external(self, request: web.BaseRequest, ext: dict, host: str, path: str,
                              target: bytes) -> web.Response:
        from .server import read_body, retryable

        port = ev.external_port(ext, host)
        if port is None or port["protocol"] == "tcp":
            return web.Response(status=403, text=f"meshproxy: `{ext['name']}` declares no http or tls port "
                                                 "for this request\n")
        decision = ev.egress_decision(ext, request.method, path)
        if not decision.allowed:
            return web.Response(status=403, text="RBAC: access denied\n",
                                headers={"x-meshproxy-rule": str(decision.rule)})
        name = host_of(host)
        dial = port["dial"]
        addr, number = (dial["address"], dial["port"]) if dial else (name, port["port"])
        use_tls = port["protocol"] == "tls"
        body = await read_body(request)
        headers = forwardable(request.headers.items())
        retry = ext["retry"] or {}
        retries = retry.get("retries", 0) if isinstance(body, bytes) else 0  # a streamed body is sent once
        per_try = retry.get("per_try_timeout_ms")
        base = retry.get("backoff_base_ms") or 25
        cap = retry.get("backoff_max_ms") or 10 * base
        deadline = time.monotonic() + ext["timeout_ms"] / 1000 if ext["timeout_ms"] else None
        last: web.Response | None = None
        key = (f"external|{ext['name']}", None)  # the retry budget counts as for a service
        for attempt in range(retries + 1):
            if attempt:
                self.state.retries[key[0]] = self.state.retries.get(key[0], 0) + 1
            self.state.active[key] = self.state.active.get(key, 0) + 1
            try:
                last, outcome = await self._external_try(request, ext, addr, number, use_tls, name, host, target,
                                                         headers, body, deadline, per_try)
            finally:
                self.state.active[key] -= 1
                if attempt:
                    self.state.retries[key[0]] -= 1
            if outcome == "timeout":
                return last
            if attempt == retries or not retryable(outcome, retry.get("retry_on") or [], retry.get("on_status") or []):
                break
            if not self._budget_allows(retry, key[0]):
                break
            await asyncio.sleep(random.uniform(0, min(base * 2 ** attempt, cap)) / 1000)
        return last

    async def _external_try(self, request, ext, addr, number, use_tls, name, host, target, headers, body,
                            deadline, per_try) -> tuple[web.Response, int | str]:
        """One attempt: (the answer, its outcome for the retry conditions;
        "timeout" when the external's whole timeout ran out)."""
        from .server import upstream_failure

        left = deadline - time.monotonic() if deadline is not None else None
        limit = min(x for x in (left, per_try / 1000 if per_try else None) if x is not None) \
            if (left is not None or per_try) else None
        if limit is not None and limit <= 0:
            return web.Response(status=504, text="upstream request timeout\n"), "timeout"
        try:
            call = self.egress_pool.request(addr, number, use_tls=use_tls, expected_id=None,
                                            method=request.method, target=target, host=host, headers=headers,
                                            body=body, server_name=name if use_tls else None)
            r = await (asyncio.wait_for(call, limit) if limit is not None else call)
        except UpstreamError as exc:
            log.debug("external call failed: %s", exc)
            return upstream_failure(exc.kind), "connect-failure" if exc.kind == "connect-failure" else exc.kind
        except asyncio.TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                return web.Response(status=504, text="upstream request timeout\n"), "timeout"
            return web.Response(status=504, text="upstream per-try timeout\n"), "per-try-timeout"
        return web.Response(status=r.status, body=r.body,
                            headers=[(k, v) for k, v in r.headers if k not in HOP_BY_HOP]), r.status

    async def pass_through(self, request: web.BaseRequest, host: str, target: bytes) -> web.Response:
        """allow_any: a host nobody declared, as plain HTTP, unchecked."""
        from .server import read_body, upstream_failure

        name = host_of(host)
        _, colon, port = host.rpartition(":")
        number = int(port) if colon and port.isdigit() and not host.endswith("]") else 80
        if not name or not 1 <= number <= 65535:
            return web.Response(status=400, text="meshproxy: no host to pass through to\n")
        body = await read_body(request)
        try:
            r = await self.plain_pool.request(name, number, use_tls=False, expected_id=None, method=request.method,
                                              target=target, host=host, headers=forwardable(request.headers.items()),
                                              body=body)
        except UpstreamError as exc:
            log.debug("pass-through call failed: %s", exc)
            return upstream_failure(exc.kind)
        return web.Response(status=r.status, body=r.body,
                            headers=[(k, v) for k, v in r.headers if k not in HOP_BY_HOP])
