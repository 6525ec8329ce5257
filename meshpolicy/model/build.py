"""Syntax tree -> typed model. Purely structural: meaning is checked later.

Every node is built with `make` (no validation): the grammar has already
fixed the types, and validating again cost half of a language-server
re-check and, through pydantic's schema build, a fifth of a cold `meshc`
run. The tests validate the built models of the examples and of generated
programs. Each file is built on its own (`build_file`), so the language
server rebuilds only the files an edit changed (`build(..., cache)`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..codes import diag
from ..diagnostics import Diagnostic, Label
from ..syntax.nodes import Ident, Node, SyntaxFile
from . import types as t

# Settings a block takes at most once (ports and versions may repeat).
_ONCE = {"namespace", "account", "mtls", "timeout", "retry", "circuit", "outlier", "balance",
         "fault", "trust_domain", "default", "tracing", "metrics"}


class _Builder:
    def __init__(self, rule_offset: int = 0) -> None:
        self.diags: list[Diagnostic] = []
        self.mesh = t.Mesh.make()
        self.rule_offset = rule_offset  # auth rules in the files before this one

    # ---- helpers
    def _once(self, items: list[Node], where: str) -> dict[str, Node]:
        seen: dict[str, Node] = {}
        for item in items:
            if item.kind in _ONCE:
                if item.kind in seen:
                    self.diags.append(
                        diag("MP011", f"`{item.kind}` is set twice in {where}", item.span,
                             labels=[Label(seen[item.kind].span, "first set here")])
                    )
                    continue
                seen[item.kind] = item
        return seen

    @staticmethod
    def ref(i: Ident) -> t.Ref:
        return t.Ref.make(name=i.name, span=i.span, spans={})

    # ---- resilience pieces, shared by services, versions and route rules
    def retry(self, n: Node) -> t.Retry:
        if n.get("off"):
            return t.Retry.make(attempts=0, span=n.span)
        f = n.fields
        spans = {"attempts": f["attempts"].span}
        kw = {"attempts": f["attempts"].value, "non_idempotent": f.get("non_idempotent", False)}
        if "per_try" in f:
            kw["per_try_ms"] = f["per_try"].value
            spans["per_try"] = f["per_try"].span
        if f.get("on"):
            kw["on"] = [c.value for c in f["on"]]
            spans["on"] = f["on"][0].span.to(f["on"][-1].span)
            for i, c in enumerate(f["on"]):
                spans[f"on.{i}"] = c.span
        if "backoff" in f:
            kw["backoff_ms"] = f["backoff"][0].value
            spans["backoff"] = f["backoff"][0].span
            if len(f["backoff"]) > 1:
                kw["backoff_max_ms"] = f["backoff"][1].value
                spans["backoff_max"] = f["backoff"][1].span
        if "budget" in f:
            kw["budget_percent"] = f["budget"][0].value
            spans["budget"] = f["budget"][0].span
            if len(f["budget"]) > 1:
                kw["budget_min"] = f["budget"][1].value
                spans["budget_min"] = f["budget"][1].span
        return t.Retry.make(span=n.span, spans=spans, **kw)

    @staticmethod
    def _fields(n: Node, names: dict[str, str]) -> tuple[dict, dict]:
        kw, spans = {}, {}
        for src, dst in names.items():
            lit = n.get(src)
            if lit is not None:
                kw[dst] = lit.value
                spans[dst] = lit.span
        return kw, spans

    def circuit(self, n: Node) -> t.CircuitBreaker:
        names = {k: k for k in ("max_connections", "max_pending", "max_requests", "max_retries")}
        kw, spans = self._fields(n, names)
        return t.CircuitBreaker.make(span=n.span, spans=spans, **kw)

    def outlier(self, n: Node) -> t.Outlier:
        names = {"consecutive_5xx": "consecutive_5xx", "consecutive_gateway": "consecutive_gateway",
                 "interval": "interval_ms", "eject": "eject_ms", "max": "max_percent"}
        kw, spans = self._fields(n, names)
        return t.Outlier.make(span=n.span, spans=spans, **kw)

    def balance(self, n: Node) -> t.LoadBalancer:
        header = n.get("header")
        spans = {"header": header.span} if header else {}
        return t.LoadBalancer.make(policy=n.get("policy").value, header=header.value if header else None,
                              span=n.span, spans=spans)

    def fault(self, n: Node) -> t.Fault:
        kw, spans = {}, {}
        if "delay" in n.fields:
            d, p = n.get("delay")
            kw.update(delay_ms=d.value, delay_percent=p.value)
            spans.update(delay=d.span, delay_percent=p.span)
        if "abort" in n.fields:
            s, p = n.get("abort")
            kw.update(abort_status=s.value, abort_percent=p.value)
            spans.update(abort=s.span, abort_percent=p.span)
        return t.Fault.make(span=n.span, spans=spans, **kw)

    def path(self, n: Node) -> t.PathPattern:
        return t.PathPattern.make(kind=n.get("kind"), value=n.get("value").value, span=n.span, spans={})

    def source(self, n: Node) -> t.Source:
        name = n.get("name")
        return t.Source.make(kind=n.get("kind"), name=name.name if name else None, span=n.span, spans={})

    # ---- blocks
    def mesh_block(self, n: Node) -> None:
        once = self._once(n.children, f"mesh `{n.get('name').name}`")
        s = t.MeshSettings.make(name=n.get("name").name, declared=True, span=n.span,
                           spans={"name": n.get("name").span})
        if "trust_domain" in once:
            s.trust_domain = once["trust_domain"].get("value").value
            s.spans["trust_domain"] = once["trust_domain"].get("value").span
        if "mtls" in once:
            s.mtls = once["mtls"].get("mode").value
            s.spans["mtls"] = once["mtls"].span
        if "default" in once:
            s.default = once["default"].get("effect").value
            s.spans["default"] = once["default"].span
        if "tracing" in once:
            tr = once["tracing"]
            s.tracing = t.Tracing.make(
                enabled=not tr.get("off"),
                formats=[f.value for f in tr.get("formats")],
                sample_percent=tr.get("sample").value if tr.get("sample") else 100.0,
                span=tr.span,
                spans={"sample": tr.get("sample").span} if tr.get("sample") else {},
            )
        if "metrics" in once:
            s.metrics = once["metrics"].get("on").value
            s.spans["metrics"] = once["metrics"].span
        self.mesh.mesh_blocks.append(s)

    def service_block(self, n: Node) -> None:
        name = n.get("name")
        once = self._once(n.children, f"service `{name.name}`")
        svc = t.Service.make(name=name.name, span=n.span, spans={"name": name.span})
        for item in n.children:
            k = item.kind
            if k in _ONCE and once.get(k) is not item:
                continue
            if k == "namespace":
                svc.namespace = item.get("name").name
                svc.spans["namespace"] = item.get("name").span
            elif k == "account":
                svc.account = item.get("name").name
                svc.spans["account"] = item.get("name").span
            elif k == "port":
                svc.ports.append(t.Port.make(number=item.get("number").value, protocol=item.get("protocol").value,
                                        span=item.span, spans={"number": item.get("number").span,
                                                               "protocol": item.get("protocol").span}))
            elif k == "mtls":
                svc.mtls = item.get("mode").value
                svc.spans["mtls"] = item.span
            elif k == "timeout":
                svc.timeout_ms = item.get("duration").value
                svc.spans["timeout"] = item.get("duration").span
            elif k == "retry":
                svc.retry = self.retry(item)
            elif k == "circuit":
                svc.circuit = self.circuit(item)
            elif k == "outlier":
                svc.outlier = self.outlier(item)
            elif k == "balance":
                svc.balance = self.balance(item)
            elif k == "fault":
                svc.fault = self.fault(item)
            elif k == "version":
                svc.versions.append(self.version(item))
        if not svc.account:
            svc.account = svc.name
        self.mesh.services.append(svc)

    def version(self, n: Node) -> t.Version:
        name = n.get("name")
        v = t.Version.make(name=name.name, span=n.span, spans={"name": name.span})
        once = self._once(n.children, f"version `{name.name}`")
        for item in n.children:
            if item.kind == "labels":
                for key, value in item.get("labels"):
                    if key.value in v.labels:
                        self.diags.append(diag("MP011", f"label `{key.value}` is set twice in version `{name.name}`",
                                               key.span, labels=[Label(v.spans[f"label.{key.value}"], "first set here")]))
                        continue
                    v.labels[key.value] = value.value
                    v.spans[f"label.{key.value}"] = key.span.to(value.span)
            elif item.kind in ("circuit", "outlier", "balance") and once.get(item.kind) is item:
                setattr(v, item.kind, getattr(self, item.kind)(item))
        if not n.children:
            # `version v1` alone selects pods labelled version=v1
            v.labels = {"version": name.name}
        return v

    def route_block(self, n: Node) -> None:
        name = n.get("name")
        route = t.Route.make(service=self.ref(name), span=n.span)
        for i, item in enumerate(n.children):
            route.rules.append(self.rule(item, i))
        self.mesh.routes.append(route)

    def rule(self, n: Node, index: int) -> t.RouteRule:
        m = n.get("match")
        match = t.Match.make(
            methods=[x.value for x in m.get("methods")],
            paths=[self.path(p) for p in m.get("paths")],
            headers=[
                t.HeaderMatch.make(name=h.get("name").value.lower(), kind=h.get("test"),
                              value=h.get("value").value if h.get("value") else None, span=h.span)
                for h in m.get("headers")
            ],
            sources=[self.ref(s) for s in m.get("sources")],
            span=m.span,
            spans={f"method.{i}": x.span for i, x in enumerate(m.get("methods"))},
        )
        a = n.get("action")
        if a.kind == "forward":
            dests = [t.WeightedVersion.make(version=self.ref(d.get("version")),
                                       weight=d.get("weight").value if d.get("weight") else None,
                                       span=d.span,
                                       spans={"weight": d.get("weight").span} if d.get("weight") else {})
                     for d in a.get("destinations")]
            mirror = None
            if a.get("mirror"):
                mn = a.get("mirror")
                pct = mn.get("percent")
                mirror = t.Mirror.make(version=self.ref(mn.get("version")), percent=pct.value if pct else 100.0,
                                  span=mn.span, spans={"percent": pct.span} if pct else {})
            action = t.Forward.make(destinations=dests, mirror=mirror, span=a.span)
        elif a.kind == "redirect":
            code = a.get("code")
            action = t.Redirect.make(uri=a.get("uri").value, status=code.value if code else 301, span=a.span,
                                spans={"status": code.span} if code else {})
        else:
            body = a.get("body")
            action = t.DirectResponse.make(status=a.get("status").value, body=body.value if body else None,
                                      span=a.span, spans={"status": a.get("status").span})
        rule = t.RouteRule.make(index=index, match=match, action=action, span=n.span)
        if "timeout" in n.fields:
            rule.timeout_ms = n.get("timeout").get("duration").value
            rule.spans["timeout"] = n.get("timeout").get("duration").span
        if "retry" in n.fields:
            rule.retry = self.retry(n.get("retry"))
        if "fault" in n.fields:
            rule.fault = self.fault(n.get("fault"))
        return rule

    def auth(self, n: Node) -> None:
        self.mesh.auth_rules.append(t.AuthRule.make(
            index=self.rule_offset + len(self.mesh.auth_rules),
            effect=n.get("effect").value,
            sources=[self.source(s) for s in n.get("sources")],
            target=self.ref(n.get("target")),
            methods=[m.value for m in n.get("methods")],
            paths=[self.path(p) for p in n.get("paths")],
            span=n.span,
            spans={f"method.{i}": m.span for i, m in enumerate(n.get("methods"))},
        ))

    def limit(self, n: Node) -> None:
        (count, per) = n.get("rate").value
        burst = n.get("burst")
        spans = {"rate": n.get("rate").span}
        if burst:
            spans["burst"] = burst.span
        self.mesh.rate_limits.append(t.RateLimit.make(
            sources=[self.source(s) for s in n.get("sources")], target=self.ref(n.get("target")),
            requests=count, per=per, burst=burst.value if burst else None, span=n.span, spans=spans))

    def assertion(self, n: Node) -> None:
        f = n.fields
        bound = f.get("bound")
        a = t.Assertion.make(
            kind=f["kind"],
            source=self.ref(f["source"]) if f.get("source") else None,
            sources=[self.source(s) for s in f.get("sources", [])],
            target=self.ref(f["target"]),
            transitive=f.get("transitive", False),
            methods=[m.value for m in f.get("methods", [])],
            paths=[self.path(p) for p in f.get("paths", [])],
            bound=bound.value if bound else None,
            span=n.span,
            spans={"bound": bound.span} if bound else {},
        )
        self.mesh.assertions.append(a)

    def file(self, sf: SyntaxFile) -> None:
        self.mesh.files.append(sf.path)
        for item in sf.items:
            k = item.kind
            if k == "block_open":
                getattr(self, item.get("block") + "_block")(item)
            elif k == "auth":
                self.auth(item)
            elif k == "limit":
                self.limit(item)
            elif k == "assert":
                self.assertion(item)


@dataclass
class FileModel:
    """What one file contributes to the mesh. Auth rule indexes count from
    `offset`, the number of auth rules in the files before it."""

    offset: int
    mesh: t.Mesh  # this file's elements only
    diags: list[Diagnostic]


def build_file(sf: SyntaxFile, offset: int = 0) -> FileModel:
    b = _Builder(offset)
    b.file(sf)
    return FileModel(offset, b.mesh, b.diags)


# The language server's cache: SyntaxFile -> its FileModel. A file whose
# parse result is the same object (its text did not change) and whose auth
# rules start at the same index is not built again.
ModelCache = dict[int, tuple[SyntaxFile, FileModel]]


def build(files: list[SyntaxFile], cache: ModelCache | None = None) -> tuple[t.Mesh, list[Diagnostic]]:
    mesh, diags = t.Mesh.make(), []
    fresh: ModelCache = {}
    for sf in files:
        offset = len(mesh.auth_rules)
        got = cache.get(id(sf)) if cache is not None else None
        fm = got[1] if got is not None and got[0] is sf and got[1].offset == offset else build_file(sf, offset)
        fresh[id(sf)] = (sf, fm)
        part = fm.mesh
        mesh.files.extend(part.files)
        mesh.mesh_blocks.extend(part.mesh_blocks)
        mesh.services.extend(part.services)
        mesh.routes.extend(part.routes)
        mesh.auth_rules.extend(part.auth_rules)
        mesh.rate_limits.extend(part.rate_limits)
        mesh.assertions.extend(part.assertions)
        diags.extend(fm.diags)
    if cache is not None:  # keep only the files of this build
        cache.clear()
        cache.update(fresh)
    if mesh.mesh_blocks:
        mesh.settings = mesh.mesh_blocks[0]
    return mesh, diags
