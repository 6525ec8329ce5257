"""Who a request comes from, as the destination sees it: transport admission
and identity (docs/semantics.md, "Before any rule"). Computed here once; the
reference evaluator, the verifier, `meshc query`, `diff` and `graph` read it.
"""

from __future__ import annotations

from collections import OrderedDict

from ..model.types import Mesh, Service


def caller_has_identity(mesh: Mesh, source: str | None) -> bool:
    """A mesh service or an ingress gateway presents a certificate; anything
    else has no identity."""
    return source is not None and (mesh.service(source) is not None or source in mesh.ingress_map)


def namespace_of(mesh: Mesh, name: str | None) -> str | None:
    """The namespace of a workload: a service or an ingress gateway (None: neither)."""
    if name is None:
        return None
    svc = mesh.service(name)
    if svc is not None:
        return svc.namespace
    g = mesh.ingress_map.get(name)
    return g.namespace if g is not None else None


def is_ingress_identity(mesh: Mesh, name: str | None) -> bool:
    """Does `name`'s certificate identify an ingress gateway? True for an
    ingress, and for a service that shares an ingress's namespace and account
    (their sidecars cannot tell the two apart, as with two services)."""
    key = identity_of(mesh, name)
    return key is not None and key in _cached_ingress_keys(mesh)


def ingress_key(g) -> tuple[str, str]:
    """An ingress gateway's identity key (namespace, account)."""
    return (g.namespace, g.account or g.name)


def admits(mesh: Mesh, source: str | None, destination: str) -> bool:
    """Does the destination's sidecar accept the connection at all? `strict`
    refuses callers without a certificate; `permissive` and `off` accept
    anyone (with `off`, no caller's identity is seen). An external service
    has no sidecar and an ingress listener takes outside callers: neither
    refuses a connection for want of a mesh certificate (egress is decided
    on the caller's side, docs/semantics.md "Ingress, tokens and egress")."""
    dest = mesh.service(destination)
    if dest is None:
        return destination in mesh.external_map or destination in mesh.ingress_map
    return mesh.mtls_of(dest) != "strict" or caller_has_identity(mesh, source)


def identity_visible(mesh: Mesh, source: str | None, destination: str) -> bool:
    """A destination sees a caller's identity only over mTLS: the caller is a
    mesh service and the destination's mode is not `off`."""
    dest = mesh.service(destination)
    return caller_has_identity(mesh, source) and dest is not None and mesh.mtls_of(dest) != "off"


def refusal(mesh: Mesh, source: str | None, destination: str) -> str | None:
    """Why the transport refuses the request (None: admitted), for reports."""
    if admits(mesh, source, destination):
        return None
    return f"`{destination}` requires mTLS (strict) and the caller has no mesh identity"


def identity_key(mesh: Mesh, svc: Service) -> tuple[str, str]:
    """What a certificate proves: namespace and account (the SPIFFE ID within
    the mesh's one trust domain). Services with the same key are one caller to
    every sidecar."""
    return (svc.namespace, svc.account)


def identity_groups(mesh: Mesh) -> dict[tuple[str, str], list[str]]:
    """Service names per identity, in declaration order (first declaration of a name)."""
    out: dict[tuple[str, str], list[str]] = {}
    for svc in mesh.service_map.values():
        out.setdefault(identity_key(mesh, svc), []).append(svc.name)
    return out


def same_identity(mesh: Mesh, a: str, b: str | None) -> bool:
    """Would a rule naming `a` admit a caller `b`? Yes exactly when the two
    present the same certificate identity."""
    if a == b:
        return True
    if b is None:
        return False
    keys = _cached(mesh)[1]
    ka = keys.get(a)
    return ka is not None and ka == keys.get(b)


def identity_of(mesh: Mesh, name: str | None) -> tuple[str, str] | None:
    """The identity key of a service or ingress name (None: neither)."""
    return _cached(mesh)[1].get(name) if name is not None else None


def identity_mates(mesh: Mesh, name: str) -> list[str]:
    """The other services sharing `name`'s identity (usually none). Looked up
    in the per-mesh cache: the verifier asks once per rule source of every
    destination (74,000 times at 10,000 services)."""
    return list(_entry(mesh)[4].get(name, ()))


_CACHE: OrderedDict[int, tuple[Mesh, dict, dict, frozenset, dict]] = OrderedDict()


def _cached(mesh: Mesh) -> tuple[dict[tuple[str, str], list[str]], dict[str, tuple[str, str]]]:
    """identity_groups and each name's identity key, for the few most recent
    meshes (asked once per rule source and request)."""
    got = _entry(mesh)
    return got[1], got[2]


def _entry(mesh: Mesh) -> tuple[Mesh, dict, dict, frozenset, dict]:
    got = _CACHE.get(id(mesh))
    if got is not None and got[0] is mesh:
        return got
    groups = identity_groups(mesh)
    keys = {name: key for key, names in groups.items() for name in names}
    for g in mesh.ingress_map.values():  # an ingress is a caller too (names never clash with services')
        keys.setdefault(g.name, ingress_key(g))
    ingress_keys = frozenset(ingress_key(g) for g in mesh.ingress_map.values())
    # each service of a shared identity: the others, in declaration order
    mates = {n: tuple(m for m in names if m != n) for names in groups.values() if len(names) > 1 for n in names}
    got = _CACHE[id(mesh)] = (mesh, groups, keys, ingress_keys, mates)
    while len(_CACHE) > 4:
        _CACHE.popitem(last=False)
    return got


def _cached_ingress_keys(mesh: Mesh) -> frozenset:
    return _entry(mesh)[3]


def _groups_cached(mesh: Mesh) -> dict[tuple[str, str], list[str]]:
    return _cached(mesh)[0]
