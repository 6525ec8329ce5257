"""How complex a regex may be: the size of its compiled RE2 program.

Envoy refuses a regex whose program is larger than its runtime value
`re2.max_program_size.error_level`: 100 by default, which refuses ordinary
route regexes (`^/api/v[0-9]+/(users|orders)/[a-z0-9-]{1,64}$` is about 290).
Istio's sidecars run with 32768, and so do meshc's Envoy configs
(targets/envoy/runtime.py); the checker refuses a policy regex above it
(MP215), so no target is handed a regex its proxies would refuse."""

from __future__ import annotations

RE2_PROGRAM_SIZE_LIMIT = 32768
RUNTIME_KEY = "re2.max_program_size.error_level"


def program_size(pattern: str) -> int | None:
    """The RE2 program size of pattern, or None when it does not compile."""
    import re2

    opts = re2.Options()
    opts.log_errors = False
    try:
        return int(re2.compile(pattern, opts).programsize)
    except re2.error:
        return None
