"""`meshc up`'s local token issuers (docs/up.md, "Ingress, tokens and egress").

A policy's `jwt` provider names the user's JWKS (public keys: nothing can
sign with them) or a remote `jwks_uri`. A local run gets, per provider, a key
pair of its own in the work directory's `jwt/` folder (0700; the private key
0600, never written anywhere else), and the running mesh is compiled with
that key's JWKS in place of the provider's: same name, issuer, audiences and
token locations, so what the policy means is unchanged. `mint` signs tokens
with it (`meshc up --token`), and `--check` makes every kind of bad token.
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any, Mapping

from ..model.types import Mesh

KID = "meshc-up-local"
ALG = "ES256"  # P-256: fast to sign and verify; Envoy's jwt_authn and PyJWT both take it
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def key_dir(workdir: Path) -> Path:
    from .state import private_dir

    return private_dir(workdir / "jwt")


def _paths(workdir: Path, provider: str) -> tuple[Path, Path]:
    if not _NAME.fullmatch(provider):  # names come from the checked policy; never a path
        raise ValueError(f"not a provider name: {provider!r}")
    d = key_dir(workdir)
    return d / f"{provider}.key.pem", d / f"{provider}.jwks.json"


def _write_private(path: Path, data: bytes) -> None:
    """Create with 0600 from the start (never readable by others, not even briefly)."""
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def ensure_key(workdir: Path, provider: str):
    """The provider's local private key (made on first use, then kept: tokens
    minted for a running mesh stay valid across `--watch` reloads and a
    restart with the same work directory) and the path of its JWKS."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key_path, jwks_path = _paths(workdir, provider)
    key = None
    if key_path.is_file() and not key_path.is_symlink():
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except ValueError:
            key = None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            key = None
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    jwks = {"keys": [{**_public_jwk(key), "kid": KID, "alg": ALG, "use": "sig"}]}
    text = json.dumps(jwks, sort_keys=True) + "\n"
    if not jwks_path.is_file() or jwks_path.read_text() != text:
        jwks_path.unlink(missing_ok=True)
        jwks_path.write_text(text)
    return key, jwks_path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _public_jwk(key) -> dict:
    n = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": _b64(n.x.to_bytes(32, "big")), "y": _b64(n.y.to_bytes(32, "big"))}


def localize(mesh: Mesh, workdir: Path) -> Mesh:
    """The mesh with every provider's JWKS replaced by its local key's (the
    same mesh object when it declares no provider)."""
    if not mesh.jwt_providers:
        return mesh
    providers = []
    for p in mesh.jwt_providers:
        _key, jwks_path = ensure_key(workdir, p.name)
        providers.append(p.model_copy(update={"jwks_file": str(jwks_path.resolve()), "jwks_uri": None,
                                                 "jwks_text": None}))
    fields = {name: getattr(mesh, name) for name in Mesh.model_fields}
    return Mesh.make(**{**fields, "jwt_providers": providers})


def default_claims(mesh: Mesh, provider: str, ttl_s: int = 3600) -> dict:
    p = mesh.provider_map[provider]
    now = int(time.time())
    out: dict[str, Any] = {"iss": p.issuer, "iat": now, "exp": now + ttl_s}
    if p.audiences:
        out["aud"] = p.audiences[0] if len(p.audiences) == 1 else list(p.audiences)
    return out


def mint(mesh: Mesh, workdir: Path, provider: str, claims: Mapping[str, Any] | None = None,
         ttl_s: int = 3600) -> str:
    """A token the running mesh accepts as validated by `provider`: its
    issuer and audiences, `exp` ttl_s from now, then `claims` (which may
    override any of them)."""
    import jwt

    key, _ = ensure_key(workdir, provider)
    payload = {**default_claims(mesh, provider, ttl_s), **(claims or {})}
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=ALG, headers={"kid": KID})


def tampered(token: str) -> str:
    """The same header and signature over a changed payload."""
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = f"{claims.get('sub', '')}-tampered"
    return ".".join([head, _b64(json.dumps(claims).encode()), sig])


def unsigned(mesh: Mesh, provider: str, claims: Mapping[str, Any] | None = None) -> str:
    """`alg: none`, no signature, otherwise a token the provider would accept."""
    head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": KID}).encode())
    body = _b64(json.dumps({**default_claims(mesh, provider), **(claims or {})}).encode())
    return f"{head}.{body}."


def parse_claims(items: tuple[str, ...]) -> dict:
    """`name=value` (a string) or `name:=json` (a number, list, bool...)."""
    out: dict[str, Any] = {}
    for item in items:
        if ":=" in item and ("=" not in item or item.index(":=") < item.index("=")):
            name, _, raw = item.partition(":=")
            try:
                out[name] = json.loads(raw)
            except ValueError:
                raise ValueError(f"`{item}`: the value after := is not JSON") from None
        elif "=" in item:
            name, _, value = item.partition("=")
            out[name] = value
        else:
            raise ValueError(f"`{item}` is not name=value or name:=json")
        if not name:
            raise ValueError(f"`{item}` has no claim name")
    return out
