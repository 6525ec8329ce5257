"""meshc.toml: the settings meshc knows, checked before anything reads them.

Bad values are reported (MP012) and dropped, unknown keys reported (MP013),
so every later reader sees only well-typed settings. Target tables under
[compile.<target>] are checked by their targets, which know their keys,
except `waive`, which every target reads (targets/waivers.py).
"""

from __future__ import annotations

import re
import reprlib
from typing import Any, Callable

from .codes import diag
from .diagnostics import Diagnostic
from .span import SourceFile
from .targets import TARGETS  # the target registry: [compile.<name>] tables

Check = Callable[[Any], str | None]  # returns a problem, or None when fine


_LIFETIME = re.compile(r"([0-9]+)(m|h|d)")


def _lifetime(v: Any) -> int | None:
    """`30m`, `1h`, `7d` in seconds, between a minute and a year; else None."""
    m = _LIFETIME.fullmatch(v) if isinstance(v, str) else None
    if m is None:
        return None
    seconds = int(m[1]) * {"m": 60, "h": 3600, "d": 86400}[m[2]]
    return seconds if 60 <= seconds <= 365 * 86400 else None


def _number(lo: float, hi: float | None = None, integer: bool = False) -> Check:
    def check(v: Any) -> str | None:
        ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type:
            return f"must be {'a whole number' if integer else 'a number'}, not {_shown(v)}"
        if v < lo or (hi is not None and v > hi):
            return f"must be between {lo:g} and {hi:g}" if hi is not None else f"must be at least {lo:g}"
        return None

    return check


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, not {_shown(v)}"


VERIFY: dict[str, Check] = {
    "sidecar_ms": _number(0, 60_000),
    "sidecars_per_hop": _number(0, 16, integer=True),
    "max_amplification": _number(1),
    "timeout_ms": _number(1, 3_600_000, integer=True),
    "box_limit": _number(0, integer=True),
    "verbose": _bool,
    "max_rules_per_destination": _number(1, integer=True),  # past it: MP507, the destination is not proved
    "max_seconds": _number(1, 86_400),  # past it: MP508, the rest is not proved
}


def _command(v: Any) -> str | None:
    if isinstance(v, str) and v.strip():
        return None
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return None
    return f"must be a command line (a string, or a list of strings), not {_shown(v)}"


def _span_of_key(src: SourceFile | None, table: str | None, key: str | None):
    """Where a table header or key is written (tomllib keeps no positions)."""
    if src is None:
        return None
    quoted = None if key is None else re.escape(key)
    pattern = (rf"^\s*\[\[?\s*{re.escape(table)}\s*\]" if key is None
               else rf"^\s*(?:{quoted}|\"{quoted}\"|'{quoted}')\s*=")  # a bare or quoted key
    in_table = table is None or key is None
    for i, line in enumerate(src.text.splitlines(), 1):
        if key is not None and table is not None and re.match(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]", line):
            in_table = True
            continue
        if key is not None and table is not None and in_table and re.match(r"^\s*\[", line):
            in_table = False
        if in_table and re.match(pattern, line):
            start = src.offset(i, 1)
            return src.span(start, start + len(line))
    return None


# No setting nests deeper than a few tables; a deeper value is a mistake or an
# attack on the recursive code that would read it.
MAX_DEPTH = 32


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether value nests tables or arrays past limit (walked without recursion)."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
    return False


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlevel = 60, 60, 3


def _shown(v: Any) -> str:
    """A bad value in a message: short, however large or deep it is."""
    return _REPR.repr(v)


def _waivers(target: str, table: dict, src: SourceFile | None, where: str, diags: list[Diagnostic]) -> dict:
    """[compile.<target>] with `waive` checked (targets/waivers.py): bad
    names are reported and dropped; the rest of the table is the target's."""
    if "waive" not in table:
        return table
    from .targets.waivers import check

    kept, problems = check(table["waive"], f"[compile.{target}] of {where}")
    span = _span_of_key(src, f"compile.{target}", "waive")
    for code, _name, message in problems:
        diags.append(diag(code, message, span))
    return {**table, "waive": list(kept)}


def check_config(raw: dict[str, Any], src: SourceFile | None) -> tuple[dict[str, Any], list[Diagnostic]]:
    diags: list[Diagnostic] = []
    out: dict[str, Any] = {}
    where = src.path if src else "meshc.toml"

    def bad(table, key, problem):
        diags.append(diag("MP012", f"`{table}.{key}` in {where} {problem}" if key else f"[{table}] in {where} {problem}",
                          _span_of_key(src, table, key)))

    def unknown(table, key):
        name = f"`{key}` in [{table}]" if table else f"[{key}]"
        diags.append(diag("MP013", f"{where} has an unknown setting {name}; it is ignored",
                          _span_of_key(src, table if table else key, key if table else None)))

    for top, value in raw.items():
        if too_deep(value):
            bad(top, None, f"nests tables or arrays more than {MAX_DEPTH} levels deep; it is ignored")
            continue
        if top == "verify":
            if not isinstance(value, dict):
                bad("verify", None, "must be a table")
                continue
            kept = {}
            for k, v in value.items():
                if k not in VERIFY:
                    unknown("verify", k)
                elif (problem := VERIFY[k](v)) is not None:
                    bad("verify", k, problem)
                else:
                    kept[k] = v
            out["verify"] = kept
        elif top == "compile":
            if not isinstance(value, dict):
                bad("compile", None, "must be a table")
                continue
            kept = {}
            for k, v in value.items():
                if k not in TARGETS:
                    unknown("compile", k)
                elif not isinstance(v, dict):
                    bad(f"compile.{k}", None, "must be a table")
                else:
                    kept[k] = _waivers(k, v, src, where, diags)
            out["compile"] = kept
        elif top == "up":
            if not isinstance(value, dict):
                bad("up", None, "must be a table")
                continue
            apps, up = {}, {}
            for k, v in value.items():
                if k == "xds":  # Envoy under meshc's control plane (default) or on static files
                    if isinstance(v, bool):
                        up["xds"] = v
                    else:
                        bad("up", "xds", f"must be true or false, not {v!r}")
                elif k == "envoy_concurrency":  # Envoy sidecars' worker threads (docs/up.md, "Envoy worker threads")
                    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 256):
                        up["envoy_concurrency"] = v
                    else:
                        bad("up", "envoy_concurrency",
                            f"must be a whole number from 1 to 256 or \"auto\", not {_shown(v)}")
                elif k == "replicas":  # instances per version (docs/up.md, "Instances")
                    up["replicas"] = _replicas(v, bad)
                elif k == "cert_lifetime":  # workload certificates of `meshc up`, renewed at 2/3 of it
                    seconds = _lifetime(v)
                    if seconds is None:
                        bad("up", "cert_lifetime", f"must be a duration from 1m to 365d like \"1h\", not {v!r}")
                    else:
                        up["cert_lifetime_s"] = seconds
                elif k != "apps":
                    unknown("up", k)
                elif not isinstance(v, dict):
                    bad("up.apps", None, "must be a table of `[up.apps.<service>]` tables")
                else:
                    for svc, spec in v.items():
                        if not isinstance(spec, dict):
                            bad(f"up.apps.{svc}", None, "must be a table with a `command`")
                            continue
                        for key in spec:
                            if key != "command":
                                unknown(f"up.apps.{svc}", key)
                        problem = _command(spec.get("command"))
                        if problem:
                            bad(f"up.apps.{svc}", "command", problem)
                        else:
                            apps[svc] = {"command": spec["command"]}
            out["up"] = {"apps": apps, **up}
        elif top == "limits":  # input bounds (docs/language.md, "meshc.toml")
            if not isinstance(value, dict):
                bad("limits", None, "must be a table")
                continue
            kept = {}
            for k, v in value.items():
                if k != "max_file_mb":
                    unknown("limits", k)
                elif (problem := _number(0.001, 1000)(v)) is not None:
                    bad("limits", k, problem)
                else:
                    kept[k] = v
            out["limits"] = kept
        elif top == "diagnostics":
            if not isinstance(value, dict):
                bad("diagnostics", None, "must be a table")
                continue
            out["diagnostics"] = _diagnostics(value, bad, unknown)
        else:
            unknown(None, top)
    return out, diags


_REPLICA_KEY = re.compile(r"default|[A-Za-z_][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*(/[A-Za-z_][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*)?")


def _replicas(v: Any, bad) -> dict[str, int]:
    """[up] replicas: a count for every version (`replicas = 3`), or a table of
    `default`, `"<service>"` and `"<service>/<version>"` counts (the most
    specific wins; targets/port_layout.py reads this shape). A bad entry is
    reported and dropped; whether the names exist is checked against the mesh
    by `meshc up` (run/up.py `replicas`)."""
    from .targets.port_layout import MAX_REPLICAS

    def count(key: str, n: Any) -> bool:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_REPLICAS:
            bad("up" if key == "replicas" else "up.replicas", key,
                f"must be a whole number of instances from 1 to {MAX_REPLICAS}, not {_shown(n)}")
            return False
        return True

    if not isinstance(v, dict):
        return {"default": v} if count("replicas", v) else {}
    kept = {}
    for key, n in v.items():
        if not _REPLICA_KEY.fullmatch(key):
            bad("up.replicas", key, "is not `default`, a service name or `<service>/<version>`")
        elif count(key, n):
            kept[key] = n
    return kept


SEVERITIES = {"error": "error", "warning": "warning", "info": "info", "note": "info"}


def _diagnostics(value: dict[str, Any], bad, unknown) -> dict[str, Any]:
    """[diagnostics]: `ignore` (codes), `severity` (code -> level) and
    [[diagnostics.per-path]] tables that add both for files matching `paths`
    (globs relative to the mesh root). A code that is an error by definition
    can be neither ignored nor lowered: the later stages rely on its absence."""
    from .codes import catalogue

    cat = catalogue()

    def codes(table: str, v: Any) -> list[str]:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            bad(table, "ignore", f"must be a list of codes such as [\"MP552\"], not {_shown(v)}")
            return []
        kept = []
        for code in v:
            if code not in cat:
                bad(table, "ignore", f"names `{code}`, which is not a diagnostic code")
            elif cat[code].severity.value == "error":
                bad(table, "ignore", f"names `{code}`, an error; errors cannot be ignored")
            else:
                kept.append(code)
        return kept

    def levels(table: str, v: Any) -> dict[str, str]:
        if not isinstance(v, dict):
            bad(table, "severity", f"must be a table of code = \"error\"|\"warning\"|\"info\", not {_shown(v)}")
            return {}
        kept = {}
        for code, level in v.items():
            if code not in cat:
                bad(table, "severity", f"names `{code}`, which is not a diagnostic code")
            elif not isinstance(level, str) or level not in SEVERITIES:
                bad(table, "severity", f"sets `{code}` to {_shown(level)}; use \"error\", \"warning\" or \"info\"")
            elif cat[code].severity.value == "error" and SEVERITIES[level] != "error":
                bad(table, "severity", f"lowers `{code}`, an error; errors cannot be lowered")
            else:
                kept[code] = SEVERITIES[level]
        return kept

    out: dict[str, Any] = {"ignore": [], "severity": {}, "per-path": []}
    for k, v in value.items():
        if k == "ignore":
            out["ignore"] = codes("diagnostics", v)
        elif k == "severity":
            out["severity"] = levels("diagnostics", v)
        elif k == "per-path":
            if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
                bad("diagnostics", "per-path", "must be [[diagnostics.per-path]] tables")
                continue
            for entry in v:
                paths = entry.get("paths")
                if not (isinstance(paths, list) and paths and all(isinstance(x, str) and x for x in paths)):
                    bad("diagnostics.per-path", "paths", f"must be a non-empty list of globs, not {_shown(paths)}")
                    continue
                rule = {"paths": paths, "ignore": [], "severity": {}}
                for key, sub in entry.items():
                    if key == "ignore":
                        rule["ignore"] = codes("diagnostics.per-path", sub)
                    elif key == "severity":
                        rule["severity"] = levels("diagnostics.per-path", sub)
                    elif key != "paths":
                        unknown("diagnostics.per-path", key)
                out["per-path"].append(rule)
        else:
            unknown("diagnostics", k)
    return out
