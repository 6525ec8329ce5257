"""The meshproxy sidecar: inbound mTLS + authorization + rate limits in front of
the local app; outbound routing, faults, retries, timeouts, mirroring, outlier
detection and circuit breaking for the app's calls; metrics on the admin port.
North-south (issue 15): end-user tokens validated with PyJWT (jwt_verify.py),
an ingress mode (ingress.py) and egress to external services (egress.py);
the L7 rule options (rewrite, header operations, CORS) apply wherever a
route rule forwards (`l7.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import socket
import time
from pathlib import Path

from aiohttp import HttpVersion11, web
from aiohttp.web_protocol import RequestHandler

from ..wire import evaluate as ev
from . import l7, tls
from .egress import EgressMixin
from .http1 import HTTP1, answer
from .http1 import server as http1_server
from .identity_headers import CLIENT_IP, forwardable, identity_headers
from .ingress import IngressMixin
from .jwt_verify import Verifier
from .metrics import Metrics
from .request_info import query_params, request_tokens, split_absolute
from .request_target import forward_target, valid_method
from .tracing import Spans
from .upstream import HOP_BY_HOP, Pool, StreamedBody, UpstreamError

log = logging.getLogger("meshproxy")

GATEWAY_ERRORS = (502, 503, 504)
DEFAULT_RETRY_ON = ("connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes")
# Request bodies up to this size are held (retries and mirrors resend them);
# a larger one is streamed upstream once, without retries or mirror, as
# Envoy does past its buffer limit.
BODY_BUFFER_LIMIT = 1 << 20
POOL_SWEEP_SECONDS = 5.0
BAD_TARGET = "meshproxy: request target refused (see docs/semantics.md, Paths)\n"


class ConfigError(ValueError):
    """A config file meshproxy will not run: unreadable, another format
    version, or not what the format allows."""


def load_config(path: Path) -> dict:
    from pydantic import ValidationError

    from ..wire.config import WorkloadConfig, refusal

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc}") from None
    why = refusal(raw)
    if why:
        raise ConfigError(f"{path}: {why}")
    try:
        WorkloadConfig.model_validate(raw, strict=False)  # refuse a config the format does not allow
    except ValidationError as exc:
        raise ConfigError(f"{path}: not a valid meshproxy config: {exc}") from None
    return raw


def retryable(outcome: int | str, retry_on: list[str], on_status: list[int] = ()) -> bool:
    """Envoy's retry-on semantics for the conditions meshc emits; on_status:
    the statuses written among the conditions (`on 503, 429`). Conditions
    written (names or statuses) replace the default set."""
    if isinstance(outcome, int) and outcome in on_status:
        return True
    conds = set(retry_on) if (retry_on or on_status) else set(DEFAULT_RETRY_ON)
    if isinstance(outcome, int):
        return ("5xx" in conds and outcome >= 500) or ("gateway-error" in conds and outcome in GATEWAY_ERRORS) \
            or ("retriable-4xx" in conds and outcome == 409) \
            or ("retriable-status-codes" in conds and outcome == 503) or (str(outcome) in conds)
    if outcome == "connect-failure":
        return bool(conds & {"connect-failure", "5xx", "gateway-error", "refused-stream"})
    if outcome in ("reset", "per-try-timeout"):
        return bool(conds & {"reset", "5xx"}) or (outcome == "per-try-timeout" and "gateway-error" in conds)
    return False


class Host:
    """One instance of a destination version (an endpoint of its upstream):
    where to dial it, its requests in flight, and its own outlier state."""

    __slots__ = ("address", "port", "active", "c5", "cg", "ejected_until", "times_ejected")

    def __init__(self, address: str, port: int):
        self.address, self.port = address, port
        self.active = 0
        self.c5 = self.cg = 0  # consecutive 5xx and gateway failures
        self.ejected_until = 0.0
        self.times_ejected = 0


# Envoy's healthy_panic_threshold: below this share of healthy (not ejected)
# instances, a version's traffic goes to all of them, ejected or not.
PANIC_PERCENT = 50.0


class Upstreams:
    """Per destination version: requests in flight and retries (circuit
    breakers, retry budgets); per instance (Host): requests in flight and
    outlier ejection, so ejecting a failing instance moves its traffic to the
    version's others, as Envoy does within a cluster."""

    def __init__(self):
        self.active: dict[tuple[str, str | None], int] = {}
        self.retries: dict[str, int] = {}
        # (service, version) -> (the config's endpoint list they were made from, its Hosts)
        self.hosts: dict[tuple[str, str | None], tuple[list, list[Host]]] = {}
        self.turn: dict[tuple[str, str | None], int] = {}  # round robin position

    def hosts_of(self, dest: dict, up: dict) -> list[Host]:
        """The version's instances; after a reload, the same endpoints keep their state."""
        key = (dest["service"], up["version"])
        known = self.hosts.get(key)
        if known is not None and known[0] is up["endpoints"]:
            return known[1]
        old = {(h.address, h.port): h for h in known[1]} if known else {}
        hosts = []
        for e in up["endpoints"]:
            at = ev.endpoint_address(e)
            hosts.append(old.get(at) or Host(*at))
        self.hosts[key] = (up["endpoints"], hosts)
        return hosts

    def choose(self, dest: dict, up: dict, now: float, request=None) -> Host:
        """An instance by the version's balance policy, among those not
        ejected; when fewer than PANIC_PERCENT are left, among all (Envoy's
        panic routing). Round robin when the policy names none."""
        hosts = self.hosts_of(dest, up)
        if len(hosts) == 1:
            return hosts[0]
        healthy = [h for h in hosts if h.ejected_until <= now]
        pool = healthy if len(healthy) * 100.0 >= PANIC_PERCENT * len(hosts) and healthy else hosts
        lb = up["load_balancer"] or {}
        policy = lb.get("policy") or "round_robin"
        if policy == "random":
            return random.choice(pool)
        if policy == "least_request":  # Envoy's default: the less busy of two picked at random
            a, b = random.choice(pool), random.choice(pool)
            return a if a.active <= b.active else b
        if policy in ("hash_header", "hash_source_ip"):
            value = _hash_key(request, policy, lb.get("header"))
            if value is None:  # nothing to hash: any instance, as Envoy's ring hash without a key
                return random.choice(pool)
            # rendezvous hashing: a key stays on its instance while that one is
            # in the pool; an ejected instance's keys spread over the others
            return max(pool, key=lambda h: _hash64(f"{h.address}:{h.port}|{value}"))
        key = (dest["service"], up["version"])
        n = self.turn.get(key, 0)
        self.turn[key] = n + 1
        return pool[n % len(pool)]

    def ejected_now(self, now: float) -> dict[tuple[str, str | None], int]:
        """(service, version) -> how many of its instances are ejected now."""
        return {key: sum(h.ejected_until > now for h in hosts) for key, (_e, hosts) in self.hosts.items()}

    def record(self, dest: dict, version: str | None, outcome: int | str, now: float, metrics: Metrics,
               host: Host) -> None:
        u = next((u for u in dest["upstreams"] if u["version"] == version), None)
        od = u and u["outlier_detection"]
        failed_5xx = (isinstance(outcome, int) and outcome >= 500) or isinstance(outcome, str)
        failed_gw = (isinstance(outcome, int) and outcome in GATEWAY_ERRORS) or isinstance(outcome, str)
        host.c5 = host.c5 + 1 if failed_5xx else 0
        host.cg = host.cg + 1 if failed_gw else 0
        if not od:
            return
        trip = (od["consecutive_5xx"] and host.c5 >= od["consecutive_5xx"]) or \
               (od["consecutive_gateway"] and host.cg >= od["consecutive_gateway"])
        if not trip or host.ejected_until > now:
            return
        hosts = self.hosts_of(dest, u)
        ejected = sum(h.ejected_until > now for h in hosts)
        cap = od["max_ejection_percent"] if od["max_ejection_percent"] is not None else 10.0
        if (ejected + 1) * 100.0 / len(hosts) > cap and ejected + 1 > 1:  # as Envoy: one may always go
            return
        host.times_ejected += 1
        host.ejected_until = now + (od["base_ejection_ms"] or 30_000) * host.times_ejected / 1000.0
        host.c5 = host.cg = 0
        metrics.ejections.labels(dest["service"], str(version)).inc()


def _hash_key(request, policy: str, header: str | None) -> str | None:
    if request is None:
        return None
    if policy == "hash_source_ip":
        return request.remote
    return request.headers.get(header) if header else None


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big")


class Proxy(IngressMixin, EgressMixin):
    def __init__(self, cfg: dict, config_path: Path | None = None, trace_collector: str | None = None):
        self.cfg = cfg
        self.spans = Spans(cfg["tracing"], cfg["workload"]["service"], trace_collector)  # span reporting
        self.config_path = config_path
        self.metrics = Metrics(cfg)
        self.state = Upstreams()
        self.metrics.before_scrape = self._refresh_gauges
        ident = cfg["identity"]
        self.watcher = tls.CertWatcher(ident)
        self._load_tls()
        self.buckets = ev.TokenBuckets(cfg)
        self._load_north_south()
        self._servers: list = []
        self._tasks: list[asyncio.Task] = []
        self.app_pool = Pool(None)  # plaintext to the local app

    def _load_north_south(self) -> None:
        """Token validators (JWKS parsed once), the ingress peers a callee
        trusts the client address from, and the egress TLS context."""
        cfg = self.cfg
        old = getattr(self, "verifiers", {})
        old_uris = getattr(self, "_jwks_uris", {})
        self.verifiers = {p["name"]: Verifier.from_config(p) for p in cfg["jwt"]}
        self._jwks_uris = {p["name"]: p.get("jwks_uri") for p in cfg["jwt"]}
        for name, uri in self._jwks_uris.items():  # a reload keeps a remote JWKS already fetched
            if uri and old_uris.get(name) == uri and name in old:
                self.verifiers[name].set_keys(old[name].keys)
        auth = cfg["inbound"]["authorization"]
        principals = [p for e in auth["deny"] + auth["allow"] for p in e["principals"]]
        principals += [p for lim in cfg["inbound"]["rate_limits"] for p in lim["principals"]]
        self.ingress_peers = {g["spiffe_id"] for p in principals if p["kind"] == "internet" for g in p["ingresses"]}
        self._load_egress()

    async def _start_remote_jwks(self) -> None:
        """jwks_uri providers: one fetch each before listening (bounded by
        jwks_fetch.FETCH_TIMEOUT), then refreshed in the background."""
        from . import jwks_fetch
        from .egress import egress_context

        remote = [(p["name"], p["jwks_uri"]) for p in self.cfg["jwt"] if p.get("jwks_uri")]
        if not remote:
            return
        ctx = egress_context(self.cfg["egress"]["ca_file"])
        got = await asyncio.gather(*(jwks_fetch.refresh_once(self.verifiers[n], uri, ctx) for n, uri in remote))
        self._refreshers(dict(zip(remote, got)))

    def _refreshers(self, fetched: dict[tuple[str, str], bool | None]) -> None:
        """One refresh task per (provider, jwks_uri) of the config; those of
        providers a reload removed are cancelled, new ones fetch at once."""
        from . import jwks_fetch
        from .egress import egress_context

        tasks = self.__dict__.setdefault("_jwks_tasks", {})
        wanted = {(p["name"], p["jwks_uri"]) for p in self.cfg["jwt"] if p.get("jwks_uri")}
        for key in set(tasks) - wanted:
            tasks.pop(key).cancel()
        ctx = egress_context(self.cfg["egress"]["ca_file"])
        for key in wanted - set(tasks):
            name, uri = key
            tasks[key] = asyncio.get_event_loop().create_task(jwks_fetch.keep_fresh(
                lambda n=name: self.verifiers.get(n), uri, ctx, fetched.get(key)))

    def _refresh_gauges(self) -> None:
        for (svc, version), n in self.state.ejected_now(time.monotonic()).items():  # instances ejected now
            self.metrics.ejected.labels(svc, str(version)).set(n)

    # ---- lifecycle
    def _load_tls(self) -> None:
        ident = self.cfg["identity"]
        self.server_ssl = tls.server_context(ident, require_client_cert=self.cfg["inbound"]["mtls"] == "strict")
        client = tls.client_context(ident)
        if hasattr(self, "pool"):
            self.pool.set_ssl(client)
        else:
            self.pool = Pool(client)

    async def start(self) -> None:
        lst = self.cfg["listeners"]
        await self._start_remote_jwks()
        if self.cfg["ingress"] is not None:
            await self.start_ingress()
        for listener in lst["inbound"]:
            sock = _listen(listener["address"], listener["port"])
            server = http1_server(self._inbound_handler(listener)) if listener["app"]["protocol"] != "tcp" else None
            self._tasks.append(asyncio.create_task(self._accept(sock, listener, server)))
            self._servers.append(sock)
        loop = asyncio.get_running_loop()
        if self.cfg["ingress"] is None:  # an ingress has no app to send calls through it
            out = http1_server(self.handle_outbound)
            self._servers.append(await loop.create_server(out, lst["outbound"]["address"], lst["outbound"]["port"]))
        await self.start_egress()
        for d in self.cfg["outbound"]["destinations"]:
            if d["tcp_listener"]:
                ep = d["tcp_listener"]
                self._servers.append(await asyncio.start_server(
                    lambda r, w, d=d: self._tcp_outbound(r, w, d), ep["address"], ep["port"]))
        admin = web.Application()
        admin.router.add_get("/metrics", self.metrics.handler)
        admin.router.add_get("/ready", lambda r: web.Response(text="ready\n"))
        admin.router.add_get("/config", lambda r: web.json_response(self.cfg))
        runner = web.AppRunner(admin, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, lst["admin"]["address"], lst["admin"]["port"])
        await site.start()
        self._servers.append(runner)
        self._tasks.append(asyncio.create_task(self._watch_certs()))
        self._tasks.append(asyncio.create_task(self._sweep_pools()))
        self.spans.start()

    async def stop(self) -> None:
        for t in [*self._tasks, *self.__dict__.get("_jwks_tasks", {}).values()]:
            t.cancel()
        for s in self._servers:
            if isinstance(s, socket.socket):
                s.close()
            elif isinstance(s, web.AppRunner):
                await s.cleanup()
            else:
                s.close()
        self.pool.close_idle()
        self.app_pool.close_idle()
        await self.spans.stop()  # the last batch

    def reload(self) -> bool:
        """SIGHUP: take a new config file if it is valid; in-flight requests finish on the old one."""
        if not self.config_path:
            return False
        try:
            cfg = load_config(self.config_path)
        except Exception as exc:  # keep serving the old policy
            log.error("config reload refused: %s", exc)
            return False
        self.cfg = cfg
        self.spans.configure(cfg["tracing"], cfg["workload"]["service"])
        self.buckets = ev.TokenBuckets(cfg)
        self._load_north_south()
        if "_jwks_tasks" in self.__dict__ or any(p.get("jwks_uri") for p in cfg["jwt"]):
            self._refreshers({})
        self._load_tls()
        log.info("config reloaded")
        return True

    async def _watch_certs(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.reload_listener_certs()
            if self.watcher.changed():
                try:
                    self._load_tls()
                    log.info("certificates reloaded")
                except Exception as exc:
                    log.error("certificate reload failed: %s", exc)

    async def _sweep_pools(self) -> None:
        """Idle connections are closed after the pools' idle timeout, so a
        burst's connections (and their buffers) do not stay open."""
        while True:
            await asyncio.sleep(POOL_SWEEP_SECONDS)
            if self.pool.sweep() + self.app_pool.sweep():
                _release_memory()

    # ---- inbound
    async def _accept(self, sock: socket.socket, listener: dict, server) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE and the like: keep listening, as asyncio's own servers do
                log.warning("inbound accept failed (retrying in 1 s): %s", exc)
                await asyncio.sleep(1.0)
                continue
            asyncio.create_task(self._sniff(conn, listener, server))

    async def _sniff(self, conn: socket.socket, listener: dict, server) -> None:
        """strict: TLS only; off: plaintext only; permissive: either, told apart by the first byte."""
        loop = asyncio.get_running_loop()
        mode = self.cfg["inbound"]["mtls"]
        try:
            ready = loop.create_future()
            loop.add_reader(conn.fileno(), lambda: ready.done() or ready.set_result(None))
            try:
                await asyncio.wait_for(ready, 10)
            finally:
                loop.remove_reader(conn.fileno())
            first = conn.recv(1, socket.MSG_PEEK)
        except (OSError, asyncio.TimeoutError):
            conn.close()
            return
        is_tls = first == b"\x16"
        if not first or (is_tls and mode == "off") or (not is_tls and mode == "strict"):
            self.metrics.refused.labels("tls" if not is_tls else "plaintext").inc()
            conn.close()
            return
        ctx = self.server_ssl if is_tls else None
        try:
            if server is not None:
                await loop.connect_accepted_socket(server, sock=conn, ssl=ctx, ssl_handshake_timeout=10 if ctx else None)
            else:
                reader, writer = await _accepted_streams(conn, ctx)
                await self._tcp_inbound(reader, writer, listener)
        except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
            log.debug("inbound connection failed: %s", exc)
            conn.close()

    def _inbound_handler(self, listener: dict):
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            return await self.handle_inbound(request, listener)

        return handle

    async def handle_inbound(self, request: web.BaseRequest, listener: dict) -> web.StreamResponse:
        started = time.monotonic()
        cfg = self.cfg
        peer_id, peer_der, peer_addr = _peer(request)
        source = peer_id or "unknown"
        dest = cfg["workload"]["service"]
        span = self.spans.server(request) if self.spans.enabled else None

        def done(resp: web.StreamResponse) -> web.StreamResponse:
            self.metrics.observe("inbound", source, dest, resp.status, time.monotonic() - started)
            if span is not None:
                self.spans.finish(span, resp.status)
            return resp

        checked = check_request(request)
        if isinstance(checked, web.Response):
            return done(checked)
        path, target = checked
        tokens = None
        if self.verifiers:  # validated here again: never trusted from the caller
            tokens = request_tokens(self.verifiers, request, query_params(target))
            if tokens.unvalidated_token(list(self.verifiers)):
                return done(unauthorized())
        client_ip = peer_addr
        if peer_id is not None and peer_id in self.ingress_peers:
            client_ip = request.headers.get(CLIENT_IP, peer_addr)  # the outside client, as the ingress saw it
        # authorization, then rate limits (docs/semantics.md; Envoy's RBAC
        # filter runs before its local_ratelimit): a denied request takes no token
        decision = ev.inbound_decision(cfg, peer_id, request.method, path, tokens)
        if not decision.allowed:
            return done(web.Response(status=403, text="RBAC: access denied\n",
                                     headers={"x-meshproxy-rule": str(decision.rule)}))
        single = {k.lower(): v for k, v in request.headers.items()} if self.buckets.limits else {}
        if not self.buckets.admit(peer_id, peer_addr, time.monotonic(), single, tokens, client_ip):
            self.metrics.ratelimited.labels(source).inc()
            return done(web.Response(status=429, text="local_rate_limited\n"))
        body = await read_body(request)
        headers = forwardable(request.headers.items()) + _identity(request, cfg["identity"]["spiffe_id"], peer_id,
                                                                   peer_der)
        if span is not None:
            headers = self.spans.for_app(headers, span)
        app = listener["app"]
        try:
            r = await self.app_pool.request(app["address"], app["port"], use_tls=False, expected_id=None,
                                            method=request.method, target=target, host=request.host,
                                            headers=headers, body=body)
        except UpstreamError as exc:  # the app is down, broke the connection or its framing
            log.debug("app call failed: %s", exc)
            return done(upstream_failure(exc.kind))
        return done(answer(request, r.status, [(k, v) for k, v in r.headers if k not in HOP_BY_HOP], r.body))

    async def _tcp_inbound(self, reader, writer, listener: dict) -> None:
        sslobj = writer.get_extra_info("ssl_object")
        peer_id = tls.peer_spiffe_id(sslobj.getpeercert()) if sslobj is not None else None
        if not ev.inbound_decision(self.cfg, peer_id, "", "").allowed:
            writer.close()
            return
        app = listener["app"]
        try:
            ar, aw = await asyncio.open_connection(app["address"], app["port"])
        except OSError:
            writer.close()
            return
        await _pipe_both(reader, writer, ar, aw)

    async def _tcp_outbound(self, reader, writer, dest: dict) -> None:
        up = dest["upstreams"][0]
        inst = self.state.choose(dest, up, time.monotonic())  # one of the version's instances
        addr, port = inst.address, inst.port
        try:
            ur, uw = await asyncio.open_connection(addr, port, ssl=self.pool.ssl if dest["mtls"] else None,
                                                   server_hostname="" if dest["mtls"] else None)
            if dest["mtls"] and tls.peer_spiffe_id(uw.get_extra_info("peercert")) != dest["spiffe_id"]:
                uw.close()
                writer.close()
                return
        except OSError:
            writer.close()
            return
        await _pipe_both(reader, writer, ur, uw)

    # ---- outbound
    async def handle_outbound(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.monotonic()
        cfg = self.cfg
        me = cfg["workload"]["service"]
        host = request.headers.get("Host", "")
        absolute = split_absolute(request.raw_path.encode("utf-8", "surrogateescape"))
        if absolute is not None:  # an HTTP proxy client's `GET http://host/path`: the authority is the host
            host = absolute[0]
        headers = {k.lower(): v for k, v in request.headers.items()}
        checked = check_request(request, absolute[1] if absolute else None)
        path, target = ("/", b"") if isinstance(checked, web.Response) else checked
        query = query_params(target)
        choice = ev.route(cfg, host, request.method, path, headers, query)
        # A Host the config does not know is the caller's free text: one
        # label value for all of them, or each would add a metric series.
        dest_name = choice.destination or "(unknown)"

        def done(resp: web.StreamResponse) -> web.StreamResponse:
            self.metrics.observe("outbound", me, dest_name, resp.status, time.monotonic() - started, choice)
            self.spans.finish_request(request, resp.status)
            return resp

        if isinstance(checked, web.Response):
            return done(checked)
        if choice.kind == "unknown_destination":
            ext = ev.find_external(cfg, host)
            if ext is not None:
                dest_name = ext["name"]
                return done(await self.handle_external(request, ext, host, path, target))
            if cfg["egress"]["stance"] == "allow_any":
                return done(await self.pass_through(request, host, target))
            return done(web.Response(status=403, text=f"meshproxy: `{me}` may not call `{host}`\n"))
        dest = ev.find_destination(cfg, host)
        return done(await self.routed(dest, choice, request, path, target, host))

    async def routed(self, dest: dict, choice, request: web.BaseRequest, path: str, target: bytes, host: str,
                     headers: list[tuple[str, str]] | None = None, timeout_ms: int | None = None,
                     cors_of_ingress: bool = False) -> web.Response:
        """A route's choice for a request to `dest`: the answer of a respond,
        redirect or no_route; CORS preflights; else the rule's rewrite and
        request header operations, then forwarding (faults, mirror, timeout,
        retries), then its response header operations and CORS headers.
        headers: what to forward (default: the caller's, minus hop-by-hop and
        identity headers; an ingress passes its own); timeout_ms: the ingress
        rule's timeout, which replaces the route rule's; cors_of_ingress: the
        ingress rule has a CORS policy, so this rule's is not applied."""
        if choice.kind == "no_route":
            return web.Response(status=404, text="meshproxy: no route rule matches\n")
        rule = choice.route
        if choice.kind == "redirect":
            return web.Response(status=choice.status, headers={"location": rule["action"]["uri"]})
        if choice.kind == "respond":
            return web.Response(status=choice.status, text=rule["action"]["body"] or "")
        if cors_of_ingress and rule["cors"] is not None:
            rule = {**rule, "cors": None}
        if timeout_ms is not None:
            rule = {**rule, "timeout_ms": timeout_ms}
        preflight = l7.preflight_answer(rule, request)
        if preflight is not None:
            return preflight
        target, host = l7.rewritten(rule, path, target, host)
        if target is None:
            return web.Response(status=400, text=BAD_TARGET)
        body = await read_body(request)
        base = forwardable(request.headers.items()) if headers is None else headers
        fwd = l7.request_ops(rule, self.spans.client(base, request, host))
        fault = rule["fault"]
        if fault:
            if fault["delay_ms"] and random.random() * 100 < (fault["delay_percent"] or 0):
                await asyncio.sleep(fault["delay_ms"] / 1000)
            if fault["abort_status"] and random.random() * 100 < (fault["abort_percent"] or 0):
                return web.Response(status=fault["abort_status"], text="fault filter abort\n")
        mirror = choice.mirror
        if mirror and not isinstance(body, StreamedBody) and random.random() * 100 < mirror[1]:
            asyncio.create_task(self._mirror(dest, mirror[0], request, target, fwd, body, host))
        timeout = rule["timeout_ms"] / 1000 if rule["timeout_ms"] else None
        try:
            attempts = self._attempts(dest, choice, rule, request, target, fwd, body, host)
            resp = await (asyncio.wait_for(attempts, timeout) if timeout else attempts)  # no task without a timeout
        except asyncio.TimeoutError:
            return web.Response(status=504, text="upstream request timeout\n")
        return l7.response_ops(rule, request, resp)

    async def _attempts(self, dest, choice, rule, request, target, fwd, body, host) -> web.Response:
        retry = rule["retry"] or {}
        retries = 0 if isinstance(body, StreamedBody) else retry.get("retries", 0) or 0  # sent once, not held
        per_try = retry.get("per_try_timeout_ms")
        base = retry.get("backoff_base_ms") or 25
        cap = retry.get("backoff_max_ms") or 10 * base
        svc = dest["service"]
        last: web.Response | None = None
        for attempt in range(retries + 1):
            now = time.monotonic()
            version, inst = self._pick(dest, choice.weights, now, request)  # inst: the instance
            up = next(u for u in dest["upstreams"] if u["version"] == version)
            key = (svc, version)
            overflow = self._overflow(dest, up, key, attempt > 0)
            if overflow:
                self.metrics.overflow.labels(svc).inc()
                return web.Response(status=503, text=f"upstream overflow ({overflow})\n",
                                    headers={"x-meshproxy-overflow": overflow})
            self.state.active[key] = self.state.active.get(key, 0) + 1
            inst.active += 1
            if attempt:
                self.state.retries[svc] = self.state.retries.get(svc, 0) + 1
                self.metrics.retries.labels(svc).inc()
            addr, port = inst.address, inst.port
            try:
                call = self.pool.request(addr, port, use_tls=dest["mtls"], expected_id=dest["spiffe_id"],
                                         method=request.method, target=target, host=host,
                                         headers=fwd, body=body)
                r = await (asyncio.wait_for(call, per_try / 1000) if per_try else call)
                outcome: int | str = r.status
                last = answer(request, r.status, [(k, v) for k, v in r.headers if k not in HOP_BY_HOP], r.body)
            except UpstreamError as exc:
                outcome = exc.kind
                log.debug("upstream call failed: %s", exc)  # the detail quotes upstream bytes: not for the caller
                last = upstream_failure(exc.kind)
            except asyncio.TimeoutError:
                outcome = "per-try-timeout"
                last = web.Response(status=504, text="upstream per-try timeout\n")
            finally:
                self.state.active[key] -= 1
                inst.active -= 1
                if attempt:
                    self.state.retries[svc] -= 1
            self.state.record(dest, version, outcome, time.monotonic(), self.metrics, inst)
            if attempt == retries or not retryable(outcome, retry.get("retry_on") or [],
                                                   retry.get("on_status") or []):
                return last
            if not self._budget_allows(retry, svc):
                return last
            await asyncio.sleep(random.uniform(0, min(base * 2 ** attempt, cap)) / 1000)
        return last

    def _pick(self, dest: dict, weights: dict, now: float, request=None) -> tuple[str | None, Host]:
        """(version, instance): the version by weight first, as Envoy's
        weighted clusters, then one of its instances by its balance policy
        (Upstreams.choose). Ejections never move a version's share: an
        ejected instance's traffic goes to the version's other instances,
        and with too few left to all of them (panic routing)."""
        pool = [(v, w) for v, w in weights.items() if w > 0]
        r = random.random() * sum(w for _, w in pool)
        version = pool[-1][0]
        for v, w in pool:
            r -= w
            if r < 0:
                version = v
                break
        up = next(u for u in dest["upstreams"] if u["version"] == version)
        return version, self.state.choose(dest, up, now, request)

    def _overflow(self, dest: dict, up: dict, key, is_retry: bool) -> str | None:
        cb = up["circuit_breaker"]
        if not cb:
            return None
        if cb["max_requests"] is not None and self.state.active.get(key, 0) >= cb["max_requests"]:
            return "max_requests"
        if cb["max_pending"] is not None and self.state.active.get(key, 0) >= cb["max_pending"] + (
                cb["max_connections"] or math.inf):
            return "max_pending"
        if is_retry and cb["max_retries"] is not None and self.state.retries.get(dest["service"], 0) >= cb["max_retries"]:
            return "max_retries"
        return None

    def _budget_allows(self, retry: dict, svc: str) -> bool:
        pct = retry.get("budget_percent")
        if pct is None:
            return True
        active = sum(n for (s, _v), n in self.state.active.items() if s == svc)
        allowed = max(retry.get("budget_min_retries") or 3, math.floor(active * pct / 100))
        return self.state.retries.get(svc, 0) < allowed

    async def _mirror(self, dest, version, request, target, fwd, body, host) -> None:
        try:
            addr, port = ev.upstream_address(dest, version)
            await asyncio.wait_for(self.pool.request(
                addr, port, use_tls=dest["mtls"], expected_id=dest["spiffe_id"], method=request.method,
                target=target, host=f"{host}-shadow", headers=fwd, body=body), 10)
        except Exception as exc:  # a mirror's failure never reaches the caller
            log.debug("mirror failed: %s", exc)


def upstream_failure(kind: str) -> web.Response:
    """Envoy's answers: 502 for a response whose framing is wrong, 503 for a
    failed connection or a reset."""
    if kind == "protocol":
        return web.Response(status=502, text="upstream protocol error\n")
    return web.Response(status=503, text=f"upstream connect error or disconnect/reset ({kind})\n")


def check_request(request: web.BaseRequest, origin_form: bytes | None = None) -> web.Response | tuple[str, bytes]:
    """(normalized path, target to forward), or the answer to a request
    meshproxy will not forward, as Envoy answers it: 426 for anything but
    HTTP/1.1 (HTTP/1.0 and 0.9 carry no reliable Host and framing), 400 for
    a method or target that is not one valid request line. origin_form: the
    path and query of an absolute-form target (the outbound side's)."""
    if request.version != HttpVersion11:
        resp = web.Response(status=426, text="meshproxy: HTTP/1.1 required\n")
        resp.force_close()
        return resp
    raw = request.raw_path if origin_form is None else origin_form.decode("ascii")
    forward = forward_target(raw) if valid_method(request.method) else None
    return web.Response(status=400, text=BAD_TARGET) if forward is None else forward


def unauthorized() -> web.Response:
    """401 for a token no accepted provider validates (RFC 6750's challenge)."""
    return web.Response(status=401, text="Jwt verification fails\n",
                        headers={"www-authenticate": 'Bearer error="invalid_token"'})


def _peer(request: web.BaseRequest) -> tuple[str | None, bytes | None, str]:
    """(SPIFFE ID, certificate DER, address) of the connection's peer, worked
    out once per connection (parsing the certificate per request cost ~3%)."""
    proto = request.protocol
    cached = getattr(proto, "peer", None)
    if cached is not None:
        return cached
    transport = request.transport
    sslobj = transport.get_extra_info("ssl_object") if transport else None
    peer_id = tls.peer_spiffe_id(sslobj.getpeercert()) if sslobj is not None else None
    der = sslobj.getpeercert(binary_form=True) if peer_id else None
    addr = (transport.get_extra_info("peername") or ("?",))[0] if transport else "?"
    out = (peer_id, der, addr)
    if isinstance(proto, (_Protocol, HTTP1)):
        proto.peer = out
    return out


def _identity(request: web.BaseRequest, own_id: str, peer_id: str | None,
              peer_der: bytes | None) -> list[tuple[str, str]]:
    """identity_headers for the connection's peer, worked out once per
    connection (hashing the certificate per request cost ~10%)."""
    proto = request.protocol
    cached = getattr(proto, "ident", None)
    if cached is not None and cached[0] == own_id:
        return cached[1]
    out = identity_headers(own_id, peer_id, peer_der)
    if isinstance(proto, (_Protocol, HTTP1)):
        proto.ident = (own_id, out)
    return out


class _Protocol(RequestHandler):
    """One per connection."""

    peer: tuple[str | None, bytes | None, str] | None = None
    ident: tuple[str, list[tuple[str, str]]] | None = None

    def handle_error(self, request, status=500, exc=None, message=None):
        # A request aiohttp's parser refused: a fixed answer, since the
        # parser's message quotes the caller's bytes back.
        return super().handle_error(request, status, exc, BAD_TARGET if status == 400 else message)

    def log_exception(self, *args, **kw) -> None:
        # Callers choose what they send: a malformed request is theirs to
        # debug, not an error in the sidecar's log (nor a way to flood it).
        self.logger.debug(*args, **kw)


class _Server(web.Server):
    """aiohttp's HTTP/1.1 server with _Protocol's error answers."""

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


async def read_body(request: web.BaseRequest) -> bytes | StreamedBody:
    """The body, held when it is at most BODY_BUFFER_LIMIT, else streamed."""
    if not request.body_exists:
        return b""
    if request.headers.get("Expect", "").lower() == "100-continue":
        # The caller waits for this before sending the body; meshproxy
        # answers it itself (as Envoy does) and does not forward the Expect.
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
    content = request.content
    head = bytearray()
    while len(head) <= BODY_BUFFER_LIMIT:
        chunk = await content.readany()
        if not chunk:
            return bytes(head)
        head += chunk

    async def rest():
        while chunk := await content.readany():
            yield chunk

    return StreamedBody(bytes(head), rest(), request.content_length)


def _release_memory() -> None:
    """Give freed buffers back to the OS after a burst (glibc keeps them otherwise)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _listen(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


async def _accepted_streams(conn: socket.socket, ctx):
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock=conn, ssl=ctx)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ConnectionError):
        pass
    finally:
        writer.close()


async def _pipe_both(r1, w1, r2, w2) -> None:
    await asyncio.gather(_pipe(r1, w2), _pipe(r2, w1))
