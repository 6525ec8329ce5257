"""Host names: which requests an ingress takes (its `hosts`), and what a
request's Host/:authority names. Pure strings, no model."""

from __future__ import annotations


def host_of(authority: str) -> str:
    """The host a Host header or :authority names: lower-cased, without the
    port and without a trailing dot (`Shop.Example.com.:8443` ->
    `shop.example.com`; `[::1]:80` -> `[::1]`)."""
    a = authority.strip().lower()
    if a.startswith("["):
        end = a.find("]")
        return a[: end + 1] if end >= 0 else a
    host, colon, port = a.rpartition(":")
    if colon and port.isdigit():
        a = host
    return a[:-1] if a.endswith(".") else a


def host_matches(pattern: str, host: str) -> bool:
    """Does an ingress `hosts` entry admit a request's host (as host_of gives
    it)? `*.suffix` admits one label or more before `.suffix`
    (`*.shop.example.com` admits `a.shop.example.com` and
    `a.b.shop.example.com`, not `shop.example.com`); `*` alone admits any
    host; anything else is an exact name, compared without letter case."""
    p = pattern.lower()
    h = host_of(host)
    if p == "*":
        return True
    if p.startswith("*."):
        suffix = p[1:]  # ".shop.example.com"
        return len(h) > len(suffix) and h.endswith(suffix) and not h.startswith(".")
    return h == p


def any_host_matches(patterns: list[str], host: str) -> bool:
    return any(host_matches(p, host) for p in patterns)
