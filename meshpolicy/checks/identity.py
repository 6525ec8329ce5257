"""MP205: every service's and ingress's SPIFFE ID `spiffe://TD/ns/NS/sa/SA`
must be valid: TD a SPIFFE trust domain, NS and SA Kubernetes DNS-1123
labels (an external service's namespace too).
MP108: services sharing one identity while a rule names one of them, and a
service sharing an ingress's identity while a rule names `internet`."""

from __future__ import annotations

import re

from ..codes import diag
from ..diagnostics import Label
from ..model.types import Mesh
from ..semantics.admission import identity_groups, identity_of, ingress_key
from . import rule
from .controls import control_char

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def trust_domain_problem(td: str) -> str | None:
    if not td:
        return "is empty"
    if control_char(td):
        return None  # MP214
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


@rule("MP205", per_file=True)
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
            if "account" in svc.spans or svc.account != svc.name:  # imported: the workload's service account
                yield diag("MP205", f"account `{svc.account}` of service `{svc.name}` {problem}",
                           svc.spans.get("account", svc.at("name")))
            else:
                yield diag("MP205", f"service `{svc.name}` has no `account`, and its name, the default "
                                    f"account, {problem}", svc.at("name"),
                           help="add `account NAME` with a valid DNS label, or rename the service")
    for g in mesh.ingresses:
        for field, value in (("namespace", g.namespace), ("account", g.account)):
            problem = label_problem(value)
            if problem:
                yield diag("MP205", f"{field} `{value}` of ingress `{g.name}` {problem}",
                           g.spans.get(field, g.at("name")))
    for e in mesh.externals:
        problem = label_problem(e.namespace)
        if problem:
            yield diag("MP205", f"namespace `{e.namespace}` of external `{e.name}` {problem}",
                       e.spans.get("namespace", e.at("name")))


@rule("MP108")
def shared_identities(mesh: Mesh):
    """A certificate proves namespace and account, nothing finer: services that
    share both are one caller to every sidecar, so a rule or limit naming one
    also admits (or limits) the others (docs/semantics.md). One report per
    shared identity, at the service declared last, naming the rules it widens.
    Every target relies on this check instead of refusing on its own."""
    yield from _services_as_ingresses(mesh)
    groups = [g for g in identity_groups(mesh).values() if len(g) > 1]
    if not groups:
        return
    named: dict[str, list] = {}
    for stmt, what in [*((r, f"{r.effect} rule") for r in mesh.auth_rules),
                       *((lim, "limit") for lim in mesh.rate_limits)]:
        for src in stmt.sources:
            if src.kind == "service" and src.name in mesh.service_map:
                named.setdefault(src.name, []).append((src, stmt, what))
    for group in groups:
        uses = [(n, u) for n in group for u in named.get(n, [])]
        if not uses:
            continue  # nothing tells them apart, so nothing is widened
        last = mesh.service(group[-1])
        both = ", ".join(f"`{n}`" for n in group)
        labels = []
        for n, (src, stmt, what) in uses:
            others = ", ".join(f"`{o}`" for o in group if o != n)
            labels.append(Label(src.span, f"this {what} for `{stmt.target.name}` names `{n}`, so it also "
                                          f"applies to {others}"))
        yield diag("MP108", f"{both} share the identity {mesh.spiffe_id(last)}, so every rule or limit naming "
                            f"one of them also applies to the other{'s' if len(group) > 2 else ''}",
                   last.spans.get("account", last.at("name")), labels=labels)


def _services_as_ingresses(mesh: Mesh):
    """A service with an ingress's namespace and account presents the
    ingress's certificate: its requests count as the internet's
    (semantics.admission.is_ingress_identity), so `internet` rules admit it."""
    internet = [src for stmt in (*mesh.auth_rules, *mesh.rate_limits) for src in stmt.sources
                if src.kind == "internet"]
    if not internet or not mesh.ingresses:
        return
    ingresses = {ingress_key(g): g for g in reversed(mesh.ingresses)}
    for svc in mesh.service_map.values():
        g = ingresses.get(identity_of(mesh, svc.name))
        if g is not None:
            yield diag("MP108", f"service `{svc.name}` shares the identity {mesh.spiffe_id(svc)} of ingress "
                                f"`{g.name}`, so every `internet` rule or limit also applies to its own calls",
                       svc.spans.get("account", svc.at("name")),
                       labels=[Label(g.at("name"), "the ingress"), Label(internet[0].span, "an `internet` source")],
                       help="give the service or the ingress its own `account`")
