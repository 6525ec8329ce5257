"""Certificates: SSL contexts from a workload's identity files, SPIFFE IDs of peers,
and reloading when the files change."""

from __future__ import annotations

import os
import ssl


def server_context(identity: dict, require_client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(identity["cert_file"], identity["key_file"])
    ctx.load_verify_locations(identity["ca_file"])
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(identity: dict) -> ssl.SSLContext:
    """Presents this workload's certificate, trusts only the mesh CA. Peers
    are checked by SPIFFE ID (peer_spiffe_id), not by host name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(identity["cert_file"], identity["key_file"])
    ctx.load_verify_locations(identity["ca_file"])
    return ctx


def peer_spiffe_id(peercert: dict | None) -> str | None:
    """The URI SAN of a verified peer certificate that is a SPIFFE ID."""
    if not peercert:
        return None
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "URI" and value.startswith("spiffe://"):
            return value
    return None


class CertWatcher:
    """Notices when any identity file changes (by mtime and size)."""

    def __init__(self, identity: dict):
        self.files = [identity["cert_file"], identity["key_file"], identity["ca_file"]]
        self.stamp = self._stamp()

    def _stamp(self):
        out = []
        for f in self.files:
            try:
                st = os.stat(f)
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def changed(self) -> bool:
        now = self._stamp()
        if now != self.stamp and None not in now:
            self.stamp = now
            return True
        return False
