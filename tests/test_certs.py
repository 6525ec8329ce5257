"""`meshc certs`: a real CA chain, SPIFFE SANs, idempotence, key permissions,
and a real mutual-TLS handshake between two workload certificates."""

from __future__ import annotations

import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshpolicy.certs import identities, issue, signed_by, uri_sans
from meshpolicy.pipeline import check_project
from meshpolicy.project import load

from .conftest import EXAMPLES, check_text, run_meshc


@pytest.fixture(scope="module")
def shop():
    return check_project(load([EXAMPLES / "shop"])).mesh


@pytest.fixture(scope="module")
def issued(shop, tmp_path_factory):
    out = tmp_path_factory.mktemp("certs")
    r = run_meshc("certs", str(EXAMPLES / "shop"), "-o", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def load_cert(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_layout_and_chain(shop, issued):
    ca = load_cert(issued / "ca.pem")
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    ca.verify_directly_issued_by(ca)  # self-signed
    ids = identities(shop)
    workloads = [*shop.services, *shop.ingresses]  # ingress gateways are workloads with identities too
    assert len(ids) == len({(w.namespace, w.account) for w in workloads})
    for ns, sa, spiffe in ids:
        cert = load_cert(issued / ns / sa / "cert.pem")
        cert.verify_directly_issued_by(ca)
        assert uri_sans(cert) == [spiffe] == [f"spiffe://shop.example/ns/{ns}/sa/{sa}"]
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_keys_are_private(issued):
    keys = [issued / "ca-key.pem", *issued.glob("*/*/key.pem")]
    assert len(keys) > 2
    for k in keys:
        assert stat.S_IMODE(k.stat().st_mode) == 0o600, k


def test_a_planted_temporary_file_or_symlink_never_receives_a_key(shop, tmp_path):
    """Keys go through a fresh O_EXCL temporary: a `<key>.tmp` symlink left in
    the directory (by a killed run, or planted) is not written through."""
    out = tmp_path / "certs"
    out.mkdir()
    elsewhere = tmp_path / "world-readable"
    elsewhere.write_text("")
    elsewhere.chmod(0o644)
    (out / "ca-key.pem.tmp").symlink_to(elsewhere)
    issue(shop, out)
    assert elsewhere.read_text() == "" and stat.S_IMODE(elsewhere.stat().st_mode) == 0o644
    key = out / "ca-key.pem"
    assert not key.is_symlink() and stat.S_IMODE(key.stat().st_mode) == 0o600


def test_cli_writes_keys_0600(tmp_path):
    r = run_meshc("certs", str(EXAMPLES / "shop"), "-o", str(tmp_path / "c"))
    assert r.returncode == 0, r.stdout + r.stderr
    keys = [tmp_path / "c" / "ca-key.pem", *(tmp_path / "c").glob("*/*/key.pem")]
    assert len(keys) > 2 and all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
    # no temporaries left: only the layout and each pair's generation (certs/rotation.py)
    names = {p.name for p in (tmp_path / "c").rglob("*") if p.name.startswith(".")}
    assert names and all(n == "..data" or n.startswith("..gen-") for n in names), names


def test_idempotent_and_force(shop, tmp_path):
    first = issue(shop, tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.pem")}
    second = issue(shop, tmp_path)
    assert second.created == [] and len(second.kept) == len(first.created)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.pem")} == before
    # A workload certificate from another CA is replaced; the CA is kept.
    other = tmp_path / "other"
    issue(shop, other)
    ns, sa, _ = identities(shop)[0]
    (tmp_path / ns / sa / "cert.pem").write_bytes((other / ns / sa / "cert.pem").read_bytes())
    third = issue(shop, tmp_path)
    assert third.created == [f"{ns}/{sa}/cert.pem"]
    assert signed_by(load_cert(tmp_path / ns / sa / "cert.pem"), load_cert(tmp_path / "ca.pem"))
    # --force: a new CA and every workload certificate again.
    r = run_meshc("certs", str(EXAMPLES / "shop"), "-o", str(tmp_path), "--force", "-q")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ca.pem").read_bytes() != before[tmp_path / "ca.pem"]
    ca = load_cert(tmp_path / "ca.pem")
    assert all(signed_by(load_cert(p), ca) for p in tmp_path.glob("*/*/cert.pem"))


def test_ca_of_another_trust_domain_is_refused(tmp_path):
    a = check_text('mesh a { trust_domain "a.example" }\nservice s { port 80 http }\nallow * -> s\n').mesh
    b = check_text('mesh b { trust_domain "b.example" }\nservice s { port 80 http }\nallow * -> s\n').mesh
    issue(a, tmp_path)
    with pytest.raises(ValueError):
        issue(b, tmp_path)


def test_cli_reports_bad_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_meshc("certs", str(EXAMPLES / "shop"), "-o", str(blocker / "sub"))
    assert r.returncode == 1 and "MP703" in r.stdout and "Traceback" not in r.stderr


def _context(issued, ns, sa, server: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(issued / ns / sa / "cert.pem", issued / ns / sa / "key.pem")
    ctx.load_verify_locations(issued / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = False  # SPIFFE identities are URIs, checked below
    return ctx


def _uri_san(peer: dict) -> list[str]:
    return [v for k, v in peer.get("subjectAltName", ()) if k == "URI"]


def test_mutual_tls_handshake_between_workloads(issued):
    server_ctx = _context(issued, "pay", "payments", server=True)
    client_ctx = _context(issued, "shop", "orders", server=False)
    seen = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve():
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                seen["client"] = _uri_san(tls.getpeercert())
                tls.sendall(tls.recv(5))

        t = threading.Thread(target=serve)
        t.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw) as tls:
                server_ids = _uri_san(tls.getpeercert())
                tls.sendall(b"hello")
                assert tls.recv(5) == b"hello"
        t.join(10)
    assert server_ids == ["spiffe://shop.example/ns/pay/sa/payments"]
    assert seen["client"] == ["spiffe://shop.example/ns/shop/sa/orders"]


def test_handshake_fails_without_client_certificate(issued):
    server_ctx = _context(issued, "pay", "payments", server=True)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(issued / "ca.pem")
    client_ctx.check_hostname = False
    errors = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve():
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError) as exc:
                errors.append(exc)

        t = threading.Thread(target=serve)
        t.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            try:
                with client_ctx.wrap_socket(raw) as tls:
                    tls.sendall(b"x")
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass
        t.join(10)
    assert errors and isinstance(errors[0], ssl.SSLError)


def test_a_symlink_loop_as_output_is_refused_like_compile(tmp_path):
    """`meshc certs -o` refuses a symlink loop as `compile -o` does: MP705, exit 2."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    proc = run_meshc("certs", str(EXAMPLES / "shop"), "-o", str(a), "--format", "json")
    assert proc.returncode == 2
    assert "MP705" in proc.stdout
