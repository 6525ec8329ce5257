"""A jwt provider's JWKS as every reader gets it: the checker (MP223), the
Istio, Envoy and meshproxy targets. One reading, so a file one of them
accepts is never refused by another.

The keys are the text the input held inline (a policy read from Istio YAML,
whose RequestAuthentication may carry `jwks` itself) or else the provider's
`jwks` file, resolved against the directory of the .mesh file that names it,
read only when it is a regular file (a FIFO or a device would block or never
end) of at most MAX_JWKS_BYTES (a JWKS holds a few keys)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .types import JwtProvider, declared_path

MAX_JWKS_BYTES = 1 << 20


def jwks_path(p: JwtProvider) -> Path:
    """The provider's `jwks` file as a reader opens it."""
    return Path(declared_path(p.file, p.jwks_file or ""))


def jwks_label(p: JwtProvider) -> str:
    """How messages name where the keys come from."""
    return f"JWKS file `{jwks_path(p)}`" if p.jwks_text is None else "inline JWKS"


def read_jwks_file(path: Path) -> tuple[str | None, str | None]:
    """(the file's text, None) or (None, why it cannot be used)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return None, "is not a regular file"
    if st.st_size > MAX_JWKS_BYTES:
        return None, f"is {st.st_size} bytes, over the {MAX_JWKS_BYTES} bytes a JWKS may have"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    if len(data) > MAX_JWKS_BYTES:
        return None, f"is over the {MAX_JWKS_BYTES} bytes a JWKS may have"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"


def jwks_text(p: JwtProvider) -> tuple[str | None, str | None]:
    """(the provider's JWKS text, None) or (None, why there is none to use).
    A provider with `jwks_uri` has no text here (fetched at run time)."""
    if p.jwks_text is not None:
        if len(p.jwks_text.encode("utf-8")) > MAX_JWKS_BYTES:
            return None, f"is over the {MAX_JWKS_BYTES} bytes a JWKS may have"
        return p.jwks_text, None
    if p.jwks_file is None:
        return None, "is not declared"
    return read_jwks_file(jwks_path(p))


def usable_jwks(p: JwtProvider) -> tuple[str | None, str | None]:
    """(the JWKS text, None) when it holds a key the validators use, else
    (None, why not) worded to follow "the JWKS file `x` of jwt provider `p` ..."."""
    from ..wire.jwks import jwks_problem  # the validators' own reading of a JWKS

    text, problem = jwks_text(p)
    if text is None:
        return None, problem
    problem = jwks_problem(text)  # "not JSON ...", "not a JWKS ...", "no RSA, EC or OKP ..."
    if problem is not None:
        return None, ("has " if problem.startswith("no ") else "is ") + problem
    return text, None
