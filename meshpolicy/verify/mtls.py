"""mTLS findings: rules that identity settings make ineffective, and
permissive holes in a strict mesh. Pure model reading, no solver needed."""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Diagnostic, Label
from ..model.types import Mesh


def findings(mesh: Mesh) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for svc in mesh.services:
        if svc.mtls == "permissive" and mesh.settings.mtls == "strict":
            labels = [Label(mesh.settings.at("mtls"), "the mesh declares strict mTLS here")] if "mtls" in mesh.settings.spans else []
            out.append(diag("MP563", f"`{svc.name}` accepts plaintext although the mesh is strict",
                            svc.at("mtls"), labels=labels))
    for rule in mesh.auth_rules:
        svc = mesh.service(rule.target.name)
        if svc is None:
            continue
        mode = mesh.mtls_of(svc)
        identity_sources = [s for s in rule.sources if s.kind != "any"]
        if mode == "off" and identity_sources and rule.effect == "allow":
            out.append(diag(
                "MP562",
                f"`{svc.name}` has mTLS off, so it cannot see who calls it; this rule's callers never match",
                identity_sources[0].span, labels=[Label(svc.at("mtls") if "mtls" in svc.spans else svc.at("name"),
                                                        "mTLS is off for this service")]))
        if mode == "strict" and rule.effect == "allow" and any(s.kind == "any" for s in rule.sources):
            anyone = next(s for s in rule.sources if s.kind == "any")
            out.append(diag(
                "MP561",
                f"`*` includes callers without a mesh identity, but `{svc.name}` requires mTLS and refuses them",
                anyone.span,
                notes=["callers inside the mesh are still allowed; only callers without a sidecar are refused"],
                witness=_witness(rule, svc.name),
            ))
    return out


def _regex_witness(p) -> str | None:
    from .atoms import Undecided, Unsupported, key_of, split

    try:
        return next((a.witness for a in split([key_of(p)]) if key_of(p) in a.members), None)
    except (Unsupported, Undecided):
        return None  # then the pattern is named instead (MP520 says why)


def _witness(rule, dest: str) -> dict:
    """A request the rule admits, from a caller with no identity."""
    from .atoms import is_normalized

    method = rule.methods[0] if rule.methods else "GET"
    path = "/"
    for p in rule.paths:
        # a path some request can carry (not `/ünï`, `//x`: the certifier checks witnesses)
        if p.kind != "regex" and is_normalized(candidate := p.value.replace("**", "x").replace("*", "x")):
            path = candidate
            break
    else:
        if rule.paths:  # only regexes (or no real path): a path the first one matches, else name it
            path = _regex_witness(rule.paths[0]) or f"(a path matching {rule.paths[0].value})"
    return {"request": f"(no identity) -> {dest} {method} {path}", "source": None, "destination": dest,
            "method": method, "path": path, "headers": {}}
