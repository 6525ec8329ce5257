"""Metric-gated rollouts (docs/up.md, "Rollouts"): the mesh with a step's
weights, the check of a step, the override file a running `meshc up` takes
weights from, and the gate.

One place computes "the mesh with these weights" (`with_weights`) and
whether a step may go out (`check_step`): `meshc rollout` calls them before
it writes a step, `meshc up` again before it applies one (the file may have
been written by hand, or the policy may have changed under --watch).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..diagnostics import Diagnostic, has_errors
from ..model.types import Forward, Match, Mesh, Ref, Route, RouteRule, WeightedVersion

OVERRIDE, APPLIED = "weights.json", "applied.json"


# --- the mesh with a step's weights -------------------------------------------------------------

def _versions(mesh: Mesh, service: str) -> list[str]:
    svc = mesh.service(service)
    return list(dict.fromkeys(v.name for v in svc.versions)) if svc is not None else []


def _targeted(rule: RouteRule) -> bool:
    """A rule that picks its requests by header or caller (testers, one user,
    one client) keeps its destination: a rollout moves the general traffic."""
    return bool(rule.match.headers or rule.match.sources)


def _stepped(rule: RouteRule, version: str) -> bool:
    """Does a step's split replace this rule's destinations?"""
    from ..semantics.evaluate import forward_weights

    return rule.action.kind == "forward" and not _targeted(rule) and forward_weights(rule) != {version: 100.0}


def step_weights(mesh: Mesh, service: str, version: str, percent: float) -> dict[str, float]:
    """VERSION gets `percent`; the rest keeps the proportions the policy gives
    the other versions (its first rule a step replaces, else equal shares)."""
    from ..semantics.evaluate import forward_weights

    others = [v for v in _versions(mesh, service) if v != version]
    base: dict[str, float] = {}
    route = mesh.route_map.get(service)
    for rule in route.rules if route is not None else []:
        if _stepped(rule, version):
            base = {v: w for v, w in forward_weights(rule).items() if v != version and v in others and w > 0}
            break
    if not base:
        base = {v: 1.0 for v in others}
    total, rest = sum(base.values()), 100.0 - percent
    out = {v: round(rest * w / total, 4) for v, w in base.items()} if others else {}
    if out:  # rounding leftovers go to the largest share, so the split totals exactly 100
        top = max(out, key=out.get)
        out[top] = round(rest - sum(w for v, w in out.items() if v != top), 4)
    out[version] = float(percent)
    return {v: w for v, w in out.items() if w > 0}


def with_weights(mesh: Mesh, service: str, version: str, weights: dict[str, float]) -> Mesh:
    """The mesh whose forwarding rules of `service` split by `weights`, except
    rules that pick requests by header or caller, and rules that already send
    everything to `version`: a rule pinning testers to a version keeps doing
    so. A service without a route gets one rule taking every request."""
    svc = mesh.service(service)

    def split(span) -> list[WeightedVersion]:
        return [WeightedVersion.make(version=Ref.make(name=v, span=span), weight=float(w), span=span)
                for v, w in weights.items() if w > 0]

    routes = []
    found = False
    for route in mesh.routes:
        if route.service.name != service:
            routes.append(route)
            continue
        found = True
        rules = []
        for rule in route.rules:
            a = rule.action
            if not _stepped(rule, version):
                rules.append(rule)
            else:
                rules.append(rule.model_copy(update={"action": a.model_copy(update={"destinations": split(a.span)})}))
        routes.append(route.model_copy(update={"rules": rules}))
    if not found:
        span = svc.span
        rule = RouteRule.make(index=0, match=Match.make(span=span),
                              action=Forward.make(destinations=split(span), span=span), span=span)
        routes.append(Route.make(service=Ref.make(name=service, span=span), rules=[rule], span=span))
    fields = {name: getattr(mesh, name) for name in Mesh.model_fields}
    return Mesh.make(**{**fields, "routes": routes})


def weights_problem(mesh: Mesh, service: str, version: str, weights: dict) -> str | None:
    """Why `weights` cannot be a split of `service` (None: they can)."""
    svc = mesh.service(service)
    if svc is None:
        return f"the mesh has no service `{service}`"
    names = _versions(mesh, service)
    if version not in names:
        return f"`{service}` has no version `{version}` (its versions: {', '.join(names) or 'none'})"
    if not isinstance(weights, dict) or not weights:
        return "no weights"
    for v, w in weights.items():
        if v not in names:
            return f"`{service}` has no version `{v}`"
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= 100:
            return f"the weight of `{v}` is not a percentage: {w!r}"
    if abs(sum(weights.values()) - 100.0) > 1e-6:
        return f"the weights total {sum(weights.values()):g}%, not 100%"
    route = mesh.route_map.get(service)
    if route is not None and not any(r.action.kind == "forward" and not _targeted(r) for r in route.rules):
        return f"no rule of route `{service}` forwards general traffic (every one picks requests by header " \
               "or caller, or does not forward): nothing for a rollout to move"
    return None


@dataclass
class StepCheck:
    mesh: Mesh | None
    findings: list[Diagnostic] = field(default_factory=list)  # every finding on the step's mesh
    new: list[Diagnostic] = field(default_factory=list)  # those the policy as written does not have
    problem: str | None = None  # why the step may not go out

    @property
    def ok(self) -> bool:
        return self.problem is None


def _key(d: Diagnostic) -> tuple:
    s = d.span
    return (d.code, s.file if s else None, s.line if s else None)


def mesh_findings(checked, mesh: Mesh, config: dict, with_verify: bool) -> list[Diagnostic]:
    """Check (and verify) findings on `mesh`, after the project's [diagnostics]
    settings and suppression comments, as `meshc verify` reports them."""
    from ..checks import run_checks
    from ..triage import CHECK_STAGES, VERIFY_STAGES

    found = checked.more(run_checks(mesh), CHECK_STAGES)
    if with_verify and not has_errors(found):
        from ..verify import run as verify_run

        found += checked.more(verify_run(mesh, config), VERIFY_STAGES)
    return found


def check_step(checked, baseline: list[Diagnostic], config: dict, service: str, version: str,
               weights: dict, with_verify: bool = True) -> StepCheck:
    """May the mesh with `weights` go out? Not when the weights are no split
    of the service, when check or verify reports an error (a refuted
    assertion), or a finding the policy as written (`baseline`) does not
    have. A version the step leaves without traffic is the rollout's point,
    so its unused-version findings (MP401, MP511) do not count."""
    problem = weights_problem(checked.mesh, service, version, weights)
    if problem:
        return StepCheck(None, problem=problem)
    mesh = with_weights(checked.mesh, service, version, weights)
    found = mesh_findings(checked, mesh, config, with_verify)
    svc = mesh.service(service)
    idle = {s for v in svc.versions if weights.get(v.name, 0) <= 0 for s in (v.span, v.at("name"))}
    before = {_key(d) for d in baseline}
    new = [d for d in found if _key(d) not in before and not (d.code in ("MP401", "MP511") and d.span in idle)]
    errors = [d for d in found if d.is_error]
    bad = errors or new
    problem = None
    if bad:
        problem = "; ".join(f"{d.code} {d.message}" for d in bad[:3]) + (f" (and {len(bad) - 3} more)"
                                                                           if len(bad) > 3 else "")
    return StepCheck(mesh, found, new, problem)


# --- the override file of a running `meshc up` --------------------------------------------------

def rollout_dir(workdir: Path) -> Path:
    from .state import private_dir

    return private_dir(workdir / "rollout")


def write_json(path: Path, doc: dict) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_override(workdir: Path, seq: int, service: str, version: str, weights: dict | None) -> None:
    """weights None: back to the policy as written."""
    write_json(rollout_dir(workdir) / OVERRIDE, {"seq": seq, "service": service, "version": version,
                                                  "weights": weights})


def clear(workdir: Path) -> None:
    """A new `meshc up` serves the policy as written: a previous run's override goes."""
    d = workdir / "rollout"
    for name in (OVERRIDE, APPLIED):
        (d / name).unlink(missing_ok=True)


def wait_applied(workdir: Path, seq: int, timeout: float, stop=None) -> dict | None:
    """`meshc up`'s answer to override `seq` (None: no answer in time)."""
    deadline = time.monotonic() + timeout
    path = workdir / "rollout" / APPLIED
    while time.monotonic() < deadline:
        doc = read_json(path)
        if doc is not None and doc.get("seq") == seq:
            return doc
        time.sleep(0.2)
    return None


# --- the gate --------------------------------------------------------------------------------------

_CONDITION = re.compile(r"\s*(success|p50|p95|p99)\s*(>=|<=|>|<)\s*(\d+(?:\.\d+)?)\s*(%|ms|s)?\s*")
_OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}


@dataclass(frozen=True)
class Condition:
    metric: str  # success (percent) or p50/p95/p99 (milliseconds)
    op: str
    value: float
    text: str

    def holds(self, observed: float) -> bool:
        return _OPS[self.op](observed, self.value)


def parse_gate(text: str) -> list[Condition]:
    """`success >= 99%, p99 <= 300ms`: ValueError naming the part that is not a condition."""
    out = []
    for part in text.split(","):
        m = _CONDITION.fullmatch(part)
        if not m:
            raise ValueError(f"`{part.strip()}` is not a condition; write e.g. `success >= 99%` or `p99 <= 300ms` "
                             "(success in %, p50/p95/p99 in ms or s; operators >= <= > <)")
        metric, op, num, unit = m.groups()
        value = float(num)
        if metric == "success":
            if unit not in (None, "%") or value > 100:
                raise ValueError(f"`{part.strip()}`: success is a percentage (0-100%)")
        else:
            if unit not in ("ms", "s"):
                raise ValueError(f"`{part.strip()}`: give a latency with its unit, ms or s")
            value = value * 1000 if unit == "s" else value
        out.append(Condition(metric, op, value, " ".join(part.split())))
    return out


def judge(conditions: list[Condition], row, min_requests: int) -> tuple[bool, list[dict], str | None]:
    """(passed, one result per condition, why it failed). `row` is the new
    version's telemetry Row over the step (None: no request reached it)."""
    n = row.requests if row is not None else 0
    if row is None and min_requests == 0:  # asked to pass a step no one called
        return True, [{"condition": c.text, "observed": None, "passed": True} for c in conditions], None
    if n < min_requests:
        return False, [], f"not enough traffic: {n} requests reached the new version in the step, " \
                          f"{min_requests} needed (--min-requests)"
    results, failed = [], []
    for c in conditions:
        observed = None if row is None else (row.success if c.metric == "success" else getattr(row, f"{c.metric}_ms"))
        ok = observed is not None and c.holds(observed)
        results.append({"condition": c.text, "observed": observed, "passed": ok})
        if not ok:
            unit = "%" if c.metric == "success" else "ms"
            failed.append(f"{c.text} failed: no {c.metric} figure in the step" if observed is None
                          else f"{c.text} failed: {c.metric} was {observed:g}{unit}")
    return not failed, results, "; ".join(failed) or None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)?")


def parse_duration(text: str) -> float:
    """`30s`, `500ms`, `2m`, `10` (seconds) -> seconds."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise ValueError(f"`{text}` is not a duration; write e.g. 30s, 500ms or 2m")
    value = float(m.group(1))
    return {"ms": value / 1000, "m": value * 60}.get(m.group(2), value)


def parse_steps(text: str) -> list[float]:
    """`5,25,50,100`: increasing percentages in (0, 100]."""
    out: list[float] = []
    for part in text.split(","):
        if not re.fullmatch(r"\s*\d+(?:\.\d+)?\s*%?\s*", part):
            raise ValueError(f"`{part.strip()}` is not a percentage; write e.g. 5,25,50,100")
        p = float(part.strip().rstrip("%"))
        if not 0 < p <= 100 or (out and p <= out[-1]):
            raise ValueError("steps must be increasing percentages above 0 and at most 100")
        out.append(p)
    return out
