"""A model printed as .mesh source, in the formatter's canonical layout.

`meshc import` writes what this prints; the tests parse it back and check
that the model is the same (tests/test_import.py), so printing is the exact
inverse of reading for every construct the language has.
"""

from __future__ import annotations

import re

from ..fmt import format_text
from ..gc_pause import gc_paused
from ..model import types as t
from ..syntax.lexer import quote

_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()+;=:@%/-]*")  # a PATH token the lexer reads back as written
_GLOB = re.compile(r"/[A-Za-z0-9._~!$&'()+;=:@%/*-]*")


def duration(ms: int) -> str:
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def pct(value: float) -> str:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return f"{text}%"


def path(p: t.PathPattern) -> str:
    if p.kind == "glob" and _GLOB.fullmatch(p.value):
        return p.value
    if p.kind == "exact" and _PLAIN_PATH.fullmatch(p.value) and "*" not in p.value:
        return p.value
    if p.kind == "glob":  # not writable as a bare token: the same set as a regex
        return "regex " + quote(_glob_regex(p.value))
    return f"{p.kind} {quote(p.value)}"


def _glob_regex(glob: str) -> str:
    out = []
    for part in re.split(r"(\*\*|\*)", glob):
        out.append(".*" if part == "**" else "[^/]+" if part == "*" else re.escape(part))
    return "".join(out)


def sources(items: list[t.Source]) -> str:
    out = []
    for s in items:
        if s.kind == "internet":
            out.append("internet" + (" " + jwt_requirement(s.jwt) if s.jwt is not None else ""))
            continue
        out.append({"any": "*", "authenticated": "authenticated"}.get(s.kind) or
                   (f"namespace {s.name}" if s.kind == "namespace" else str(s.name)))
    return ", ".join(out)


def jwt_requirement(req: t.JwtRequirement) -> str:
    parts = ["with jwt"]
    if req.provider is not None:
        parts.append(req.provider.name)
    tests = [f"{quote(c.claim)} {'=' if c.op == 'eq' else 'has'} {quote(c.value)}" for c in req.claims]
    if tests:
        parts.append(" and ".join(tests))
    return " ".join(parts)


def retry(r: t.Retry) -> str:
    if r.attempts == 0:
        return "retry off"
    parts = [f"retry {r.attempts}"]
    if r.per_try_ms is not None:
        parts.append(f"per_try {duration(r.per_try_ms)}")
    if r.on or r.on_status:
        parts.append("on " + ", ".join([*r.on, *map(str, r.on_status)]))
    if r.backoff_ms is not None:
        parts.append(f"backoff {duration(r.backoff_ms)}" +
                     (f" max {duration(r.backoff_max_ms)}" if r.backoff_max_ms is not None else ""))
    if r.budget_percent is not None:
        parts.append(f"budget {pct(r.budget_percent)}" + (f" min {r.budget_min}" if r.budget_min is not None else ""))
    if r.non_idempotent:
        parts.append("non_idempotent")
    return " ".join(parts)


def fault(f: t.Fault) -> str:
    parts = ["fault"]
    if f.delay_ms is not None:
        parts.append(f"delay {duration(f.delay_ms)} {pct(f.delay_percent or 100.0)}")
    if f.abort_status is not None:
        parts.append(f"abort {f.abort_status} {pct(f.abort_percent or 100.0)}")
    return " ".join(parts)


def _settings(node, lines: list[str], indent: str) -> None:
    c = getattr(node, "circuit", None)
    if c is not None:
        fields = [f"{k} {getattr(c, k)}" for k in ("max_connections", "max_pending", "max_requests", "max_retries")
                  if getattr(c, k) is not None]
        if fields:
            lines.append(f"{indent}circuit " + " ".join(fields))
    o = getattr(node, "outlier", None)
    if o is not None:
        fields = [f"{k} {getattr(o, k)}" for k in ("consecutive_5xx", "consecutive_gateway") if getattr(o, k) is not None]
        fields += [f"{name} {duration(getattr(o, k))}" for name, k in (("interval", "interval_ms"), ("eject", "eject_ms"))
                   if getattr(o, k) is not None]
        if o.max_percent is not None:
            fields.append(f"max {pct(o.max_percent)}")
        if fields:
            lines.append(f"{indent}outlier " + " ".join(fields))
    b = getattr(node, "balance", None)
    if b is not None:
        if b.policy == "hash_header":
            lines.append(f"{indent}balance hash header {quote(b.header or '')}")
        elif b.policy == "hash_source_ip":
            lines.append(f"{indent}balance hash source_ip")
        else:
            lines.append(f"{indent}balance {b.policy}")


def service(s: t.Service) -> list[str]:
    lines = [f"service {s.name} {{", f"  namespace {s.namespace}"]
    if s.account != s.name:
        lines.append(f"  account {s.account}")
    lines += [f"  port {p.number} {p.protocol}" for p in s.ports]
    if s.mtls is not None:
        lines.append(f"  mtls {s.mtls}")
    if s.timeout_ms is not None:
        lines.append(f"  timeout {duration(s.timeout_ms)}")
    if s.retry is not None:
        lines.append("  " + retry(s.retry))
    _settings(s, lines, "  ")
    if s.fault is not None:
        lines.append("  " + fault(s.fault))
    for v in s.versions:
        inner: list[str] = []
        if v.labels:
            inner.append("    " + ", ".join(f"{quote(k)}: {quote(val)}" for k, val in v.labels.items()))
        _settings(v, inner, "    ")
        if inner:
            lines += [f"  version {v.name} {{", *inner, "  }"]
        else:
            lines.append(f"  version {v.name}")
    lines.append("}")
    return lines


def match(m: t.Match) -> str:
    if m.is_catch_all:
        return "*"
    parts = []
    if m.methods:
        parts.append(", ".join(m.methods))
    parts += [path(p) for p in m.paths]
    for h in m.headers:
        test = {"exact": "= ", "prefix": "prefix ", "regex": "~ "}.get(h.kind)
        parts.append(f"header {quote(h.name)} " + (f"{test}{quote(h.value or '')}" if test else h.kind))
    for q in m.queries:
        test = {"exact": "= ", "prefix": "prefix ", "regex": "~ "}.get(q.kind)
        parts.append(f"query {quote(q.name)} " + (f"{test}{quote(q.value or '')}" if test else q.kind))
    if m.sources:
        parts.append("from " + ", ".join(r.name for r in m.sources))
    return " ".join(parts)


def action(a) -> str:
    if isinstance(a, t.Redirect):
        return f"redirect {quote(a.uri)} {a.status}"
    if isinstance(a, t.DirectResponse):
        return f"respond {a.status}" + (f" {quote(a.body)}" if a.body is not None else "")
    dests = ", ".join(d.version.name + (f" {pct(d.weight)}" if d.weight is not None else "") for d in a.destinations)
    if a.mirror is not None:
        dests += f" mirror {a.mirror.version.name} {pct(a.mirror.percent)}"
    return dests


def route_rule(rule: t.RouteRule) -> str:
    text = f"{match(rule.match)} -> {action(rule.action)}"
    if rule.timeout_ms is not None:
        text += f" timeout {duration(rule.timeout_ms)}"
    if rule.retry is not None:
        text += " " + retry(rule.retry)
    if rule.fault is not None:
        text += " " + fault(rule.fault)
    if rule.rewrite is not None:
        rw = rule.rewrite
        text += " rewrite" + (f" {quote(rw.path)}" if rw.path is not None else "") + \
            (f" host {quote(rw.host)}" if rw.host is not None else "")
    for op in rule.headers:
        text += f" {op.op} {op.side} header {quote(op.name)}" + (f" {quote(op.value or '')}" if op.op != "remove" else "")
    if rule.cors is not None:
        text += " " + cors(rule.cors)
    return text


def cors(c: t.Cors) -> str:
    parts = ["cors origins " + ", ".join(quote(o) for o in c.origins)]
    if c.methods:
        parts.append("methods " + ", ".join(c.methods))
    if c.headers:
        parts.append("headers " + ", ".join(quote(h) for h in c.headers))
    if c.expose:
        parts.append("expose " + ", ".join(quote(h) for h in c.expose))
    if c.credentials:
        parts.append("credentials")
    if c.max_age_ms is not None:
        parts.append(f"max_age {duration(c.max_age_ms)}")
    return " ".join(parts)


def route(r: t.Route) -> list[str]:
    return [f"route {r.service.name} {{", *("  " + route_rule(rule) for rule in r.rules), "}"]


def jwt_provider(p: t.JwtProvider) -> list[str]:
    lines = [f"jwt {p.name} {{"]
    if p.issuer is not None:
        lines.append(f"  issuer {quote(p.issuer)}")
    if p.audiences:
        lines.append("  audience " + ", ".join(quote(a) for a in p.audiences))
    if p.jwks_file is not None:
        lines.append(f"  jwks {quote(p.jwks_file)}")
    if p.jwks_uri is not None:
        lines.append(f"  jwks_uri {quote(p.jwks_uri)}")
    for loc in p.token_from:
        lines.append(f"  token {loc.kind} {quote(loc.name)}" + (f" prefix {quote(loc.prefix)}" if loc.prefix else ""))
    lines.append("}")
    return lines


def ingress(g: t.Ingress) -> list[str]:
    lines = [f"ingress {g.name} {{", f"  namespace {g.namespace}"]
    if g.account and g.account != g.name:
        lines.append(f"  account {g.account}")
    for ls in g.listeners:
        text = f"  listen {ls.port} {ls.protocol}"
        if ls.cert_file is not None:
            text += f" cert {quote(ls.cert_file)}"
        if ls.key_file is not None:
            text += f" key {quote(ls.key_file)}"
        lines.append(text)
    if g.hosts:
        lines.append("  hosts " + ", ".join(quote(h) for h in g.hosts))
    if g.jwt:
        lines.append("  jwt " + ", ".join(r.name for r in g.jwt))
    lines += ["  " + route_rule(rule) for rule in g.rules]
    lines.append("}")
    return lines


def external(e: t.ExternalService) -> list[str]:
    lines = [f"external {e.name} {{", f"  namespace {e.namespace}"]
    if e.hosts:
        lines.append("  host " + ", ".join(quote(h) for h in e.hosts))
    lines += [f"  port {p.number} {p.protocol}" for p in e.ports]
    if e.timeout_ms is not None:
        lines.append(f"  timeout {duration(e.timeout_ms)}")
    if e.retry is not None:
        lines.append("  " + retry(e.retry))
    lines.append("}")
    return lines


def _narrowed(text: str, methods: list[str], paths: list[t.PathPattern]) -> str:
    """`allow`, `deny` and `assert` narrow by methods, then paths, each list comma-separated."""
    if methods:
        text += " " + ", ".join(methods)
    if paths:
        text += " " + ", ".join(path(p) for p in paths)
    return text


def auth_rule(r: t.AuthRule) -> str:
    return _narrowed(f"{r.effect} {sources(r.sources)} -> {r.target.name}", r.methods, r.paths)


def assertion(a: t.Assertion) -> str:
    reach = "~>" if a.transitive else "->"
    if a.kind in ("amplification", "latency"):
        bound = duration(a.bound or 0) if a.kind == "latency" else str(a.bound)
        return f"assert {a.kind} {a.source.name} {reach} {a.target.name} <= {bound}"
    head = f"assert only {sources(a.sources)} ->" if a.kind == "only" else \
        f"assert {a.kind} {a.source.name} {reach if a.kind == 'never' else '->'}"
    return _narrowed(f"{head} {a.target.name}", a.methods, a.paths)


def mesh_block(s: t.MeshSettings) -> list[str]:
    lines = [f"mesh {s.name} {{", f"  trust_domain {quote(s.trust_domain)}", f"  mtls {s.mtls}", f"  default {s.default}"]
    tr = s.tracing
    lines.append(f"  tracing {', '.join(tr.formats)} sample {pct(tr.sample_percent)}" if tr.enabled and tr.formats
                 else "  tracing off")
    lines.append(f"  metrics {'on' if s.metrics else 'off'}")
    if s.egress != "registry_only":  # the language's default
        lines.append(f"  egress {s.egress}")
    lines.append("}")
    return lines


def files_for(mesh: t.Mesh) -> dict[str, str]:
    """The mesh as files: `mesh.mesh` with the mesh block, then one file per
    namespace with its services, their routes and the rules that target them."""
    head = mesh_block(mesh.settings)
    for p in mesh.jwt_providers:  # providers' files (jwks) are relative to mesh.mesh: the output's root
        head += [""] + jwt_provider(p)
    out = {"mesh.mesh": "\n".join(head) + "\n"}
    by_ns: dict[str, list[str]] = {}
    ns_of = {s.name: s.namespace for s in mesh.services}
    ns_of.update({e.name: e.namespace for e in mesh.externals})
    for s in mesh.services:
        by_ns.setdefault(s.namespace, []).extend(service(s) + [""])
    for e in mesh.externals:
        by_ns.setdefault(e.namespace, []).extend(external(e) + [""])
    for g in mesh.ingresses:
        by_ns.setdefault(g.namespace, []).extend(ingress(g) + [""])
    for r in mesh.routes:
        by_ns.setdefault(ns_of.get(r.service.name, "default"), []).extend(route(r) + [""])
    for ns in by_ns:
        rules = [auth_rule(r) for r in mesh.auth_rules if ns_of.get(r.target.name) == ns]
        if rules:
            by_ns[ns].extend(rules + [""])
    for r in mesh.rate_limits:
        key = "" if r.key is None else " per source_ip" if r.key.kind == "source_ip" else \
            f" per {r.key.kind} {quote(r.key.name or '')}"
        by_ns.setdefault(ns_of.get(r.target.name, "default"), []).append(
            f"limit {sources(r.sources)} -> {r.target.name} {r.requests}/{r.per}" +
            (f" burst {r.burst}" if r.burst is not None else "") + key)
    if mesh.assertions:
        out["assertions.mesh"] = "\n".join(assertion(a) for a in mesh.assertions) + "\n"
    for ns, lines in sorted(by_ns.items()):
        out[f"{ns}.mesh" if ns not in ("mesh", "assertions") else f"ns-{ns}.mesh"] = "\n".join(lines).rstrip("\n") + "\n"
    with gc_paused():
        return {name: canonical(text, name) for name, text in out.items()}


def canonical(text: str, name: str) -> str:
    done = format_text(text, name)
    if not done.ok:  # a bug in this printer: say where, never write a file that does not parse
        first = done.diagnostics[0]
        raise ValueError(f"meshc printed {name} that does not parse ({first.code} at line "
                         f"{first.span.line if first.span else '?'}: {first.message})")
    return done.text
