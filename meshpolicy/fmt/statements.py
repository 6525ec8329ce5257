"""One syntax item -> its canonical text on one line.

Rendering works from the syntax tree, so the output is the same whatever
spacing, separators or line breaks the input used. Numbers, durations,
percentages and rates are kept as written (`Lit.text`); strings are re-quoted
from their value. Options that the parser stores by name (retry, circuit,
outlier, fault, rule overrides) come out in one fixed order, since their
written order carries no meaning.
"""

from __future__ import annotations

from ..syntax.lexer import quote
from ..syntax.nodes import Ident, Lit, Node

CIRCUIT_ORDER = ("max_connections", "max_pending", "max_requests", "max_retries")
OUTLIER_ORDER = ("consecutive_5xx", "consecutive_gateway", "interval", "eject", "max")
OVERRIDE_ORDER = ("timeout", "retry", "fault")
# After the overrides: the L7 options (header operations keep their written order).
CORS_ORDER = ("origins", "methods", "headers", "expose", "credentials", "max_age")


def _s(lit: Lit) -> str:
    return quote(lit.value)


def _list(parts) -> str:
    return ", ".join(parts)


def opener(node: Node) -> str:
    """`service NAME {` or `version NAME {` (without the brace)."""
    if node.kind == "block_open":
        return f"{node.get('block')} {node.get('name').name}"
    return f"version {node.get('name').name}"


def path(node: Node) -> str:
    kind, value = node.get("kind"), node.get("value")
    if kind == "glob" or (kind == "exact" and not value.text.startswith('"')):
        return value.text  # a bare path token
    return f"{kind} {_s(value)}"


def _claim_name(lit: Lit) -> str:
    return _s(lit) if lit.text.startswith('"') else lit.text


def jwt_requirement(node: Node) -> str:
    """`with jwt [PROVIDER] CLAIM = "v" and CLAIM has "v"`."""
    out = "with jwt"
    if node.get("provider") is not None:
        out += f" {node.get('provider').name}"
    tests = [f"{_claim_name(c.get('claim'))} {'=' if c.get('op').value == 'eq' else 'has'} {_s(c.get('value'))}"
             for c in node.get("claims")]
    return out + (" " + " and ".join(tests) if tests else "")


def source(node: Node) -> str:
    kind = node.get("kind")
    if kind == "service":
        return node.get("name").name
    if kind == "namespace":
        return f"namespace {node.get('name').name}"
    if kind == "internet":
        jwt = node.get("jwt")
        return "internet" + (f" {jwt_requirement(jwt)}" if jwt is not None else "")
    return "*" if kind == "any" else "authenticated"


def _sources(nodes) -> str:
    return _list(source(n) for n in nodes)


def _conditions(node: Node, paths_sep: str = ", ") -> str:
    out = ""
    methods = node.get("methods") or []
    paths = node.get("paths") or []
    if methods:
        out += " " + _list(m.text for m in methods)
    if paths:
        out += " " + paths_sep.join(path(p) for p in paths)
    return out


def retry(node: Node) -> str:
    if node.get("off"):
        return "retry off"
    out = f"retry {node.get('attempts').text}"
    if "per_try" in node.fields:
        out += f" per_try {node.get('per_try').text}"
    if node.get("on"):
        out += " on " + _list(c.text for c in node.get("on"))
    if "backoff" in node.fields:
        b = node.get("backoff")
        out += f" backoff {b[0].text}" + (f" max {b[1].text}" if len(b) > 1 else "")
    if "budget" in node.fields:
        b = node.get("budget")
        out += f" budget {b[0].text}" + (f" min {b[1].text}" if len(b) > 1 else "")
    if node.get("non_idempotent"):
        out += " non_idempotent"
    return out


def fault(node: Node) -> str:
    out = "fault"
    if "delay" in node.fields:
        d, p = node.get("delay")
        out += f" delay {d.text} {p.text}"
    if "abort" in node.fields:
        s, p = node.get("abort")
        out += f" abort {s.text} {p.text}"
    return out


def _options(word: str, node: Node, order) -> str:
    return word + "".join(f" {k} {node.get(k).text}" for k in order if k in node.fields)


def balance(node: Node) -> str:
    policy = node.get("policy").value
    if policy == "hash_source_ip":
        return "balance hash source_ip"
    if policy == "hash_header":
        return f"balance hash header {_s(node.get('header'))}"
    return f"balance {node.get('policy').text}"


def _label_key(key: Lit) -> str:
    return _s(key) if key.text.startswith('"') else key.text


def labels(node: Node) -> str:
    return _list(f"{_label_key(k)}: {_s(v)}" for k, v in node.get("labels"))


def header(node: Node) -> str:
    """A header test, or a query test (the same tests under `query`)."""
    out = f"{'query' if node.kind == 'query' else 'header'} {_s(node.get('name'))}"
    test, value = node.get("test"), node.get("value")
    if test == "exact":
        return f"{out} = {_s(value)}"
    if test == "prefix":
        return f"{out} prefix {_s(value)}"
    if test == "regex":
        return f"{out} ~ {_s(value)}"
    return f"{out} {test}"


def match(node: Node) -> str:
    """A route match in canonical order: from, headers, methods, paths, queries."""
    if node.get("all"):
        return "*"
    parts = []
    if node.get("sources"):
        parts.append("from " + _list(i.name for i in node.get("sources")))
    parts.extend(header(h) for h in node.get("headers"))
    if node.get("methods"):
        parts.append(_list(m.text for m in node.get("methods")))
    # In a route match each path is its own match item: space-separated.
    parts.extend(path(p) for p in node.get("paths"))
    parts.extend(header(q) for q in node.get("queries", []))
    return " ".join(parts)


def _dest(node: Node, word: str = "") -> str:
    pct = node.get("weight") if node.kind == "dest" else node.get("percent")
    return word + node.get("version").name + (f" {pct.text}" if pct is not None else "")


def action(node: Node) -> str:
    if node.kind == "forward":
        out = _list(_dest(d) for d in node.get("destinations"))
        if node.get("mirror") is not None:
            out += " " + _dest(node.get("mirror"), "mirror ")
        return out
    if node.kind == "redirect":
        code = node.get("code")
        return f"redirect {_s(node.get('uri'))}" + (f" {code.text}" if code is not None else "")
    body = node.get("body")
    return f"respond {node.get('status').text}" + (f" {_s(body)}" if body is not None else "")


def rule_parts(node: Node) -> tuple[str, str]:
    """(match, `-> action overrides`), so a route block can align its arrows."""
    rest = "-> " + action(node.get("action"))
    for kind in OVERRIDE_ORDER:
        if kind in node.fields:
            rest += " " + statement(node.get(kind))
    if "rewrite" in node.fields:
        rest += " " + rewrite(node.get("rewrite"))
    for op in node.get("header_ops", []):
        rest += " " + header_op(op)
    if "cors" in node.fields:
        rest += " " + cors(node.get("cors"))
    return match(node.get("match")), rest


def rewrite(node: Node) -> str:
    out = "rewrite"
    if node.get("path") is not None:
        out += f" {_s(node.get('path'))}"
    if node.get("host") is not None:
        out += f" host {_s(node.get('host'))}"
    return out


def header_op(node: Node) -> str:
    op = node.get("op")
    op = op if isinstance(op, str) else op.text
    out = f"{op} {node.get('side').text} header {_s(node.get('name'))}"
    return out + (f" {_s(node.get('value'))}" if node.get("value") is not None else "")


def cors(node: Node) -> str:
    out = "cors"
    for key in CORS_ORDER:
        if key not in node.fields:
            continue
        value = node.get(key)
        if key == "credentials":
            out += " credentials"
        elif key == "max_age":
            out += f" max_age {value.text}"
        elif key == "methods":
            out += " methods " + _list(m.text for m in value)
        else:
            out += f" {key} " + _list(_s(v) for v in value)
    return out


def _strings(values) -> str:
    return _list(_s(v) for v in values)


def listen(node: Node) -> str:
    out = f"listen {node.get('port').text} {node.get('protocol').text}"
    for key in ("cert", "key"):
        if node.get(key) is not None:
            out += f" {key} {_s(node.get(key))}"
    return out


def token(node: Node) -> str:
    out = f"token {node.get('where')} {_s(node.get('name'))}"
    return out + (f" prefix {_s(node.get('prefix'))}" if node.get("prefix") is not None else "")


def limit_key(node: Node) -> str:
    kind = node.get("kind")
    if kind == "source_ip":
        return "per source_ip"
    if kind == "claim":
        return f"per claim {_claim_name(node.get('name'))}"
    return f"per header {_s(node.get('name'))}"


def _ident(i: Ident) -> str:
    return i.name


def _assertion(node: Node) -> str:
    kind = node.get("kind")
    reach = "~>" if node.get("transitive") else "->"
    if kind == "only":
        return f"assert only {_sources(node.get('sources'))} -> {_ident(node.get('target'))}" + _conditions(node)
    src = _ident(node.get("source"))
    if node.get("source_jwt") is not None:
        src += " " + jwt_requirement(node.get("source_jwt"))
    if kind == "can":
        return f"assert can {src} -> {_ident(node.get('target'))}" + _conditions(node)
    head = f"assert {kind} {src} {reach} {_ident(node.get('target'))}"
    if kind == "never":
        return head + _conditions(node)
    return f"{head} <= {node.get('bound').text}"


def statement(node: Node) -> str:
    """The canonical one-line text of a statement (not a block opener)."""
    k = node.kind
    if k == "trust_domain":
        return f"trust_domain {_s(node.get('value'))}"
    if k == "default":
        return f"default {node.get('effect').text}"
    if k == "tracing":
        if node.get("off"):
            return "tracing off"
        sample = node.get("sample")
        return "tracing " + _list(f.text for f in node.get("formats")) + (f" sample {sample.text}" if sample else "")
    if k == "metrics":
        return f"metrics {node.get('on').text}"
    if k == "egress":
        return f"egress {node.get('stance').text}"
    if k == "cors":
        return cors(node)
    if k in ("issuer", "jwks", "jwks_uri"):
        return f"{k} {_s(node.get('value'))}"
    if k in ("audience", "hosts", "host"):
        return f"{k} {_strings(node.get('values'))}"
    if k == "token":
        return token(node)
    if k == "listen":
        return listen(node)
    if k == "ingress_jwt":
        return "jwt " + _list(i.name for i in node.get("providers"))
    if k in ("namespace", "account"):
        return f"{k} {node.get('name').name}"
    if k == "port":
        return f"port {node.get('number').text} {node.get('protocol').text}"
    if k == "mtls":
        return f"mtls {node.get('mode').text}"
    if k == "timeout":
        return f"timeout {node.get('duration').text}"
    if k == "retry":
        return retry(node)
    if k == "circuit":
        return _options("circuit", node, CIRCUIT_ORDER)
    if k == "outlier":
        return _options("outlier", node, OUTLIER_ORDER)
    if k == "balance":
        return balance(node)
    if k == "fault":
        return fault(node)
    if k == "version":
        return f"version {node.get('name').name}"
    if k == "labels":
        return labels(node)
    if k == "rule":
        m, rest = rule_parts(node)
        return f"{m} {rest}"
    if k == "auth":
        return (f"{node.get('effect').text} {_sources(node.get('sources'))} -> {_ident(node.get('target'))}"
                + _conditions(node))
    if k == "limit":
        burst = node.get("burst")
        key = node.get("key")
        return (f"limit {_sources(node.get('sources'))} -> {_ident(node.get('target'))} {node.get('rate').text}"
                + (f" burst {burst.text}" if burst is not None else "")
                + (f" {limit_key(key)}" if key is not None else ""))
    if k == "assert":
        return _assertion(node)
    raise ValueError(f"no canonical form for syntax node {k!r}")
