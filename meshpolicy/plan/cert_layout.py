"""Where certificates live under a certificates directory: one layout shared
by `meshc certs` (which writes it), the Envoy and meshproxy targets (which
point workloads at it) and `meshc up`.

    ca.pem                   the mesh CA certificate (trust anchor)
    ca-key.pem               its private key
    <ns>/<sa>/cert.pem       a workload certificate (URI SAN = the SPIFFE id)
    <ns>/<sa>/key.pem        its private key
    <ns>/<sa>@<k>/...        instance k's own pair, same SPIFFE id (`meshc up`
                             with replicas: docs/up.md, "Instances")

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

    def workload_dir(self, namespace: str, account: str, instance: int = 0) -> str:
        return self._join(namespace, account_dir(account, instance))

    def cert_file(self, namespace: str, account: str, instance: int = 0) -> str:
        return self._join(namespace, account_dir(account, instance), WORKLOAD_CERT)

    def key_file(self, namespace: str, account: str, instance: int = 0) -> str:
        return self._join(namespace, account_dir(account, instance), WORKLOAD_KEY)


def account_dir(account: str, instance: int = 0) -> str:
    """The folder of an account's certificate for one instance of its
    workloads: instance 0 (every workload without replicas) the account's
    own, instance k > 0 `<account>@<k>` (a name never holds `@`)."""
    return f"{account}@{instance}" if instance else account
