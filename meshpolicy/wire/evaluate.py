"""The reference meshproxy evaluator: how a proxy decides, from a workload's
JSON config alone (a plain dict, as `json.load` gives it).

This is the logic the runtime proxy uses, kept free of the compiler's model:
string equality, `startswith` and RE2 searches of the anchored regexes the
config carries, and for north-south the pure functions over plain values in
meshpolicy.semantics (hosts, query, tokens, limit_keys, rewrite), so each
meaning is written once. End-user tokens come in already validated (a
`Tokens` object: provider -> claims). Tests check it agrees with
meshpolicy.semantics.evaluate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import re2

from ..semantics.hosts import any_host_matches, host_matches, host_of
from ..semantics.limit_keys import bucket_key
from ..semantics.query import query_matches_raw
from ..semantics.tokens import requirement_met_raw


class Tokens(Protocol):
    """A request's end-user tokens, as the proxy validated them (the runtime:
    meshpolicy/proxy/jwt_verify.RequestTokens; tests: a dict-backed stand-in)."""

    def claims_for(self, provider: str) -> dict | None: ...


NO_TOKENS = None  # a request checked without looking at tokens (no internet principal asks)


@lru_cache(maxsize=4096)
def _rx(regex: str):
    return re2.compile(regex)


def regex_holds(regex: str, value: str) -> bool:
    return _rx(regex).search(value) is not None


# ---- inbound ----------------------------------------------------------------

@dataclass(frozen=True)
class InboundDecision:
    allowed: bool
    rule: int | None  # the policy's auth rule index; None: the default stance decided


def transport_accepts(cfg: dict, peer_id: str | None) -> bool:
    """strict mTLS refuses callers without a verified certificate."""
    return peer_id is not None or cfg["inbound"]["mtls"] != "strict"


def visible_identity(cfg: dict, peer_id: str | None) -> str | None:
    """The caller's identity as authorization sees it: none with mTLS off."""
    return None if cfg["inbound"]["mtls"] == "off" else peer_id


def internet_holds(p: dict, peer_id: str, tokens: Tokens | None) -> bool:
    """An internet principal: the peer is one of its ingresses and, with
    `jwt`, the request's token meets the requirement (semantics.tokens)."""
    peer = next((g for g in p["ingresses"] if g["spiffe_id"] == peer_id), None)
    if peer is None:
        return False
    if not p["jwt"]:
        return True
    if tokens is None:
        return False
    accepted = peer["providers"]
    candidates = [p["provider"]] if p["provider"] is not None else accepted
    tests = [(t["claim"], t["op"], t["value"]) for t in p["claims"]]
    for name in candidates:
        claims = tokens.claims_for(name)
        if claims is not None and requirement_met_raw(p["provider"], tests, name, claims, accepted):
            return True
    return False


def principal_matches(p: dict, peer_id: str | None, tokens: Tokens | None = NO_TOKENS) -> bool:
    kind = p["kind"]
    if kind == "any":
        return True
    if peer_id is None:
        return False
    if kind == "authenticated":
        return True
    if kind == "id":
        return peer_id == p["spiffe_id"]
    if kind == "internet":
        return internet_holds(p, peer_id, tokens)
    return regex_holds(p["regex"], peer_id)


def _paths_hold(matchers: list[dict], path: str) -> bool:
    return not matchers or any(regex_holds(m["regex"], path) for m in matchers)


def entry_matches(e: dict, peer_id: str | None, method: str, path: str, tokens: Tokens | None = NO_TOKENS) -> bool:
    return ((not e["methods"] or method in e["methods"])
            and _paths_hold(e["paths"], path)
            and any(principal_matches(p, peer_id, tokens) for p in e["principals"]))


def inbound_decision(cfg: dict, peer_id: str | None, method: str, path: str,
                     tokens: Tokens | None = NO_TOKENS) -> InboundDecision:
    """peer_id: the SPIFFE ID of the caller's verified certificate, or None;
    tokens: the request's validated tokens (for internet principals)."""
    peer = visible_identity(cfg, peer_id)
    auth = cfg["inbound"]["authorization"]
    for e in auth["deny"]:
        if entry_matches(e, peer, method, path, tokens):
            return InboundDecision(False, e["rule"])
    for e in auth["allow"]:
        if entry_matches(e, peer, method, path, tokens):
            return InboundDecision(True, e["rule"])
    return InboundDecision(auth["default"] == "allow", None)


def limit_key(lim: dict, default: str, headers: dict[str, str], client_ip: str,
              tokens: Tokens | None) -> str | None:
    """Which bucket of `lim` a request takes from: per caller (default) without
    a key; else the key's value, None (one shared bucket) when it has none."""
    key = lim["key"]
    if key is None:
        return default
    claims = None
    if key["kind"] == "claim" and tokens is not None:
        for p in lim["principals"]:  # the token of a provider the limit's sources name
            if p["kind"] == "internet" and p["jwt"]:
                for name in [p["provider"]] if p["provider"] else [n for g in p["ingresses"] for n in g["providers"]]:
                    claims = tokens.claims_for(name)
                    if claims is not None:
                        break
            if claims is not None:
                break
    return bucket_key(key["kind"], key["name"], claims, headers, client_ip)


class TokenBuckets:
    """The inbound rate limits: one bucket per (limit, caller key); a request
    takes a token from every limit whose principals match, and is refused
    (429) if any of those buckets is empty. `now` is in seconds. A keyed
    limit has one bucket per key value (a claim, a header, the client IP),
    and one shared by requests without a value."""

    def __init__(self, cfg: dict):
        self.limits = cfg["inbound"]["rate_limits"]
        self.peer = lambda pid: visible_identity(cfg, pid)
        self.state: dict[tuple[int, str | None], tuple[float, float]] = {}  # -> (tokens, last fill time)

    def admit(self, peer_id: str | None, peer_address: str, now: float, headers: dict[str, str] | None = None,
              tokens: Tokens | None = NO_TOKENS, client_ip: str | None = None) -> bool:
        """headers: lower-cased names; client_ip: the address a source_ip key
        reads (the outside client's, for a request through an ingress)."""
        peer = self.peer(peer_id)
        caller = peer if peer is not None else peer_address
        taken = []
        for i, lim in enumerate(self.limits):
            if not any(principal_matches(p, peer, tokens) for p in lim["principals"]):
                continue
            key = limit_key(lim, caller, headers or {}, client_ip or peer_address, tokens)
            left, last = self.state.get((i, key), (float(lim["max_tokens"]), now))
            fills = math.floor((now - last) * 1000 / lim["fill_interval_ms"])
            if fills > 0:
                left = min(float(lim["max_tokens"]), left + fills * lim["tokens_per_fill"])
                last += fills * lim["fill_interval_ms"] / 1000
            taken.append(((i, key), left, last))
        if any(t < 1 for _, t, _ in taken):
            for k, t, last in taken:
                self.state[k] = (t, last)
            return False
        for k, t, last in taken:
            self.state[k] = (t - 1, last)
        return True


# ---- outbound ---------------------------------------------------------------

@dataclass
class RouteChoice:
    """kind: forward, redirect, respond, no_route (404: no rule matched) or
    unknown_destination (403: this workload may not call that service)."""

    kind: str
    destination: str | None = None
    rule: int | None = None
    weights: dict[str | None, float] = field(default_factory=dict)
    mirror: tuple[str | None, float] | None = None
    status: int | None = None
    route: dict | None = None  # the matched rule (timeouts, retries, fault)


def find_destination(cfg: dict, host: str) -> dict | None:
    """The destination a Host header names (its port, if any, removed)."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    for d in cfg["outbound"]["destinations"]:
        if name in d["hosts"]:
            return d
    return None


def find_external(cfg: dict, host: str) -> dict | None:
    """The external service a Host names (semantics.hosts: `*.suffix`
    entries admit subdomains), first in the config's order."""
    h = host_of(host)
    for e in cfg["outbound"]["externals"]:
        if any(host_matches(p, h) for p in e["hosts"]):
            return e
    return None


def external_port(ext: dict, host: str) -> dict | None:
    """The external's port a Host names (`host:port`); without a port, its
    only http/tls port (several: the one numbered 80 or 443 for http/tls,
    else none)."""
    _, colon, port = host.rpartition(":")
    if colon and port.isdigit() and not host.endswith("]"):
        return next((p for p in ext["ports"] if p["port"] == int(port)), None)
    l7 = [p for p in ext["ports"] if p["protocol"] in ("http", "tls")]
    if len(l7) == 1:
        return l7[0]
    return next((p for p in l7 if (p["protocol"], p["port"]) in (("http", 80), ("tls", 443))), None)


@dataclass(frozen=True)
class EgressDecision:
    allowed: bool
    rule: int | None


def egress_decision(ext: dict, method: str, path: str) -> EgressDecision:
    """The caller-side decision for a request to an external: deny entries,
    then allow entries, then the default (as inbound, sources resolved)."""
    for kind in ("deny", "allow"):
        for e in ext[kind]:
            if (not e["methods"] or method in e["methods"]) and _paths_hold(e["paths"], path):
                return EgressDecision(kind == "allow", e["rule"])
    return EgressDecision(ext["default"] == "allow", None)


def header_holds(t: dict, headers: dict[str, str]) -> bool:
    value = headers.get(t["name"])
    kind = t["kind"]
    if kind == "absent":
        return value is None
    if value is None:
        return False
    if kind == "present":
        return True
    if kind == "exact":
        return value == t["value"]
    if kind == "prefix":
        return value.startswith(t["value"])
    return regex_holds(t["regex"], value)


def match_holds(cfg: dict, m: dict, method: str, path: str, headers: dict[str, str],
                query: dict[str, list[str]] | None = None) -> bool:
    """query: the decoded parameters (semantics.query.parse_query)."""
    return ((not m["methods"] or method in m["methods"])
            and _paths_hold(m["paths"], path)
            and all(header_holds(t, headers) for t in m["headers"])
            and all(query_matches_raw(q["name"], q["kind"], q["value"], query or {}) for q in m["queries"])
            and (not m["sources"] or cfg["workload"]["service"] in m["sources"]))


def rewritten_path(rule: dict, path: str) -> str:
    """The path a rule forwards (semantics.rewrite.rewrite_for over the
    rule's path matchers; unchanged without a path rewrite)."""
    rw = rule["rewrite"]
    if rw is None or rw["path"] is None:
        return path
    from ..semantics.rewrite import rewrite_for

    return rewrite_for([(m["kind"], m["value"]) for m in rule["match"]["paths"]],
                       lambda kind, value, p: any(regex_holds(m["regex"], p) for m in rule["match"]["paths"]
                                                  if (m["kind"], m["value"]) == (kind, value)),
                       path, rw["path"])


def route(cfg: dict, host: str, method: str, path: str, headers: dict[str, str] | None = None,
          query: dict[str, list[str]] | None = None, dest: dict | None = None) -> RouteChoice:
    """What this workload's outbound side does with a request its app sends
    to `host` (or to `dest`, when the caller already chose it: an ingress).
    Header names are compared lower-case."""
    hs = {k.lower(): v for k, v in (headers or {}).items()}
    d = dest if dest is not None else find_destination(cfg, host)
    if d is None:
        return RouteChoice("unknown_destination", status=403)
    for r in d["routes"]:
        if not match_holds(cfg, r["match"], method, path, hs, query):
            continue
        a = r["action"]
        if a["kind"] == "forward":
            mirror = (a["mirror"]["version"], a["mirror"]["percent"]) if a["mirror"] else None
            return RouteChoice("forward", d["service"], r["rule"],
                               {x["version"]: x["weight"] for x in a["destinations"]}, mirror, route=r)
        return RouteChoice(a["kind"], d["service"], r["rule"], status=a["status"], route=r)
    return RouteChoice("no_route", d["service"], status=404)


def upstream_address(dest: dict, version: str | None, service_port: int | None = None,
                     instance: int = 0) -> tuple[str, int]:
    """Where to dial an instance of the chosen version: its inbound listener
    for the service port (the first declared one when the request named none)."""
    for u in dest["upstreams"]:
        if u["version"] == version:
            return endpoint_address(u["endpoints"][instance], service_port)
    raise KeyError(version)


def endpoint_address(endpoint: dict, service_port: int | None = None) -> tuple[str, int]:
    """One instance's inbound listener for the service port (else its first)."""
    ports = endpoint["ports"]
    for p in ports:
        if p["service_port"] == service_port:
            return endpoint["address"], p["port"]
    return endpoint["address"], ports[0]["port"]


# ---- ingress ----------------------------------------------------------------

def ingress_route(cfg: dict, host: str, method: str, path: str, headers: dict[str, str] | None = None,
                  query: dict[str, list[str]] | None = None) -> RouteChoice:
    """What an ingress does with an outside request (after the token check):
    kind `no_host` (404) when Host matches none of its hosts (if it lists any), `no_route`
    (404) when no rule matches, else the first matching rule's action;
    forward `weights` are over services."""
    g = cfg["ingress"]
    if g["hosts"] and not any_host_matches(g["hosts"], host):
        return RouteChoice("no_host", status=404)
    hs = {k.lower(): v for k, v in (headers or {}).items()}
    for r in g["rules"]:
        if not match_holds(cfg, r["match"], method, path, hs, query):
            continue
        a = r["action"]
        if a["kind"] == "forward":
            return RouteChoice("forward", None, r["rule"], {x["service"]: x["weight"] for x in a["destinations"]},
                               route=r)
        return RouteChoice(a["kind"], None, r["rule"], status=a["status"], route=r)
    return RouteChoice("no_route", status=404)


def service_destination(cfg: dict, service: str) -> dict:
    """The outbound destination entry of a service an ingress forwards to."""
    return next(d for d in cfg["outbound"]["destinations"] if d["service"] == service)
