"""Outbound routing as Linkerd reads it: an HTTPRoute per service port
attached to the Service (parentRef), the per-version Services it splits
over, and retries as the annotations Linkerd reads on a route
(`retry.linkerd.io/http|grpc`, `/limit`, `/timeout`), which hold for all
of a route's rules. The rules themselves are http_routes.py's; a rule's
request header operations are its RequestHeaderModifier filter."""

from __future__ import annotations

from ...model.types import HeaderOp, Retry
from ...plan import ServicePlan
from ..envoy.outbound import DEFAULT_RETRY_ON
from ..http_routes import Dialect, duration, http_rules, version_services
from ..kube import APP_LABEL

HTTP_CONDITIONS = {"5xx": "5xx", "gateway-error": "gateway-error"}
MAX_HEADER_OPS = 16  # per add, set and remove list (the CRD's maxItems)
GRPC_CONDITIONS = ("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")


def needs_route(sp: ServicePlan) -> bool:
    return sp.routed or bool(sp.service.versions) or any(rp.timeout_ms is not None or rp.retry is not None
                                                         for rp in sp.rule_plans)


def retry_annotations(sp: ServicePlan, grpc: bool, d: Dialect) -> dict[str, str] | None:
    """The one retry policy of a route; None after an MP701."""
    forwarded = [rp for rp in sp.rule_plans if rp.kind in ("forward", "default")]
    live = [rp for rp in forwarded if rp.retry is not None and rp.retry.attempts > 0]
    if not live:
        return {}
    if len({(r.attempts, r.per_try_ms, tuple(r.on), tuple(r.on_status), r.non_idempotent)
            for r in (rp.retry for rp in live)}) > 1 \
            or len(live) != len(forwarded):
        rp = live[0]
        if not d.drop("retry", f"`retry {rp.retry.attempts}` (one of different retries on route `{sp.name}`)",
                      rp.retry.span, "Linkerd reads one retry policy per route, from its annotations"):
            return None
        # waived: the route retries nothing; each retry left out is reported
        for r in {x.retry.span: x.retry for x in live if x.retry.span != rp.retry.span}.values():
            d.waived("retry", f"`retry {r.attempts}` (one of different retries on route `{sp.name}`)", r.span)
        return {}
    r: Retry = live[0].retry
    return retry_policy(r, grpc, d, f"`{sp.name}`")


def retry_policy(r: Retry, grpc: bool, d: Dialect, what: str) -> dict[str, str] | None:
    """One retry as Linkerd's annotations; {} when waived, None after an MP701."""
    # Without `on`, the conditions every target retries on by default (docs/targets/envoy.md).
    on = list(r.on) or ([] if r.on_status else list(DEFAULT_RETRY_ON))
    if grpc:
        bad = [c for c in on if c not in GRPC_CONDITIONS] + [str(c) for c in r.on_status]
    else:
        bad = [c for c in on if c not in HTTP_CONDITIONS]
    if bad:
        waived = d.drop("retry", f"retry on `{', '.join(bad)}` on {what}", r.at("on"),
                        "Linkerd retries on " + ("gRPC statuses " + ", ".join(GRPC_CONDITIONS) if grpc
                                                 else "`5xx`, `gateway-error` and status codes"))
        return {} if waived else None
    out = {"retry.linkerd.io/limit": str(r.attempts)}
    # `retry.linkerd.io/http` lists conditions and status codes alike (`5xx,429`)
    codes = on if grpc else on + [str(c) for c in sorted(set(r.on_status))]
    out["retry.linkerd.io/grpc" if grpc else "retry.linkerd.io/http"] = ",".join(codes)
    if r.per_try_ms is not None:
        out["retry.linkerd.io/timeout"] = duration(r.per_try_ms)
    return out


def http_route(sp: ServicePlan, api_version: str, d: Dialect, retries: bool) -> tuple[list[dict], bool]:
    """The route documents of one service (one per http-family port) and
    whether all of it could be written."""
    svc = sp.service
    ports = [p for p in svc.ports if p.protocol != "tcp"]
    docs, ok = [], True
    for p in ports:
        rules = http_rules(sp, p.number, d)
        if rules is not None and not add_header_filters(sp, rules, d):
            rules = None
        ann = retry_annotations(sp, p.protocol == "grpc", d) if retries else {}
        if rules is None or ann is None:
            ok = False
            continue
        meta: dict = {"name": svc.name if len(ports) == 1 else f"{svc.name}-{p.number}", "namespace": svc.namespace}
        if ann:
            meta["annotations"] = ann
        docs.append({
            "apiVersion": api_version,
            "kind": "HTTPRoute",
            "metadata": meta,
            "spec": {"parentRefs": [{"group": "core", "kind": "Service", "name": svc.name, "port": p.number}],
                     "rules": rules},
        })
    return docs, ok


def header_modifier(ops: list[HeaderOp], d: Dialect, where: str) -> dict | None:
    """A rule's request header operations, in written order, as one
    RequestHeaderModifier. Linkerd applies its `add`, `set` and `remove`
    lists in that order (linkerd2-proxy ModifyHeader::apply), not in written
    order, so each header name must end in one list:
    the sequence of a name is folded to what it leaves (one added value, one
    set value, or removed); a name left with two values is MP701. None
    after an MP701."""
    state: dict[str, tuple[bool, list[str]]] = {}  # name -> (original dropped, values appended since)
    for op in ops:
        reset, values = state.get(op.name, (False, []))
        if op.op == "add":
            state[op.name] = (reset, values + [op.value or ""])
        else:
            state[op.name] = (True, [op.value or ""] if op.op == "set" else [])
    body: dict[str, list] = {}
    for name, (reset, values) in state.items():
        if len(values) > 1:
            op = next(o for o in reversed(ops) if o.name == name)
            d.reject(f"the header operations on `{name}` {where}", op.span,
                     "Linkerd's RequestHeaderModifier holds one operation per header name: "
                     "a sequence leaving two values on one header cannot be written")
            return None
        if not reset:
            body.setdefault("add", []).append({"name": name, "value": values[0]})
        elif values:
            body.setdefault("set", []).append({"name": name, "value": values[0]})
        else:
            body.setdefault("remove", []).append(name)
    full = next((k for k, v in body.items() if len(v) > MAX_HEADER_OPS), None)
    if full is not None:
        d.reject(f"{len(body[full])} header names to {full} {where}", ops[0].span,
                 f"a RequestHeaderModifier holds at most {MAX_HEADER_OPS} names per list")
        return None
    return {"type": "RequestHeaderModifier", "requestHeaderModifier": body}


def add_header_filters(sp: ServicePlan, rules: list[dict], d: Dialect) -> bool:
    """Each forwarding rule's request header operations as its filter
    (rules: http_rules' output, one per rule plan). Response operations
    are refused by the manifest. False after an MP701."""
    ok = True
    for rp, out in zip(sp.rule_plans, rules):
        ops = [o for o in (rp.rule.headers if rp.rule is not None else []) if o.side == "request"]
        if not ops or rp.kind not in ("forward", "default"):
            continue  # a redirect forwards nothing: its request operations change no request
        f = header_modifier(ops, d, f"in rule {rp.rule.index + 1} of route `{sp.name}`")
        if f is None:
            ok = False
            continue
        out["filters"] = [f] + out.get("filters", [])
    return ok


def services_for_versions(sp: ServicePlan) -> list[dict]:
    return version_services(sp, APP_LABEL)
