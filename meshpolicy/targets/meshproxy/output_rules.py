"""TARGET.validate: every file must parse against the strict format models
and obey the rules a schema cannot say (MP702 otherwise)."""

from __future__ import annotations

from functools import lru_cache

import re2
from pydantic import ValidationError

from ...codes import diag
from ...compile import Output
from ...diagnostics import Diagnostic
from ...wire.config import WorkloadConfig


def check_outputs(outputs: list[Output]) -> list[Diagnostic]:
    from ...compile.parallel import map_files

    diags: list[Diagnostic] = []
    owners: dict[tuple[str, int], str] = {}  # (address, port) -> file that listens there
    checked = map_files(_check_file, outputs, lambda o: len(o.content))  # on every core when large
    for o, (error, problems, endpoints) in zip(outputs, checked):
        if error is not None:
            diags.append(diag("MP702", f"meshproxy output `{o.path}` does not match the format: {error}"))
            continue
        for ep in endpoints:  # empty for the per-workload layout: each workload has its own ports
            if ep in owners:
                problems.append(f"port {ep[1]} on {ep[0]} is also used by `{owners[ep]}`")
            owners.setdefault(ep, o.path)
        diags.extend(diag("MP702", f"meshproxy output `{o.path}`: {p}") for p in problems)
    return diags


def _check_file(o: Output) -> list[tuple[str | None, list[str], list[tuple[str, int]]]]:
    """One file: why it does not parse (or None), its problems, where it listens."""
    try:
        cfg = WorkloadConfig.model_validate_json(o.content, strict=True)
    except (ValueError, ValidationError) as exc:
        return [(str(exc), [], [])]
    shared_host = cfg.listeners.layout == "mesh-unique"
    return [(None, file_rules(cfg), listening(cfg) if shared_host else [])]


def listening(cfg: WorkloadConfig) -> list[tuple[str, int]]:
    ls = cfg.listeners
    out = [(ls.admin.address, ls.admin.port), (ls.outbound.address, ls.outbound.port)]
    out += [(i.address, i.port) for i in ls.inbound]
    out += [(d.tcp_listener.address, d.tcp_listener.port) for d in cfg.outbound.destinations if d.tcp_listener]
    out += [(p.listener.address, p.listener.port) for e in cfg.outbound.externals for p in e.ports if p.listener]
    if cfg.ingress is not None:
        out += [(li.address, li.port) for li in cfg.ingress.listeners]
    return out


def _regex_problem(rx: str | None, where: str) -> str | None:
    if rx is None:
        return f"{where}: missing regex"
    p = _regex_fault(rx)
    return f"{where}: {p}" if p else None


@lru_cache(maxsize=65536)
def _regex_fault(rx: str) -> str | None:
    if not (rx.startswith("^") and rx.endswith("$")):
        return f"regex {rx!r} is not anchored"
    try:
        re2.compile(rx)
    except re2.error as exc:
        return f"regex {rx!r} is not RE2: {exc}"
    return None


def _query_regexes(queries, where: str) -> list[tuple[str | None, str]]:
    """Query regex tests fullmatch their value: checked as the anchored form."""
    return [(f"^(?:{q.value})$", f"{where} query `{q.name}`") for q in queries if q.kind == "regex"]


def north_south_rules(cfg: WorkloadConfig) -> tuple[list[str], list[tuple[str | None, str]]]:
    """Ingress, providers, principals and externals: (problems, regexes to check)."""
    out: list[str] = []
    regexes: list[tuple[str | None, str]] = []
    is_ingress = cfg.workload.kind == "ingress"
    if is_ingress != (cfg.ingress is not None):
        out.append("an ingress workload has an `ingress` section, and only it")
    if not is_ingress and not cfg.listeners.inbound:
        out.append("a service workload needs inbound listeners")
    providers = {p.name for p in cfg.jwt}
    if any((p.jwks is None) == (p.jwks_uri is None) for p in cfg.jwt):
        out.append("a jwt provider needs exactly one of `jwks` and `jwks_uri`")
    if any(p.jwks_uri is not None and not p.jwks_uri.startswith("https://") for p in cfg.jwt):
        out.append("a `jwks_uri` must be an https URL")
    if len(providers) != len(cfg.jwt):
        out.append("a jwt provider is listed twice")
    auth = cfg.inbound.authorization
    principals = [p for e in auth.deny + auth.allow for p in e.principals]
    principals += [p for lim in cfg.inbound.rate_limits for p in lim.principals]
    for p in principals:
        if p.kind == "internet" and p.jwt:
            wanted = {p.provider} if p.provider else {n for g in p.ingresses for n in g.providers}
            missing = sorted(wanted - providers)
            if missing:
                out.append(f"an internet principal names provider `{missing[0]}`, which `jwt` does not list")
    for e in cfg.outbound.externals:
        if any(p.listener is not None and p.protocol != "tcp" for p in e.ports):
            out.append(f"external `{e.name}`: only a tcp port has a local listener")
        for kind, entries in (("deny", e.deny), ("allow", e.allow)):
            regexes += [(m.regex, f"external `{e.name}` {kind} rule {x.rule} path") for x in entries for m in x.paths]
    if cfg.ingress is not None:
        g = cfg.ingress
        missing = sorted(set(g.providers) - providers)
        if missing:
            out.append(f"the ingress accepts provider `{missing[0]}`, which `jwt` does not list")
        https = [li for li in g.listeners if li.protocol == "https"]
        if any(li.cert_file is None or li.key_file is None for li in https) or any(
                li.cert_file or li.key_file for li in g.listeners if li.protocol == "http"):
            out.append("an https listener needs cert_file and key_file; an http one has neither")
        called = {d.service for d in cfg.outbound.destinations}
        for r in g.rules:
            where = f"ingress rule {r.rule}"
            regexes += [(m.regex, f"{where} path") for m in r.match.paths]
            regexes += _query_regexes(r.match.queries, where)
            if r.action.kind == "forward":
                unknown = [d.service for d in r.action.destinations if d.service not in called]
                if unknown:
                    out.append(f"{where} forwards to `{unknown[0]}`, which is not among the destinations")
    return out, regexes


def file_rules(cfg: WorkloadConfig) -> list[str]:
    out, ns_regexes = north_south_rules(cfg)
    local = [(i.address, i.port) for i in cfg.listeners.inbound]
    if len(set(local)) != len(local) or len({i.service_port for i in cfg.listeners.inbound}) != len(local):
        out.append("inbound listeners repeat a port")
    regexes: list[tuple[str | None, str]] = list(ns_regexes)
    auth = cfg.inbound.authorization
    for kind, entries in (("deny", auth.deny), ("allow", auth.allow)):
        for e in entries:
            regexes += [(p.regex, f"{kind} rule {e.rule} path") for p in e.paths]
            regexes += [(p.regex, f"{kind} rule {e.rule} principal") for p in e.principals if p.kind == "namespace"]
    for lim in cfg.inbound.rate_limits:
        regexes += [(p.regex, "rate limit principal") for p in lim.principals if p.kind == "namespace"]
    hosts: dict[str, str] = {}
    for d in cfg.outbound.destinations:
        if d.service == cfg.workload.service:
            out.append(f"destination `{d.service}` is the workload itself")
        for h in d.hosts:
            if h in hosts:
                out.append(f"host `{h}` names both `{hosts[h]}` and `{d.service}`")
            hosts.setdefault(h, d.service)
        versions = [u.version for u in d.upstreams]
        if len(set(versions)) != len(versions) or (None in versions and len(versions) > 1):
            out.append(f"destination `{d.service}` repeats an upstream or mixes versioned and unversioned ones")
        for r in d.routes:
            where = f"`{d.service}` route rule {r.rule}"
            regexes += [(p.regex, f"{where} path") for p in r.match.paths]
            regexes += _query_regexes(r.match.queries, where)
            for h in r.match.headers:
                if h.kind == "regex":
                    regexes.append((h.regex, f"{where} header `{h.name}`"))
                elif h.regex is not None:
                    out.append(f"{where}: header `{h.name}` has a regex but is not a regex test")
                if (h.value is None) != (h.kind in ("present", "absent")):
                    out.append(f"{where}: header `{h.name}` value does not fit its kind")
            a = r.action
            if a.kind == "forward":
                named = [x.version for x in a.destinations] + ([a.mirror.version] if a.mirror else [])
                missing = [v for v in named if v not in versions]
                if missing:
                    out.append(f"{where} sends traffic to unknown upstream {missing[0]!r}")
                if len({x.version for x in a.destinations}) != len(a.destinations):
                    out.append(f"{where} names an upstream twice")
                if abs(sum(x.weight for x in a.destinations) - 100.0) > 1e-6:
                    out.append(f"{where}: weights total {sum(x.weight for x in a.destinations)}, not 100")
    for rx, where in regexes:
        p = _regex_problem(rx, where)
        if p:
            out.append(p)
    return out
