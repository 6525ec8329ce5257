"""The target registry: one module (or package) per compile target, named
here. A target's module is `meshpolicy.targets.<module>` exposing TARGET;
its pack is the top-level folder targets/<name>/ (manifest.yaml, templates,
defaults). docs/targets.md, "Adding a target", walks through a new one.

Kept free of imports: `meshc` reads the names to offer `--target` choices
without loading any target.
"""

# name -> module under meshpolicy.targets (a name may hold `-`, a module may not)
REGISTRY: dict[str, str] = {
    "istio": "istio",
    "envoy": "envoy",
    "meshproxy": "meshproxy",
    "gateway-api": "gateway_api",
    "linkerd": "linkerd",
}

TARGETS: tuple[str, ...] = tuple(REGISTRY)
