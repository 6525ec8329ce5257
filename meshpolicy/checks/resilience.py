"""MP301 retries that cannot fit the timeout, MP302 retried POST/PATCH,
MP303 faults that switch retries off. All read the *effective* settings
of each forwarding route rule (its own, else its service's)."""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Label
from ..model.types import NON_IDEMPOTENT_METHODS, AuthRule, Mesh, Retry
from . import rule
from ._walk import Effective, effective

# Conditions under which the request provably never reached the application.
SAFE_TO_REPEAT = frozenset({"connect-failure", "refused-stream"})


@rule("MP301", "MP302", "MP303")
def resilience(mesh: Mesh):
    """One pass over the effective settings feeds all three checks; each
    reports only where retries make attempts, so only those are walked."""
    seen: set = set()  # a service's settings inherited by several rules: report once
    retrying = list(effective(mesh, retrying=True))
    admitting = _admitting(mesh, {e.service.name for e in retrying
                                  if e.rule is None and _repeats_non_idempotent(e.retry)})
    for e in retrying:
        yield from retry_exceeds_timeout(e, seen)
        yield from non_idempotent_retry(mesh, e, admitting)
        yield from fault_disables_retry(e, seen)


def _admitting(mesh: Mesh, names: set[str]) -> dict[str, AuthRule]:
    """For each of these services, the first allow rule to it that admits
    POST or PATCH. One pass over the rules for the few services asked about
    (rather than `mesh.rules_by_target` for all: 1-5 ms per edit in the
    language server, which builds a new mesh each time)."""
    out: dict[str, AuthRule] = {}
    if not names:
        return out
    for ar in mesh.auth_rules:
        name = ar.target.name
        if name in names and name not in out and ar.effect == "allow" and _admits_unsafe(ar.methods):
            out[name] = ar
    return out


def retry_exceeds_timeout(e: Effective, seen: set):
    r = e.retry
    if e.retries_on and r.per_try_ms is not None and e.timeout_ms is not None:
        key = ("MP301", id(r), e.timeout_span)
        if key in seen:
            return
        seen.add(key)
        need = (r.attempts + 1) * r.per_try_ms
        if need > e.timeout_ms:
            inherited = e.rule is not None and e.rule.retry is None and e.rule.timeout_ms is None
            where = f"service `{e.service.name}`" if inherited else e.where
            yield diag("MP301", f"{r.attempts + 1} attempts x {r.per_try_ms}ms per try = {need}ms, more than "
                                f"the {e.timeout_ms}ms timeout of {where}: the last attempts can never run "
                                "in full", r.span,
                       labels=[Label(e.timeout_span, "the timeout that bounds all attempts")]
                       if e.timeout_span else [])


def _repeats_non_idempotent(r: Retry) -> bool:
    """Retries that may resend a POST/PATCH the application already saw
    (no `on` list means Istio's defaults, which include 503)."""
    if r.attempts <= 0 or r.non_idempotent:
        return False
    return not (r.on and set(r.on) <= SAFE_TO_REPEAT)


def _admits_unsafe(methods: list[str]) -> bool:
    return not methods or any(m in NON_IDEMPOTENT_METHODS for m in methods)


def non_idempotent_retry(mesh: Mesh, e: Effective, admitting: dict[str, AuthRule]):
    r = e.retry
    if r is None or not _repeats_non_idempotent(r):
        return
    if e.rule is not None:
        if not _admits_unsafe(e.rule.match.methods):
            return
        own = e.rule.retry is r
        span = r.span if own else e.rule.span
        labels = [Label(e.rule.span, "this rule's match admits POST and PATCH")] if own else \
            [Label(r.span, f"retries inherited from service `{e.service.name}`")]
        yield diag("MP302", f"{e.where} retries requests that may be POST or PATCH", span, labels=labels)
        return
    # A route-less service: its callers' allowed methods decide.
    first = admitting.get(e.service.name)
    if first is not None:
        labels = [Label(first.span, "this rule allows POST or PATCH")]
    elif mesh.settings.default == "allow":
        labels = []
    else:
        return
    yield diag("MP302", f"service `{e.service.name}` retries requests that may be POST or PATCH",
               r.span, labels=labels)


def fault_disables_retry(e: Effective, seen: set):
    if e.fault is not None and e.retries_on:
        key = ("MP303", id(e.fault), id(e.retry))
        if key in seen:
            return
        seen.add(key)
        inherited = e.rule is not None and e.rule.fault is None and e.rule.retry is None
        where = f"service `{e.service.name}`" if inherited else e.where
        yield diag("MP303", f"{where} injects a fault and also retries; Istio does not retry where a "
                            "fault is injected", e.fault.span,
                   labels=[Label(e.retry.span, "these retries will not happen")])
