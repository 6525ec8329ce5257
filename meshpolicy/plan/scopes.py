"""Who may call whom: one answer, with the reason, for every target, `meshc up`
and the language server.

The candidates are the verifier's (verify/callgraph.py `candidate_callers`:
the callers some allow rule, or the default stance, might admit). Here each
candidate gets its reason, the first allow rule in file order with a source
that can match it, and is dropped when no request from it can be allowed
whatever its method, path and headers:

- with the destination's mTLS off no caller identity is visible, so only
  `*` sources match (docs/semantics.md, "Identity");
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


def _verifier_candidates(mesh: Mesh, dest: str, by_ns: dict[str, list[str]],
                         by_identity: dict[tuple[str, str], list[str]]) -> list[str | None]:
    """The one call into the verifier: its candidate callers of dest, plus
    the services sharing an identity with one of them (a certificate cannot
    tell them apart; the verifier's list names services)."""
    from ..verify.callgraph import candidate_callers

    found = candidate_callers(mesh, dest, by_ns)
    out = dict.fromkeys(found)
    for name in found:
        svc = mesh.service_map.get(name) if name is not None else None
        if svc is not None:
            out.update(dict.fromkeys(by_identity[(svc.namespace, svc.account)]))
    return list(out)


def source_admits(mesh: Mesh, s: Source, caller: str | None, visible: bool) -> bool:
    """Whether source `s` can match `caller` on some request."""
    if s.kind == "any":
        return True
    if caller is None or not visible:
        return False
    if s.kind == "authenticated":
        return True
    c = mesh.service_map[caller]
    if s.kind == "service":  # a certificate names an identity, which services may share
        named = mesh.service_map.get(s.name)
        return s.name == caller or (named is not None and (named.namespace, named.account) == (c.namespace, c.account))
    return c.namespace == s.name


def admissions(mesh: Mesh, dest: str, by_ns: dict[str, list[str]],
               by_identity: dict[tuple[str, str], list[str]]) -> dict[str | None, Admission]:
    """The callers that may call dest, each with its reason, in the verifier's
    order. by_ns / by_identity: service names per namespace / (namespace, account)."""
    svc = mesh.service_map[dest]
    visible = mesh.mtls_of(svc) != "off"
    rules = mesh.rules_by_target.get(dest, [])
    allows = [r for r in rules if r.effect == "allow"]
    blanket_denies = [s for r in rules if r.effect == "deny" and not r.methods and not r.paths for s in r.sources]
    out: dict[str | None, Admission] = {}
    for caller in _verifier_candidates(mesh, dest, by_ns, by_identity):
        if caller is not None and caller not in mesh.service_map:
            continue
        if any(source_admits(mesh, s, caller, visible) for s in blanket_denies):
            continue
        if mesh.settings.default == "allow":
            out[caller] = Admission(caller, None, None)
            continue
        found = next(((r, s) for r in allows for s in r.sources if source_admits(mesh, s, caller, visible)), None)
        if found is not None:
            out[caller] = Admission(caller, *found)
    return out
