"""Who may call whom: one answer, with the reason, for every target, `meshc up`
and the language server.

The candidates are the verifier's (verify/callgraph.py `candidate_callers`:
the callers some allow rule, or the default stance, might admit). Here each
candidate gets its reason, the first allow rule in file order with a source
that can match it, and is dropped when no request from it can be allowed
whatever its method, path and headers:

- the transport refuses it (strict mTLS, a caller without identity);
- with the destination's mTLS off no caller identity is visible, so only
  `*` sources match (docs/semantics.md; semantics/admission.py decides both);
- a deny rule with no methods and no paths whose source matches the caller
  denies everything it sends.

What is left is conservative (a superset of the calls the verifier proves
possible): methods, paths and partial denies are decided per request at the
destination, so nothing the policy allows is ever out of scope. tests/
test_plan.py checks it against the reference evaluator and `may_call`.

North-south (docs/semantics.md, "Ingress, tokens and egress"), by the same
function:

- an ingress gateway is a candidate caller of the services its rules forward
  to (semantics/ingress.py `forwards_to`); it has a mesh identity, so it is
  admitted as a workload is, by `*`, `authenticated`, its namespace, a
  service sharing its identity, and `internet` sources whose token
  requirement it can let through (`providers_admitted`: the provider named
  is one it accepts; claims are not looked at);
- an external service's callers are decided at the caller's own sidecar
  (semantics/egress.py `caller_source_matches`: no transport step, and only
  mesh workloads, never the callerless None, since only a sidecar enforces
  egress).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.types import AuthRule, Mesh, Source
from ..semantics import admission
from ..semantics.egress import caller_source_matches
from ..semantics.ingress import ingresses_to, providers_admitted

EVERYONE = "(everyone)"


@dataclass(frozen=True)
class Admission:
    """caller: a service name, or None for callers without a mesh identity.
    rule/source: the allow rule (and its source) that admits the caller;
    both None when the mesh's default stance is allow."""

    caller: str | None
    rule: AuthRule | None
    source: Source | None
    # an ingress admitted by an `internet with jwt` source: the providers
    # whose tokens can meet it (empty: no token needed, or not an internet source)
    providers: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        if self.rule is None:
            return "the mesh allows by default"
        s = self.source
        what = {"any": "`*`", "authenticated": "`authenticated`",
                "namespace": f"`namespace {s.name}`", "service": f"`{s.name}`",
                "internet": "`internet`" + (" with a token" if s.jwt is not None else "")}[s.kind]
        return f"allow rule #{self.rule.index + 1} admits {what}"


def _verifier_candidates(mesh: Mesh, dest: str, by_ns: dict[str, list[str]], names: list[str]) -> list[str | None]:
    """The one call into the verifier: its candidate callers of dest (services
    sharing a named identity included)."""
    from ..verify.callgraph import candidate_callers

    return candidate_callers(mesh, dest, by_ns, names)


def source_admits(mesh: Mesh, s: Source, caller: str | None, dest: str) -> bool:
    """Whether source `s` can match `caller` (a service, an ingress, or None)
    on some request to dest (semantics/admission.py: identity visibility and
    shared identities; an external: semantics/egress.py)."""
    if dest in mesh.external_map and mesh.service(dest) is None:
        return caller_source_matches(mesh, s, caller)
    if s.kind == "any":
        return True
    if not admission.identity_visible(mesh, caller, dest):
        return False
    if s.kind == "authenticated":
        return True
    if s.kind == "service":
        return admission.same_identity(mesh, s.name, caller)
    if s.kind == "internet":
        return internet_providers(mesh, s, caller) is not None
    return admission.namespace_of(mesh, caller) == s.name


def internet_providers(mesh: Mesh, s: Source, caller: str | None) -> tuple[str, ...] | None:
    """For a caller with an ingress's identity: the providers whose tokens let
    `s` match its requests (semantics/ingress.py `providers_admitted`, over
    every ingress with that identity); None: `s` never matches it."""
    if not admission.is_ingress_identity(mesh, caller):
        return None
    key = admission.identity_of(mesh, caller)
    got: dict[str, None] | None = None
    for g in mesh.ingress_map.values():
        if admission.ingress_key(g) != key:
            continue
        p = providers_admitted(mesh, s, g)
        if p is not None:
            got = (got or {}) | dict.fromkeys(p)
    return tuple(got) if got is not None else None


def admissions(mesh: Mesh, dest: str, by_ns: dict[str, list[str]], names: list[str]) -> dict[str | None, Admission]:
    """The callers that may call dest, each with its reason, in the verifier's
    order (then the ingresses that forward to dest, in declaration order).
    by_ns: service names per namespace; names: every service name. dest may
    be an external service: its callers are then the mesh workloads its
    egress rules (or the default stance) let out, never None."""
    rules = mesh.rules_by_target.get(dest, [])
    allows = [r for r in rules if r.effect == "allow"]
    # a deny with no methods or paths shuts a caller out, unless its source asks for a token (requests
    # without one, or with other claims, still pass it)
    blanket_denies = [s for r in rules if r.effect == "deny" and not r.methods and not r.paths for s in r.sources
                      if s.jwt is None]
    egress = dest in mesh.external_map and mesh.service(dest) is None
    candidates = _verifier_candidates(mesh, dest, by_ns, names)
    if egress:
        candidates = [c for c in candidates if c is not None]
    elif mesh.ingresses and mesh.service(dest) is not None:
        candidates = [*candidates, *ingresses_to(mesh, dest)]
    out: dict[str | None, Admission] = {}
    for caller in candidates:
        if caller is not None and caller not in mesh.service_map and caller not in mesh.ingress_map:
            continue
        if not egress and not admission.admits(mesh, caller, dest):
            continue  # the transport refuses it (strict mTLS, no identity)
        if any(source_admits(mesh, s, caller, dest) for s in blanket_denies):
            continue
        if mesh.settings.default == "allow":
            out[caller] = Admission(caller, None, None)
            continue
        found = next(((r, s) for r in allows for s in r.sources if source_admits(mesh, s, caller, dest)), None)
        if found is not None:
            r, s = found
            providers = (internet_providers(mesh, s, caller) or ()) if s.kind == "internet" else ()
            out[caller] = Admission(caller, r, s, providers)
    return out
