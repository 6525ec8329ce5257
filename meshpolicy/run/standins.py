"""Where `meshc up` runs a local stand-in for each external service's
http/tls port, and the settings that point the sidecars at it (docs/up.md,
"Ingress, tokens and egress").

Each (external, port) gets a loopback port chosen once per work directory
(`standins/ports.json`, so a reload keeps it); a `tls` port's stand-in
serves a certificate from the run's CA for the external's hosts, and the
sidecars verify egress TLS against that CA (`egress_ca`), dialling the
stand-in (`external_endpoints`) with SNI and the certificate check still
on the external's host.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from dataclasses import dataclass
from pathlib import Path

from ..model.types import Mesh


@dataclass(frozen=True)
class StandIn:
    external: str
    port: int  # the external's port number, as the policy writes it
    protocol: str  # http | tls
    local_port: int
    cert: Path | None = None
    key: Path | None = None

    @property
    def key_name(self) -> str:
        return f"{self.external}:{self.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reusable(cp: Path, kp: Path, ca_cert, hosts: list[str]) -> bool:
    """The stand-in's certificate on disk is this CA's, for these hosts, with
    an hour left (a reload under --watch keeps it; the stand-in keeps serving it)."""
    from cryptography import x509

    from ..certs import signed_by

    if not (cp.is_file() and kp.is_file()) or cp.is_symlink() or kp.is_symlink():
        return False
    try:
        cert = x509.load_pem_x509_certificate(cp.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    left = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    return (signed_by(cert, ca_cert) and sorted(sans.get_values_for_type(x509.DNSName)) == sorted(hosts)
            and left > dt.timedelta(hours=1))


def _server_cert(certs: Path, hosts: list[str], out: Path) -> tuple[Path, Path]:
    """A server certificate for `hosts` signed by the run's CA (certs/)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from ..certs import CA_CERT, CA_KEY, _key_pem, _pem, _write_private, _write_public

    ca_cert = x509.load_pem_x509_certificate((certs / CA_CERT).read_bytes())
    cp, kp = out / "cert.pem", out / "key.pem"
    if _reusable(cp, kp, ca_cert, hosts):
        return cp, kp
    ca_key = serialization.load_pem_private_key((certs / CA_KEY).read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=1), ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_private(kp, _key_pem(key))
    _write_public(cp, _pem(cert))
    return cp, kp


def plan_standins(mesh: Mesh, workdir: Path, taken: dict) -> list[StandIn]:
    """A stand-in per http/tls port of every external, except those the
    user already points elsewhere (`taken`: [compile.<proxy>]
    external_endpoints)."""
    from .state import private_dir

    if not mesh.externals:
        return []
    base = private_dir(workdir / "standins")
    marker = base / "ports.json"
    try:
        ports = json.loads(marker.read_text()) if marker.is_file() else {}
    except ValueError:
        ports = {}
    out = []
    for ext in sorted(mesh.externals, key=lambda e: e.name):
        for p in ext.ports:
            name = f"{ext.name}:{p.number}"
            if p.protocol == "tcp" or name in taken:
                continue
            if not isinstance(ports.get(name), int):
                ports[name] = _free_port()
            cert = key = None
            if p.protocol == "tls":
                cert, key = _server_cert(workdir / "certs", [h.lower() for h in ext.hosts],
                                         private_dir(base / f"{ext.name}-{p.number}"))
            out.append(StandIn(ext.name, p.number, p.protocol, ports[name], cert, key))
    marker.write_text(json.dumps(ports, sort_keys=True) + "\n")
    return out


def sidecar_settings(standins: list[StandIn], settings: dict, certs: Path) -> None:
    """Point the sidecars at the stand-ins: their endpoints added to
    external_endpoints, and egress TLS verified against the run's CA (unless
    meshc.toml names another egress_ca)."""
    if not standins:
        return
    eps = dict(settings.get("external_endpoints") or {})
    for s in standins:
        eps[s.key_name] = f"127.0.0.1:{s.local_port}"
    settings["external_endpoints"] = eps
    from ..certs import CA_CERT

    settings.setdefault("egress_ca", str((certs / CA_CERT).resolve()))


def argv(s: StandIn, token: str) -> list[str]:
    import sys

    out = [sys.executable, "-m", "meshpolicy.run.standin", "--name", s.external, "--port", str(s.local_port),
           "--run-token", token]
    if s.cert is not None:
        out += ["--cert", str(s.cert), "--key", str(s.key)]
    return out
