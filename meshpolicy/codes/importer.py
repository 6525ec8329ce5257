"""Codes for reading existing Kubernetes, Istio and Gateway API YAML (MP9xx).

Each field the language cannot represent gets a diagnostic naming the
resource and the field (never a silent drop); each approximation says
what was approximated and for which questions it is safe."""

from . import define

CODES = define(
    "import",
    ("MP901", "unreadable-yaml", "error", "a YAML file could not be read",
     "fix the YAML syntax at the place shown (a tab in indentation, an unclosed quote or bracket are the usual causes)"),
    ("MP902", "not-a-resource", "warning", "a YAML document is not a Kubernetes resource (no `apiVersion`/`kind` mapping)",
     "remove the document, or give it `apiVersion`, `kind` and `metadata`"),
    ("MP903", "resource-not-imported", "warning", "a resource of this kind is not imported: the language cannot express it yet",
     "findings do not account for this resource; see docs/import.md for what each kind would need"),
    ("MP904", "field-not-imported", "warning", "a field of an imported resource cannot be expressed and was left out",
     "findings do not account for this field; the message says what was imported instead"),
    ("MP905", "field-approximated", "info", "a field was imported as an approximation",
     "the message says what was approximated and for which questions the approximation is safe"),
    ("MP906", "host-not-found", "error", "a host names no Service in the inputs (istioctl: IST0101)",
     "fix the host name, or add the Service's manifest to the inputs"),
    ("MP907", "subset-not-found", "error", "a route names a subset that no DestinationRule defines for that host: Envoy answers 503 NR (istioctl: IST0101)",
     "define the subset in the host's DestinationRule, or route to a subset that exists"),
    ("MP908", "subset-selects-no-pods", "warning", "a DestinationRule subset's labels select none of the Service's workloads: traffic routed to it fails with 503",
     "fix the subset's labels so they select the version's pods"),
    ("MP909", "conflicting-virtual-services", "warning", "several VirtualServices bound to the mesh define the same host; sidecars use only one of them (istioctl: IST0109)",
     "merge the VirtualServices into one per host"),
    ("MP910", "selector-matches-no-workload", "warning", "a policy's selector matches no workload in the inputs, so it applies to nothing (istioctl: IST0127)",
     "fix the selector's labels, or add the workload's manifest to the inputs"),
    ("MP911", "principal-matches-no-workload", "warning", "an AuthorizationPolicy names a principal or namespace that no workload in the inputs has",
     "fix the name (principals are `<trust domain>/ns/<namespace>/sa/<service account>`), or add the workload"),
    ("MP912", "route-to-other-host", "warning", "a VirtualService routes a host to another host; meshc routes only between versions of one service, so the route is left out",
     "route to the host's own subsets, or call the other service from the application"),
    ("MP913", "plaintext-to-strict-destination", "error", "a DestinationRule turns TLS off towards a destination whose PeerAuthentication is STRICT: every request fails",
     "remove `tls.mode: DISABLE` (use ISTIO_MUTUAL), or make the destination PERMISSIVE"),
    ("MP914", "port-required", "warning", "a route sends to a Service with several ports without naming one (istioctl: IST0112)",
     "set `destination.port.number` on the route"),
    ("MP916", "service-renamed", "info", "two Services share a name in different namespaces; the imported service is named `<namespace>-<name>`",
     "nothing to do; rename in the generated .mesh files if you prefer"),
    ("MP918", "gateway-not-found", "error", "a VirtualService names a gateway that no Gateway in the inputs defines (istioctl: IST0101)",
     "fix the gateway's name (`<namespace>/<name>`, or a name in the VirtualService's namespace), or add the Gateway"),
    ("MP919", "conflicting-sidecars", "warning", "several Sidecar resources apply to the same workloads; Istio's choice between them is undefined (istioctl: IST0110, IST0111)",
     "keep one Sidecar without a selector per namespace, and selectors that do not overlap"),
    ("MP917", "conflicting-policies", "warning", "two workload-level PeerAuthentications select the same workload; Istio uses the oldest",
     "keep one PeerAuthentication per workload"),
)
