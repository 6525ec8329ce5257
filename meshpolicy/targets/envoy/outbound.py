"""The caller's side: one virtual host per destination it may call, with the
destination's route rules in order, and the resilience settings that docs/
semantics.md puts at the caller (timeouts, retries, faults, mirrors)."""

from __future__ import annotations

from urllib.parse import urlsplit

from ...model.types import Fault, Retry, RouteRule, Service
from ...plan import hosts, plan_of
from ...rule_stats import rule_stat_name
from .clusters import balance_of
from .context import Ctx
from .conventions import cluster_name
from .l7 import CORS_FILTER, cors_policy, header_fields, per_path, query_matcher, rewrite_fields
from .matchers import header_matcher, methods_header, route_path_match
from .values import duration, fraction, integer_weights

FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
FAULT_FILTER = "envoy.filters.http.fault"
REDIRECT_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT",
                  308: "PERMANENT_REDIRECT"}
# `retry N` without `on`: the conditions Istio retries on by default.
DEFAULT_RETRY_ON = ("connect-failure", "refused-stream", "unavailable", "cancelled")


def domains(svc: Service) -> list[str]:
    """The plan's host names, bare and with each port."""
    out = []
    for n in hosts(svc):
        out.append(n)
        out.extend(f"{n}:{p.number}" for p in svc.ports)
    return sorted(set(out))


def retry_policy(ctx: Ctx, dest: Service, r: Retry | None) -> dict | None:
    if r is None or r.attempts == 0:
        return None
    if "retriable-status-codes" in r.on and not r.on_status:
        ctx.unsupported("retry on `retriable-status-codes`", r.at("on"),
                        "the policy cannot name the status codes Envoy should retry", key="retry")
    if r is not dest.retry and r.budget_percent is not None:
        base = dest.retry
        if base is None or (base.budget_percent, base.budget_min) != (r.budget_percent, r.budget_min):
            ctx.unsupported("a retry budget on a route rule", r.at("budget"),
                            "Envoy keeps retry budgets per cluster, shared by every rule", key="retry-budget")
    on = [c for c in r.on if c != "retriable-status-codes"]
    if r.on_status:
        on.append("retriable-status-codes")  # with the codes listed below
    on = on or list(DEFAULT_RETRY_ON)
    out: dict = {"retry_on": ",".join(on), "num_retries": r.attempts}
    if r.on_status:
        out["retriable_status_codes"] = sorted(set(r.on_status))
    if r.per_try_ms is not None:
        out["per_try_timeout"] = duration(r.per_try_ms)
    if r.backoff_ms is not None:
        out["retry_back_off"] = {"base_interval": duration(r.backoff_ms)}
        if r.backoff_max_ms is not None:
            out["retry_back_off"]["max_interval"] = duration(r.backoff_max_ms)
    return out


def fault_config(ctx: Ctx, f: Fault) -> dict:
    out: dict = {"@type": FAULT}
    if f.delay_ms is not None:
        pct = fraction(f.delay_percent if f.delay_percent is not None else 100.0)
        if pct is None:
            ctx.unsupported("a fault delay percentage finer than 0.0001%", f.span, "Envoy counts per million",
                            key="fault-delay")  # refused or waived: injected 0% of the time
            pct = {"numerator": 0, "denominator": "MILLION"}
        out["delay"] = {"fixed_delay": duration(f.delay_ms), "percentage": pct}
    if f.abort_status is not None:
        pct = fraction(f.abort_percent if f.abort_percent is not None else 100.0)
        if pct is None:
            ctx.unsupported("a fault abort percentage finer than 0.0001%", f.span, "Envoy counts per million",
                            key="fault-abort")
            pct = {"numerator": 0, "denominator": "MILLION"}
        out["abort"] = {"http_status": f.abort_status, "percentage": pct}
    return out


def _hash_policy(ctx: Ctx, dest: Service, versions: list[str | None], span) -> list[dict] | None:
    keys = set()
    for v in versions:
        b = balance_of(dest, v)
        if b is not None and b.policy == "hash_header":
            keys.add(("header", b.header or ""))
        elif b is not None and b.policy == "hash_source_ip":
            keys.add(("source_ip", ""))
    if not keys:
        return None
    if len(keys) > 1:
        ctx.unsupported("a split over versions that hash on different keys", span,
                        "Envoy hashes a request once, on the route, for whichever version it picks")
    kind, header = sorted(keys)[0]
    if kind == "header":
        return [{"header": {"header_name": header}}]
    return [{"connection_properties": {"source_ip": True}}]


def _forward(ctx: Ctx, dest: Service, weights: list[tuple[str | None, float]], span) -> dict:
    merged: dict[str | None, float] = {}
    for v, w in weights:
        merged[v] = merged.get(v, 0.0) + w
    live = [(v, w) for v, w in merged.items() if w > 0] or list(merged.items())[:1]
    action: dict = {}
    if len(live) == 1:
        action["cluster"] = cluster_name(dest.name, live[0][0])
    else:
        ints = integer_weights([w for _, w in live])
        if ints is None:
            ctx.unsupported("a split weight with more than six decimals", span, "Envoy weights are integers")
            ints = [max(1, int(w)) for _, w in live]
        action["weighted_clusters"] = {"clusters": [
            {"name": cluster_name(dest.name, v), "weight": n} for (v, _), n in zip(live, ints)]}
    hp = _hash_policy(ctx, dest, [v for v, _ in live], span)
    if hp:
        action["hash_policy"] = hp
    return action


def _resilience(ctx: Ctx, dest: Service, action: dict, rule: RouteRule | None) -> dict | None:
    """Timeout and retries go into the route action; returns the fault config, if any."""
    timeout, retry, fault = dest.settings_for(rule)
    # Envoy's default route timeout is 15s; no timeout written means none.
    action["timeout"] = duration(timeout) if timeout is not None else "0s"
    rp = retry_policy(ctx, dest, retry)
    if rp:
        action["retry_policy"] = rp
    return fault_config(ctx, fault) if fault is not None else None


def _redirect(ctx: Ctx, rule: RouteRule) -> dict:
    a = rule.action
    out: dict = {}
    parts = urlsplit(a.uri)
    if parts.fragment:
        ctx.unsupported("a redirect URI with a fragment", a.span, "Envoy's redirect has no fragment part")
    if parts.scheme:
        out["scheme_redirect"] = parts.scheme
    if parts.hostname:
        out["host_redirect"] = parts.hostname
    if parts.port:
        out["port_redirect"] = parts.port
    path = parts.path or ("/" if parts.scheme or parts.netloc else "")
    if parts.query:
        path = f"{path}?{parts.query}"
    if path:
        out["path_redirect"] = path
    if a.status not in REDIRECT_CODES:
        ctx.unsupported(f"redirect status {a.status}", a.at("status"), "Envoy redirects with 301, 302, 303, 307, 308")
    else:
        out["response_code"] = REDIRECT_CODES[a.status]
    return out


def _match(rule: RouteRule, ctx: Ctx | None = None, where: str = "") -> dict:
    m = rule.match
    out = route_path_match(m.paths)
    headers = ([methods_header(m.methods)] if m.methods else []) + [header_matcher(h) for h in m.headers]
    if headers:
        out["headers"] = headers
    queries = [qm for q in m.queries if (qm := query_matcher(ctx, q, where)) is not None]
    if queries:
        out["query_parameters"] = queries
    return out


def l7_options(ctx: Ctx, r: dict, rule: RouteRule, cors, where: str) -> None:
    """A forwarding route's header ops, rewrite and CORS policy, into route r."""
    r.update(header_fields(ctx, rule, where))
    r["route"].update(rewrite_fields(ctx, rule, where))
    if cors is not None:
        r.setdefault("typed_per_filter_config", {})[CORS_FILTER] = cors_policy(cors)


def _route(ctx: Ctx, dest: Service, rule: RouteRule, name: str) -> dict:
    a = rule.action
    r: dict = {"name": name, "match": _match(rule, ctx, f"in rule {rule.index + 1} of route `{dest.name}`")}
    r["stat_prefix"] = rule_stat_name(rule.index)  # per rule figures (`meshc stat`): vhost.<dest>.route.rule-N.*
    if a.kind == "forward":
        weights = list(plan_of(ctx.mesh).services[dest.name].rules[rule.index].weights.items())
        action = _forward(ctx, dest, weights, rule.span)
        fault = _resilience(ctx, dest, action, rule)
        if a.mirror is not None:
            frac = fraction(a.mirror.percent)
            if frac is None:
                ctx.unsupported("a mirror percentage finer than 0.0001%", a.mirror.span, "Envoy counts per million",
                                key="mirror")
            else:
                action["request_mirror_policies"] = [{
                    "cluster": cluster_name(dest.name, a.mirror.version.name),
                    "runtime_fraction": {"default_value": frac}}]
        r["route"] = action
        if fault is not None:
            r["typed_per_filter_config"] = {FAULT_FILTER: fault}
        l7_options(ctx, r, rule, dest.cors_for(rule), f"in rule {rule.index + 1} of route `{dest.name}`")
    elif a.kind == "redirect":
        r["redirect"] = _redirect(ctx, rule)
    else:
        resp: dict = {"status": a.status}
        if a.body is not None:
            resp["body"] = {"inline_string": a.body}
        r["direct_response"] = resp
    return r


def virtual_host(ctx: Ctx, caller: Service, dest: Service) -> dict:
    """Rules whose `from` excludes the caller are left out: routing happens at
    the caller's sidecar, so `from` is decided here, at compile time. Callers
    that keep the same rules share one virtual host (built once, not to be
    modified): most of a large mesh's callers see the same few."""
    route = ctx.mesh.route_map.get(dest.name)
    rules = None if route is None else tuple(
        rule for rule in route.rules
        if not rule.match.sources or caller.name in {s.name for s in rule.match.sources})
    key = ("vhost", dest.name, None if rules is None else tuple(r.index for r in rules))
    vh = ctx.cache.get(key)
    if vh is None:
        vh = ctx.cache[key] = _virtual_host(ctx, dest, rules)
    return vh


def _virtual_host(ctx: Ctx, dest: Service, rules: tuple[RouteRule, ...] | None) -> dict:
    routes = []
    if rules is None:
        versions = sorted(v.name for v in dest.versions) or [None]
        # Every version evenly: equal integer weights.
        action = _forward(ctx, dest, [(v, 1.0) for v in versions], dest.span)
        fault = _resilience(ctx, dest, action, None)
        r: dict = {"name": "default", "match": {"prefix": "/"}, "route": action, "stat_prefix": rule_stat_name(None)}
        if fault is not None:
            r["typed_per_filter_config"] = {FAULT_FILTER: fault}
        if dest.cors is not None:
            r.setdefault("typed_per_filter_config", {})[CORS_FILTER] = cors_policy(dest.cors)
        routes.append(r)
    else:
        routes = [_route(ctx, dest, variant, f"rule-{rule.index}{sfx}")
                  for rule in rules for sfx, variant in per_path(rule)]
    return {"name": dest.name, "domains": domains(dest), "routes": routes}


def clusters_used(vh: dict) -> set[str]:
    out = set()
    for r in vh["routes"]:
        a = r.get("route")
        if not a:
            continue
        if "cluster" in a:
            out.add(a["cluster"])
        for c in a.get("weighted_clusters", {}).get("clusters", []):
            out.add(c["name"])
        for m in a.get("request_mirror_policies", []):
            out.add(m["cluster"])
    return out
