"""Checking rendered bootstraps before anything is written.

Each file is parsed back from its text, then strictly into Envoy's own
Bootstrap message (xds-protos): unknown fields and unknown `@type`s are
rejected. Then the rules Envoy enforces when it loads a config that the
message types alone do not: unique listener, cluster and filter chain names,
every route naming a defined cluster, unique domains in a route config, the
router last among HTTP filters, and weighted clusters with a positive total.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

import yaml

from ...codes import diag
from ...compile import Output
from ...diagnostics import Diagnostic

ROUTER = "envoy.filters.http.router"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


def _type_urls(node, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        t = node.get("@type")
        if isinstance(t, str):
            out.add(t)
        for v in node.values():
            _type_urls(v, out)
    elif isinstance(node, list):
        for v in node:
            _type_urls(v, out)
    return out


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


def check_bootstrap(text: str) -> list[str]:
    """Every problem with one bootstrap's text, as messages."""
    from google.protobuf import json_format

    from envoy.config.bootstrap.v3.bootstrap_pb2 import Bootstrap

    try:
        cfg = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        return [f"not YAML: {exc}"]
    if not isinstance(cfg, dict):
        return ["not a mapping"]
    problems = [f"unknown @type `{t}`" for t in sorted(_type_urls(cfg, set())) if not _load_type(t)]
    if problems:
        return problems
    try:
        json_format.ParseDict(cfg, Bootstrap(), ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        return [f"not a valid Envoy Bootstrap: {exc}"]
    return semantic_problems(cfg)


def check_outputs(outputs: list[Output]) -> list[Diagnostic]:
    diags = []
    for o in outputs:
        for p in check_bootstrap(o.content):
            diags.append(diag("MP702", f"`{o.path}`: {p}"))
    return diags
