"""RED metrics (rate, errors, duration) per source and destination, in Prometheus format."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self, cfg: dict):
        self.enabled = cfg["metrics"]["enabled"]
        r = self.registry = CollectorRegistry()
        # rule: the route rule that decided an outbound call, named as Envoy's
        # route stat_prefix (`rule-N`, `default`), "" where none did (inbound,
        # no rule matched, externals), for per rule figures in `meshc stat`.
        labels = ("direction", "source", "destination", "code", "rule")
        self.requests = Counter("meshproxy_requests_total",
                                "Requests by direction, source, destination, status and route rule", labels, registry=r)
        self.duration = Histogram("meshproxy_request_duration_seconds", "Request duration",
                                  ("direction", "source", "destination", "rule"), registry=r,
                                  buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.retries = Counter("meshproxy_upstream_retries_total", "Retries sent", ("destination",), registry=r)
        self.ejections = Counter("meshproxy_outlier_ejections_total", "Outlier ejections",
                                 ("destination", "version"), registry=r)
        self.ejected = Gauge("meshproxy_outlier_ejections_active", "Upstreams ejected right now",
                             ("destination", "version"), registry=r)
        self.before_scrape = lambda: None  # the proxy refreshes gauges here
        self.overflow = Counter("meshproxy_circuit_overflow_total", "Requests refused by a circuit breaker",
                                ("destination",), registry=r)
        self.ratelimited = Counter("meshproxy_rate_limited_total", "Requests refused by a rate limit",
                                   ("source",), registry=r)
        self._series: dict[tuple, tuple] = {}  # label lookups cached: observe() runs per request
        self.refused = Counter("meshproxy_connections_refused_total", "Connections refused by the mTLS mode",
                               ("transport",), registry=r)

    def observe(self, direction: str, source: str, destination: str, code: int, seconds: float,
                choice=None) -> None:
        """choice: the outbound route choice (wire.evaluate.RouteChoice), for the rule label."""
        if not self.enabled:
            return
        key = (direction, source, destination, code, choice and choice.kind, choice and choice.rule)
        series = self._series.get(key)
        if series is None:
            rule = rule_label(choice)
            series = self._series[key] = (self.requests.labels(direction, source, destination, str(code), rule),
                                          self.duration.labels(direction, source, destination, rule))
        series[0].inc()
        series[1].observe(seconds)

    async def handler(self, request: web.Request) -> web.Response:
        if not self.enabled:
            return web.Response(status=404, text="metrics are off for this mesh\n")
        self.before_scrape()
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def rule_label(choice) -> str:
    """The rule a route choice came from, as the Envoy target names its route stats."""
    if choice is None or choice.kind not in ("forward", "redirect", "respond"):
        return ""
    from ..rule_stats import rule_stat_name

    return rule_stat_name(choice.rule)
