"""meshc's access-log service: Envoy's inbound entries become callee-side
counters by the caller's verified identity, bounded in memory, served on
the collector's /metrics; the spans file is rotated, never unbounded."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from meshpolicy.run import access_logs, collector as collector_mod
from meshpolicy.run.collector import Collector, Span, spans_of

from .conftest import free_port_base


def _entry(san: str | None, code: int, ms: int) -> accesslog_pb2.HTTPAccessLogEntry:
    e = accesslog_pb2.HTTPAccessLogEntry()
    if san is not None:
        e.common_properties.tls_properties.peer_certificate_properties.subject_alt_name.add(uri=san)
    e.common_properties.duration.FromMilliseconds(ms)
    e.response.response_code.value = code
    return e


def _metrics(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_streamed_entries_are_counted_by_the_peer_certificate(tmp_path):
    c = Collector(tmp_path)
    http_port = c.start()
    als_port = c.start_access_log(free_port_base(1))
    try:
        first = als_pb2.StreamAccessLogsMessage()
        first.identifier.log_name = "inbound|api|v1"
        first.http_logs.log_entry.extend([_entry("spiffe://t/ns/a/sa/web", 200, 3),
                                          _entry("spiffe://t/ns/a/sa/web", 503, 40),
                                          _entry(None, 200, 1)])  # a plaintext caller (permissive)
        later = als_pb2.StreamAccessLogsMessage()  # later messages of a stream carry no identifier
        later.http_logs.log_entry.append(_entry("spiffe://t/ns/a/sa/web", 200, 7))
        with grpc.insecure_channel(f"127.0.0.1:{als_port}") as ch:
            als_pb2_grpc.AccessLogServiceStub(ch).StreamAccessLogs(iter([first, later]), timeout=10)
        m = _metrics(http_port)
    finally:
        c.stop()
    web = (("destination", "api"), ("source", "spiffe://t/ns/a/sa/web"), ("version", "v1"))
    assert m[("meshc_inbound_requests_total", tuple(sorted((*web, ("code", "200")))))] == 2
    assert m[("meshc_inbound_requests_total", tuple(sorted((*web, ("code", "503")))))] == 1
    unknown = (("code", "200"), ("destination", "api"), ("source", "unknown"), ("version", "v1"))
    assert m[("meshc_inbound_requests_total", unknown)] == 1
    le5 = tuple(sorted((*web, ("le", "5"))))
    assert m[("meshc_inbound_request_duration_ms_bucket", le5)] == 1  # 3 ms; 7 and 40 ms are above


def test_a_stream_without_a_known_log_name_is_not_counted(tmp_path):
    assert access_logs.workload_of("outbound|api") is None and access_logs.workload_of("inbound|") is None
    assert access_logs.workload_of("inbound|db") == ("db", "")
    c = Collector(tmp_path)
    http_port = c.start()
    als_port = c.start_access_log(free_port_base(1))
    try:
        msg = als_pb2.StreamAccessLogsMessage()
        msg.identifier.log_name = "outbound|api"
        msg.http_logs.log_entry.append(_entry("spiffe://t/ns/a/sa/web", 200, 3))
        with grpc.insecure_channel(f"127.0.0.1:{als_port}") as ch:
            als_pb2_grpc.AccessLogServiceStub(ch).StreamAccessLogs(iter([msg]), timeout=10)
        m = _metrics(http_port)
    finally:
        c.stop()
    assert not any(name == "meshc_inbound_requests_total" for name, _ in m)


def test_series_are_bounded(monkeypatch):
    monkeypatch.setattr(access_logs, "MAX_SERIES", 3)
    tally = access_logs.InboundTally()
    for k in range(10):  # ten callers: past three series, calls count under `(other)`
        tally.add(f"spiffe://t/ns/a/sa/c{k}", "api", "", 200, 1.0)
    assert len(tally.buckets) == 4
    assert sum(tally.codes[("(other)", "api", "")].values()) == 7


def test_label_values_are_escaped():
    tally = access_logs.InboundTally()
    tally.add('spiffe://t/a"b\\c\nd', "api", "", 200, 1.0)
    [sample] = [s for f in text_string_to_metric_families(tally.prometheus()) for s in f.samples
                if s.name == "meshc_inbound_requests_total"]
    assert sample.labels["source"] == 'spiffe://t/a"b\\c\nd'


def test_the_spans_file_is_rotated(tmp_path, monkeypatch):
    monkeypatch.setattr(collector_mod, "MAX_SPANS_FILE", 600)
    c = Collector(tmp_path)
    for k in range(12):
        c.record([Span(f"{k:032x}", "1", None, "api", "n", "server", k, 1, {"http.url": "x" * 50})])
    files = sorted(p.name for p in (tmp_path / "traces").iterdir())
    assert files == ["spans.1.jsonl", "spans.jsonl"]
    assert all(p.stat().st_size <= 600 for p in (tmp_path / "traces").iterdir())
    kept = [s["trace_id"] for s in spans_of(tmp_path)]
    assert kept == sorted(kept) and kept[-1] == f"{11:032x}"  # the newest kept, older generation first
    assert len(kept) < 12  # the oldest generation went


@pytest.mark.parametrize("value,ok", [("127.0.0.1:9000", True), ("", True), ("nope", False)])
def test_the_access_log_setting_is_checked(value, ok):
    from meshpolicy.targets.envoy.conventions import settings_from

    settings, diags = settings_from({"access_log_service": value})
    assert (not diags) == ok
    assert settings.access_log_service == (("127.0.0.1", 9000) if value == "127.0.0.1:9000" else None)
