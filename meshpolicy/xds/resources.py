"""What the control plane serves: the Envoy target's own bootstraps, split
into xDS resources.

There is one lowering (meshpolicy/targets/envoy). A workload's static
bootstrap is cut into its resources: each HTTP connection manager's inline
`route_config` becomes an RDS RouteConfiguration, each STATIC cluster's
inline `load_assignment` an EDS ClusterLoadAssignment (so instances can come
and go), and the listeners and clusters that then refer to them by name are
served over LDS and CDS. Putting the pieces back in place gives the static
bootstrap exactly (tests/test_xds.py), so the served config and
`meshc compile --target envoy` cannot drift apart. Certificates stay with
file-based SDS (a watched directory, rotated by a symlink swap).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
# The order a change is pushed in: what a listener or cluster names exists first.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
_ADS = {"ads": {}, "resource_api_version": "V3"}
XDS_CLUSTER = "meshc-xds"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Snapshot:
    """One workload's resources: type URL -> name -> resource (a JSON-ready dict).
    Fill it before asking for versions: they are computed once and kept."""

    node: str
    resources: dict[str, dict[str, dict]] = field(default_factory=dict)
    _versions: dict[str, dict[str, str]] = field(default_factory=dict, repr=False, compare=False)

    def versions(self, type_url: str) -> dict[str, str]:
        """name -> content hash of each resource of a type: delta xDS sends a
        resource only when its hash differs from what the workload has."""
        got = self._versions.get(type_url)
        if got is None:
            got = self._versions[type_url] = {
                name: _digest(json.dumps(r, sort_keys=True, separators=(",", ":")))
                for name, r in self.resources.get(type_url, {}).items()}
        return got

    def version(self, type_url: str) -> str:
        """The version of a whole type: the same resources give the same
        version, so a push that changes nothing for a workload sends it nothing."""
        return _digest(json.dumps(sorted(self.versions(type_url).items()), separators=(",", ":")))


def _hcms(listener: dict):
    for chain in listener.get("filter_chains", []):
        for f in chain.get("filters", []):
            tc = f.get("typed_config", {})
            if f.get("name") == "envoy.filters.network.http_connection_manager":
                yield tc


def split(bootstrap: dict) -> Snapshot:
    """A static bootstrap's resources, with routes and endpoints referred to by name."""
    snap = Snapshot(bootstrap["node"]["id"], {t: {} for t in PUSH_ORDER})
    sr = bootstrap.get("static_resources", {})
    for listener in copy.deepcopy(sr.get("listeners", [])):
        for hcm in _hcms(listener):
            rc = hcm.pop("route_config", None)
            if rc is not None:
                name = f"{listener['name']}|{rc['name']}"
                snap.resources[ROUTE][name] = {**rc, "name": name}
                hcm["rds"] = {"route_config_name": name, "config_source": _ADS}
        snap.resources[LISTENER][listener["name"]] = listener
    for cluster in copy.deepcopy(sr.get("clusters", [])):
        if cluster.get("type") == "STATIC" and "load_assignment" in cluster:
            cla = cluster.pop("load_assignment")
            cluster["type"] = "EDS"
            cluster["eds_cluster_config"] = {"eds_config": _ADS, "service_name": cluster["name"]}
            snap.resources[ENDPOINT][cluster["name"]] = {**cla, "cluster_name": cluster["name"]}
        snap.resources[CLUSTER][cluster["name"]] = cluster
    return snap


def join(snap: Snapshot) -> dict:
    """The inverse of split: static resources with routes and endpoints inline."""
    listeners = []
    for listener in copy.deepcopy(list(snap.resources[LISTENER].values())):
        for hcm in _hcms(listener):
            rds = hcm.pop("rds", None)
            if rds is not None:
                rc = dict(snap.resources[ROUTE][rds["route_config_name"]])
                # The listener's own name may hold `|` (an ingress's `ingress|8080`).
                rc["name"] = rc["name"][len(listener["name"]) + 1:]
                hcm["route_config"] = rc
        listeners.append(listener)
    clusters = []
    for cluster in copy.deepcopy(list(snap.resources[CLUSTER].values())):
        if cluster.get("type") == "EDS" and cluster.get("eds_cluster_config", {}).get("eds_config") == _ADS:
            del cluster["eds_cluster_config"]
            cluster["type"] = "STATIC"
            cluster["load_assignment"] = dict(snap.resources[ENDPOINT][cluster["name"]])
        clusters.append(cluster)
    return {"listeners": listeners, "clusters": clusters}


def xds_bootstrap(static: dict, control_plane: int | str, delta: bool = True) -> dict:
    """What a workload's Envoy starts with under the control plane: its node,
    admin and process settings from the static bootstrap, and only the
    control plane's address (a loopback port, or the path of a Unix socket);
    every listener, route, cluster and endpoint comes over ADS, incremental
    (delta xDS) unless delta is False (state of the world: every response
    carries all resources of its type)."""
    address = ({"pipe": {"path": control_plane}} if isinstance(control_plane, str)
               else {"socket_address": {"address": "127.0.0.1", "port_value": control_plane}})
    out = {k: v for k, v in static.items() if k != "static_resources"}
    out["dynamic_resources"] = {
        "ads_config": {"api_type": "DELTA_GRPC" if delta else "GRPC", "transport_api_version": "V3",
                       "set_node_on_first_message_only": True,
                       "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]},
        "cds_config": _ADS,
        "lds_config": _ADS,
    }
    out["static_resources"] = {"clusters": [{
        "name": XDS_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": address}}]}]},
    }]}
    return out


def snapshots(outputs) -> dict[str, tuple[dict, Snapshot]]:
    """node id -> (its static bootstrap, its snapshot), from the Envoy target's outputs."""
    from ..compile import WAIVED_FILE
    from ..targets.envoy.json_lines import load

    out = {}
    for o in outputs:
        if o.path == WAIVED_FILE:  # what [compile.envoy] waive left out: a note, not a bootstrap
            continue
        static = load(o.content)
        out[static["node"]["id"]] = (static, split(static))
    return out
