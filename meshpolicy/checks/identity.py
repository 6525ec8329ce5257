"""MP205: every service's SPIFFE ID `spiffe://TD/ns/NS/sa/SA` must be valid:
TD a SPIFFE trust domain, NS and SA Kubernetes DNS-1123 labels."""

from __future__ import annotations

import re

from ..codes import diag
from ..model.types import Mesh
from . import rule

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def trust_domain_problem(td: str) -> str | None:
    if not td:
        return "is empty"
    if "://" in td:
        return "has a scheme; write the bare domain"
    if "/" in td:
        return "has a path; write the bare domain"
    if ":" in td:
        return "has a port; write the bare domain"
    if len(td) > 255:
        return "is longer than 255 characters"
    if td != td.lower():
        return "has upper-case letters"
    if not _TRUST_DOMAIN.fullmatch(td):
        bad = next(ch for ch in td if not _TRUST_DOMAIN.fullmatch(ch))
        return f"has the character `{bad}`; only lower-case letters, digits, `.`, `-` and `_` are allowed"
    return None


def label_problem(name: str) -> str | None:
    if len(name) > 63:
        return f"is {len(name)} characters long (at most 63)"
    if not DNS_LABEL.fullmatch(name):
        return "is not a DNS label (lower-case letters, digits and `-`, starting and ending alphanumeric)"
    return None


@rule("MP205")
def invalid_identities(mesh: Mesh):
    for m in mesh.mesh_blocks:
        problem = trust_domain_problem(m.trust_domain)
        if problem:
            yield diag("MP205", f"trust domain `{m.trust_domain}` {problem}", m.at("trust_domain"))
    for svc in mesh.services:
        problem = label_problem(svc.namespace)
        if problem:
            yield diag("MP205", f"namespace `{svc.namespace}` of service `{svc.name}` {problem}",
                       svc.spans.get("namespace", svc.at("name")))
        problem = label_problem(svc.account)
        if problem:
            if "account" in svc.spans:
                yield diag("MP205", f"account `{svc.account}` of service `{svc.name}` {problem}",
                           svc.at("account"))
            else:
                yield diag("MP205", f"service `{svc.name}` has no `account`, and its name, the default "
                                    f"account, {problem}", svc.at("name"),
                           help="add `account NAME` with a valid DNS label, or rename the service")
