"""`meshc up` as users run it: the real command in a subprocess, real sidecars."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import free_port_base

SMALL = """
mesh small {{ trust_domain "small.test"; mtls strict; default deny }}
service web {{ namespace demo; account web; port 8080 http }}
service api {{
  namespace demo; account api; port 8080 http
  version v1
  version v2
}}
route api {{
  GET -> {split}
}}
allow web -> api GET
"""


def write_mesh(root: Path, proxy: str, split: str = "v1") -> None:
    root.mkdir(parents=True, exist_ok=True)
    base = free_port_base(40)
    (root / "meshc.toml").write_text(f"[compile.{proxy}]\nport_base = {base}\n")
    (root / "small.mesh").write_text(SMALL.format(split=split))


def start_up(root: Path, proxy: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "meshpolicy.cli", "up", str(root), "--proxy", proxy,
                             "--workdir", str(root / "work"), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NO_COLOR": "1"})


def wait_table(proc: subprocess.Popen, timeout: float = 120) -> dict[str, int]:
    """Read `meshc up`'s table: workload -> outbound port."""
    ports = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"meshc up ended: {proc.stderr.read()}")
        m = re.match(r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+http", line)
        if m:
            ports[m.group(1)] = int(m.group(4))
            if len(ports) == 3:
                return ports
    raise AssertionError("no table")


def get(port: int, host: str, path: str = "/x") -> tuple[int, dict | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, None
    finally:
        conn.close()


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("proxy", ["meshproxy", "envoy"])
def test_check_runs_a_smoke_test_and_exits(tmp_path, proxy):
    write_mesh(tmp_path / "m", proxy)
    proc = start_up(tmp_path / "m", proxy, "--check")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert re.search(r"^(\d+) passed, 0 failed$", out, re.M), out


def test_sigterm_stops_every_process(tmp_path):
    write_mesh(tmp_path / "m", "meshproxy")
    proc = start_up(tmp_path / "m", "meshproxy")
    wait_table(proc)
    kids = children_of(proc.pid)
    assert len(kids) == 6  # 3 apps + 3 sidecars
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while not all(gone(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(k) for k in kids)


def test_a_crash_is_reported(tmp_path):
    write_mesh(tmp_path / "m", "meshproxy")
    proc = start_up(tmp_path / "m", "meshproxy")
    wait_table(proc)
    apps = [k for k in children_of(proc.pid) if "meshpolicy.run.echo" in Path(f"/proc/{k}/cmdline").read_text()]
    os.kill(apps[0], signal.SIGKILL)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "exited with" in err


@pytest.mark.parametrize("proxy", ["meshproxy", "envoy"])
def test_watch_reloads_without_dropping_requests_and_refuses_bad_changes(tmp_path, proxy):
    root = tmp_path / "m"
    write_mesh(root, proxy, split="v1")
    proc = start_up(root, proxy, "--watch", "--no-verify")
    try:
        ports = wait_table(proc)
        web = ports["web"]
        assert get(web, "api")[1]["version"] == "v1"
        statuses: list[int] = []
        stop = threading.Event()

        def load():
            while not stop.is_set():
                statuses.append(get(web, "api")[0])

        t = threading.Thread(target=load)
        t.start()
        text = (root / "small.mesh").read_text()
        (root / "small.mesh").write_text(text.replace("GET -> v1", "GET -> v2"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and get(web, "api")[1]["version"] != "v2":
            time.sleep(0.2)
        time.sleep(1.0)
        stop.set()
        t.join()
        assert get(web, "api")[1]["version"] == "v2"
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
        # a broken change is refused and the running policy keeps serving
        (root / "small.mesh").write_text(text.replace("GET -> v1", "GET -> v9"))
        time.sleep(3)
        assert get(web, "api")[1]["version"] == "v2"
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert "refused" in err and "MP102" in err


@pytest.mark.parametrize("proxy", ["meshproxy", "envoy"])
def test_check_on_the_shop_example(tmp_path, proxy):
    """http, http2, grpc and tcp services, redirects, direct responses: every probe as predicted."""
    import shutil

    from .conftest import EXAMPLES

    root = tmp_path / "shop"
    shutil.copytree(EXAMPLES / "shop", root)
    with open(root / "meshc.toml", "a") as fh:
        fh.write(f"\n[compile.{proxy}]\nport_base = {free_port_base(120)}\n")
    proc = subprocess.run([sys.executable, "-m", "meshpolicy.cli", "up", str(root), "--proxy", proxy, "--check",
                           "--workdir", str(tmp_path / "work")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^(\d+) passed, 0 failed$", proc.stdout, re.M)
