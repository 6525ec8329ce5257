"""The one written meaning of a policy (docs/semantics.md), as code.

The verifier's encodings, the targets' lowerings and the conformance tests
all agree with `evaluate`; tests compare every one of them against it.
"""

from .evaluate import (INVALID_TOKEN, Decision, Outcome, Request, RouteResult, Token, authorize,  # noqa: F401
                       evaluate, route)
from .patterns import glob_regex, header_matches, path_matches  # noqa: F401
