"""End-user tokens as the verifier enumerates them: a finite set of token
classes that the `with jwt` requirements in play cannot tell apart.

A token that reaches a service came through an ingress, which refuses (401)
any token none of its accepted providers validates; so a request from the
internet carries either no token or one validated by an accepted provider.
Claim tests are `eq` and `has` (semantics/tokens.py is their one meaning);
per claim, the values that decide every test are: missing, one of the `eq`
values as a string, or a list holding a subset of the `has` values (a list
is never `eq` to anything). Their product, per provider, covers every token;
one representative is kept per vector of requirement outcomes, so the
classes are exact for the requirements given (semantics/tokens.py decides
each outcome, so a class never disagrees with the reference evaluator)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from ..model.types import JwtRequirement
from ..semantics.evaluate import Token
from ..semantics.tokens import requirement_met
from .atoms import Unsupported

MAX_COMBINATIONS = 20000


def met(req: JwtRequirement | None, tok: Token | None, accepted: Iterable[str] | None = None) -> bool:
    """Does a request carrying tok (None: no token) meet `with jwt ...` (None: always)?"""
    valid = tok is not None and tok.provider is not None
    return requirement_met(req, tok.provider if valid else None, tok.claims if valid else None,
                           set(accepted) if accepted is not None else None)


def _claim_options(tests: list[tuple[str, str]]) -> list:
    """The claim values that decide every test on one claim, smallest first."""
    eqs = list(dict.fromkeys(v for op, v in tests if op == "eq"))
    has = list(dict.fromkeys(v for op, v in tests if op == "has"))
    out: list = [None]  # missing
    out += eqs
    for k in range(1, len(has) + 1):
        out += [list(c) for c in itertools.combinations(has, k)]
    return out


def token_classes(providers: Iterable[str], reqs: list[JwtRequirement]) -> list[Token | None]:
    """No token (None), then one token per distinct outcome vector of
    `reqs`, for tokens validated by one of `providers` (those the ingress
    accepts). The first token of a class has the fewest claims."""
    providers = list(providers)
    per_claim: dict[str, list[tuple[str, str]]] = {}
    for r in reqs:
        for t in r.claims:
            per_claim.setdefault(t.claim, []).append((t.op, t.value))
    names = sorted(per_claim)
    options = [_claim_options(per_claim[n]) for n in names]
    total = len(providers)
    for o in options:
        total *= len(o)
    if total > MAX_COMBINATIONS:
        raise Unsupported(f"the claim tests combine into {total} token classes (limit {MAX_COMBINATIONS})")
    out: list[Token | None] = [None]
    seen = {(None,) + tuple(met(r, None) for r in reqs)}
    combos = sorted(itertools.product(*options), key=lambda c: sum(v is not None for v in c))
    for p in providers:
        for combo in combos:
            tok = Token(p, {n: v for n, v in zip(names, combo) if v is not None})
            # the provider is part of the class: a sidecar validates tokens per provider
            sig = (p,) + tuple(met(r, tok) for r in reqs)
            if sig in seen:
                continue
            seen.add(sig)
            out.append(tok)
    return out


def shown(tok: Token | None) -> str:
    return "no token" if tok is None else str(tok)


def token_dict(tok: Token | None) -> dict | None:
    if tok is None:
        return None
    return {"provider": tok.provider, "claims": dict(tok.claims)}
