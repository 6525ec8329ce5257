"""The echo app and the process supervisor behind `meshc up`: real processes, real sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

from meshpolicy.run.supervisor import Supervisor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return urllib.request.urlopen(url, timeout=1)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def get(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie counts as gone
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


def test_echo_app_answers_and_counts_attempts(tmp_path):
    port = free_port()
    with Supervisor(tmp_path) as sup:
        p = sup.start("echo", [sys.executable, "-m", "meshpolicy.run.echo", "--service", "orders",
                               "--version", "v2", "--port", str(port)])
        wait_http(f"http://127.0.0.1:{port}/__echo/attempts")
        status, body = get(f"http://127.0.0.1:{port}/orders/7", {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
        assert status == 200 and body["service"] == "orders" and body["version"] == "v2"
        assert body["trace"]["w3c"] == "a" * 32
        h = {"x-echo-id": "r1", "x-echo-fail": "2"}
        assert [get(f"http://127.0.0.1:{port}/x", h)[0] for _ in range(3)] == [503, 503, 200]
        assert get(f"http://127.0.0.1:{port}/__echo/attempts?id=r1")[1]["attempts"] == 3
        assert get(f"http://127.0.0.1:{port}/x", {"x-echo-status": "418"})[0] == 418
        pid = p.pid
    assert not alive(pid)


def test_crash_is_reported(tmp_path):
    with Supervisor(tmp_path) as sup:
        sup.start("boom", [sys.executable, "-c", "import sys; print('dying'); sys.exit(3)"])
        deadline = time.monotonic() + 5
        while not sup.crashed() and time.monotonic() < deadline:
            time.sleep(0.05)
        (crashed,) = sup.crashed()
        assert crashed.popen.returncode == 3 and "dying" in crashed.tail()


def test_no_orphans_when_the_supervisor_is_killed(tmp_path):
    """SIGKILL of the parent: children die with it (PR_SET_PDEATHSIG)."""
    script = textwrap.dedent(f"""
        import sys, time
        from meshpolicy.run.supervisor import Supervisor
        sup = Supervisor({str(tmp_path)!r})
        p = sup.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
        print(p.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_no_orphaned_grandchildren_of_a_shell_wrapped_command(tmp_path):
    """SIGKILL of the parent: a shell's own children die too (the reaper
    kills the whole process group; PR_SET_PDEATHSIG reaches only the shell)."""
    script = textwrap.dedent(f"""
        import sys, time
        from meshpolicy.run.supervisor import Supervisor
        sup = Supervisor({str(tmp_path)!r})
        p = sup.start("wrapped", ["sh", "-c", "sleep 60 & echo $! ; wait"])
        print(p.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    shell = int(parent.stdout.readline())
    log = tmp_path / "wrapped.log"
    deadline = time.monotonic() + 10
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(log.read_text().split()[0])
    assert alive(shell) and alive(grandchild)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while (alive(shell) or alive(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(shell) and not alive(grandchild)


def test_each_run_starts_with_fresh_logs(tmp_path):
    for word in ("first-run-error", "second-run"):
        with Supervisor(tmp_path) as sup:
            sup.start("app", [sys.executable, "-c", f"print({word!r})"]).popen.wait(10)
    assert (tmp_path / "app.log").read_text().split() == ["second-run"]
    assert (tmp_path / "app.log.1").read_text().split() == ["first-run-error"]


def test_a_probe_answered_by_another_runs_app_fails(tmp_path):
    """--check counts an answer only from this run's echo app (its token)."""
    from meshpolicy.run.up import Plan, Probe, Workload, run_probe
    from meshpolicy.semantics import Request

    port = free_port()
    with Supervisor(tmp_path) as sup:
        sup.start("echo", [sys.executable, "-m", "meshpolicy.run.echo", "--service", "api", "--port", str(port),
                           "--run-token", "other-run"])
        wait_http(f"http://127.0.0.1:{port}/__echo/attempts")
        # the caller's outbound port is the app itself: what answers is what a probe sees
        caller = Workload("web", None, "ns", tmp_path / "c", 0, port, 0, 0)
        for token, ok in (("this-run", False), ("other-run", True)):
            plan = Plan("meshproxy", tmp_path, [caller], token=token, echo_services={"api"})
            probe = Probe(Request("web", "api", "GET", "/x"), 200, "api")
            run_probe(plan, probe)
            assert probe.ok is ok, (token, probe.detail)


def test_echo_app_on_a_taken_port_says_so_in_one_line(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "meshpolicy.run.echo", "--service", "api", "--port", str(port)],
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], r.stderr
