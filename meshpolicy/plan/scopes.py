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
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.types import AuthRule, Mesh, Source
from ..semantics import admission

EVERYONE = "(everyone)"


@dataclass(frozen=True)
class Admission:
    """caller: a service name, or None for callers without a mesh identity.
    rule/source: the allow rule (and its source) that admits the caller;
    both None when the mesh's default stance is allow."""

    caller: str | None
    rule: AuthRule | None
    source: Source | None

    @property
    def reason(self) -> str:
        if self.rule is None:
            return "the mesh allows by default"
        s = self.source
        what = {"any": "`*`", "authenticated": "`authenticated`",
                "namespace": f"`namespace {s.name}`", "service": f"`{s.name}`"}[s.kind]
        return f"allow rule #{self.rule.index + 1} admits {what}"


def _verifier_candidates(mesh: Mesh, dest: str, by_ns: dict[str, list[str]], names: list[str]) -> list[str | None]:
    """The one call into the verifier: its candidate callers of dest (services
    sharing a named identity included)."""
    from ..verify.callgraph import candidate_callers

    return candidate_callers(mesh, dest, by_ns, names)


def source_admits(mesh: Mesh, s: Source, caller: str | None, dest: str) -> bool:
    """Whether source `s` can match `caller` on some request to dest
    (semantics/admission.py: identity visibility and shared identities)."""
    if s.kind == "any":
        return True
    if not admission.identity_visible(mesh, caller, dest):
        return False
    if s.kind == "authenticated":
        return True
    if s.kind == "service":
        return admission.same_identity(mesh, s.name, caller)
    return mesh.service_map[caller].namespace == s.name


def admissions(mesh: Mesh, dest: str, by_ns: dict[str, list[str]], names: list[str]) -> dict[str | None, Admission]:
    """The callers that may call dest, each with its reason, in the verifier's
    order. by_ns: service names per namespace; names: every service name."""
    rules = mesh.rules_by_target.get(dest, [])
    allows = [r for r in rules if r.effect == "allow"]
    blanket_denies = [s for r in rules if r.effect == "deny" and not r.methods and not r.paths for s in r.sources]
    out: dict[str | None, Admission] = {}
    for caller in _verifier_candidates(mesh, dest, by_ns, names):
        if caller is not None and caller not in mesh.service_map:
            continue
        if not admission.admits(mesh, caller, dest):
            continue  # the transport refuses it (strict mTLS, no identity)
        if any(source_admits(mesh, s, caller, dest) for s in blanket_denies):
            continue
        if mesh.settings.default == "allow":
            out[caller] = Admission(caller, None, None)
            continue
        found = next(((r, s) for r in allows for s in r.sources if source_admits(mesh, s, caller, dest)), None)
        if found is not None:
            out[caller] = Admission(caller, *found)
    return out
