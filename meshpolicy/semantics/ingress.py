"""Ingress gateways and the tokens they accept, as every consumer reads them
(docs/semantics.md, "Ingress, tokens and egress"): which providers an
ingress accepts, which services it forwards to, and which providers a
destination's sidecar validates a forwarded token with."""

from __future__ import annotations

from collections import OrderedDict

from ..model.types import Ingress, Mesh, Source


def accepted_providers(mesh: Mesh, g: Ingress) -> tuple[str, ...]:
    """The JWT providers an ingress accepts, in the order written (`jwt a, b`);
    none written: every declared provider, in declaration order. Names that
    declare no provider are left out (the checker reports them)."""
    if g.jwt:
        return tuple(dict.fromkeys(r.name for r in g.jwt if r.name in mesh.provider_map))
    return tuple(mesh.provider_map)


def forwards_to(g: Ingress) -> tuple[str, ...]:
    """The services an ingress's rules send requests to (forward destinations
    and mirrors), in the order written, without repeats."""
    out: dict[str, None] = {}
    for rule in g.rules:
        a = rule.action
        if a.kind != "forward":
            continue
        for d in a.destinations:
            out.setdefault(d.version.name)
        if a.mirror is not None:
            out.setdefault(a.mirror.version.name)
    return tuple(out)


def ingresses_to(mesh: Mesh, dest: str) -> tuple[str, ...]:
    """The ingresses whose rules send requests to `dest`, in declaration order."""
    return tuple(g.name for g in mesh.ingress_map.values() if dest in forwards_to(g))


def validating_providers(mesh: Mesh, dest: str) -> frozenset[str]:
    """`_validating_providers`, kept per mesh (the evaluator asks it for every
    request that carries a token)."""
    got = _CACHE.get(id(mesh))
    if got is None or got[0] is not mesh:
        got = _CACHE[id(mesh)] = (mesh, {})
        while len(_CACHE) > 4:
            _CACHE.popitem(last=False)
    per_dest = got[1]
    if dest not in per_dest:
        per_dest[dest] = _validating_providers(mesh, dest)
    return per_dest[dest]


_CACHE: OrderedDict[int, tuple[Mesh, dict[str, frozenset[str]]]] = OrderedDict()


def _validating_providers(mesh: Mesh, dest: str) -> frozenset[str]:
    """The providers `dest`'s sidecar validates a request's token with: those
    accepted by every ingress that forwards to it (so a token an ingress let
    through is valid there too), and those that `internet with jwt` sources of
    rules on `dest` name (`with jwt` without a provider: those of every
    ingress). Empty: the sidecar checks no token. A request carrying a token
    none of them validates gets 401 there, whoever sent it (as Istio's
    RequestAuthentication and Envoy's jwt_authn answer)."""
    out: set[str] = set()
    for name in ingresses_to(mesh, dest):
        out.update(accepted_providers(mesh, mesh.ingress_map[name]))
    for r in mesh.rules_by_target.get(dest, []):
        for s in r.sources:
            if s.kind != "internet" or s.jwt is None:
                continue
            if s.jwt.provider is not None:
                if s.jwt.provider.name in mesh.provider_map:
                    out.add(s.jwt.provider.name)
            else:
                for g in mesh.ingress_map.values():
                    out.update(accepted_providers(mesh, g))
    return frozenset(out)


def providers_admitted(mesh: Mesh, s: Source, g: Ingress) -> tuple[str, ...] | None:
    """Can an `internet [with jwt ...]` source match requests ingress `g`
    sends, and with tokens of which providers? None: never (the provider
    it names is one `g` does not accept, or `g` accepts none and a token is
    required); (): yes, no token needed (no `with jwt`); else the providers
    whose tokens can meet it (the one named, or every one `g` accepts).
    Claims are not looked at: a provider can issue any claims."""
    if s.kind != "internet":
        return None
    if s.jwt is None:
        return ()
    accepted = accepted_providers(mesh, g)
    if s.jwt.provider is not None:
        return (s.jwt.provider.name,) if s.jwt.provider.name in accepted else None
    return accepted or None
