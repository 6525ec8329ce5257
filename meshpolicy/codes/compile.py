"""Codes shared by every compile target (MP70x). Targets keep their own
codes in codes/compile_<target>.py (MP71x istio, MP72x envoy, MP73x meshproxy)."""

from . import define

CODES = define(
    "compile",
    ("MP701", "unsupported-construct", "error", "the target cannot express a construct of the policy exactly",
     "change the construct to one the target supports (see docs/targets.md), or compile to another target"),
    ("MP702", "invalid-output", "error", "meshc produced output that fails the target's own validation",
     "this is a bug in meshc; please report it with the policy that caused it"),
    ("MP703", "output-not-written", "error", "the output directory could not be written",
     "check that the parent directory exists and is writable"),
)
