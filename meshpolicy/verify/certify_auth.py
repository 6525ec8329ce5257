"""Certifying authorization findings: empty (MP504), dead (MP501), overlapping
(MP503) and redundant (MP502) rules, and the mTLS findings about rules
(MP561, MP562); with nothing missed for any rule."""

from __future__ import annotations

from ..diagnostics import Diagnostic
from ..model.types import AuthRule, Mesh
from ..semantics.evaluate import auth_rule_matches, authorize, source_matches
from .certify_core import Answer, Certifier, absence, claim
from .certify_routes import wholly_unnormal


# ---- authorization facts -------------------------------------------------------------

def _auth_facts(c: Certifier, r: AuthRule) -> dict[str, Answer]:
    """undenied: a request r matches that no deny rule matches; denied: one a
    deny rule matches. Together they say whether r matches anything."""
    dest = r.target.name
    sp = c.space(dest, r.span)
    if sp is None:
        return {}
    z3 = sp.z3
    m = sp.auth[r.index]
    if r.effect == "deny":
        return {"any": c.ask(dest, ("any", r.index), r.span, f"whether rule {r.index + 1} matches anything", m)}
    # deny rules decide only what the transport admits (what it refuses is MP561's)
    undenied = c.ask(dest, ("undenied", r.index), r.span, "whether a deny rule denies all this rule matches",
                     m, sp.admitted, z3.Not(sp.denied_by_rule))
    denied = c.ask(dest, ("denied", r.index), r.span, "whether a deny rule wins over part of this rule",
                   m, sp.admitted, sp.denied_by_rule)
    if undenied.sat or denied.sat:
        anything = Answer("sat", undenied.request or denied.request)
    else:
        anything = c.ask(dest, ("any", r.index), r.span, f"whether rule {r.index + 1} matches anything", m)
    return {"undenied": undenied, "denied": denied, "any": anything}


def _reported(c: Certifier, code: str) -> set[int]:
    return {c.auth_at[d.span].index for d in c.found if d.code == code and d.span in c.auth_at}


def _cover_set(c: Certifier, r: AuthRule) -> list[AuthRule]:
    """The same-effect rules that may cover r: of two equal rules the later is
    reported redundant (docs/verify.md), so the later reported ones are left out."""
    redundant = _reported(c, "MP502")
    return [o for o in c.mesh.rules_by_target.get(r.target.name, []) if o.effect == r.effect and o.index != r.index
            and not (o.index in redundant and o.index > r.index)]


def _covered_by(c: Certifier, r: AuthRule, others: list[AuthRule], key: str, admitted: bool = False) -> Answer:
    """A request of r (that the transport admits, if `admitted`) no rule of `others` matches."""
    dest = r.target.name
    sp = c.space(dest, r.span)
    if sp is None:
        return Answer("unknown")
    z3 = sp.z3
    cover = z3.Or(*[sp.auth[o.index] for o in others], z3.BoolVal(False))
    return c.ask(dest, (key, r.index, tuple(o.index for o in others), admitted), r.span,
                 f"whether other rules cover rule {r.index + 1}", sp.auth[r.index], z3.Not(cover),
                 sp.admitted if admitted else z3.BoolVal(True))


def _labelled_rules(c: Certifier, d: Diagnostic) -> list[AuthRule]:
    return [c.auth_at[lab.span] for lab in d.labels if lab.span in c.auth_at]


def _identity_blind(mesh: Mesh, r: AuthRule) -> bool:
    """An allow rule naming callers by identity on a service with mTLS off:
    reported once, as MP562, not also as MP504 (docs/verify.md)."""
    svc = mesh.service(r.target.name)
    return (r.effect == "allow" and svc is not None and mesh.mtls_of(svc) == "off"
            and all(s.kind != "any" for s in r.sources))


def _rule_of(c: Certifier, d: Diagnostic) -> AuthRule | None:
    r = c.auth_at.get(d.span)
    if r is None:
        c.not_certified(f"this {d.code} finding names no authorization rule the certifier knows", d.span)
    return r


@claim("MP504")
def _matches_nothing(c: Certifier, d: Diagnostic) -> None:
    r = _rule_of(c, d)
    if r is None:
        return
    ans = _auth_facts(c, r).get("any")
    if ans is not None and ans.sat:
        c.disagree("this rule matches no request", "it matches some", d.span, ans.request,
                   lambda q: auth_rule_matches(c.mesh, r, q))


def _denied_witness(c: Certifier, d: Diagnostic, r: AuthRule) -> None:
    c.check_witness(d, r.target.name, lambda sp: sp.z3.And(sp.auth[r.index], sp.z3.Not(sp.allowed)),
                    lambda q: auth_rule_matches(c.mesh, r, q) and not authorize(c.mesh, q).allowed,
                    "the rule matches a request that is denied")


@claim("MP501")
def _dead_allow(c: Certifier, d: Diagnostic) -> None:
    r = _rule_of(c, d)
    if r is None:
        return
    facts = _auth_facts(c, r)
    if facts and facts["undenied"].sat:
        c.disagree("deny rules deny every request this allow rule matches", "one is not denied by any deny rule",
                   d.span, facts["undenied"].request,
                   lambda q: auth_rule_matches(c.mesh, r, q) and authorize(c.mesh, q).allowed)
    if facts and facts["denied"].unsat:
        c.disagree("deny rules deny every request this allow rule matches",
                   "no deny rule matches a request of it that the transport admits", d.span)
    labelled = _labelled_rules(c, d)
    ans = _covered_by(c, r, labelled, "labels", admitted=True)
    if ans.sat:
        c.disagree("the deny rules in the labels deny every request it matches", "they miss one", d.span,
                   ans.request, lambda q: auth_rule_matches(c.mesh, r, q) and authorize(c.mesh, q).refused is None
                   and not any(auth_rule_matches(c.mesh, o, q) for o in labelled))
    _denied_witness(c, d, r)


@claim("MP503")
def _overlap(c: Certifier, d: Diagnostic) -> None:
    r = _rule_of(c, d)
    if r is None:
        return
    facts = _auth_facts(c, r)
    if facts and facts["denied"].unsat:
        c.disagree("a deny rule wins over part of this allow rule", "no deny rule meets it", d.span)
    if facts and facts["undenied"].unsat:
        c.disagree("deny rules win over only part of this allow rule", "they deny all of it (a dead rule, MP501)",
                   d.span)
    _denied_witness(c, d, r)


@claim("MP502")
def _redundant(c: Certifier, d: Diagnostic) -> None:
    r = _rule_of(c, d)
    if r is None:
        return
    labelled = _labelled_rules(c, d)
    for others, key, said in ((labelled, "labels", "the rules in the labels"),
                              (_cover_set(c, r), "cover", "rules that are kept")):
        ans = _covered_by(c, r, others, key)
        if ans.sat:
            c.disagree(f"{said} match every request this rule matches", "one is matched by none of them", d.span,
                       ans.request, lambda q, others=others: auth_rule_matches(c.mesh, r, q)
                       and not any(auth_rule_matches(c.mesh, o, q) for o in others))
    c.check_witness(d, r.target.name,
                    lambda sp: sp.z3.And(sp.auth[r.index], sp.z3.Or(*[sp.auth[o.index] for o in labelled],
                                                                      sp.z3.BoolVal(False))),
                    lambda q: auth_rule_matches(c.mesh, r, q) and any(auth_rule_matches(c.mesh, o, q) for o in labelled),
                    "a request of the rule is matched by a covering rule")


@absence
def _auth_missed(c: Certifier) -> None:
    """Every rule the verifier did not report: certify that it indeed has none
    of the findings (so a decider that misses findings is caught too)."""
    codes_on: dict[int, set[str]] = {}
    for d in c.found:
        r = c.auth_at.get(d.span)
        if r is not None:
            codes_on.setdefault(r.index, set()).add(d.code)
    for r in c.mesh.auth_rules:
        if r.target.name in c.unproved or c.mesh.service(r.target.name) is None:
            continue
        got = codes_on.get(r.index, set())
        facts = _auth_facts(c, r)
        if not facts:
            continue
        if facts["any"].unsat:
            if "MP504" not in got and not _identity_blind(c.mesh, r) and not wholly_unnormal(c, r.paths):
                c.disagree("nothing about this rule", "it matches no request (MP504)", r.span)
            continue
        dead = False
        if r.effect == "allow":
            dead = facts["undenied"].unsat and facts["denied"].sat
            if dead and "MP501" not in got:
                c.disagree("nothing about this allow rule", "deny rules deny every request it matches (MP501)", r.span)
            if facts["denied"].sat and not dead and "MP503" not in got:
                c.disagree("nothing about this allow rule", "a deny rule wins over part of it (MP503)", r.span,
                           facts["denied"].request, lambda q: auth_rule_matches(c.mesh, r, q)
                           and not authorize(c.mesh, q).allowed)
        if not dead and "MP502" not in got and _covered_by(c, r, _cover_set(c, r), "cover").unsat:
            c.disagree("nothing about this rule", "other rules of the same effect match every request it matches "
                       "(MP502)", r.span)



# ---- mTLS ---------------------------------------------------------------------------

@claim("MP561")
def _anyone_on_strict(c: Certifier, d: Diagnostic) -> None:
    """The destination refuses callers without identity, and the witness is a
    request of theirs the rule matches. (A `*` rule matches such callers
    whenever it matches anything; one that matches nothing is MP504's, and
    its MP561 then says nothing about any request.)"""
    from ..semantics.admission import admits

    r = c.source_at.get(d.span)
    if r is None:
        c.not_certified("this MP561 finding names no rule the certifier knows", d.span)
        return
    dest = r.target.name
    if admits(c.mesh, None, dest):
        c.disagree(f"`{dest}` refuses callers without an identity", "its transport admits them", d.span)
    anything = _auth_facts(c, r).get("any")
    if anything is None or not anything.sat:
        return
    w = d.witness or {}
    if isinstance(w.get("path"), str) and w["path"].startswith("/"):  # regex-only rules get a description instead
        c.check_witness(d, dest, lambda sp: sp.z3.And(sp.caller_is(None), sp.auth[r.index]),
                        lambda q: q.source is None and auth_rule_matches(c.mesh, r, q),
                        "the rule matches a caller without identity")


@claim("MP562")
def _identity_blind_rule(c: Certifier, d: Diagnostic) -> None:
    r = c.source_at.get(d.span)
    if r is None:
        c.not_certified("this MP562 finding names no rule the certifier knows", d.span)
        return
    dest = r.target.name
    sp = c.space(dest, d.span)
    if sp is None:
        return
    named = [s for s in r.sources if s.kind != "any"]
    ans = c.ask(dest, ("identity", r.index), d.span, "whether the rule's named callers can match",
                sp.z3.Or(*[sp.source(s) for s in named], sp.z3.BoolVal(False)))
    if ans.sat:
        c.disagree("this rule's callers never match", "one does", d.span, ans.request,
                   lambda q: any(source_matches(c.mesh, s, q) for s in named))
