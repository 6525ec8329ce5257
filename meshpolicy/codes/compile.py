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
    ("MP704", "output-folder-not-meshcs", "error",
     "the output directory holds files meshc did not write, which replacing it would delete",
     "write to a new or empty folder, or pass --force to replace it anyway"),
    ("MP705", "output-path-unusable", "error", "the output path is not a directory (a file, or a symlink loop)",
     "give --output a directory, or a path where one can be created"),
)
