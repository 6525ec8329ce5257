"""Where certificates live under a certificates directory: one layout shared
by `meshc certs` (which writes it), the Envoy and meshproxy targets (which
point workloads at it) and `meshc up`.

    ca.pem                   the mesh CA certificate (trust anchor)
    ca-key.pem               its private key
    <ns>/<sa>/cert.pem       a workload certificate (URI SAN = the SPIFFE id)
    <ns>/<sa>/key.pem        its private key

Paths are strings joined with `/`: they are written into configs that run
on other machines, so they must not take this machine's separator.
"""

from __future__ import annotations

from dataclasses import dataclass

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
WORKLOAD_CERT = "cert.pem"
WORKLOAD_KEY = "key.pem"


@dataclass(frozen=True)
class CertLayout:
    certs_dir: str

    @property
    def root(self) -> str:
        return self.certs_dir.rstrip("/") or "/"

    def _join(self, *parts: str) -> str:
        root = self.root
        return "/".join((root if root != "/" else "", *parts))

    @property
    def ca_file(self) -> str:
        return self._join(CA_CERT)

    @property
    def ca_key_file(self) -> str:
        return self._join(CA_KEY)

    def workload_dir(self, namespace: str, account: str) -> str:
        return self._join(namespace, account)

    def cert_file(self, namespace: str, account: str) -> str:
        return self._join(namespace, account, WORKLOAD_CERT)

    def key_file(self, namespace: str, account: str) -> str:
        return self._join(namespace, account, WORKLOAD_KEY)
