"""Real keys and tokens for meshproxy's JWT tests: keys from cryptography,
tokens signed with PyJWT (valid ones and every kind of bad one)."""

from __future__ import annotations

import base64
import json
import time

import jwt
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISSUER = "https://auth.test.example/"
AUDIENCE = "shop-api"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Keys:
    """An RSA, an EC P-256 and an Ed25519 key pair, and their JWKS."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()

    def jwks(self, rsa_alg: str | None = "RS256") -> dict:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        rsa_jwk.update(kid="rsa-1", use="sig")
        if rsa_alg:
            rsa_jwk["alg"] = rsa_alg
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        ec_jwk.update(kid="ec-1")
        ed_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.ed.public_key()))
        ed_jwk.update(kid="ed-1")
        return {"keys": [rsa_jwk, ec_jwk, ed_jwk]}

    def rsa_public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)

    def token(self, claims: dict | None = None, *, alg: str = "RS256", kid: str | None = "rsa-1",
              iss: str | None = ISSUER, aud: str | list | None = AUDIENCE, exp_in: float | None = 300,
              nbf_in: float | None = None) -> str:
        now = int(time.time())
        payload = {"sub": "alice", **(claims or {})}
        if iss is not None:
            payload["iss"] = iss
        if aud is not None:
            payload["aud"] = aud
        if exp_in is not None:
            payload["exp"] = now + int(exp_in)
        if nbf_in is not None:
            payload["nbf"] = now + int(nbf_in)
        key = {"RS": self.rsa, "PS": self.rsa, "ES": self.ec, "Ed": self.ed}[alg[:2]]
        headers = {"kid": kid} if kid else {}
        return jwt.encode(payload, key, algorithm=alg, headers=headers)


def tampered(token: str) -> str:
    """The same token with one claim changed and the old signature kept."""
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "mallory"
    return ".".join([head, _b64(json.dumps(claims).encode()), sig])


def unsigned(claims: dict) -> str:
    """alg=none: no signature at all."""
    head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
    return f"{head}.{_b64(json.dumps(claims).encode())}."


def hs256_with_public_key(keys: Keys, claims: dict) -> str:
    """Algorithm confusion: HS256 with the RSA public key (PEM) as the HMAC
    secret, made by hand (PyJWT refuses to sign this way, rightly)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = _b64(json.dumps(claims).encode())
    mac = hmac.HMAC(keys.rsa_public_pem(), hashes.SHA256())
    mac.update(f"{head}.{body}".encode())
    return f"{head}.{body}.{_b64(mac.finalize())}"


def good_claims(**extra) -> dict:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 300, **extra}
