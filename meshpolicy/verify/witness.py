"""Witness requests: reported as a dict, and re-checked with the reference
evaluator first, so a wrong finding is an internal error, never a report."""

from __future__ import annotations

from collections.abc import Callable

from ..model.types import Mesh
from ..semantics.evaluate import Outcome, Request, authorize, evaluate


class WitnessMismatch(AssertionError):
    """The reference evaluator disagrees with the verifier: a meshc bug."""


def as_dict(req: Request) -> dict:
    out = {
        "request": str(req),
        "source": req.source,
        "destination": req.destination,
        "method": req.method,
        "path": req.path,
        "headers": dict(req.headers),
    }
    # north-south: the query and host sent, and the end-user token's claims
    if req.query:
        out["query"] = req.query
    if req.host is not None:
        out["host"] = req.host
    if req.token is not None:
        from .tokens import token_dict

        out["token"] = token_dict(req.token)
    return out


def confirmed(mesh: Mesh, req: Request, claim: Callable[[Outcome], bool], what: str) -> dict:
    """The witness dict for req, after checking that it shows `what`."""
    out = evaluate(mesh, req)
    if out.delivered is not None and out.delivered.path != req.path:
        # a route rule rewrote the path: the verifier's requests are as the
        # destination's sidecar receives them, so the decision is on req itself
        out = Outcome(req, authorize(mesh, req), out.route, None, out.forwarded)
    if not claim(out):
        raise WitnessMismatch(f"verifier witness `{req}` does not show that {what} "
                              f"(reference evaluator: {out.decision.effect}, route {out.route.kind})")
    return as_dict(req)
