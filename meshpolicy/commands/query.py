"""`meshc query`: what the policy does with one request, and why."""

from __future__ import annotations

import json
import re
import shlex
import sys

import click

from ..checks._names import suggest
from ..diagnostics import has_errors
from ..model.types import HTTP_METHODS, Mesh
from ..pipeline import check_project
from ..project import load
from ..semantics import Request, evaluate
from ..semantics.patterns import normalize_path
from ..span import SourceFile, Span
from .common import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, emit

NO_IDENTITY = ("-", "*", "anonymous", "outside")


def parse_request(text: str, mesh: Mesh) -> Request:
    """`SRC -> DST [METHOD] [PATH] [header=value ...]`; SRC `anonymous` means no identity.
    A query string is not part of the path (docs/semantics.md), so it is dropped."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if words and words[0].startswith("internet[") and not words[0].endswith("]"):
        end = next((i for i, w in enumerate(words) if w.endswith("]")), None)
        if end is not None:  # `internet[jwt a=1 b=2]` is one source
            words = [" ".join(words[:end + 1])] + words[end + 1:]
    if len(words) < 3 or words[1] != "->":
        raise click.BadParameter("write the request as `SOURCE -> DEST [METHOD] [PATH] [header=value ...]`")
    src, dst, rest = words[0], words[2], words[3:]
    token = None
    if src == "internet" or src.startswith("internet["):
        return _internet_request(src, dst, rest, mesh)
    source = None if src in NO_IDENTITY else src
    names = [s.name for s in mesh.services]
    for name in (source, dst):
        if name is not None and mesh.service(name) is None:
            raise click.BadParameter(f"`{name}` is not a service of this mesh{suggest(name, names)[0]}")
    return _with_rest(source, dst, rest, mesh, token)


def _internet_request(src: str, dst: str, rest: list[str], mesh: Mesh) -> Request:
    """`internet[via INGRESS jwt [PROVIDER] claim=value ...] -> DEST ...`:
    a request from outside. DEST an ingress: the request as sent to it; DEST
    a service: the request as the service receives it from an ingress (the
    one named by `via`, else the first that forwards to it), carrying the
    token. A claim written twice is a list (`scope=a scope=b`); no `jwt`: no
    token."""
    from ..semantics.evaluate import Token
    from ..semantics.ingress import accepted_providers, ingresses_to

    if not mesh.ingresses:
        raise click.BadParameter("`internet` needs an ingress: this mesh declares none")
    inner = ""
    if src != "internet":
        if not src.endswith("]"):
            raise click.BadParameter("write a token as `internet[jwt claim=value ...]`")
        inner = src[len("internet["):-1]
    words = inner.split()
    via = None
    if words[:1] == ["via"]:
        if len(words) < 2 or words[1] not in mesh.ingress_map:
            raise click.BadParameter(f"`via` names an ingress: {', '.join(mesh.ingress_map)}")
        via, words = words[1], words[2:]
    if dst in mesh.ingress_map:
        ingress = dst
    elif mesh.service(dst) is not None:
        ingress = via or next(iter(ingresses_to(mesh, dst)), None) or next(iter(mesh.ingress_map))
    else:
        names = [s.name for s in mesh.services] + list(mesh.ingress_map)
        raise click.BadParameter(f"`{dst}` is neither a service nor an ingress of this mesh{suggest(dst, names)[0]}")
    token = None
    if words:
        if words[0] != "jwt":
            raise click.BadParameter("inside `internet[...]` write `via INGRESS` and/or `jwt [PROVIDER] claim=value ...`")
        words = words[1:]
        provider = None
        if words and "=" not in words[0]:
            provider = words.pop(0)
            if provider not in mesh.provider_map:
                raise click.BadParameter(f"`{provider}` is not a jwt provider of this mesh"
                                         f"{suggest(provider, list(mesh.provider_map))[0]}")
        claims: dict = {}
        for w in words:
            name, sep, value = w.partition("=")
            if not sep or not name:
                raise click.BadParameter(f"`{w}` is not a claim; write `claim=value`")
            if name in claims:
                old = claims[name]
                claims[name] = (old if isinstance(old, list) else [old]) + [value]
            else:
                claims[name] = value
        if provider is None:
            accepted = accepted_providers(mesh, mesh.ingress_map[ingress])
            if not accepted:
                raise click.BadParameter(f"ingress `{ingress}` accepts no jwt provider")
            provider = accepted[0]
        token = Token(provider, claims)
    if dst in mesh.ingress_map:
        return _with_rest(None, dst, rest, mesh, token)
    return _with_rest(ingress, dst, rest, mesh, token)


def _with_rest(source: str | None, dst: str, rest: list[str], mesh: Mesh, token) -> Request:
    svc = mesh.service(dst)
    if svc is not None and not svc.http:
        if rest:
            raise click.BadParameter(f"`{dst}` speaks TCP: a connection to it has no method, path or headers")
        return Request(source, dst, "GET", "/", (), token=token)  # TCP: only the caller is decided on (describe shows no method)
    method, path = "GET", "/"
    if rest and "=" not in rest[0] and ":" not in rest[0] and not rest[0].startswith(("/", "?")) \
            and (rest[0].isupper() or rest[0].upper() in HTTP_METHODS):
        if rest[0].upper() not in HTTP_METHODS:
            raise click.BadParameter(f"`{rest[0]}` is not an HTTP method ({', '.join(HTTP_METHODS)})")
        method = rest.pop(0).upper()
    if rest and rest[0].startswith("/"):
        path = rest.pop(0)  # as sent; describe() shows what normalization makes of it
    if rest and rest[0].startswith("?"):  # a query string written apart from its path
        path += rest.pop(0)
    headers = []
    for h in rest:
        name, sep, value = h.partition("=")
        if not sep:
            name, sep, value = h.partition(":")
        name = name.strip()
        if not sep or not TOKEN.fullmatch(name):
            hint = "write `name=value` with a header name of letters, digits and `-`" if sep \
                else "paths start with `/`, and methods are " + ", ".join(HTTP_METHODS)
            raise click.BadParameter(f"`{h}` is neither a method, a path nor a header; {hint}")
        headers.append((name.lower(), value.strip()))
    return Request(source, dst, method, path, tuple(headers), token=token)


# A header name: RFC 9110's token
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def shown_request(mesh: Mesh, req: Request) -> str:
    """The request as written back: a TCP connection has no method or path."""
    svc = mesh.service(req.destination)
    if svc is not None and not svc.http:
        return f"{req.source or '(no identity)'} -> {req.destination} (TCP connection)"
    return str(req)


def _where(span: Span, sources: dict[str, SourceFile]) -> tuple[str, str]:
    src = sources.get(span.file)
    return f"{span.file}:{span.line}", (src.line_text(span.line).strip() if src else "")


def _ms(ms: int | None) -> str:
    if ms is None:
        return "none"
    return f"{ms / 1000:g}s" if ms >= 1000 and ms % 1000 == 0 else f"{ms}ms"


def describe(mesh: Mesh, req: Request, sources: dict[str, SourceFile]) -> dict:
    """The decision as docs/semantics.md orders it: transport admission, path
    normalization, authorization, routing (all computed by semantics.evaluate)."""
    if req.destination in mesh.ingress_map:
        return describe_ingress(mesh, req, sources)
    out = evaluate(mesh, req)
    dec = out.decision
    result: dict = {"request": shown_request(mesh, req), "decision": dec.effect}
    if req.source in mesh.ingress_map:  # a request from the internet, as the ingress forwards it
        result["from"] = {"internet_via": req.source,
                          "token": None if req.token is None else {"provider": req.token.provider,
                                                                   "claims": dict(req.token.claims)}}
    if out.delivered is not None and out.delivered.path != req.path:
        result["delivered_path"] = out.delivered.path
    svc = mesh.service(req.destination)
    if svc.http:
        result["path"] = {"raw": req.path, "normalized": normalize_path(req.path)}
    else:
        result["protocol"] = "tcp"
    if dec.refused is not None:
        result["decided_by"] = {"rule": "refused before any rule", "location": None, "source": None,
                                "refused": dec.refused}
    elif dec.rule is not None:
        loc, line = _where(dec.rule.span, sources)
        result["decided_by"] = {"rule": f"{dec.rule.effect} rule", "location": loc, "source": line}
    else:
        result["decided_by"] = {"rule": f"the mesh default ({mesh.settings.default})", "location": None,
                                "source": None}
    r = out.route
    if r.kind == "rejected":
        result["route"] = {"kind": r.kind, "weights": {}, "status": r.status}
        result["reaches_app"] = False
        return result
    route: dict = {"kind": r.kind, "weights": r.weights}
    if r.status is not None:
        route["status"] = r.status
    if r.mirror:
        route["mirror"] = {"version": r.mirror[0], "percent": r.mirror[1]}
    svc = mesh.service(req.destination)
    rule = r.rule
    if rule is not None:
        loc, line = _where(rule.span, sources)
        route.update(rule=rule.index + 1, location=loc, source=line)
    timeout, retry, fault = svc.settings_for(rule)
    if r.kind in ("forward", "default"):
        route["timeout"] = _ms(timeout)
        route["retry"] = (
            "none" if retry is None or retry.attempts == 0
            else f"{retry.attempts} retr{'y' if retry.attempts == 1 else 'ies'}" + (f", {_ms(retry.per_try_ms)} per try" if retry.per_try_ms else "")
            + (f", on {', '.join(retry.on)}" if retry.on else "")
        )
        route["fault"] = (
            "none" if fault is None else ", ".join(
                x for x in [
                    f"delay {_ms(fault.delay_ms)} for {fault.delay_percent:g}%" if fault.delay_ms is not None else "",
                    f"abort {fault.abort_status} for {fault.abort_percent:g}%" if fault.abort_status is not None else "",
                ] if x)
        )
    result["route"] = route
    result["reaches_app"] = dec.allowed and r.kind in ("forward", "default")
    return result


def describe_ingress(mesh: Mesh, req: Request, sources: dict[str, SourceFile]) -> dict:
    """A request from outside at an ingress: what the ingress does (host,
    token, its rules) and, per service it forwards to, that service's
    decision and route for the request as forwarded (semantics.evaluate)."""
    out = evaluate(mesh, req)
    result: dict = {"request": str(req).replace("(no identity)", "internet", 1), "ingress": req.destination,
                    "decision": "refused" if out.decision.refused else "passed"}
    if out.decision.refused:
        result["refused"] = out.decision.refused
    r = out.route
    route: dict = {"kind": r.kind, "weights": r.weights}
    if r.status is not None:
        route["status"] = r.status
    if r.rule is not None:
        loc, line = _where(r.rule.span, sources)
        route.update(rule=r.rule.index + 1, location=loc, source=line)
    result["route"] = route
    result["forwarded"] = {name: describe(mesh, o.request, sources) for name, o in out.forwarded.items()}
    result["reaches_app"] = any(f["reaches_app"] for f in result["forwarded"].values())
    return result


def _render_ingress(d: dict) -> str:
    lines = [f"request   {d['request']}"]
    r = d["route"]
    if d.get("refused"):
        lines.append(f"ingress   REFUSED: {d['refused']}")
    elif r["kind"] == "forward":
        weights = ", ".join(f"{v} {w:g}%" for v, w in r["weights"].items())
        lines.append(f"ingress   rule {r['rule']} at {r['location']} -> {weights}")
    elif r["kind"] == "no_route":
        lines.append("ingress   no rule matches: 404")
    else:
        lines.append(f"ingress   rule {r.get('rule', '?')} at {r.get('location')} answers {r['kind']} {r.get('status')}")
    if r.get("source"):
        lines.append(f"          | {r['source']}")
    for name, f in d["forwarded"].items():
        lines.append(f"-- at {name}:")
        lines.extend("   " + x for x in render_text(f).splitlines())
    if not d["forwarded"]:
        lines.append("outcome   does not reach any service")
    return "\n".join(lines)


def render_text(d: dict) -> str:
    if "forwarded" in d:
        return _render_ingress(d)
    lines = [f"request   {d['request']}"]
    if d.get("from"):
        tok = d["from"]["token"]
        claims = " ".join(f"{k}={v}" for k, v in (tok or {}).get("claims", {}).items())
        lines.append(f"from      the internet via ingress {d['from']['internet_via']}, "
                     + (f"token of {tok['provider']}" + (f" with {claims}" if claims else "") if tok else "no token"))
    if d.get("delivered_path"):
        lines.append(f"rewrite   the route delivers {d['delivered_path']}: authorization sees that path")
    path = d.get("path") or {}
    if path.get("normalized") is None and path:
        lines.append(f"path      {path['raw']} is refused with 400: an escaped slash or backslash (%2F, %5C, \\)")
    elif path and path["normalized"] != path["raw"]:
        lines.append(f"path      normalized to {path['normalized']}: every rule sees that path")
    by = d["decided_by"]
    if by.get("refused"):
        lines.append(f"decision  REFUSED: {by['refused']}")
    else:
        lines.append(f"decision  {d['decision'].upper()} by {by['rule']}" + (f" at {by['location']}" if by["location"] else ""))
    if by["source"]:
        lines.append(f"          | {by['source']}")
    r = d["route"]
    if r["kind"] == "forward":
        weights = ", ".join(f"{v} {w:g}%" for v, w in r["weights"].items())
        lines.append(f"route     rule {r['rule']} at {r['location']} -> {weights}")
    elif r["kind"] == "default":
        weights = ", ".join(f"{v} {w:g}%" for v, w in r["weights"].items()) or "the service"
        lines.append(f"route     no route block: every version evenly -> {weights}")
    elif r["kind"] == "no_route":
        lines.append("route     no rule matches: 404")
    elif r["kind"] == "rejected":
        lines.append("route     none: the path is refused with 400 before routing")
    else:
        lines.append(f"route     rule {r['rule']} at {r['location']} answers {r['kind']} {r['status']}")
    if r.get("source"):
        lines.append(f"          | {r['source']}")
    if "mirror" in r:
        lines.append(f"mirror    {r['mirror']['percent']:g}% copied to {r['mirror']['version']}")
    for key in ("timeout", "retry", "fault"):
        if key in r:
            lines.append(f"{key:<9} {r[key]}")
    lines.append("outcome   " + ("reaches the application" if d["reaches_app"] else "does not reach the application"))
    return "\n".join(lines)


@click.command("query")
@click.argument("paths", nargs=-1, type=click.Path(), required=True)
@click.option("--request", "-r", "requests", multiple=True, metavar="REQUEST",
              help="Another request to evaluate (may repeat).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(paths, requests, fmt):
    """Show the decision and route for a request: the last PATHS argument is
    the request, `SOURCE -> DEST [METHOD] [PATH] [header=value ...]`.

    SOURCE `anonymous` is a caller without a mesh identity. SOURCE
    `internet` is a request from outside: to an ingress, as sent to it; to a
    service, as an ingress forwards it; `internet[jwt sub=alice scope=a]`
    carries a valid token with those claims (`jwt PROVIDER ...` names the
    provider, `via INGRESS` the ingress).

    \b
    Examples:
      meshc query examples/shop "frontend -> orders GET /orders/7"
      meshc query examples/shop "frontend -> catalog GET /items/1 x-canary=always"
      meshc query shop "internet[jwt sub=alice scope=orders:write] -> orders POST /orders"
    """
    paths = list(paths)
    if "->" in paths[-1]:
        requests = (paths.pop(),) + tuple(requests)
    if not paths or not requests:
        raise click.UsageError("give the mesh PATHS and a request like \"frontend -> orders GET /orders/7\"")
    checked = check_project(load(paths))
    if has_errors(checked.diagnostics):
        if fmt == "json":
            emit(checked.diagnostics, checked.project.files, "json")
        else:
            emit(checked.diagnostics, checked.project.files, "text", out=sys.stderr)
        sys.exit(EXIT_ERRORS if not any(d.code == "MP001" for d in checked.diagnostics) else EXIT_USAGE)
    results = []
    for text in requests:
        try:
            req = parse_request(text, checked.mesh)
        except click.BadParameter as exc:
            click.echo(f"meshc query: {exc.message}", err=True)
            sys.exit(EXIT_USAGE)
        results.append(describe(checked.mesh, req, checked.project.files))
    if fmt == "json":
        json.dump(results if len(results) > 1 else results[0], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        click.echo("\n\n".join(render_text(r) for r in results))
    sys.exit(EXIT_OK)
