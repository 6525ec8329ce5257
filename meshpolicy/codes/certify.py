"""Codes of the independent certifier, `meshc verify --certify` (MP590-MP599)."""

from . import define

CODES = define(
    "certify",
    ("MP590", "certifier-disagrees", "error",
     "internal error: the independent Z3 certifier disagrees with a verifier finding or verdict",
     "this is a meshc bug, not a policy problem: report it with the request in the message; the finding it names cannot be trusted"),
    ("MP591", "not-certified", "warning",
     "a finding or verdict was not certified: the certifier's solver gave up, or a pattern uses a construct it does not encode",
     "raise --timeout-ms, or simplify the regex named in the message; the verifier's answer stands but was not re-checked"),
)
