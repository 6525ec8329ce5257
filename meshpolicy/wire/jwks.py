"""Which algorithms a JWKS key may verify (pure: no crypto, no PyJWT), read by
the checker (MP223: a provider whose JWKS has no usable key), the compiler and
meshproxy's validator (meshpolicy/proxy/jwt_verify.py).

Only asymmetric algorithms, and only the key's own: its `alg` when given,
else by `kty` (and `crv`). `none` and HMAC are never allowed: a JWKS holds
public keys, and accepting HS256 would let anyone holding the public key
(everyone) sign tokens with it as the HMAC secret (algorithm confusion).
"""

from __future__ import annotations

import json

RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}
ASYMMETRIC = frozenset(RSA_ALGORITHMS) | frozenset(EC_BY_CURVE.values()) | {"EdDSA"}


def allowed_algorithms(jwk: dict) -> frozenset[str]:
    """The algorithms a JWKS key may verify. Nothing for `oct` keys, unknown
    types, an `alg` such as `none` or `HS256`, or a key whose `use` is not
    `sig` or whose `key_ops` leave out `verify` (RFC 7517 4.2, 4.3: an
    encryption key never verifies a signature)."""
    if jwk.get("use", "sig") != "sig":
        return frozenset()
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return frozenset()
    alg = jwk.get("alg")
    if alg is not None:
        return frozenset({alg}) if alg in ASYMMETRIC else frozenset()
    kty = jwk.get("kty")
    if kty == "RSA":
        return frozenset(RSA_ALGORITHMS)
    if kty == "EC":
        a = EC_BY_CURVE.get(jwk.get("crv"))
        return frozenset({a}) if a else frozenset()
    if kty == "OKP" and jwk.get("crv") in ("Ed25519", "Ed448"):
        return frozenset({"EdDSA"})
    return frozenset()


def jwks_problem(text: str) -> str | None:
    """Why a JWKS text gives meshproxy no key to verify with, or None."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return f"not JSON ({exc.msg} at line {exc.lineno})"
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        return "not a JWKS (no `keys` list)"
    if not any(isinstance(k, dict) and allowed_algorithms(k) for k in keys):
        return ("no RSA, EC or OKP public key with an asymmetric algorithm for signatures (symmetric `oct` keys "
                "and keys for encryption are not used)")
    return None
