"""Completion: what may be typed at the cursor, from the block it is in
and the words already written in its statement.

The cursor's context comes from the tokenizer alone (the text before the
cursor is usually mid-edit and does not parse); names come from the last
analysis of the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

from lsprotocol import types as lsp

from ..model.types import HTTP_METHODS, RETRY_CONDITIONS, Mesh
from ..syntax.lexer import tokenize
from ..syntax.parser import STATEMENT_WORDS

_CONTINUES = {",", "->", "~>", "<=", "="}
_DURATION_AFTER = {"timeout", "per_try", "backoff", "interval", "eject", "delay", "<="}
_PERCENT_AFTER = {"sample", "budget"}
_CHOICES = {
    "mtls": ["strict", "permissive", "off"],
    "default": ["deny", "allow"],
    "tracing": ["w3c", "b3", "off"],
    "metrics": ["on", "off"],
    "egress": ["registry_only", "allow_any"],
    "balance": ["round_robin", "least_request", "random", "hash"],
    "hash": ["header", "source_ip"],
    "circuit": ["max_connections", "max_pending", "max_requests", "max_retries"],
    "outlier": ["consecutive_5xx", "consecutive_gateway", "interval", "eject", "max"],
    "fault": ["delay", "abort"],
    "assert": ["never", "only", "can", "amplification", "latency"],
}
_PROTOCOLS = ["http", "http2", "grpc", "tcp"]
_RULE_OPTIONS = ["timeout", "retry", "fault", "mirror", "rewrite", "set", "add", "remove", "cors"]
_BLOCKS = ("mesh", "service", "route", "version", "jwt", "ingress", "external")


@dataclass
class Context:
    block: str  # top, mesh, service, version, route, jwt, ingress, external
    block_name: str | None  # the service a `route`/`service` block is about
    words: list[str]  # the statement so far, before the word being typed
    partial: str  # the word being typed


def context_at(text: str, offset: int) -> Context:
    before = text[:offset]
    tokens, _, _ = tokenize(before)
    stack: list[tuple[str, str | None]] = [("top", None)]
    item: list[str] = []
    for tok in tokens:
        v = tok.value
        if tok.type == "NL":
            if item and item[-1] not in _CONTINUES:
                item = []
        elif tok.type == "PUNCT" and v == ";":
            item = []
        elif tok.type == "PUNCT" and v == "{":
            kind = item[0] if item and item[0] in _BLOCKS else "top"
            name = item[1] if len(item) > 1 else None
            if kind == "version":  # a version block belongs to its service
                name = stack[-1][1]
            stack.append((kind, name))
            item = []
        elif tok.type == "PUNCT" and v == "}":
            if len(stack) > 1:
                stack.pop()
            item = []
        else:
            item.append(v)
    partial = ""
    if item and before and not before[-1].isspace() and before[-1] not in ",":
        last = tokens[-1] if tokens else None
        if last is not None and last.end_pos == len(before) and last.type not in ("PUNCT", "NL"):
            partial = item.pop()
    kind, name = stack[-1]
    return Context(kind, name, item, partial)


def _item(label: str, kind: lsp.CompletionItemKind, detail: str | None = None) -> lsp.CompletionItem:
    return lsp.CompletionItem(label=label, kind=kind, detail=detail)


def _keywords(words) -> list[lsp.CompletionItem]:
    return [_item(w, lsp.CompletionItemKind.Keyword) for w in words]


def _services(mesh: Mesh) -> list[lsp.CompletionItem]:
    return [_item(s.name, lsp.CompletionItemKind.Class, f"service in {s.namespace}") for s in mesh.services]


def _versions(mesh: Mesh, service: str | None) -> list[lsp.CompletionItem]:
    svc = mesh.service(service) if service else None
    return [_item(v.name, lsp.CompletionItemKind.EnumMember, f"version of {svc.name}") for v in svc.versions] if svc else []


def _units(partial: str, units: list[str]) -> list[lsp.CompletionItem]:
    """The number typed so far with each unit that continues what was typed:
    `30` gives `30ms`, `30s`...; `30m` gives `30ms`; `30s` (complete) nothing."""
    number = partial[: len(partial) - len(partial.lstrip("0123456789."))]
    labels = [number + u for u in units]
    return [_item(x, lsp.CompletionItemKind.Unit) for x in labels if x.startswith(partial) and x != partial]


def _sources(mesh: Mesh) -> list[lsp.CompletionItem]:
    return _services(mesh) + _keywords(["namespace", "authenticated", "internet", "*"])


def _callees(mesh: Mesh) -> list[lsp.CompletionItem]:
    """Services, and external services (an egress rule's callee)."""
    return _services(mesh) + [_item(e.name, lsp.CompletionItemKind.Interface, f"external {', '.join(e.hosts)}")
                              for e in mesh.externals]


def complete(mesh: Mesh, ctx: Context) -> list[lsp.CompletionItem]:
    words, partial = ctx.words, ctx.partial
    last = words[-1] if words else None
    if partial[:1].isdigit():
        return _number_units(ctx)
    if not words:
        if ctx.block == "route":
            return _keywords(["header", "from", "prefix", "regex", "exact", "*", *HTTP_METHODS])
        return _keywords(w for w in STATEMENT_WORDS[ctx.block] if w != "/...")
    first = words[0]
    if ctx.block == "top":
        if first == "route" and len(words) == 1:
            return _services(mesh)
        if first in ("allow", "deny", "limit"):
            if last == "->":
                return _callees(mesh)
            if last == "namespace":
                return [_item(ns, lsp.CompletionItemKind.Module) for ns in sorted({s.namespace for s in mesh.services})]
            if "->" not in words:
                return _sources(mesh)
            if first != "limit":
                return _keywords(HTTP_METHODS)
            return []
        if first == "assert":
            if len(words) == 1:
                return _keywords(_CHOICES["assert"])
            if last in ("->", "~>") or (len(words) == 2 and words[1] != "only"):
                return _services(mesh)
            if words[1] == "only" and "->" not in words:
                return _sources(mesh)
            return []
        return []
    if ctx.block == "ingress" and first not in ("namespace", "account", "listen", "hosts", "jwt"):
        # an ingress's route rule: its destinations are services
        if last == "->" or (last == "," and "->" in words):
            return _services(mesh) + _keywords(["redirect", "respond"])
        if "->" in words:
            return _keywords(_RULE_OPTIONS)
        return _keywords(["header", "query", "prefix", "regex", "exact", "->", *HTTP_METHODS])
    if ctx.block == "route":
        retry = words[words.index("retry"):] if "retry" in words else []
        if last == "on" or (last == "," and "on" in retry):
            return _keywords(RETRY_CONDITIONS)
        if last in ("->", "mirror") or (last == "," and "->" in words and "mirror" not in words):
            return _versions(mesh, ctx.block_name) + ([] if last == "mirror" else _keywords(["redirect", "respond"]))
        if last == "from" or (last == "," and "from" in words and "->" not in words):
            return _services(mesh)
        if "->" in words:
            return _keywords(_RULE_OPTIONS)
        return _keywords(["header", "query", "from", "prefix", "regex", "exact", "->", *HTTP_METHODS])
    # mesh, service and version blocks: settings with fixed choices
    if last == "on" or (last == "," and first == "retry" and "on" in words):
        return _keywords(RETRY_CONDITIONS)
    if first == "port" and len(words) == 2:
        return _keywords(_PROTOCOLS)
    if first == "tracing" and last == ",":
        return _keywords(["w3c", "b3"])
    if first == "retry" and len(words) >= 2:
        return _keywords(["per_try", "on", "backoff", "budget", "non_idempotent"])
    if last in _CHOICES:
        return _keywords(_CHOICES[last])
    if first in ("circuit", "outlier", "fault"):
        return _keywords(_CHOICES[first])
    return []


def _number_units(ctx: Context) -> list[lsp.CompletionItem]:
    words, partial = ctx.words, ctx.partial
    last = words[-1] if words else None
    first = words[0] if words else None
    if last in _DURATION_AFTER or (last == "max" and first == "retry") or (first == "fault" and last == "delay"):
        return _units(partial, ["ms", "s", "m", "h"])
    if last in _PERCENT_AFTER or last == "max" or (first == "fault" and len(words) >= 3):
        return _units(partial, ["%"])
    if first == "limit" and "->" in words and words[-2:-1] == ["->"]:
        return _units(partial, ["/s", "/m", "/h"])
    if ctx.block == "route" and "->" in words and last not in ("->", ","):
        return _units(partial, ["%"])  # a weight after a version
    if first in ("timeout",):
        return _units(partial, ["ms", "s", "m", "h"])
    return []
