"""The runtime every meshc Envoy starts with (the bootstrap's
`layered_runtime`): one static layer. No admin layer: `/runtime_modify` on
the admin port would let anything that reaches it (any local user, under
`meshc up`) change runtime values, security-relevant features among them.

The static layer raises `re2.max_program_size.error_level` from Envoy's
default 100, which refuses ordinary route regexes, to the 32768 Istio's
sidecars run with and the checker holds policy regexes to (MP215,
semantics/regex_size.py). `[compile.envoy] runtime` adds or overrides
values, as Istio's ProxyConfig `runtimeValues` does: set a lower regex limit
there and a larger regex is refused by Envoy itself (`meshc up` reports it
as MP780 at the rule)."""

from __future__ import annotations

from ...semantics.regex_size import RE2_PROGRAM_SIZE_LIMIT, RUNTIME_KEY


def layered_runtime(overrides: tuple[tuple[str, object], ...]) -> dict:
    static = {RUNTIME_KEY: RE2_PROGRAM_SIZE_LIMIT, **dict(overrides)}
    return {"layers": [{"name": "meshc", "static_layer": static}]}
