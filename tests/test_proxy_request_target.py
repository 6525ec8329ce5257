"""What meshproxy forwards, unit by unit: the request target (normalized path
+ the raw query, or a refusal) and the headers (identity headers a caller
sent are never forwarded). The end-to-end versions, against Envoy, are in
tests/test_proxy_differential.py."""

from __future__ import annotations

import pytest

from meshpolicy.proxy.identity_headers import forwardable, identity_headers
from meshpolicy.proxy.request_target import forward_target, valid_method


@pytest.mark.parametrize("raw,path,target", [
    ("/a?x=%0d%0a", "/a", b"/a?x=%0d%0a"),
    ("/a?a=%20b&c=1+2", "/a", b"/a?a=%20b&c=1+2"),
    ("/a?x=%2541", "/a", b"/a?x=%2541"),
    ("/a%2541", "/a%2541", b"/a%2541"),
    ("//x/./y/../z?", "/x/z", b"/x/z?"),
    ("/x/..;/admin", "/admin", b"/admin"),
    ("/%61dmin?q=%61", "/admin", b"/admin?q=%61"),
])
def test_the_query_is_forwarded_as_received(raw, path, target):
    assert forward_target(raw) == (path, target)


@pytest.mark.parametrize("raw", ["/a\n", "/a\r", "/a\r\nx", "/a b", "/a\x00", "/a\x7f", "/a#f", "/a?x#f", "/a%00",
                                 "/a%2Fb", "/a%5cb", "/a\\b", "*", "http://h/a", "", "/a?\udce2\udc82\udcac", "/\u20ac"])
def test_a_target_that_is_not_one_request_line_is_refused(raw):
    assert forward_target(raw) is None  # full matches: a trailing newline is not let through


def test_methods_are_tokens():
    assert valid_method("GET") and valid_method("PURGE")
    assert not any(valid_method(m) for m in ("GET\n", "G ET", "", "GET\r"))


def test_identity_headers_a_caller_sent_are_dropped_in_any_case():
    sent = [("X-MeshProxy-Peer", "spiffe://evil"), ("x-meshproxy-peer", "spiffe://evil2"),
            ("X-Forwarded-Client-Cert", "URI=spiffe://evil"), ("Connection", "keep-alive, x-secret"),
            ("x-secret", "hop"), ("Transfer-Encoding", "chunked"), ("x-ok", "1")]
    assert forwardable(sent) == [("x-ok", "1")]


def test_identity_headers_come_from_the_verified_peer_only():
    assert identity_headers("spiffe://t/ns/a/sa/api", None, None) == []
    got = dict(identity_headers("spiffe://t/ns/a/sa/api", "spiffe://t/ns/a/sa/web", b"der"))
    assert got["x-meshproxy-peer"] == "spiffe://t/ns/a/sa/web"
    assert got["x-forwarded-client-cert"].startswith("By=spiffe://t/ns/a/sa/api;Hash=")
    assert got["x-forwarded-client-cert"].endswith(";URI=spiffe://t/ns/a/sa/web")
