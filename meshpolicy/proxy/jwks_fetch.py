"""Remote JWKS (`jwks_uri`): fetched by the proxy over HTTPS when it starts
and every REFRESH_SECONDS after (RETRY_SECONDS after a failure), as Istio's
and Envoy's remote JWKS are.

Until a fetch succeeds the provider has no keys, so its tokens are refused
(401 where tokens are checked): the proxy still starts, with the failure
logged, rather than letting tokens through unchecked or waiting forever.
The server's certificate is verified for the URL's host against the system
store, or the config's `egress.ca_file` (a local stand-in for `meshc up`);
the answer is bounded (MAX_BYTES, FETCH_TIMEOUT) and must be a JWKS with a
key meshproxy verifies with (wire/jwks.py), else the old keys are kept.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from ..wire.jwks import jwks_problem
from .jwt_verify import Verifier, load_keys

log = logging.getLogger("meshproxy")

FETCH_TIMEOUT = 5.0
MAX_BYTES = 1 << 20
REFRESH_SECONDS = 300.0
RETRY_SECONDS = 10.0


class FetchError(Exception):
    pass


async def fetch_jwks(uri: str, ctx: ssl.SSLContext, timeout: float = FETCH_TIMEOUT) -> str:
    """The JWKS text at an https URL, or FetchError saying why not."""
    import aiohttp

    if not uri.startswith("https://"):
        raise FetchError(f"{uri}: not an https URL")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(uri, ssl=ctx, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise FetchError(f"{uri}: status {resp.status}")
                body = b""
                while len(body) <= MAX_BYTES and (chunk := await resp.content.read(MAX_BYTES + 1 - len(body))):
                    body += chunk
    except (aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError, OSError) as exc:
        raise FetchError(f"{uri}: {type(exc).__name__}: {exc}") from None
    if len(body) > MAX_BYTES:
        raise FetchError(f"{uri}: larger than {MAX_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FetchError(f"{uri}: not UTF-8") from None
    problem = jwks_problem(text)
    if problem:
        raise FetchError(f"{uri}: {problem}")
    return text


async def refresh_once(verifier: Verifier | None, uri: str, ctx: ssl.SSLContext,
                       timeout: float = FETCH_TIMEOUT) -> bool:
    """Fetch and install the keys; False (old keys kept, logged) on failure."""
    if verifier is None:
        return False
    try:
        text = await fetch_jwks(uri, ctx, timeout)
    except FetchError as exc:
        log.error("jwt provider `%s`: JWKS fetch failed: %s", verifier.name, exc)
        return False
    verifier.set_keys(load_keys(text))
    return True


async def keep_fresh(current: Callable[[], Verifier | None], uri: str, ctx: ssl.SSLContext,
                     fetched: bool | None) -> None:
    """The background refresh loop (cancelled when the proxy stops or the
    provider leaves the config). current: the provider's verifier now (a
    reloaded config makes new ones); fetched None: fetch at once first."""
    if fetched is None:
        fetched = await refresh_once(current(), uri, ctx)
    while True:
        await asyncio.sleep(REFRESH_SECONDS if fetched else RETRY_SECONDS)
        fetched = await refresh_once(current(), uri, ctx)
