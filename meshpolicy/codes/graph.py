"""Codes for call-graph and mTLS findings of `meshc verify` (MP55x, MP56x)."""

from . import define

CODES = define(
    "verify",
    ("MP551", "call-cycle", "warning", "services may call each other in a cycle",
     "a request can loop through these services; break the cycle in the allow rules, or make sure the calls cannot recurse"),
    ("MP552", "retry-amplification", "warning", "retries multiply along a call path beyond the configured limit",
     "lower retries on the inner hops (retry only at one layer), or raise `max_amplification` in meshc.toml [verify]"),
    ("MP553", "timeout-inversion", "warning", "a caller gives up before its callee's own downstream call can finish",
     "make each hop's timeout longer than the worst case of the calls it waits for, or shorten the inner timeouts"),
    ("MP554", "isolated-service", "warning", "a service may call nobody and nobody may call it",
     "add allow rules for the calls it takes part in, or remove the service"),
    ("MP561", "strict-without-identity", "warning", "a rule lets callers without an identity call a service that requires mTLS",
     "strict mTLS refuses callers without a mesh certificate before authorization runs; use `permissive` for such callers, or drop them from the rule"),
    ("MP562", "identity-without-mtls", "error", "a rule names callers by identity on a service whose mTLS is off, so it can never match",
     "turn mTLS on (`mtls strict` or `permissive`) for the service, or write the rule for `*`"),
    ("MP563", "permissive-in-strict-mesh", "warning", "a service accepts plaintext in a mesh that declares strict mTLS",
     "remove the service's `mtls permissive` once all its callers have sidecars"),
)
