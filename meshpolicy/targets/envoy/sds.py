"""A workload's certificate for Envoy: static files, or file-based SDS.

Static `tls_certificates` are read once, at start: a rotated certificate is
only served after a restart. With `CompileOptions.sds_dir` (what `meshc up`
sets), each bootstrap instead names an SDS secret read from a file in that
directory (`path_config_source`), and the secret's TlsCertificate sets
`watched_directory` to the certificate's own folder: when `meshc certs
--renew` swaps the folder's `..data` symlink (certs/rotation.py) Envoy
re-reads the pair and serves the new certificate to new connections. The
default, static output stays as simple as before.
"""

from __future__ import annotations

import json

from ...certs import identities
from ...compile import CompileOptions, Output
from ...model.types import Mesh, Service
from ...plan import CertLayout
from ...plan.cert_layout import account_dir
from ..port_layout import MESH_UNIQUE, account_instances, layout_of
from .conventions import cert_files

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def secret_name(namespace: str, account: str, instance: int = 0) -> str:
    return f"workload|{namespace}/{account_dir(account, instance)}"


def document_path(namespace: str, account: str, instance: int = 0) -> str:
    """Where, under sds_dir, the SDS file of a service account (of its
    instance k's key pair, k > 0) lives."""
    return f"{namespace}/{account_dir(account, instance)}.json"


def tls_certificates(ctx, svc: Service, instance: int = 0) -> dict:
    """The common_tls_context entries presenting svc's certificate (that of
    instance k, with `replicas`)."""
    cert, key = cert_files(ctx.options.certs_dir, svc, instance)
    sds_dir = ctx.options.sds_dir
    if not sds_dir:
        return {"tls_certificates": [{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}]}
    path = f"{sds_dir.rstrip('/')}/{document_path(svc.namespace, svc.account, instance)}"
    return {"tls_certificate_sds_secret_configs": [{
        "name": secret_name(svc.namespace, svc.account, instance),
        "sds_config": {"path_config_source": {"path": path}, "resource_api_version": "V3"}}]}


def documents(mesh: Mesh, options: CompileOptions) -> list[Output]:
    """One SDS DiscoveryResponse per service account (and per instance k > 0
    of its workloads, with mesh-unique `replicas`), to be written to sds_dir."""
    layout = CertLayout(options.certs_dir)
    raw = options.settings or {}
    counts = account_instances(mesh, raw.get("replicas")) if layout_of(raw)[0] == MESH_UNIQUE else {}
    out = []
    for ns, sa, _spiffe in identities(mesh):
        for k in range(counts.get((ns, sa), 1)):
            doc = {"resources": [{
                "@type": SECRET,
                "name": secret_name(ns, sa, k),
                "tls_certificate": {
                    "certificate_chain": {"filename": layout.cert_file(ns, sa, k)},
                    "private_key": {"filename": layout.key_file(ns, sa, k)},
                    "watched_directory": {"path": layout.workload_dir(ns, sa, k)},
                }}]}
            out.append(Output(document_path(ns, sa, k), json.dumps(doc, indent=2, sort_keys=True) + "\n"))
    return out
