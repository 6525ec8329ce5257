"""Hover text (Markdown) for services, versions and rules."""

from __future__ import annotations

from ..diagnostics import Diagnostic
from ..model.types import AuthRule, Mesh, PathPattern, RouteRule, Service, Source
from ..plan import plan_of
from ..span import Span


def _internet(s: Source) -> str:
    if s.jwt is None:
        return "internet"
    tests = " and ".join(f"{c.claim} {'=' if c.op == 'eq' else 'has'} \"{c.value}\"" for c in s.jwt.claims)
    return " ".join(x for x in ("internet with jwt", s.jwt.provider.name if s.jwt.provider else "", tests) if x)


def _sources(sources: list[Source]) -> str:
    out = []
    for s in sources:
        out.append(_internet(s) if s.kind == "internet" else
                   {"service": s.name or "", "namespace": f"namespace {s.name}",
                    "authenticated": "authenticated", "any": "*"}[s.kind])
    return ", ".join(out)


def _path(p: PathPattern) -> str:
    return p.value if p.kind == "glob" else f'{p.kind} "{p.value}"'


def _scope(methods: list[str], paths: list[PathPattern]) -> str:
    parts = [", ".join(methods)] if methods else []
    if paths:
        parts.append(", ".join(_path(p) for p in paths))
    return " ".join(parts) or "any request"


def service_hover(mesh: Mesh, svc: Service) -> str:
    lines = [f"**service `{svc.name}`** in namespace `{svc.namespace}`", "",
             f"- identity: `{mesh.spiffe_id(svc)}`"]
    ports = ", ".join(f"{p.number}/{p.protocol}" for p in svc.ports) or "none"
    lines.append(f"- ports: {ports}")
    lines.append(f"- versions: {', '.join(f'`{v.name}`' for v in svc.versions) or 'none'}")
    lines.append(f"- mTLS: {mesh.mtls_of(svc)}")
    callers = [r for r in mesh.auth_rules if r.target.name == svc.name]
    lines += ["", "**may be called by**" if callers else
              f"**may be called by**: {'anyone not denied (default allow)' if mesh.settings.default == 'allow' else 'no one (default deny, no allow rule)'}"]
    for r in callers:
        lines.append(f"- {r.effect} {_sources(r.sources)}: {_scope(r.methods, r.paths)} (line {r.span.line})")
    # Whom it may call is the plan's answer (the one the targets scope sidecars by), with its reason.
    plan = plan_of(mesh)
    callees = plan.callees(svc.name)
    lines += ["", "**may call**" if callees else "**may call**: no service"]
    for name in callees:
        adm = plan.callers(name)[svc.name]
        r = adm.rule
        detail = f"{_scope(r.methods, r.paths)}, {adm.reason} (line {r.span.line})" if r is not None else adm.reason
        lines.append(f"- `{name}`: {detail}")
    return "\n".join(lines)


def version_hover(svc: Service, name: str) -> str:
    v = svc.version(name)
    if v is None:
        return f"`{name}`: not a version of `{svc.name}`"
    labels = ", ".join(f'{k}: "{val}"' for k, val in v.labels.items()) or "none"
    return f"**version `{v.name}`** of service `{svc.name}`\n\n- pod labels: {labels}"


def _findings(span: Span, findings: list[Diagnostic]) -> list[str]:
    out = []
    for d in findings:
        if d.span and d.span.file == span.file and span.start <= d.span.start and d.span.end <= span.end:
            causes = "; ".join(f"{lb.message} (line {lb.span.line})" for lb in d.labels)
            out.append(f"- {d.code}: {d.message}" + (f" — {causes}" if causes else ""))
    return out


def auth_hover(rule: AuthRule, findings: list[Diagnostic] | None) -> str:
    what = "allows" if rule.effect == "allow" else "denies (deny rules win over allow rules)"
    text = (f"**{rule.effect} rule** #{rule.index + 1}: {what} {_sources(rule.sources)} → "
            f"`{rule.target.name}` for {_scope(rule.methods, rule.paths)}")
    return text + _verifier_part(rule.span, findings)


def route_rule_hover(service: str, rule: RouteRule, findings: list[Diagnostic] | None) -> str:
    a = rule.action
    if a.kind == "forward":
        dests = ", ".join(f"`{d.version.name}`" + (f" {d.weight:g}%" if d.weight is not None else "")
                          for d in a.destinations)
        did = f"sends to {dests}" + (f", mirrors {a.mirror.percent:g}% to `{a.mirror.version.name}`" if a.mirror else "")
    elif a.kind == "redirect":
        did = f"redirects to `{a.uri}` ({a.status})"
    else:
        did = f"answers {a.status} directly"
    text = (f"**route rule** #{rule.index + 1} of `{service}`: the first rule that matches decides; "
            f"this one {did}")
    return text + _verifier_part(rule.span, findings)


def _verifier_part(span: Span, findings: list[Diagnostic] | None) -> str:
    if findings is None:
        return ""
    found = _findings(span, findings)
    return "\n\n**verifier**:\n" + "\n".join(found) if found else "\n\n**verifier**: no finding on this rule"
