"""The L7 options of a matched rule (route and ingress rules alike), applied
around forwarding: CORS (semantics/cors.py), rewrite (wire/evaluate's
rewritten_path, over semantics/rewrite.py) and header operations
(semantics/header_ops.py). Each meaning is the semantics'; this module only
applies it to aiohttp requests and responses.

A rewritten target is checked as a caller's is (request_target.py): the
policy's replacement is joined to the normalized path and the query bytes
exactly as they came; anything that is not one valid request target is 400,
never written. Header operations write through the upstream client, which
refuses a name or value with control bytes (upstream._head).
"""

from __future__ import annotations

from aiohttp import web

from ..semantics import cors as cors_rules
from ..semantics.header_ops import apply_header_ops
from ..wire.evaluate import rewritten_path
from .request_target import forward_target
from .upstream import HOP_BY_HOP


def _ops(rule: dict) -> list[tuple[str, str, str, str | None]]:
    return [(h["side"], h["op"], h["name"], h["value"]) for h in rule["headers"]]


def preflight_answer(rule: dict, request: web.BaseRequest) -> web.Response | None:
    """The sidecar's own 200 to a CORS preflight from an allowed origin
    (neither authorization nor the app sees it); None otherwise."""
    c = rule["cors"]
    if c is None:
        return None
    headers = {"origin": request.headers.get("Origin", ""),
               "access-control-request-method": request.headers.get("Access-Control-Request-Method", "")}
    if not cors_rules.is_preflight(request.method, headers) or not cors_rules.origin_allowed(c, headers["origin"]):
        return None
    return web.Response(status=200, headers=cors_rules.preflight_headers(c, headers["origin"]))


def rewritten(rule: dict, path: str, target: bytes, host: str) -> tuple[bytes | None, str]:
    """(target, host) after the rule's rewrite; target None: the rewritten
    path is not a valid request target (the caller answers 400)."""
    rw = rule["rewrite"]
    if rw is None:
        return target, host
    if rw["path"] is not None:
        new_path = rewritten_path(rule, path)
        _, sep, query = target.partition(b"?")
        candidate = new_path + (("?" + query.decode("ascii")) if sep else "")
        checked = forward_target(candidate)
        if checked is None:
            return None, host
        target = checked[1]
    if rw["host"] is not None:
        host = rw["host"]
    return target, host


def request_ops(rule: dict, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The forwarded headers after the rule's request operations; an
    operation never sets a hop-by-hop header (the checker refuses them)."""
    if not rule["headers"]:
        return headers
    return [(k, v) for k, v in apply_header_ops(_ops(rule), "request", headers) if k.lower() not in HOP_BY_HOP]


def response_ops(rule: dict, request: web.BaseRequest, resp: web.Response) -> web.Response:
    """A forwarded request's response after the rule's response operations,
    with CORS headers for an allowed origin."""
    c = rule["cors"]
    origin = request.headers.get("Origin")
    allowed = c is not None and cors_rules.origin_allowed(c, origin)
    if not rule["headers"] and not allowed:
        return resp
    headers = list(resp.headers.items())
    if rule["headers"]:
        headers = [(k, v) for k, v in apply_header_ops(_ops(rule), "response", headers)
                   if k.lower() not in HOP_BY_HOP]
    if allowed:
        headers += cors_rules.response_headers(c, origin)
    return web.Response(status=resp.status, body=resp.body, headers=headers)
