"""Grammar rules to syntax nodes: one callback per rule, run as the parser reduces."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

from lark import Transformer

from ..codes import diag
from ..diagnostics import Diagnostic
from ..span import Span
from .lexer import Tok, unquote
from .nodes import Ident, Lit, Node


@dataclass
class ParseContext:
    path: str
    diagnostics: list[Diagnostic] = field(default_factory=list)


CURRENT: contextvars.ContextVar[ParseContext] = contextvars.ContextVar("meshpolicy_parse")

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


_new = tuple.__new__  # Span(...) without NamedTuple's Python-level __new__: one per token


def tspan(t: Tok) -> Span:
    start, end, col = t.start_pos, t.end_pos, t.column
    return _new(Span, (CURRENT.get().path, t.line, col, t.line, col + (end - start), start, end))


def _path() -> str:
    return CURRENT.get().path


def _span_of(x) -> Span | None:
    if isinstance(x, Tok):
        return tspan(x)
    if isinstance(x, (Node, Ident, Lit)):
        return x.span
    if isinstance(x, tuple) and len(x) == 2:  # an option: ("per_try", Lit) or ("on", [Lit, ...])
        return _span_of(x[1])
    if isinstance(x, list) and x:
        return _merge([_span_of(x[0]), _span_of(x[-1])])
    return None


def _merge(spans) -> Span | None:
    spans = [s for s in spans if s is not None]
    if not spans:
        return None
    return spans[0].to(spans[-1])


def span_of(children) -> Span:
    # (= _merge of the first and last child's spans, without the lists: one call per node)
    if children:
        first = _span_of(children[0])
        last = _span_of(children[-1]) if len(children) > 1 else first
        if first is not None:
            if last is None:
                return first
            return _new(Span, (first[0], first[1], first[2], last[3], last[4], first[5], last[6]))
        if last is not None:
            return last
    # Rules whose tokens are all anonymous keywords get a placeholder; the
    # driver replaces every item's span with the exact one from its tokens.
    return Span(CURRENT.get().path, 0, 0, 0, 0, 0, 0)


# (Tok.value, not str(tok): these run for nearly every token)
def ident(t: Tok) -> Ident:
    return Ident(t.value, tspan(t))


def lit(t: Tok, value=None) -> Lit:
    return Lit(t.value if value is None else value, t.value, tspan(t))


def _bad(t: Tok, message: str) -> None:
    CURRENT.get().diagnostics.append(diag("MP008", message, tspan(t)))


MAX_DURATION_MS = 10**12  # about 31 years; every target's duration type holds it
_MAX_DIGITS = 4000  # Python converts at most 4300 digits of a string to an int


def duration(t: Tok) -> Lit:
    """Exact integer milliseconds (no float rounding of long inputs)."""
    text = t.value
    unit = "ms" if text.endswith("ms") else text[-1]
    number = text[: -len(unit)]
    if len(number) > _MAX_DIGITS:  # int() and Fraction() refuse them (a traceback before)
        _bad(t, f"duration `{text[:24]}...` has too many digits")
        return Lit(MAX_DURATION_MS, text, tspan(t))
    # Whole numbers (nearly all) in int arithmetic; Fraction only for a decimal point.
    if number.isdigit():
        ms = int(number) * _UNIT_MS[unit]
    else:
        from fractions import Fraction

        ms = Fraction(number) * _UNIT_MS[unit]
    if ms > MAX_DURATION_MS:
        _bad(t, f"duration `{text[:24]}{'...' if len(text) > 24 else ''}` is too large (at most 31 years)")
        return Lit(MAX_DURATION_MS, text, tspan(t))
    if not isinstance(ms, int) and ms.denominator != 1:
        _bad(t, f"duration `{text}` is not a whole number of milliseconds")
    return Lit(int(ms), text, tspan(t))


def percent(t: Tok) -> Lit:
    return Lit(float(t.value[:-1]), t.value, tspan(t))


def integer(t: Tok) -> Lit:
    text = t.value
    if len(text) > 18:
        _bad(t, f"number `{text[:20]}...` is too large")
        return Lit(10**18, text, tspan(t))
    return Lit(int(text), text, tspan(t))


def string(t: Tok) -> Lit:
    return Lit(unquote(t.value), t.value, tspan(t))


def rate(t: Tok) -> Lit:
    n, unit = t.value.split("/")
    if len(n) > 18:
        _bad(t, f"rate `{t}` is too large")
        n = str(10**18)
    return Lit((int(n), unit), t.value, tspan(t))


def _options(kind: str, children, node_fields: dict) -> dict:
    """Merge (name, value) option pairs, reporting an option given twice."""
    seen: dict[str, Span] = {}
    for child in children:
        if not isinstance(child, tuple):
            continue
        name, value = child
        sp = _span_of(value)
        if name in seen:
            CURRENT.get().diagnostics.append(
                diag("MP010", f"`{name}` is given twice in one `{kind}`", sp)
            )
            continue
        if sp is not None:
            seen[name] = sp
        node_fields[name] = value
    return node_fields


class ToNodes(Transformer):
    """Each method gets the rule's kept children (named tokens and sub-results)."""

    # ---- blocks
    def block_open(self, c):
        return Node("block_open", span_of(c), {"block": c[0].value, "name": ident(c[1])})

    def version_decl(self, c):
        return Node("version", span_of(c), {"name": ident(c[1]), "opens": len(c) > 2})

    def close(self, c):
        return Node("close", span_of(c))

    # ---- mesh settings
    def trust_domain(self, c):
        return Node("trust_domain", span_of(c), {"value": string(c[0])})

    def default_stance(self, c):
        return Node("default", span_of(c), {"effect": lit(c[0])})

    def tracing(self, c):
        if isinstance(c[0], Tok) and c[0].type == "OFF":
            return Node("tracing", span_of(c), {"off": True, "formats": [], "sample": None})
        formats = c[0]
        sample = c[1] if len(c) > 1 else None
        return Node("tracing", span_of(c), {"off": False, "formats": formats, "sample": sample})

    def trace_formats(self, c):
        return [lit(t) for t in c]

    def sample(self, c):
        return percent(c[0])

    def metrics(self, c):
        return Node("metrics", span_of(c), {"on": lit(c[0], c[0].value == "on")})

    def egress(self, c):
        return Node("egress", span_of(c), {"stance": lit(c[0])})

    # ---- service settings
    def namespace(self, c):
        return Node("namespace", span_of(c), {"name": ident(c[0])})

    def account(self, c):
        return Node("account", span_of(c), {"name": ident(c[0])})

    def port(self, c):
        return Node("port", span_of(c), {"number": integer(c[0]), "protocol": lit(c[1])})

    def mtls(self, c):
        return Node("mtls", span_of(c), {"mode": lit(c[0])})

    def timeout(self, c):
        return Node("timeout", span_of(c), {"duration": duration(c[0])})

    def retry(self, c):
        if isinstance(c[0], Tok) and c[0].type == "OFF":
            return Node("retry", span_of(c), {"off": True})
        fields = {"off": False, "attempts": integer(c[0]), "on": [], "non_idempotent": False}
        opts = []
        for x in c[1:]:
            if isinstance(x, Tok) and x.type == "NON_IDEMPOTENT":
                opts.append(("non_idempotent", lit(x, True)))
            else:
                opts.append(x)
        _options("retry", opts, fields)
        if isinstance(fields.get("non_idempotent"), Lit):
            fields["non_idempotent"] = True
        return Node("retry", span_of(c), fields)

    def per_try(self, c):
        return ("per_try", duration(c[0]))

    def retry_on(self, c):
        return ("on", [lit(t) for t in c])

    def backoff(self, c):
        out = [duration(c[0])]
        if len(c) > 1:
            out.append(duration(c[1]))
        return ("backoff", out)

    def budget(self, c):
        out = [percent(c[0])]
        if len(c) > 1:
            out.append(integer(c[1]))
        return ("budget", out)

    def circuit(self, c):
        return Node("circuit", span_of(c), _options("circuit", c, {}))

    def circuit_limit(self, c):
        return (c[0].value, integer(c[1]))

    def outlier(self, c):
        return Node("outlier", span_of(c), _options("outlier", c, {}))

    def outlier_option(self, c):
        if len(c) == 1:
            return ("max", percent(c[0]))
        if c[0].type == "OUTLIER_COUNT":
            return (c[0].value, integer(c[1]))
        return (c[0].value, duration(c[1]))

    def balance(self, c):
        x = c[0]
        if isinstance(x, Tok) and x.type == "LB_SIMPLE":
            return Node("balance", span_of(c), {"policy": lit(x), "header": None})
        return Node("balance", span_of(c), x)

    def hash_on(self, c):
        t = c[0]
        if t.type == "SOURCE_IP":
            return {"policy": lit(t, "hash_source_ip"), "header": None}
        return {"policy": lit(t, "hash_header"), "header": string(t)}

    def fault(self, c):
        return Node("fault", span_of(c), _options("fault", c, {}))

    def fault_delay(self, c):
        return ("delay", [duration(c[0]), percent(c[1])])

    def fault_abort(self, c):
        return ("abort", [integer(c[0]), percent(c[1])])

    # ---- labels
    def labels(self, c):
        return Node("labels", span_of(c), {"labels": c})

    def label(self, c):
        return (c[0], string(c[1]))

    def label_key(self, c):
        t = c[0]
        return string(t) if t.type == "STRING" else lit(t)

    # ---- route rules
    def route_rule(self, c):
        fields = {"match": c[0], "action": c[1], "header_ops": []}
        for override in c[2:]:
            if override.kind == "header_op":  # repeatable, applied in written order
                fields["header_ops"].append(override)
                continue
            if override.kind in fields:
                CURRENT.get().diagnostics.append(
                    diag("MP010", f"`{override.kind}` is given twice on one route rule", override.span)
                )
                continue
            fields[override.kind] = override
        return Node("rule", span_of(c), fields)

    def match_all(self, c):
        return Node("match", span_of(c), {"all": True, "methods": [], "paths": [], "headers": [], "queries": [],
                                          "sources": []})

    def match_items(self, c):
        fields = {"all": False, "methods": [], "paths": [], "headers": [], "queries": [], "sources": []}
        for x in c:
            if isinstance(x, tuple):
                fields[x[0]].extend(x[1])
            elif x.kind == "path":
                fields["paths"].append(x)
            elif x.kind == "query":
                fields["queries"].append(x)
            else:
                fields["headers"].append(x)
        return Node("match", span_of(c), fields)

    def methods(self, c):
        return ("methods", [lit(t) for t in c])

    def path_glob(self, c):
        kind = "glob" if "*" in c[0].value else "exact"
        return Node("path", tspan(c[0]), {"kind": kind, "value": lit(c[0])})

    def _path(self, kind, c):
        return Node("path", tspan(c[0]), {"kind": kind, "value": string(c[0])})

    def path_exact(self, c):
        return self._path("exact", c)

    def path_prefix(self, c):
        return self._path("prefix", c)

    def path_regex(self, c):
        return self._path("regex", c)

    def header_match(self, c):
        kind, value = c[1]
        name = string(c[0])
        # `present`/`absent` leave no token behind, so the span ends at the name for them
        span = name.span.to(value.span) if value is not None else name.span
        return Node("header", span, {"name": name, "test": kind, "value": value})

    def query_match(self, c):
        node = self.header_match(c)
        node.kind = "query"
        return node

    def header_exact(self, c):
        return ("exact", string(c[0]))

    def header_prefix(self, c):
        return ("prefix", string(c[0]))

    def header_regex(self, c):
        return ("regex", string(c[0]))

    def header_present(self, c):
        return ("present", None)

    def header_absent(self, c):
        return ("absent", None)

    def from_sources(self, c):
        return ("sources", [ident(t) for t in c])

    def forward(self, c):
        mirror = c[-1] if c and c[-1].kind == "mirror" else None
        dests = [x for x in c if x.kind == "dest"]
        return Node("forward", span_of(c), {"destinations": dests, "mirror": mirror})

    def destination(self, c):
        weight = percent(c[1]) if len(c) > 1 else None
        return Node("dest", span_of(c), {"version": ident(c[0]), "weight": weight})

    def mirror(self, c):
        pct = percent(c[1]) if len(c) > 1 else None
        return Node("mirror", span_of(c), {"version": ident(c[0]), "percent": pct})

    def redirect(self, c):
        code = integer(c[1]) if len(c) > 1 else None
        return Node("redirect", span_of(c), {"uri": string(c[0]), "code": code})

    def respond(self, c):
        body = string(c[1]) if len(c) > 1 else None
        return Node("respond", span_of(c), {"status": integer(c[0]), "body": body})

    # ---- route rule options: rewrite, header operations, CORS
    def rewrite_path(self, c):
        host = string(c[1]) if len(c) > 1 else None
        return Node("rewrite", span_of(c), {"path": string(c[0]), "host": host})

    def rewrite_host(self, c):
        return Node("rewrite", span_of(c), {"path": None, "host": string(c[0])})

    def header_set(self, c):
        return Node("header_op", span_of(c), {"op": lit(c[0]), "side": lit(c[1]), "name": string(c[2]),
                                              "value": string(c[3])})

    def header_remove(self, c):
        return Node("header_op", span_of(c), {"op": "remove", "side": lit(c[0]), "name": string(c[1]),
                                              "value": None})

    def cors(self, c):
        return Node("cors", span_of(c), _options("cors", c, {}))

    def cors_origins(self, c):
        return ("origins", [string(t) for t in c])

    def cors_methods(self, c):
        return ("methods", [lit(t) for t in c])

    def cors_headers(self, c):
        return ("headers", [string(t) for t in c])

    def cors_expose(self, c):
        return ("expose", [string(t) for t in c])

    def cors_credentials(self, c):
        return ("credentials", lit(c[0], True))

    def cors_max_age(self, c):
        return ("max_age", duration(c[0]))

    # ---- jwt providers
    def issuer(self, c):
        return Node("issuer", span_of(c), {"value": string(c[0])})

    def audience(self, c):
        return Node("audience", span_of(c), {"values": [string(t) for t in c]})

    def jwks(self, c):
        return Node("jwks", span_of(c), {"value": string(c[0])})

    def jwks_uri(self, c):
        return Node("jwks_uri", span_of(c), {"value": string(c[0])})

    def token_header(self, c):
        prefix = string(c[1]) if len(c) > 1 else None
        return Node("token", span_of(c), {"where": "header", "name": string(c[0]), "prefix": prefix})

    def token_query(self, c):
        return Node("token", span_of(c), {"where": "query", "name": string(c[0]), "prefix": None})

    def token_cookie(self, c):
        return Node("token", span_of(c), {"where": "cookie", "name": string(c[0]), "prefix": None})

    # ---- ingress gateways
    def listen(self, c):
        files = {}
        for kind, value in c[2:]:
            if kind in files:
                CURRENT.get().diagnostics.append(
                    diag("MP010", f"`{kind}` is given twice in one `listen`", value.span))
                continue
            files[kind] = value
        return Node("listen", span_of(c), {"port": integer(c[0]), "protocol": lit(c[1]),
                                           "cert": files.get("cert"), "key": files.get("key")})

    def listen_file(self, c):
        return (c[0].value, string(c[1]))

    def hosts(self, c):
        return Node("hosts", span_of(c), {"values": [string(t) for t in c]})

    def ingress_jwt(self, c):
        return Node("ingress_jwt", span_of(c), {"providers": [ident(t) for t in c]})

    # ---- external services
    def external_host(self, c):
        return Node("host", span_of(c), {"values": [string(t) for t in c]})

    def external_port(self, c):
        return Node("port", span_of(c), {"number": integer(c[0]), "protocol": lit(c[1])})

    # ---- end-user identity
    def jwt_with_provider(self, c):
        tests = c[1] if len(c) > 1 else []
        return Node("jwt", span_of(c), {"provider": ident(c[0]), "claims": tests})

    def jwt_any_provider(self, c):
        return Node("jwt", span_of(c), {"provider": None, "claims": c[0] if c else []})

    def claim_tests(self, c):
        return c

    def claim_test(self, c):
        op = "eq" if c[1].value == "=" else "has"
        return Node("claim", span_of([c[0], c[2]]), {"claim": c[0], "op": lit(c[1], op), "value": string(c[2])})

    def claim_name(self, c):
        t = c[0]
        return string(t) if t.type == "STRING" else lit(t)

    def key_claim(self, c):
        return Node("limit_key", span_of(c), {"kind": "claim", "name": c[0]})

    def key_header(self, c):
        return Node("limit_key", span_of(c), {"kind": "header", "name": string(c[0])})

    def key_source_ip(self, c):
        return Node("limit_key", span_of(c), {"kind": "source_ip", "name": None})

    # ---- top-level statements
    @staticmethod
    def _conditions(rest) -> dict:
        out = {"methods": [], "paths": []}
        for x in rest:
            out[x[0]] = x[1]
        return out

    def auth_rule(self, c):
        fields = {"effect": lit(c[0]), "sources": c[1], "target": ident(c[2])}
        fields.update(self._conditions(c[3:]))
        return Node("auth", span_of(c), fields)

    def sources(self, c):
        return c

    def source_service(self, c):
        return Node("source", tspan(c[0]), {"kind": "service", "name": ident(c[0])})

    def source_any(self, c):
        return Node("source", tspan(c[0]), {"kind": "any", "name": None})

    def source_namespace(self, c):
        return Node("source", tspan(c[0]), {"kind": "namespace", "name": ident(c[0])})

    def source_authenticated(self, c):
        return Node("source", tspan(c[0]), {"kind": "authenticated", "name": None})

    @staticmethod
    def _bare_jwt(internet: Tok, jwt: Node | None) -> None:
        """`with jwt` alone leaves no token in its node: it is placed at `internet`."""
        if jwt is not None and not jwt.span.line:
            jwt.span = tspan(internet)

    def source_internet(self, c):
        jwt = c[1] if len(c) > 1 else None
        self._bare_jwt(c[0], jwt)
        span = tspan(c[0]).to(jwt.span) if jwt is not None else tspan(c[0])
        return Node("source", span, {"kind": "internet", "name": None, "jwt": jwt})

    def assert_source(self, c):
        """(the source as a name, its token requirement or None)."""
        jwt = c[1] if len(c) > 1 else None
        self._bare_jwt(c[0], jwt)
        return (ident(c[0]), jwt)

    def paths(self, c):
        return ("paths", c)

    def rate_limit(self, c):
        key = c[-1] if isinstance(c[-1], Node) else None
        if key is not None:
            c = c[:-1]
        fields = {"sources": c[0], "target": ident(c[1]), "rate": rate(c[2]), "key": key}
        fields["burst"] = integer(c[3]) if len(c) > 3 else None
        return Node("limit", span_of(c), fields)

    def assertion(self, c):
        return c[0]

    def _claim(self, kind, c, **fields):
        fields["kind"] = kind
        return Node("assert", span_of(c), fields)

    def claim_never(self, c):
        source, jwt = c[0]
        return self._claim(
            "never", c, source=source, source_jwt=jwt, transitive=c[1].value == "~>", target=ident(c[2]),
            **self._conditions(c[3:]),
        )

    def claim_only(self, c):
        return self._claim("only", c, sources=c[0], target=ident(c[1]), **self._conditions(c[2:]))

    def claim_can(self, c):
        source, jwt = c[0]
        return self._claim("can", c, source=source, source_jwt=jwt, target=ident(c[1]),
                           **self._conditions(c[2:]))

    def claim_amplification(self, c):
        return self._claim(
            "amplification", c, source=ident(c[0]), transitive=c[1].value == "~>",
            target=ident(c[2]), bound=integer(c[3]),
        )

    def claim_latency(self, c):
        return self._claim(
            "latency", c, source=ident(c[0]), transitive=c[1].value == "~>",
            target=ident(c[2]), bound=duration(c[3]),
        )
