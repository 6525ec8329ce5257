"""JWT providers and the token requirements that name them:
MP220-MP222 and MP226 (a provider's own settings), MP223 (its JWKS file),
MP224 (an unknown provider), MP225 (a token required with no provider).

A `jwks` file is read here, at check time (model/jwks_text.py, the one
reading every target shares), so a wrong path or a file that is not a JWKS
is reported with the policy rather than as every token being refused at run
time."""

from __future__ import annotations

import re

from ..codes import diag
from ..diagnostics import Label
from ..model.jwks_text import jwks_label, usable_jwks
from ..model.types import Mesh
from . import rule
from ._names import suggest
from ._walk import jwt_requirements

_HTTPS_URL = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?")


@rule("MP220", "MP221", "MP222", "MP226", per_file=True)
def provider_settings(mesh: Mesh):
    for p in mesh.jwt_providers:
        if p.jwks_file is None and p.jwks_uri is None:
            yield diag("MP220", f"jwt provider `{p.name}` names neither `jwks` nor `jwks_uri`", p.at("name"))
        elif p.jwks_file is not None and p.jwks_uri is not None:
            yield diag("MP221", f"jwt provider `{p.name}` names both `jwks` and `jwks_uri`", p.at("jwks_uri"),
                       labels=[Label(p.at("jwks_file"), "`jwks` here")])
        if p.issuer is None:
            yield diag("MP222", f"jwt provider `{p.name}` has no `issuer`", p.at("name"))
        elif not p.issuer.strip():
            yield diag("MP222", f"the `issuer` of jwt provider `{p.name}` is empty", p.at("issuer"))
        if p.jwks_uri is not None and not _HTTPS_URL.fullmatch(p.jwks_uri):
            yield diag("MP226", f"`jwks_uri` of jwt provider `{p.name}` is not an absolute https URL",
                       p.at("jwks_uri"))


# Not per file: the JWKS file may change while the .mesh file does not.
@rule("MP223")
def unusable_jwks(mesh: Mesh):
    for p in mesh.jwt_providers:
        if p.jwks_file is None or p.jwks_uri is not None:
            continue  # MP220/MP221
        problem = usable_jwks(p)[1]
        if problem:
            yield diag("MP223", f"the {jwks_label(p)} of jwt provider `{p.name}` {problem}", p.at("jwks_file"))


@rule("MP224", "MP225")
def unknown_providers(mesh: Mesh):
    known = mesh.provider_map
    refs = [r for g in mesh.ingresses for r in g.jwt]
    refs += [req.provider for req in jwt_requirements(mesh) if req.provider is not None]
    if not known:
        for req in jwt_requirements(mesh):
            yield diag("MP225", "this requires a token, but the mesh declares no jwt provider", req.span)
        for g in mesh.ingresses:
            if g.jwt:
                yield diag("MP225", f"ingress `{g.name}` accepts tokens, but the mesh declares no jwt provider",
                           g.at("jwt"))
        return
    for ref in refs:
        if ref.name not in known:
            hint, fixes = suggest(ref.name, known, ref.span)
            yield diag("MP224", f"`{ref.name}` is not a declared jwt provider{hint}", ref.span, fixes=fixes)
