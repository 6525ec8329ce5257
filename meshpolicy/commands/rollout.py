"""`meshc rollout`: shift a service's traffic to a new version step by step
on a mesh that `meshc up` runs, each step gated on the new version's metrics."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .common import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, emit


def _option(parse, value, name):
    try:
        return parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


def _fmt(weights: dict | None) -> str:
    return "the policy as written" if weights is None else ", ".join(f"{v} {w:g}%" for v, w in weights.items())


@click.command("rollout")
@click.argument("service")
@click.argument("version")
@click.argument("path", required=False, default=".", type=click.Path())
@click.option("--steps", default="5,25,50,100", show_default=True,
              help="Percentages of the traffic VERSION gets, one step each, increasing.")
@click.option("--every", default="30s", show_default=True, help="How long each step runs before its gate is read.")
@click.option("--gate", default="success >= 99%", show_default=True,
              help='Conditions on VERSION\'s traffic over a step, e.g. "success >= 99%, p99 <= 300ms".')
@click.option("--min-requests", type=click.IntRange(0), default=10, show_default=True,
              help="A step in which fewer requests reached VERSION fails its gate.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The work directory of `meshc up` (default: the mesh's own).")
@click.option("--record", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where the rollout's record goes (JSON; default: rollout/<service>-<time>.json in the workdir).")
@click.option("--no-verify", is_flag=True, help="Check each step but do not verify it.")
def command(service, version, path, steps, every, gate, min_requests, workdir, record, no_verify):
    """Move SERVICE's traffic to VERSION in steps on the mesh that `meshc up`
    runs for PATH (default `.`). Before each step the new weights are checked
    and verified (no new finding, every assertion holds) and the diff is
    printed; then `meshc up` applies them (xDS for Envoy, a reload for
    meshproxy). After --every, the gate is read from VERSION's telemetry over
    the step; a failed gate rolls back to the last good weights and exits 1.

    \b
    Examples:
      meshc rollout reviews v2 examples/bookinfo --steps 10,50,100 --every 30s
      meshc rollout api v2 --gate "success >= 99.5%, p99 <= 300ms" --record rollout.json
    """
    from ..diagnostics import has_errors
    from ..run import rollout
    from ..run.telemetry import sidecars
    from .stat import _workdir, none_answers
    from .up import _checked_mesh

    step_list = _option(rollout.parse_steps, steps, "--steps")
    seconds = _option(rollout.parse_duration, every, "--every")
    conditions = _option(rollout.parse_gate, gate, "--gate")
    if record is not None and not record.parent.is_dir():
        raise click.BadParameter(f"the folder {record.parent} does not exist", param_hint="--record")
    wd = _workdir([path], workdir)
    cars = sidecars(wd)
    if not cars:
        click.echo(f"meshc rollout: no mesh is running from {wd} (start one with `meshc up`)", err=True)
        sys.exit(EXIT_USAGE)
    checked, baseline = _checked_mesh([path], not no_verify)
    if has_errors(baseline):
        emit(baseline, checked.project.files, "text", out=sys.stderr, quiet=True)
        sys.exit(EXIT_USAGE if any(d.code == "MP001" for d in baseline) else EXIT_ERRORS)
    problem = rollout.weights_problem(checked.mesh, service, version, {version: 100.0})
    if problem:
        click.echo(f"meshc rollout: {problem}", err=True)
        sys.exit(EXIT_USAGE)
    config = checked.project.config
    rdir = rollout.rollout_dir(wd)
    record_path = record or rdir / f"{service}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    doc = {"service": service, "version": version, "gate": gate, "every_seconds": seconds,
           "min_requests": min_requests, "started": time.time(), "steps": [], "decision": None, "reason": None}
    seq = first_seq = int(time.time() * 1000)  # `meshc up` answers each override by its seq
    good, good_mesh = None, checked.mesh  # the last weights that passed (None: the policy as written)

    def finish(decision: str, reason: str | None, code: int):
        doc.update(decision=decision, reason=reason, ended=time.time(), last_good_weights=good)
        rollout.write_json(record_path, doc)
        click.echo(f"record: {record_path}")
        sys.exit(code)

    def push(weights):
        nonlocal seq
        if seq == first_seq and none_answers(cars):  # configs left by a stopped `meshc up`
            click.echo(f"meshc rollout: no mesh is running from {wd} (start one with `meshc up`); "
                       "nothing was pushed", err=True)
            sys.exit(EXIT_USAGE)
        seq += 1
        rollout.write_override(wd, seq, service, version, weights)
        return rollout.wait_applied(wd, seq, timeout=60 + 2 * len(cars))

    def roll_back(reason: str, entry: dict):
        click.echo(f"step {entry['percent']:g}%: {reason}")
        answer = push(good)
        back = answer is not None and answer.get("applied")
        click.echo(f"rolled back to {_fmt(good)}" if back else
                   f"could not roll back to {_fmt(good)}: {(answer or {}).get('problem') or 'meshc up did not answer'}",
                   err=not back)
        doc["rolled_back_to"] = good
        finish("rolled back", reason, EXIT_ERRORS)

    def run_steps():
        nonlocal good, good_mesh
        for percent in step_list:
            weights = rollout.step_weights(checked.mesh, service, version, percent)
            entry = {"percent": percent, "weights": weights}
            doc["steps"].append(entry)
            click.echo(f"step {percent:g}%: {_fmt(weights)}")
            step = rollout.check_step(checked, baseline, config, service, version, weights, not no_verify)
            entry["findings"] = [{"code": d.code, "severity": d.severity, "message": d.message} for d in step.new]
            if not step.ok:
                entry["decision"] = "refused"
                if step.new:
                    emit(step.new, checked.project.files, "text", out=sys.stderr, quiet=True)
                click.echo(f"step {percent:g}% refused before anything was pushed: {step.problem}; "
                           f"the mesh keeps {_fmt(good)}", err=True)
                finish("refused", step.problem, EXIT_ERRORS)
            _print_diff(good_mesh, step.mesh)
            entry["pushed_at"] = time.time()
            answer = push(weights)
            if answer is None or not answer.get("applied"):
                why = (answer or {}).get("problem") or "meshc up did not apply the weights in time"
                entry["decision"] = "not applied"
                roll_back(f"not applied: {why}", entry)
            entry["applied_at"] = answer.get("at")
            from ..run.telemetry import scrape, version_row

            before = scrape(cars)
            time.sleep(seconds)
            after = scrape(cars)
            row = version_row(before, after, service, version)
            passed, results, why = rollout.judge(conditions, row, min_requests)
            entry["metrics"] = None if row is None else {
                "requests": row.requests, "rate": round(row.rate, 3), "success": row.success,
                "p50_ms": row.p50_ms, "p95_ms": row.p95_ms, "p99_ms": row.p99_ms}
            entry["window_seconds"] = round(after.at - before.at, 3)
            entry["gate"] = results
            entry["decision"] = "passed" if passed else "failed"
            if not passed:
                roll_back(f"gate failed: {why}", entry)
            click.echo(f"step {percent:g}%: gate passed " + (f"({row.requests} requests, success {row.success:g}%)"
                                                              if row is not None else "(no requests)"))
            good, good_mesh = weights, step.mesh

    try:
        run_steps()
    except KeyboardInterrupt:  # Ctrl-C: back to the last weights that passed, never left half way
        roll_back("interrupted", doc["steps"][-1] if doc["steps"] else {"percent": 0})
    click.echo(f"rollout of {service} {version} complete: {_fmt(good)}. Until the policy says so, "
               "a restart of `meshc up` serves the policy as written.")
    finish("completed", None, EXIT_OK)


def _print_diff(old, new) -> None:
    from ..verify import diff as mdiff
    from ..verify.atoms import Undecided, Unsupported

    try:
        click.echo(mdiff.text(mdiff.diff(old, new)).rstrip())
    except (Unsupported, Undecided) as exc:
        click.echo(f"(cannot compare the step exactly: {exc})")
