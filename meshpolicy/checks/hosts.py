"""MP240: host names. An ingress's `hosts` are DNS names, `*.suffix` (one
label or more) or `*`; an external service's hosts are concrete DNS names
(its caller's sidecar dials them and, on `tls` ports, sends one as SNI); a
`rewrite host` is a DNS name with an optional port. Matched whole
(fullmatch): `$` would let a trailing newline through."""

from __future__ import annotations

import re

from ..codes import diag
from ..model.types import Mesh
from . import rule
from ._walk import route_rules
from .controls import control_char

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_PORT = re.compile(r"[0-9]{1,5}")


def host_problem(host: str, wildcard: bool, port: bool = False) -> str | None:
    """Why `host` is not a host name here, or None. wildcard: `*` and `*.suffix` allowed."""
    if control_char(host):
        return None  # MP214
    name = host
    if port and ":" in host:
        name, _, p = host.rpartition(":")
        if not (_PORT.fullmatch(p) and 1 <= int(p) <= 65535):
            return f"has port `{p}`, not a number between 1 and 65535"
    if wildcard and name == "*":
        return None
    if name.startswith("*."):
        if not wildcard:
            return "is a wildcard; name each host the service is reached at"
        name = name[2:]
    if "*" in name:
        return "uses `*` other than as its whole first label"
    if len(name.rstrip(".")) > 253:
        return "is longer than 253 characters"
    if not DNS_NAME.fullmatch(name):
        return "is not a DNS name (labels of letters, digits and `-`, separated by dots)"
    return None


@rule("MP240", per_file=True)
def host_names(mesh: Mesh):
    for g in mesh.ingresses:
        for i, h in enumerate(g.hosts):
            problem = host_problem(h, wildcard=True)
            if problem:
                yield diag("MP240", f"host `{h}` of ingress `{g.name}` {problem}", g.spans.get(f"host.{i}", g.span))
    for e in mesh.externals:
        for i, h in enumerate(e.hosts):
            problem = host_problem(h, wildcard=False)
            if problem:
                yield diag("MP240", f"host `{h}` of external `{e.name}` {problem}", e.spans.get(f"host.{i}", e.span))
    for r in route_rules(mesh):
        if r.rewrite is not None and r.rewrite.host is not None:
            problem = host_problem(r.rewrite.host, wildcard=False, port=True)
            if problem:
                yield diag("MP240", f"rewrite host `{r.rewrite.host}` {problem}", r.rewrite.at("host"))
