"""MP107: a project with files but no `mesh` block runs on silent defaults."""

from __future__ import annotations

from ..codes import diag
from ..model.types import Mesh
from . import rule


@rule("MP107")
def missing_mesh(mesh: Mesh):
    if mesh.files and not mesh.mesh_blocks:
        s = mesh.settings
        yield diag("MP107", f"no `mesh` block in this project: mTLS is {s.mtls}, the default stance is "
                            f"{s.default} and the trust domain is `{s.trust_domain}`", None)
