"""Waivers: `[compile.<target>] waive = ["retry-budget", ...]` in meshc.toml.

A construct a target cannot express is MP701, never a silent drop. A
waiver is the reviewed exception: the named constructs are not lowered,
each use is a warning (MP706) naming the construct, the target and where,
and the output says what was waived (`record`). Only constructs whose loss
can neither let through a request the policy refuses nor send a request
somewhere the policy does not send it are waivable (WAIVABLE, with the
reason); waiving any other is an error (MP707) saying why, and an unknown
name is MP708. docs/targets.md, "Waivers", holds the same list.
"""

from __future__ import annotations

import json
from collections import Counter

from ..codes import diag
from ..diagnostics import Diagnostic
from ..span import Span

# construct -> why losing it is safe (what the caller sees instead)
WAIVABLE: dict[str, str] = {
    "retry": "fewer attempts: a failure reaches the caller sooner; where a request goes and who may send it are unchanged",
    "retry-backoff": "retries come at the mesh's default pace",
    "retry-budget": "retries are bounded by their count only",
    "retry-status": "those statuses are not retried: the caller sees them",
    "timeout": "the request waits for the mesh's default timeout instead",
    "circuit": "no connection limits: more load reaches the service, never more kinds of requests",
    "outlier": "failing endpoints stay in the balancing set",
    "balance": "the mesh's default balancer picks among the same endpoints",
    "balance-hash": "no affinity: the same version still serves, maybe another pod of it",
    "fault-delay": "no delay is injected (faults are tests)",
    "fault-abort": "no error is injected (faults are tests)",
    "mirror": "no copies are sent; the request itself goes where the policy sends it",
    "tracing": "traces follow the mesh's own tracing settings",
}

# constructs whose loss could let through a request the policy refuses
SECURITY = frozenset({
    "mtls-strict", "mtls-permissive", "mtls-off", "default-allow", "default-deny", "allow", "deny",
    "source-service", "source-namespace", "source-authenticated", "source-any", "source-internet",
    "auth-methods", "auth-paths", "rate-limit", "rate-limit-key", "jwt-provider", "jwt-jwks-uri",
    "jwt-token-location", "jwt-claims", "egress-rule", "egress-registry-only", "egress-allow-any",
    "request-headers", "response-headers", "cors", "account", "trust-domain", "ingress", "ingress-https",
    "external-http", "external-tls", "external-tcp",
})


def refusal(construct: str) -> str | None:
    """Why `construct` cannot be waived, or None when it can."""
    if construct in WAIVABLE:
        return None
    if construct in SECURITY:
        return "it is security: without it the mesh could let through a request the policy refuses"
    return ("without it a request could go somewhere the policy does not send it, or the output would "
            "not be the policy's mesh (only resilience tuning, mirrors and tracing are waivable)")


def check(names, where: str) -> tuple[tuple[str, ...], list[tuple[str, str, str]]]:
    """The valid waivers among `names` (a list of construct names, in order,
    once each) and the problems: (code, name, message), MP012 when `names`
    is not a list of strings, MP708 for an unknown name, MP707 for one that
    cannot be waived."""
    from .constructs import CONSTRUCTS

    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return (), [("MP012", "", f"`waive` in {where} must be a list of construct names")]
    kept, problems = [], []
    for n in names:
        if n not in CONSTRUCTS:
            problems.append(("MP708", n, f"`waive` in {where} names `{json.dumps(n)[1:-1]}`, which is not a "
                                         "construct (docs/targets.md lists them)"))
        elif (why := refusal(n)) is not None:
            problems.append(("MP707", n, f"`waive` in {where} names `{n}`, which cannot be waived: {why}"))
        elif n not in kept:
            kept.append(n)
    return tuple(kept), problems


def waived(target: str, construct: str, what: str, span: Span | None) -> Diagnostic:
    """MP706: one use of a waived construct, not lowered."""
    return diag("MP706", f"{what} is not in the {target} output: `{construct}` is waived "
                         f"([compile.{target}] waive in meshc.toml)", span)


def record(diags: list[Diagnostic], files: list[str] = ()) -> list[str]:
    """What was waived, as comment-safe lines for the output: one per
    construct with its uses (`file:line`, relative to the folder holding
    the mesh's `files`, so the output is the same from any working
    directory); file names are escaped so no character of theirs can end
    a comment."""
    import os

    try:
        base = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files]) if files else None
    except ValueError:  # paths on different drives
        base = None

    def where(f: str) -> str:
        rel = os.path.relpath(os.path.abspath(f), base) if base else f
        return json.dumps(rel.replace(os.sep, "/"))[1:-1]

    uses: dict[str, list[str]] = {}
    for d in diags:
        if d.code != "MP706":
            continue
        s = d.span
        uses.setdefault(construct_of(d), []).append(f"{where(s.file)}:{s.line}" if s else "?")
    return [f"{c}: {', '.join(sorted(set(u), key=u.index))}" for c, u in sorted(uses.items())]


def summary(diags: list[Diagnostic]) -> str | None:
    """One line for `meshc compile`: the waived constructs and their number of uses."""
    counts = Counter(construct_of(d) for d in diags if d.code == "MP706")
    if not counts:
        return None
    return "waived (not in the output): " + ", ".join(f"{c} ({n} use{'s' * (n != 1)})" for c, n in sorted(counts.items()))


def construct_of(d: Diagnostic) -> str:
    """The construct an MP706 names: `waived` writes it between the message's
    last two backticks (construct names hold none)."""
    return d.message.rsplit("`", 2)[-2]
