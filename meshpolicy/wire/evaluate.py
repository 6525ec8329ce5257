"""The reference meshproxy evaluator: how a proxy decides, from a workload's
JSON config alone (a plain dict, as `json.load` gives it).

This is the logic the runtime proxy uses, kept free of the compiler's model:
only string equality, `startswith` and RE2 searches of the anchored regexes
the config carries. Tests check it agrees with meshpolicy.semantics.evaluate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import re2


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


def principal_matches(p: dict, peer_id: str | None) -> bool:
    kind = p["kind"]
    if kind == "any":
        return True
    if peer_id is None:
        return False
    if kind == "authenticated":
        return True
    if kind == "id":
        return peer_id == p["spiffe_id"]
    return regex_holds(p["regex"], peer_id)


def _paths_hold(matchers: list[dict], path: str) -> bool:
    return not matchers or any(regex_holds(m["regex"], path) for m in matchers)


def entry_matches(e: dict, peer_id: str | None, method: str, path: str) -> bool:
    return (any(principal_matches(p, peer_id) for p in e["principals"])
            and (not e["methods"] or method in e["methods"])
            and _paths_hold(e["paths"], path))


def inbound_decision(cfg: dict, peer_id: str | None, method: str, path: str) -> InboundDecision:
    """peer_id: the SPIFFE ID of the caller's verified certificate, or None."""
    peer = visible_identity(cfg, peer_id)
    auth = cfg["inbound"]["authorization"]
    for e in auth["deny"]:
        if entry_matches(e, peer, method, path):
            return InboundDecision(False, e["rule"])
    for e in auth["allow"]:
        if entry_matches(e, peer, method, path):
            return InboundDecision(True, e["rule"])
    return InboundDecision(auth["default"] == "allow", None)


class TokenBuckets:
    """The inbound rate limits: one bucket per (limit, caller key); a request
    takes a token from every limit whose principals match, and is refused
    (429) if any of those buckets is empty. `now` is in seconds."""

    def __init__(self, cfg: dict):
        self.limits = cfg["inbound"]["rate_limits"]
        self.peer = lambda pid: visible_identity(cfg, pid)
        self.state: dict[tuple[int, str], tuple[float, float]] = {}  # -> (tokens, last fill time)

    def admit(self, peer_id: str | None, peer_address: str, now: float) -> bool:
        peer = self.peer(peer_id)
        key = peer if peer is not None else peer_address
        taken = []
        for i, lim in enumerate(self.limits):
            if not any(principal_matches(p, peer) for p in lim["principals"]):
                continue
            tokens, last = self.state.get((i, key), (float(lim["max_tokens"]), now))
            fills = math.floor((now - last) * 1000 / lim["fill_interval_ms"])
            if fills > 0:
                tokens = min(float(lim["max_tokens"]), tokens + fills * lim["tokens_per_fill"])
                last += fills * lim["fill_interval_ms"] / 1000
            taken.append(((i, key), tokens, last))
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


def match_holds(cfg: dict, m: dict, method: str, path: str, headers: dict[str, str]) -> bool:
    return ((not m["methods"] or method in m["methods"])
            and _paths_hold(m["paths"], path)
            and all(header_holds(t, headers) for t in m["headers"])
            and (not m["sources"] or cfg["workload"]["service"] in m["sources"]))


def route(cfg: dict, host: str, method: str, path: str, headers: dict[str, str] | None = None) -> RouteChoice:
    """What this workload's outbound side does with a request its app sends
    to `host`. Header names are compared lower-case."""
    hs = {k.lower(): v for k, v in (headers or {}).items()}
    d = find_destination(cfg, host)
    if d is None:
        return RouteChoice("unknown_destination", status=403)
    for r in d["routes"]:
        if not match_holds(cfg, r["match"], method, path, hs):
            continue
        a = r["action"]
        if a["kind"] == "forward":
            mirror = (a["mirror"]["version"], a["mirror"]["percent"]) if a["mirror"] else None
            return RouteChoice("forward", d["service"], r["rule"],
                               {x["version"]: x["weight"] for x in a["destinations"]}, mirror, route=r)
        return RouteChoice(a["kind"], d["service"], r["rule"], status=a["status"], route=r)
    return RouteChoice("no_route", d["service"], status=404)


def upstream_address(dest: dict, version: str | None, service_port: int | None = None) -> tuple[str, int]:
    """Where to dial the chosen version: its inbound listener for the service
    port (the first declared one when the request named none)."""
    for u in dest["upstreams"]:
        if u["version"] == version:
            ports = u["ports"]
            for p in ports:
                if p["service_port"] == service_port:
                    return u["address"], p["port"]
            return u["address"], ports[0]["port"]
    raise KeyError(version)
