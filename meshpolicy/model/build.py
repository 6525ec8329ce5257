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
         "fault", "trust_domain", "default", "tracing", "metrics", "egress", "cors",
         "issuer", "audience", "jwks", "jwks_uri", "ingress_jwt"}
# A source word: `internet` is read as the internet source wherever a source
# is, so nothing the rules could name may be called that.
RESERVED_NAMES = frozenset({"internet"})


class _Builder:
    def __init__(self, rule_offset: int = 0) -> None:
        self.diags: list[Diagnostic] = []
        self.mesh = t.Mesh.make()
        self.rule_offset = rule_offset  # auth rules in the files before this one
        self.file_path = ""  # the file being built (jwt providers and ingresses keep it)

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
            # `on 503, 429, connect-failure`: status codes apart from named conditions.
            named = [c for c in f["on"] if not c.value.isdigit()]
            codes = [c for c in f["on"] if c.value.isdigit()]
            kw["on"] = [c.value for c in named]
            spans["on"] = f["on"][0].span.to(f["on"][-1].span)
            for i, c in enumerate(named):
                spans[f"on.{i}"] = c.span
            if codes:
                kw["on_status"] = [int(c.value) for c in codes]
                for i, c in enumerate(codes):
                    spans[f"on_status.{i}"] = c.span
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
        jwt = n.get("jwt")
        return t.Source.make(kind=n.get("kind"), name=name.name if name else None,
                             jwt=self.jwt_requirement(jwt) if jwt is not None else None, span=n.span, spans={})

    def jwt_requirement(self, n: Node) -> t.JwtRequirement:
        provider = n.get("provider")
        claims = [t.ClaimTest.make(claim=c.get("claim").value, op=c.get("op").value, value=c.get("value").value,
                                   span=c.span, spans={"claim": c.get("claim").span, "value": c.get("value").span})
                  for c in n.get("claims")]
        return t.JwtRequirement.make(provider=self.ref(provider) if provider is not None else None,
                                     claims=claims, span=n.span, spans={})

    def cors(self, n: Node) -> t.Cors:
        f = n.fields
        kw, spans = {"origins": []}, {}
        for key in ("origins", "methods", "headers", "expose"):
            if key in f:
                values = [x.value for x in f[key]]
                kw[key] = [v.lower() for v in values] if key in ("headers", "expose") else values
                spans[key] = f[key][0].span.to(f[key][-1].span)
                for i, x in enumerate(f[key]):
                    spans[f"{key}.{i}"] = x.span
        if "credentials" in f:
            kw["credentials"] = True
            spans["credentials"] = f["credentials"].span
        if "max_age" in f:
            kw["max_age_ms"] = f["max_age"].value
            spans["max_age"] = f["max_age"].span
        return t.Cors.make(span=n.span, spans=spans, **kw)

    def _reserved(self, name: Ident, what: str) -> None:
        if name.name in RESERVED_NAMES:
            self.diags.append(diag("MP014", f"a {what} cannot be named `{name.name}`: it is the source word for "
                                            "requests from outside the mesh", name.span))

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
        if "egress" in once:
            s.egress = once["egress"].get("stance").value
            s.spans["egress"] = once["egress"].span
        self.mesh.mesh_blocks.append(s)

    def service_block(self, n: Node) -> None:
        name = n.get("name")
        once = self._once(n.children, f"service `{name.name}`")
        self._reserved(name, "service")
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
            elif k == "cors":
                svc.cors = self.cors(item)
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
            queries=[
                t.QueryMatch.make(name=q.get("name").value, kind=q.get("test"),
                                  value=q.get("value").value if q.get("value") else None, span=q.span)
                for q in m.get("queries", [])
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
        for op in n.get("header_ops", []):
            kind = op.get("op")
            rule.headers.append(t.HeaderOp.make(
                side=op.get("side").value, op=kind if isinstance(kind, str) else kind.value,
                name=op.get("name").value.lower(), value=op.get("value").value if op.get("value") else None,
                span=op.span, spans={"name": op.get("name").span}))
        if "rewrite" in n.fields:
            rw = n.get("rewrite")
            path, host = rw.get("path"), rw.get("host")
            spans = {k: v.span for k, v in (("path", path), ("host", host)) if v is not None}
            rule.rewrite = t.Rewrite.make(path=path.value if path else None, host=host.value if host else None,
                                          span=rw.span, spans=spans)
        if "cors" in n.fields:
            rule.cors = self.cors(n.get("cors"))
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
        key = None
        if n.get("key") is not None:
            k = n.get("key")
            name = k.get("name")
            value = None if name is None else (name.value.lower() if k.get("kind") == "header" else name.value)
            key = t.LimitKey.make(kind=k.get("kind"), name=value, span=k.span,
                                  spans={"name": name.span} if name is not None else {})
        self.mesh.rate_limits.append(t.RateLimit.make(
            sources=[self.source(s) for s in n.get("sources")], target=self.ref(n.get("target")),
            requests=count, per=per, burst=burst.value if burst else None, key=key, span=n.span, spans=spans))

    def assertion(self, n: Node) -> None:
        f = n.fields
        bound = f.get("bound")
        a = t.Assertion.make(
            kind=f["kind"],
            source=self.ref(f["source"]) if f.get("source") else None,
            source_jwt=self.jwt_requirement(f["source_jwt"]) if f.get("source_jwt") else None,
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

    def jwt_block(self, n: Node) -> None:
        name = n.get("name")
        self._reserved(name, "jwt provider")
        once = self._once(n.children, f"jwt `{name.name}`")
        p = t.JwtProvider.make(name=name.name, file=self.file_path, span=n.span, spans={"name": name.span})
        for k, field in (("issuer", "issuer"), ("jwks", "jwks_file"), ("jwks_uri", "jwks_uri")):
            if k in once:  # spans by field name
                setattr(p, field, once[k].get("value").value)
                p.spans[field] = once[k].get("value").span
        if "audience" in once:
            p.audiences = [v.value for v in once["audience"].get("values")]
            p.spans["audiences"] = once["audience"].span
        for item in n.children:
            if item.kind == "token":
                where, tname, prefix = item.get("where"), item.get("name"), item.get("prefix")
                p.token_from.append(t.TokenLocation.make(
                    kind=where, name=tname.value.lower() if where == "header" else tname.value,
                    prefix=prefix.value if prefix is not None else None, span=item.span,
                    spans={"name": tname.span, **({"prefix": prefix.span} if prefix is not None else {})}))
        self.mesh.jwt_providers.append(p)

    def ingress_block(self, n: Node) -> None:
        name = n.get("name")
        self._reserved(name, "ingress")
        once = self._once(n.children, f"ingress `{name.name}`")
        g = t.Ingress.make(name=name.name, file=self.file_path, span=n.span, spans={"name": name.span})
        rules = 0
        for item in n.children:
            k = item.kind
            if k in _ONCE and once.get(k) is not item:
                continue
            if k in ("namespace", "account"):
                setattr(g, k, item.get("name").name)
                g.spans[k] = item.get("name").span
            elif k == "listen":
                cert, key = item.get("cert"), item.get("key")
                spans = {"port": item.get("port").span, "protocol": item.get("protocol").span}
                spans.update({k2: v.span for k2, v in (("cert", cert), ("key", key)) if v is not None})
                g.listeners.append(t.Listener.make(
                    port=item.get("port").value, protocol=item.get("protocol").value,
                    cert_file=cert.value if cert is not None else None,
                    key_file=key.value if key is not None else None, span=item.span, spans=spans))
            elif k == "hosts":
                g.spans.setdefault("hosts", item.span)
                for v in item.get("values"):
                    g.spans[f"host.{len(g.hosts)}"] = v.span
                    g.hosts.append(v.value)
            elif k == "ingress_jwt":
                g.jwt = [self.ref(i) for i in item.get("providers")]
                g.spans["jwt"] = item.span
            elif k == "rule":
                g.rules.append(self.rule(item, rules))
                rules += 1
        if not g.account:
            g.account = g.name
        self.mesh.ingresses.append(g)

    def external_block(self, n: Node) -> None:
        name = n.get("name")
        self._reserved(name, "external service")
        once = self._once(n.children, f"external `{name.name}`")
        e = t.ExternalService.make(name=name.name, span=n.span, spans={"name": name.span})
        for item in n.children:
            k = item.kind
            if k in _ONCE and once.get(k) is not item:
                continue
            if k == "namespace":
                e.namespace = item.get("name").name
                e.spans["namespace"] = item.get("name").span
            elif k == "host":
                e.spans.setdefault("hosts", item.span)
                for v in item.get("values"):
                    e.spans[f"host.{len(e.hosts)}"] = v.span
                    e.hosts.append(v.value)
            elif k == "port":
                e.ports.append(t.ExternalPort.make(
                    number=item.get("number").value, protocol=item.get("protocol").value, span=item.span,
                    spans={"number": item.get("number").span, "protocol": item.get("protocol").span}))
            elif k == "timeout":
                e.timeout_ms = item.get("duration").value
                e.spans["timeout"] = item.get("duration").span
            elif k == "retry":
                e.retry = self.retry(item)
        self.mesh.externals.append(e)

    def file(self, sf: SyntaxFile) -> None:
        self.file_path = sf.origin or sf.path
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
        mesh.jwt_providers.extend(part.jwt_providers)
        mesh.ingresses.extend(part.ingresses)
        mesh.externals.extend(part.externals)
        diags.extend(fm.diags)
    if cache is not None:  # keep only the files of this build
        cache.clear()
        cache.update(fresh)
    if mesh.mesh_blocks:
        mesh.settings = mesh.mesh_blocks[0]
    return mesh, diags
