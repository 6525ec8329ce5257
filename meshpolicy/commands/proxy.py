"""`meshc proxy`: run the meshproxy sidecar for one workload."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("proxy")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="A workload file from `meshc compile --target meshproxy`.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning")
@click.option("--trace-collector", metavar="URL", default=None,
              help="Report spans of sampled requests there (Zipkin v2 JSON, e.g. "
                   "http://127.0.0.1:9411/api/v2/spans), batched once a second.")
def command(config, log_level, trace_collector):
    """Run meshproxy, meshc's own sidecar, for one workload.

    meshproxy is the embedded default for laptops without Envoy (`meshc up
    --proxy meshproxy`); run Envoy in production. SIGHUP reloads the config
    file (a config that fails validation is refused and the old one keeps
    serving); certificate files are reloaded when they change.

    The same command runs an ingress gateway from its compiled file
    (`<namespace>/<ingress>.json`): it listens on the ingress's listeners.

    \b
    Example:
      meshc proxy --config out/meshproxy/shop/orders/v1.json
      meshc proxy --config out/meshproxy/edge/web.json
    """
    from pydantic import ValidationError

    from ..proxy.main import run
    from ..proxy.tracing import collector_problem

    if trace_collector is not None and collector_problem(trace_collector):
        raise click.UsageError(collector_problem(trace_collector))
    from ..proxy.server import load_config

    try:
        load_config(config)
    except (ValueError, ValidationError, OSError) as exc:
        click.echo(f"meshc proxy: {config} is not a valid meshproxy config: {exc}", err=True)
        sys.exit(2)
    sys.exit(run(config, log_level, trace_collector))
