"""Checking rendered bootstraps before anything is written.

Each file is parsed back from its text, then strictly into Envoy's own
Bootstrap message (xds-protos): unknown fields and unknown `@type`s are
rejected. Clusters and virtual hosts repeat across the workloads of a mesh,
so each distinct one is parsed (as its own message type) once, and the rest
of the bootstrap around them on its own: the same strictness, a fraction of
the time. Then the rules Envoy enforces when it loads a config that the
message types alone do not: unique listener, cluster and filter chain names,
every route naming a defined cluster, unique domains in a route config, the
router last among HTTP filters, and weighted clusters with a positive total.
"""

from __future__ import annotations

import importlib
import re
import pkgutil
from functools import lru_cache

from ...codes import diag
from ...compile import Output
from ...diagnostics import Diagnostic

ROUTER = "envoy.filters.http.router"
_PIECES: dict[tuple[str, str], str | None] = {}  # (message, canonical JSON) -> problem


@lru_cache(maxsize=None)
def _load_type(type_url: str) -> bool:
    """Import the generated modules of the package that defines a type URL,
    so the default descriptor pool can resolve it; False if there is none."""
    full = type_url.rsplit("/", 1)[-1]
    package = full.rsplit(".", 1)[0]
    try:
        pkg = importlib.import_module(package)
    except ImportError:
        return False
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{mod.name}")
    from google.protobuf import descriptor_pool

    try:
        descriptor_pool.Default().FindMessageTypeByName(full)
    except KeyError:
        return False
    return True


def _walk_hcms(cfg: dict):
    for listener in cfg.get("static_resources", {}).get("listeners", []):
        for chain in listener.get("filter_chains", []):
            for f in chain.get("filters", []):
                tc = f.get("typed_config", {})
                if tc.get("@type", "").endswith("HttpConnectionManager"):
                    yield listener["name"], tc


def _route_clusters(action: dict):
    if "cluster" in action:
        yield action["cluster"]
    for c in action.get("weighted_clusters", {}).get("clusters", []):
        yield c["name"]
    for m in action.get("request_mirror_policies", []):
        yield m["cluster"]


def _dups(names: list[str]) -> list[str]:
    seen, dup = set(), []
    for n in names:
        if n in seen and n not in dup:
            dup.append(n)
        seen.add(n)
    return dup


def semantic_problems(cfg: dict) -> list[str]:
    """Envoy's load-time rules, as messages (empty when the config is fine)."""
    problems = []
    res = cfg.get("static_resources", {})
    listeners = res.get("listeners", [])
    clusters = res.get("clusters", [])
    for n in _dups([li.get("name", "") for li in listeners]):
        problems.append(f"duplicate listener name `{n}`")
    cluster_names = [c.get("name", "") for c in clusters]
    for n in _dups(cluster_names):
        problems.append(f"duplicate cluster name `{n}`")
    ports = [(li["address"]["socket_address"]["address"], li["address"]["socket_address"]["port_value"])
             for li in listeners if "socket_address" in li.get("address", {})]
    for p in _dups([f"{a}:{n}" for a, n in ports]):
        problems.append(f"two listeners bind {p}")
    for li in listeners:
        for n in _dups([fc.get("name", "") for fc in li.get("filter_chains", []) if fc.get("name")]):
            problems.append(f"listener `{li['name']}` has two filter chains named `{n}`")
    known = set(cluster_names)
    for lname, hcm in _walk_hcms(cfg):
        filters = [f.get("name") for f in hcm.get("http_filters", [])]
        if not filters or filters[-1] != ROUTER or filters.count(ROUTER) != 1:
            problems.append(f"listener `{lname}`: the router must be the last HTTP filter, once")
        rc = hcm.get("route_config", {})
        domains = [d for vh in rc.get("virtual_hosts", []) for d in vh.get("domains", [])]
        for d in _dups(domains):
            problems.append(f"listener `{lname}`: domain `{d}` is in two virtual hosts")
        for vh in rc.get("virtual_hosts", []):
            for r in vh.get("routes", []):
                action = r.get("route")
                if action is None:
                    continue
                for c in _route_clusters(action):
                    if c not in known:
                        problems.append(f"listener `{lname}`: route `{r.get('name')}` names unknown cluster `{c}`")
                wc = action.get("weighted_clusters")
                if wc is not None and sum(c.get("weight", 0) for c in wc.get("clusters", [])) <= 0:
                    problems.append(f"listener `{lname}`: route `{r.get('name')}` has weights totalling 0")
        if hcm.get("tracing"):
            tc = hcm["tracing"]["provider"]["typed_config"]
            c = tc.get("collector_cluster") or tc.get("http_service", {}).get("http_uri", {}).get("cluster")
            if c and c not in known:
                problems.append(f"listener `{lname}`: the tracer names unknown cluster `{c}`")
    for li in listeners:
        for chain in li.get("filter_chains", []):
            for f in chain.get("filters", []):
                tc = f.get("typed_config", {})
                if tc.get("@type", "").endswith("TcpProxy"):
                    names = [tc["cluster"]] if "cluster" in tc else [
                        c["name"] for c in tc.get("weighted_clusters", {}).get("clusters", [])]
                    for c in names:
                        if c not in known:
                            problems.append(f"listener `{li['name']}`: tcp proxy names unknown cluster `{c}`")
    return problems


# The caller's own certificate paths (DataSource `filename`) are the only thing
# that differs between its copy of a cluster and another caller's, and any
# string parses there: the cache key makes them all the same.
_FILENAME = re.compile(r'"filename":"(?:[^"\\]|\\.)*"')
_FILENAME_SPACED = re.compile(r'"filename": "(?:[^"\\]|\\.)*"')  # as json_lines writes it
# Every `@type` in our JSON text (a `"@type": "` inside a string value would be escaped).
_TYPE_URL = re.compile(r'"@type": "([^"\\]+)"')


def _piece_problem(piece: dict, message_type, what: str, text: str | None = None) -> str | None:
    """ParseDict of one piece, cached by its JSON text (given, or encoded here)."""
    import json

    from google.protobuf import json_format

    if text is None:
        text = json.dumps(piece, sort_keys=True, separators=(",", ":"))
        key = (message_type.DESCRIPTOR.full_name, _FILENAME.sub('"filename":"<file>"', text))
    else:
        key = (message_type.DESCRIPTOR.full_name, _FILENAME_SPACED.sub('"filename": "<file>"', text))
    if key not in _PIECES:
        try:
            json_format.ParseDict(piece, message_type(), ignore_unknown_fields=False)
            _PIECES[key] = None
        except json_format.ParseError as exc:
            _PIECES[key] = f"not a valid Envoy Bootstrap: {what}: {exc}"
    return _PIECES[key]


def _strict_problems(cfg: dict, text: str = "") -> list[str]:
    """ParseDict of the whole bootstrap, done as: each cluster, each virtual
    host, then the bootstrap with those lists emptied."""
    from google.protobuf import json_format

    from envoy.config.bootstrap.v3.bootstrap_pb2 import Bootstrap
    from envoy.config.cluster.v3.cluster_pb2 import Cluster
    from envoy.config.route.v3.route_components_pb2 import VirtualHost

    problems = []
    sr = cfg.get("static_resources")
    skeleton = dict(cfg)
    if isinstance(sr, dict):
        sr = dict(sr)
        skeleton["static_resources"] = sr
        clusters = sr.get("clusters")
        if isinstance(clusters, list) and all(isinstance(c, dict) for c in clusters):
            from .json_lines import element_lines

            lines = element_lines(text, "clusters") if text else None
            if lines is None or len(lines) != len(clusters):
                lines = [None] * len(clusters)
            for c, line in zip(clusters, lines):
                p = _piece_problem(c, Cluster, f"cluster `{c.get('name')}`", line)
                if p:
                    problems.append(p)
            sr["clusters"] = []
        listeners = sr.get("listeners")
        if isinstance(listeners, list):
            sr["listeners"] = [_without_vhosts(li, problems, VirtualHost) for li in listeners]
    try:
        json_format.ParseDict(skeleton, Bootstrap(), ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        problems.append(f"not a valid Envoy Bootstrap: {exc}")
    return problems


def _without_vhosts(listener, problems: list[str], vhost_type):
    """A copy of the listener whose HTTP route configs have their virtual hosts
    checked (into problems) and removed; anything unexpected is left as is
    for the whole-message parse to judge."""
    if not isinstance(listener, dict) or not isinstance(listener.get("filter_chains"), list):
        return listener
    chains = []
    for chain in listener["filter_chains"]:
        if not isinstance(chain, dict) or not isinstance(chain.get("filters"), list):
            chains.append(chain)
            continue
        filters = []
        for f in chain["filters"]:
            tc = f.get("typed_config") if isinstance(f, dict) else None
            rc = tc.get("route_config") if isinstance(tc, dict) else None
            vhs = rc.get("virtual_hosts") if isinstance(rc, dict) else None
            if isinstance(vhs, list) and all(isinstance(v, dict) for v in vhs):
                for v in vhs:
                    p = _piece_problem(v, vhost_type, f"listener `{listener.get('name')}`, virtual host `{v.get('name')}`")
                    if p:
                        problems.append(p)
                f = {**f, "typed_config": {**tc, "route_config": {**rc, "virtual_hosts": []}}}
            filters.append(f)
        chains.append({**chain, "filters": filters})
    return {**listener, "filter_chains": chains}


def check_bootstrap(text: str) -> list[str]:
    """Every problem with one bootstrap's text, as messages."""
    from .json_lines import load

    try:
        cfg = load(text)
    except ValueError as exc:
        return [f"not JSON (the Envoy target writes JSON, which Envoy reads as YAML): {exc}"]
    if not isinstance(cfg, dict):
        return ["not a mapping"]
    problems = [f"unknown @type `{t}`" for t in sorted(set(_TYPE_URL.findall(text))) if not _load_type(t)]
    if problems:
        return problems
    problems = _strict_problems(cfg, text)
    if problems:
        return problems
    return semantic_problems(cfg)


def _check_file(item: tuple[str, str]) -> list[tuple[str, str]]:
    path, text = item
    return [(path, p) for p in check_bootstrap(text)]


def check_outputs(outputs: list[Output]) -> list[Diagnostic]:
    from ...compile.parallel import map_files

    found = map_files(_check_file, [(o.path, o.content) for o in outputs], lambda x: len(x[1]))
    return [diag("MP702", f"`{path}`: {p}") for path, p in found]
