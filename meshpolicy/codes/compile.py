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
    ("MP706", "construct-waived", "warning",
     "a construct the target cannot express is waived in meshc.toml: this use of it is not in the output",
     "keep the waiver only if the mesh may run without it (docs/targets.md, \"Waivers\"), or compile to a "
     "target that expresses it"),
    ("MP707", "waiver-refused", "error",
     "`waive` in meshc.toml names a construct that cannot be waived: security (its loss could let through a "
     "request the policy refuses) or routing (its loss could send a request elsewhere)",
     "remove it from `waive`; change the policy or compile to a target that expresses it"),
    ("MP708", "unknown-waiver", "error", "`waive` in meshc.toml names something that is not a construct",
     "use the construct names of docs/targets.md (e.g. \"retry-budget\", \"fault-delay\")"),
    ("MP709", "needless-waiver", "warning",
     "a waived construct is expressed by the target anyway, or not used by the policy: the waiver does nothing",
     "remove it from `waive`, so that a later use of the construct is reviewed again"),
)
