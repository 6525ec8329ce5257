"""RED metrics of a running mesh, from every sidecar, per service pair and per route rule.

Each sidecar serves Prometheus text on its admin port (Envoy's
/stats/prometheus, meshproxy's /metrics). Two scrapes a window apart give,
for every (source, destination) pair, the request rate, the share of
answers that were not 5xx and the p50/p95/p99 latency (interpolated in the
histogram buckets, as Prometheus' histogram_quantile does). Both proxies
count a call at the caller's sidecar (Envoy's clusters are named
`<service>|<version>`) and at the destination's, with the caller's verified
identity: meshproxy itself, Envoy through its inbound access log, which
meshc's collector folds into counters it serves on its own /metrics
(access_logs.py). `side` says which sidecar saw it. Per route rule, the
caller's sidecar counts the rule that routed the call: Envoy's route
`stat_prefix` (`vhost.<destination>.route.rule-N.*`), meshproxy's `rule` label.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

Key = tuple[str, str, str]  # (side, source, destination)
RuleKey = tuple[str, str, str]  # (source, destination, rule name: rule_stats.rule_stat_name)


@dataclass
class Sample:
    at: float
    codes: dict[Key, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    buckets: dict[Key, dict[float, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    unreachable: list[str] = field(default_factory=list)  # sidecars that did not answer
    # Calls per destination version, (service, version): Envoy's caller clusters name the
    # version; meshproxy's inbound counts at that version's own sidecar. For rollout gates.
    version_codes: dict[tuple[str, str], dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    version_buckets: dict[tuple[str, str], dict[float, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    # Calls per route rule, counted at the caller's sidecar.
    rule_codes: dict[RuleKey, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    rule_buckets: dict[RuleKey, dict[float, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float)))


@dataclass
class Row:
    side: str  # "caller" or "callee": the sidecar that counted
    source: str
    destination: str
    requests: int
    rate: float  # requests per second over the window
    success: float | None  # percent of answers below 500
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    rule: str | None = None  # rule rows: the route rule's name (`rule-N`, `default`)
    at: str | None = None  # rule rows: where the rule is written (`file:line`), when the policy could be read


@dataclass
class Sidecar:
    workload: str  # service or service/version
    service: str
    proxy: str  # "envoy", "meshproxy", or "meshc" (the collector's access-log counters)
    metrics_url: str
    version: str | None = None
    services: frozenset[str] = frozenset()  # the mesh's services (Envoy clusters of versionless ones are bare)


def sidecars(workdir: Path) -> list[Sidecar]:
    """The sidecars of the mesh `meshc up` runs from workdir (its configs)."""
    from .up import _envoy_workloads, _meshproxy_workloads

    config = workdir / "config"
    if not config.is_dir():
        return []
    if any(config.rglob("*.yaml")):
        ws, proxy, path = _envoy_workloads(config, None), "envoy", "/stats/prometheus"
    else:
        ws, proxy, path = _meshproxy_workloads(config), "meshproxy", "/metrics"
    services = frozenset(w.service for w in ws)
    cars = [Sidecar(w.key, w.service, proxy, f"http://127.0.0.1:{w.admin_port}{path}", w.version, services)
            for w in ws]
    port = _marker(workdir / "traces" / "port")
    if proxy == "envoy" and port is not None and _marker(workdir / "traces" / "access-log-port") is not None:
        cars.append(Sidecar("(meshc collector)", "", "meshc", f"http://127.0.0.1:{port}/metrics", None, services))
    return cars


def _marker(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _text(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.read().decode("utf-8", "replace")
    except OSError:
        return None


def scrape(cars: list[Sidecar]) -> Sample:
    from prometheus_client.parser import text_string_to_metric_families

    sample = Sample(time.monotonic())
    for car in cars:
        text = _text(car.metrics_url)
        if text is None:
            sample.unreachable.append(car.workload)
            continue
        for family in text_string_to_metric_families(text):
            for s in family.samples:  # the parser names counter samples `<family>_total`, whatever was served
                _take(car, s.name.removesuffix("_total"), s.labels, s.value, sample)
    return sample


def _take(car: Sidecar, name: str, labels: dict, value: float, sample: Sample) -> None:
    if car.proxy == "meshc":  # Envoy's inbound access logs, folded by meshc (no version figures: the
        key = ("callee", labels.get("source", "?"), labels.get("destination", "?"))  # callers' clusters give those)
        if name == "meshc_inbound_requests":
            sample.codes[key][labels["code"]] += value
        elif name == "meshc_inbound_request_duration_ms_bucket":
            sample.buckets[key][float(labels["le"])] += value
        return
    if car.proxy == "meshproxy":
        inbound = labels.get("direction") != "outbound"
        version = (car.service, car.version) if inbound and car.version else None
        rule = None if inbound or not labels.get("rule") else (car.service, labels.get("destination", "?"),
                                                                  labels["rule"])
        if name == "meshproxy_requests":
            side = "callee" if inbound else "caller"
            sample.codes[(side, labels.get("source", "?"), labels.get("destination", "?"))][labels["code"]] += value
            if version:
                sample.version_codes[version][labels["code"]] += value
            if rule:
                sample.rule_codes[rule][labels["code"]] += value
        elif name == "meshproxy_request_duration_seconds_bucket":
            side = "callee" if inbound else "caller"
            key = (side, labels.get("source", "?"), labels.get("destination", "?"))
            sample.buckets[key][float(labels["le"]) * 1000] += value
            if version:
                sample.version_buckets[version][float(labels["le"]) * 1000] += value
            if rule:
                sample.rule_buckets[rule][float(labels["le"]) * 1000] += value
        return
    if name.startswith("envoy_vhost_route_upstream_rq"):
        _take_envoy_route(car, name, labels, value, sample)
        return
    cluster = labels.get("envoy_cluster_name", "")
    if "|" in cluster:
        if cluster.startswith(("inbound|", "tracing|", "telemetry|", "meshc-", "ingress|", "external|", "jwks|",
                               "egress|")):
            return  # only calls to mesh destinations (`<service>|<version>`; a gateway's hop and egress are not)
        dest, version = cluster.split("|", 1)
    elif cluster in car.services:  # a service without versions: its cluster is its name
        dest, version = cluster, ""
    else:
        return
    key = ("caller", car.service, dest)
    if name == "envoy_cluster_upstream_rq" and "envoy_response_code" in labels:
        sample.codes[key][labels["envoy_response_code"]] += value
        if version:
            sample.version_codes[(dest, version)][labels["envoy_response_code"]] += value
    elif name == "envoy_cluster_upstream_rq_time_bucket":
        sample.buckets[key][float(labels["le"])] += value  # Envoy's histograms are in ms
        if version:
            sample.version_buckets[(dest, version)][float(labels["le"])] += value


def _take_envoy_route(car: Sidecar, name: str, labels: dict, value: float, sample: Sample) -> None:
    """Envoy's per route stats (the route's stat_prefix). An ingress's mesh
    hop has one virtual host, `mesh`, whose routes are `<destination>|rule-N`."""
    vhost, route = labels.get("envoy_virtual_host", ""), labels.get("envoy_route", "")
    if vhost == "mesh" and "|" in route:
        vhost, route = route.split("|", 1)
    if vhost not in car.services or not route:
        return  # egress and external virtual hosts
    key = (car.service, vhost, route)
    if name == "envoy_vhost_route_upstream_rq" and "envoy_response_code" in labels:
        sample.rule_codes[key][labels["envoy_response_code"]] += value
    elif name == "envoy_vhost_route_upstream_rq_time_bucket":
        sample.rule_buckets[key][float(labels["le"])] += value


def _quantile(q: float, buckets: dict[float, float]) -> float | None:
    """histogram_quantile over cumulative bucket counts (upper bound -> count)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if b == float("inf"):
                return prev_bound
            span = count - prev_count
            return prev_bound + (b - prev_bound) * ((rank - prev_count) / span if span else 1.0)
        prev_bound, prev_count = b, count
    return prev_bound


def _figures(side: str, src: str, dst: str, seconds: float, codes_before: dict, codes_after: dict,
             buckets_before: dict, buckets_after: dict) -> Row | None:
    codes = {c: codes_after[c] - codes_before.get(c, 0.0) for c in codes_after}
    n = sum(codes.values())
    if n <= 0:
        return None
    ok = sum(v for c, v in codes.items() if not c.startswith("5"))
    delta = {b: buckets_after[b] - buckets_before.get(b, 0.0) for b in buckets_after}
    return Row(side, src, dst, int(round(n)), n / seconds, 100.0 * ok / n,
               *(_round(_quantile(q, delta)) for q in (0.5, 0.95, 0.99)))


def red(before: Sample, after: Sample) -> list[Row]:
    seconds = max(after.at - before.at, 1e-9)
    rows = []
    for key in sorted(after.codes):
        row = _figures(*key, seconds, before.codes.get(key, {}), after.codes[key],
                       before.buckets.get(key, {}), after.buckets.get(key, {}))
        if row is not None:
            rows.append(row)
    return rows


def rule_rows(before: Sample, after: Sample, where: dict[tuple[str, str], str] | None = None) -> list[Row]:
    """Per route rule, at the caller's sidecar; where: (destination, rule
    name) -> `file:line` (rule_locations)."""
    seconds = max(after.at - before.at, 1e-9)
    rows = []
    for src, dst, rule in sorted(after.rule_codes):
        key = (src, dst, rule)
        row = _figures("caller", src, dst, seconds, before.rule_codes.get(key, {}), after.rule_codes[key],
                       before.rule_buckets.get(key, {}), after.rule_buckets.get(key, {}))
        if row is not None:
            row.rule, row.at = rule, (where or {}).get((dst, rule))
            rows.append(row)
    return rows


def rule_locations(mesh) -> dict[tuple[str, str], str]:
    """(destination, rule name) -> `file:line` of every route rule, and of each
    service (its implicit `default` rule)."""
    from ..rule_stats import rule_stat_name

    out = {}
    for svc in mesh.services:
        out[(svc.name, rule_stat_name(None))] = f"{svc.span.file}:{svc.span.line}"
    for dest, route in mesh.route_map.items():
        for rule in route.rules:
            out[(dest, rule_stat_name(rule.index))] = f"{rule.span.file}:{rule.span.line}"
    return out


def version_row(before: Sample, after: Sample, service: str, version: str) -> Row | None:
    """Every call to one version of a service between two scrapes, from all
    callers (source "*"); None when none reached it."""
    key = (service, version)
    return _figures("callee", "*", f"{service}/{version}", max(after.at - before.at, 1e-9),
                    before.version_codes.get(key, {}), after.version_codes.get(key, {}),
                    before.version_buckets.get(key, {}), after.version_buckets.get(key, {}))


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _pair(r: Row) -> dict:
    d = asdict(r)
    del d["rule"], d["at"]
    return d


def as_json(rows: list[Row], window: float, unreachable: list[str], rules: list[Row] = ()) -> str:
    return json.dumps({"window_seconds": window, "pairs": [_pair(r) for r in rows],
                       "rules": [asdict(r) for r in rules], "unreachable": unreachable}, indent=2)


def rules_table(rows: list[Row]) -> str:
    head = f"{'source':<16} {'destination':<16} {'rule':<10} {'at':<22} {'req':>6} {'rps':>8} {'success':>8} " \
           f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    lines = [head]
    for r in rows:
        lines.append(f"{r.source:<16} {r.destination:<16} {r.rule or '':<10} {r.at or '-':<22} {r.requests:>6} "
                     f"{r.rate:>8.1f} {figure(r.success, '%'):>8} {figure(r.p50_ms):>8} {figure(r.p95_ms):>8} "
                     f"{figure(r.p99_ms):>8}")
    return "\n".join(lines)


def figure(x: float | None, unit: str = "") -> str:
    """A figure as the tables print it: one decimal, `-` when there is none."""
    return "-" if x is None else f"{x:.1f}{unit}"


def as_table(rows: list[Row], rules: list[Row] = ()) -> str:
    # a callee row's source is a SPIFFE ID, longer than 20: widen the columns to the longest
    sw = max([20] + [len(r.source) for r in rows])
    dw = max([20] + [len(r.destination) for r in rows])
    head = f"{'side':<7} {'source':<{sw}} {'destination':<{dw}} {'req':>6} {'rps':>8} {'success':>8} " \
           f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    lines = [head]
    for r in rows:
        lines.append(f"{r.side:<7} {r.source:<{sw}} {r.destination:<{dw}} {r.requests:>6} {r.rate:>8.1f} "
                     f"{figure(r.success, '%'):>8} {figure(r.p50_ms):>8} {figure(r.p95_ms):>8} {figure(r.p99_ms):>8}")
    if not rows:
        lines.append("(no requests in the window)")
    if rules:
        lines += ["", "per route rule (at the caller):", rules_table(list(rules))]
    return "\n".join(lines)
