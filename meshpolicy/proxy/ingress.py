"""Ingress mode: a meshproxy started on an ingress workload's config (the
`ingress` section set) takes requests from outside the mesh.

For each request, in this order (docs/semantics.md, "Ingress, tokens and
egress"): the request line is checked as on every listener (400/426); a
token at any accepted provider's locations that none of them validates is
401 (no token passes: the destination's authorization decides; checked
before the host, as jwt_authn filters run before routing); the Host must
match one of `hosts` (404); the first matching rule decides
(none: 404); a forward picks a service by weight, applies the rule's
rewrite and request header operations, and sends the request as a mesh
caller (mTLS with the ingress's identity) through that service's own route.
The token travels unchanged (the forwarded headers are the caller's, minus
hop-by-hop and identity headers), and the callee validates it again.
`https` listeners terminate TLS with the listener's certificate files (no
client certificate asked); when the files change they are loaded into the
listener's context in place, so new connections get the new certificate.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time

from aiohttp import web

from ..wire import evaluate as ev
from . import l7
from .identity_headers import CLIENT_IP, forwardable
from .request_info import header_lists, query_params, request_tokens


def listener_context(listener: dict) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(listener["cert_file"], listener["key_file"])
    return ctx


class IngressMixin:
    cfg: dict

    async def start_ingress(self) -> None:
        from .server import _Server
        from .tls import CertWatcher

        loop = asyncio.get_running_loop()
        self.listener_certs = []
        for listener in self.cfg["ingress"]["listeners"]:
            ctx = listener_context(listener) if listener["protocol"] == "https" else None
            if ctx is not None:
                files = {"cert_file": listener["cert_file"], "key_file": listener["key_file"],
                         "ca_file": listener["cert_file"]}
                self.listener_certs.append((ctx, listener, CertWatcher(files)))
            server = _Server(self.handle_ingress)
            self._servers.append(await loop.create_server(server, listener["address"], listener["port"], ssl=ctx,
                                                          ssl_handshake_timeout=10 if ctx else None))

    async def handle_ingress(self, request: web.BaseRequest) -> web.StreamResponse:
        from .server import _peer, check_request

        started = time.monotonic()
        cfg = self.cfg
        me = cfg["workload"]["service"]
        dest_name = "(none)"

        def done(resp: web.StreamResponse) -> web.StreamResponse:
            self.metrics.observe("ingress", "internet", dest_name, resp.status, time.monotonic() - started)
            self.spans.finish_request(request, resp.status)
            return resp

        checked = check_request(request)
        if isinstance(checked, web.Response):
            return done(checked)
        path, target = checked
        host = request.headers.get("Host", "")
        query = query_params(target)
        headers = header_lists(request)
        single = {k: v[0] for k, v in headers.items()}
        providers = cfg["ingress"]["providers"]
        if providers:
            tokens = request_tokens(self.verifiers, request, query, headers)
            if tokens.unvalidated_token(providers):
                from .server import unauthorized

                return done(unauthorized())
        choice = ev.ingress_route(cfg, host, request.method, path, single, query)
        if choice.kind == "no_host":
            return done(web.Response(status=404, text=f"meshproxy: `{me}` serves no such host\n"))
        if choice.kind == "no_route":
            return done(web.Response(status=404, text="meshproxy: no ingress rule matches\n"))
        rule = choice.route
        if choice.kind == "redirect":
            return done(web.Response(status=choice.status, headers={"location": rule["action"]["uri"]}))
        if choice.kind == "respond":
            return done(web.Response(status=choice.status, text=rule["action"]["body"] or ""))
        preflight = l7.preflight_answer(rule, request)
        if preflight is not None:
            return done(preflight)
        service = self._pick_service(choice.weights)
        dest_name = service
        dest = ev.service_destination(cfg, service)
        new_target, new_host = l7.rewritten(rule, path, target, host)
        if new_target is None:
            from .server import BAD_TARGET

            return done(web.Response(status=400, text=BAD_TARGET))
        new_path = ev.rewritten_path(rule, path)
        # the service's own route, as any caller's request to it is routed
        _, _, client = _peer(request)
        # the caller's headers (token included, byte for byte) after the
        # ingress rule's operations; the service's route matches on them and
        # its rule applies its own operations next
        fwd = l7.request_ops(rule, forwardable(request.headers.items())) + [(CLIENT_IP, client)]
        sent: dict[str, str] = {}
        for k, v in fwd:
            sent.setdefault(k.lower(), v)
        svc_choice = ev.route(cfg, new_host, request.method, new_path, sent, query_params(new_target), dest=dest)
        forward = _Rewritten(request, new_target)
        # one timeout and one CORS policy: the ingress rule's own, else the
        # service route's (plan.ingress_settings, docs/semantics.md)
        resp = await self.routed(dest, svc_choice, forward, new_path, new_target, new_host, headers=fwd,
                                 timeout_ms=rule["timeout_ms"], cors_of_ingress=rule["cors"] is not None)
        return done(l7.response_ops(rule, request, resp))

    def reload_listener_certs(self) -> None:
        """Called with the identity's check (every second): an https
        listener's changed files go into its context (a bad pair is logged
        and the old one kept)."""
        for ctx, listener, watcher in getattr(self, "listener_certs", ()):
            if watcher.changed():
                try:
                    ctx.load_cert_chain(listener["cert_file"], listener["key_file"])
                except (OSError, ssl.SSLError) as exc:
                    import logging

                    logging.getLogger("meshproxy").error("listener certificate reload failed: %s", exc)

    @staticmethod
    def _pick_service(weights: dict[str, float]) -> str:
        pool = [(s, w) for s, w in weights.items() if w > 0]
        r = random.random() * sum(w for _, w in pool)
        for s, w in pool:
            r -= w
            if r < 0:
                return s
        return pool[-1][0]


class _Rewritten:
    """The request as the ingress forwards it: the same method, headers and
    body, the rewritten target (routed() reads only these)."""

    def __init__(self, request: web.BaseRequest, target: bytes):
        self._request = request
        self.raw_path = target.decode("ascii")

    def __getattr__(self, name):
        return getattr(self._request, name)

    # Item access is not looked up through __getattr__: per-request state (the
    # client span tracing keeps until the answer) lives on the request itself.
    def __setitem__(self, key, value):
        self._request[key] = value

    def __getitem__(self, key):
        return self._request[key]
