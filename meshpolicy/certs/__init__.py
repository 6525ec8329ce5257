"""The mesh CA: a self-signed root and one certificate per service account.

Layout under the output directory (what Envoy bootstraps reference under
CompileOptions.certs_dir):

    ca.pem                   the mesh CA certificate (trust anchor)
    ca-key.pem               its private key (0600)
    <ns>/<sa>/cert.pem       the workload certificate, URI SAN spiffe://<td>/ns/<ns>/sa/<sa>
    <ns>/<sa>/key.pem        its private key (0600)
    <ns>/<sa>@<k>/...        instance k's own pair, same URI SAN (`instances`)

Issuing is idempotent: an existing CA is kept (unless forced), and an existing
workload certificate is kept while it is signed by that CA, carries the right
SPIFFE ID and is not about to expire.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..model.types import Mesh
from .rotation import publish_pair
from ..plan.cert_layout import CA_CERT, CA_KEY, WORKLOAD_CERT, WORKLOAD_KEY, account_dir

CA_DAYS = 3650
# Renew workload certificates that would expire within this many days.
RENEW_DAYS = 30


@dataclass
class Issued:
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def identities(mesh: Mesh) -> list[tuple[str, str, str]]:
    """(namespace, account, spiffe id) for every service account and every
    ingress gateway's (a workload with an identity of its own), sorted, once each."""
    seen = {(s.namespace, s.account): mesh.spiffe_id(s) for s in mesh.services}
    td = mesh.settings.trust_domain
    for g in mesh.ingresses:
        seen.setdefault((g.namespace, g.account), f"spiffe://{td}/ns/{g.namespace}/sa/{g.account}")
    return sorted((ns, sa, sid) for (ns, sa), sid in seen.items())


def workload_paths(certs_dir: str | Path, namespace: str, account: str, instance: int = 0) -> tuple[Path, Path]:
    base = Path(certs_dir) / namespace / account_dir(account, instance)
    return base / WORKLOAD_CERT, base / WORKLOAD_KEY  # the plan's layout (plan/cert_layout.py)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write via a fresh temporary file (O_EXCL, created with `mode`, so a
    key is never readable by others, not even briefly, and a planted
    `*.tmp` or symlink is never written through), then rename into place."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600, O_EXCL|O_NOFOLLOW
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_private(path: Path, data: bytes) -> None:
    _write_file(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    _write_file(path, data, 0o644)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def _new_ca(mesh_name: str, trust_domain: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshpolicy"),
        # Records the trust domain, so a rerun for another mesh does not reuse this CA.
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, trust_domain[:64]),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{mesh_name} mesh CA"[:64]),
    ])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(hours=1))
        .not_valid_after(now + _dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_workload(ca_cert, ca_key, namespace: str, account: str, spiffe: str, validity: _dt.timedelta):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshpolicy"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{account}.{namespace}"[:64]),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - min(_dt.timedelta(hours=1), validity))  # some slack for clock skew
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def uri_sans(cert) -> list[str]:
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return ext.value.get_values_for_type(x509.UniformResourceIdentifier)


def signed_by(cert, ca_cert) -> bool:
    """Whether cert's signature verifies with ca_cert's key (and names it as issuer)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # noqa: BLE001 - any failure means "not this CA's"
        return False
    return True


def _pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_ca(outdir: Path, trust_domain: str):
    """The existing CA, or None when absent or unusable for this trust domain."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = outdir / CA_CERT, outdir / CA_KEY
    if not (cert_path.is_file() and key_path.is_file()):
        return None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise ValueError(f"`{key_path}` is not the key of `{cert_path}`; use --force to replace the CA")
    from cryptography.x509.oid import NameOID

    ous = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    if ous and ous[0] != trust_domain[:64]:
        raise ValueError(f"the CA in `{outdir}` is for trust domain {ous[0]!r}, not {trust_domain!r};"
                         " use --force to replace it")
    return cert, key


def renew_after(lifetime_s: float) -> float:
    """Seconds after issuing that short-lived certificates are renewed: at two
    thirds of their life, so a failed renewal has a third left to be retried."""
    return lifetime_s * 2 / 3


def _workload_ok(cert_path: Path, key_path: Path, ca_cert, spiffe: str,
                 lifetime_s: float | None = None) -> bool:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError:
        return False
    # A short-lived pair is kept only if it outlives the renewal `meshc up` schedules
    # renew_after(lifetime) after this call: keeping one with a third of its life left
    # (as before) let a restarted `meshc up` serve an expired pair until that renewal.
    margin = _dt.timedelta(seconds=renew_after(lifetime_s)) if lifetime_s else \
        _dt.timedelta(days=RENEW_DAYS)
    fresh = cert.not_valid_after_utc - _now() > margin
    return (signed_by(cert, ca_cert) and uri_sans(cert) == [spiffe] and fresh
            and cert.public_key().public_numbers() == key.public_key().public_numbers())


def issue(mesh: Mesh, outdir: str | Path, *, force: bool = False, days: int = 365,
          renew: bool = False, lifetime_s: float | None = None,
          instances: dict[tuple[str, str], int] | None = None) -> Issued:
    """Create (or keep) the mesh CA and every service account's certificate;
    `renew` re-issues every workload certificate under the kept CA (rotation).
    `lifetime_s` makes workload certificates short-lived (`meshc up`), else
    they last `days`. `instances`: (namespace, account) -> how many instances
    of its workloads run (`meshc up` replicas), each with a key pair of its
    own (`<sa>@<k>` for k > 0). Raises ValueError for an unusable existing CA
    and OSError for I/O failures."""
    slots = [(ns, sa, spiffe, k) for ns, sa, spiffe in identities(mesh)
             for k in range((instances or {}).get((ns, sa), 1))]
    validity = _dt.timedelta(seconds=lifetime_s) if lifetime_s else _dt.timedelta(days=days)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    # A namespace or account folder planted as a symlink would take the keys out of outdir.
    for ns, sa, _, k in slots:
        for d in (outdir / ns, outdir / ns / account_dir(sa, k)):
            if d.is_symlink():
                raise ValueError(f"`{d.relative_to(outdir)}` is a symbolic link; keys are written only inside "
                                 "the directory itself")
    td = mesh.settings.trust_domain
    out = Issued()
    loaded = None if force else _load_ca(outdir, td)
    if loaded is None:
        ca_cert, ca_key = _new_ca(mesh.settings.name, td)
        _write_private(outdir / CA_KEY, _key_pem(ca_key))
        _write_public(outdir / CA_CERT, _pem(ca_cert))
        out.created.append(CA_CERT)
    else:
        ca_cert, ca_key = loaded
        out.kept.append(CA_CERT)
    for ns, sa, spiffe, k in slots:
        cert_path, key_path = workload_paths(outdir, ns, sa, k)
        shown = f"{ns}/{account_dir(sa, k)}/{WORKLOAD_CERT}"
        if not renew and _workload_ok(cert_path, key_path, ca_cert, spiffe, lifetime_s):
            out.kept.append(shown)
            continue
        cert, key = _new_workload(ca_cert, ca_key, ns, sa, spiffe, validity)
        # cert and key together, by one symlink swap (certs/rotation.py)
        publish_pair(cert_path.parent, cert_path.name, key_path.name, _pem(cert), _key_pem(key),
                     _write_private, _write_public)
        out.created.append(shown)
    return out
