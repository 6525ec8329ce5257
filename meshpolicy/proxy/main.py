"""`python -m meshpolicy.proxy.main --config WORKLOAD.json` (what `meshc proxy` runs).

The same command runs a sidecar or an ingress gateway: an ingress
workload's config (`meshc compile --target meshproxy` writes
`<namespace>/<ingress>.json`) starts its listeners instead of inbound ones.
A config it will not run (unreadable, format version 1, invalid) is one
error line and exit status 2."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from .server import ConfigError, Proxy, load_config


async def serve(config_path: Path, ready_file: Path | None = None, trace_collector: str | None = None) -> None:
    proxy = Proxy(load_config(config_path), config_path, trace_collector)
    await proxy.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, proxy.reload)
    if ready_file:
        ready_file.write_text("ready\n")
    logging.getLogger("meshproxy").info("serving %s", proxy.cfg["workload"]["service"])
    await stop.wait()
    await proxy.stop()


def run(config_path: Path, log_level: str = "warning", trace_collector: str | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=log_level.upper(), format="meshproxy %(levelname)s %(message)s")
    try:
        import uvloop  # optional: faster event loop when installed

        uvloop.install()
    except ImportError:
        pass
    try:
        load_config(config_path)  # refused before anything listens: one line, exit 2
    except ConfigError as exc:
        logging.getLogger("meshproxy").error("%s", exc)
        return 2
    asyncio.run(serve(config_path, trace_collector=trace_collector))
    return 0


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="meshproxy")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--log-level", default="warning")
    p.add_argument("--trace-collector", default=None, metavar="URL",
                   help="report spans there (Zipkin v2 JSON, e.g. http://127.0.0.1:9411/api/v2/spans)")
    a = p.parse_args()
    if a.trace_collector is not None:
        from .tracing import collector_problem

        if collector_problem(a.trace_collector):
            p.error(collector_problem(a.trace_collector))
    sys.exit(run(a.config, a.log_level, a.trace_collector))
