"""meshc's control plane for local meshes: the Envoy target's configuration
served over xDS (ADS) instead of written as static files (docs/up.md)."""
