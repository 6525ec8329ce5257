"""meshproxy: the project's own small sidecar, running the meshproxy target.

It is the embedded default for laptops without Envoy (`meshc up --proxy
meshproxy`), not a replacement for Envoy in production. Decisions come from
meshpolicy.wire.evaluate, the same reference the tests check
against the policy's semantics.
"""
