"""Triage: what a run reports after meshc.toml's [diagnostics] settings and
the inline `# meshc: ignore[CODE] reason` comments.

Applied once per run, by the pipeline (meshpolicy/pipeline.py), to every
finding of every stage, so text, JSON, SARIF, GitHub annotations and the
language server all see the same result:

- `ignore` (global or per path) drops a finding;
- `severity` (global or per path, per path winning) changes its level;
- a suppression comment on the finding's line, or alone on the line before
  it, marks the finding suppressed (kept for SARIF's `suppressions`, counted
  nowhere else).

Suppression comments are checked in turn: no reason (MP091), an unknown
code (MP092), an error code (MP093), a malformed `# meshc:` comment (MP094),
and a code that suppressed nothing once its stage ran (MP090).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from .codes import catalogue, diag
from .diagnostics import Diagnostic, Severity
from .span import Span

# The stages a command runs: a suppression is only "unused" once its code's stage has run.
CHECK_STAGES = frozenset({"syntax", "check", "triage"})
VERIFY_STAGES = frozenset({"verify"})


def compile_stages(target: str) -> frozenset[str]:
    return frozenset({"compile", f"compile-{target}"})

_DIRECTIVE = re.compile(r"#\s*meshc\s*:")
_SUPPRESSION = re.compile(r"#\s*meshc\s*:\s*ignore\s*\[(?P<codes>[^\]]*)\](?P<reason>.*)", re.S)
_CODE = re.compile(r"MP\d{3}")


@dataclass
class Suppression:
    span: Span
    own_line: bool  # alone on its line: it also covers the next line
    codes: list[str]
    reason: str
    used: set[str] = field(default_factory=set)
    reported: set[str] = field(default_factory=set)  # codes already reported unused

    def covers(self, line: int) -> bool:
        return line == self.span.line or (self.own_line and line == self.span.line + 1)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex over `/`-separated relative paths: `*` and `?`
    stay within one folder, `**` crosses folders (`legacy/**` is everything
    below legacy, `**/x.mesh` an x.mesh at any depth)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.S)


class Triage:
    def __init__(self, config: dict[str, Any], root: Path, comments: dict[str, Iterable[Any]]):
        """comments: display path -> the lexer's comments of that file."""
        settings = config.get("diagnostics") or {}
        self.root = root
        self.ignore = set(settings.get("ignore", ()))
        self.severity = dict(settings.get("severity", {}))
        self.per_path = [([glob_regex(p) for p in r["paths"]], set(r["ignore"]), dict(r["severity"]))
                         for r in settings.get("per-path", ())]
        self.suppressions: dict[str, list[Suppression]] = {}
        self.problems: list[Diagnostic] = []
        self.stages: set[str] = set()
        self._relative: dict[str, str | None] = {}
        for path, found in comments.items():
            for c in found:
                self._read(path, c)

    # ---- suppression comments -----------------------------------------------------------

    def _read(self, path: str, c: Any) -> None:
        text = re.split(r"\r|\n", c.text, maxsplit=1)[0]  # a lone CR ends a line too
        if not _DIRECTIVE.match(text):
            return
        span = Span(path, c.line, c.col, c.line, c.col + len(text), c.start, c.start + len(text))
        m = _SUPPRESSION.fullmatch(text)
        names = [x for x in re.split(r"[\s,]+", m.group("codes")) if x] if m else []
        if m is None or not names:
            self.problems.append(diag("MP094", f"`{text.strip()}` is not a suppression meshc understands", span))
            return
        cat = catalogue()
        codes = []
        for name in names:
            code = name.upper()
            if not _CODE.fullmatch(code) or code not in cat:
                self.problems.append(diag("MP092", f"`{name}` in this suppression is not a diagnostic code", span))
            elif cat[code].severity is Severity.ERROR:
                self.problems.append(diag("MP093", f"`{code}` ({cat[code].name}) is an error and cannot be "
                                                   "suppressed", span))
            else:
                codes.append(code)
        # ` # ` ends the reason: another comment may follow on the line
        reason = re.split(r"\s#(?:\s|$)", m.group("reason"), maxsplit=1)[0].strip().lstrip(":-\u2014 ").strip()
        if not reason:
            self.problems.append(diag("MP091", f"the suppression of {', '.join(names)} gives no reason", span))
        if codes:
            self.suppressions.setdefault(path, []).append(Suppression(span, c.own_line, codes, reason))

    def _suppression(self, d: Diagnostic) -> Suppression | None:
        if d.span is None or d.span.line <= 0:
            return None
        for s in self.suppressions.get(d.span.file, ()):
            if d.code in s.codes and s.covers(d.span.line):
                return s
        return None

    # ---- meshc.toml settings -------------------------------------------------------------

    def _relpath(self, file: str) -> str | None:
        """A finding's file relative to the mesh root, as per-path globs see it."""
        if file not in self._relative:
            try:
                rel = Path(os.path.abspath(file)).relative_to(Path(os.path.abspath(self.root))).as_posix()
            except ValueError:
                rel = None
            self._relative[file] = rel
        return self._relative[file]

    def _configured(self, d: Diagnostic) -> Diagnostic | None:
        """d after the [diagnostics] settings: None when ignored."""
        ignore, severity = self.ignore, self.severity
        rel = self._relpath(d.span.file) if self.per_path and d.span is not None and d.span.file else None
        if rel is not None:
            for globs, more_ignore, more_severity in self.per_path:
                if any(g.fullmatch(rel) for g in globs):
                    ignore = ignore | more_ignore
                    severity = {**severity, **more_severity}
        if d.code in ignore:
            return None
        level = severity.get(d.code)
        if level is not None and level != d.severity.value:
            return replace(d, severity=Severity(level))
        return d

    # ---- the run -------------------------------------------------------------------------

    def apply(self, diags: Iterable[Diagnostic], stages: Iterable[str]) -> list[Diagnostic]:
        """diags of the given stages, triaged; the first call also reports the
        suppression comments' own problems, and every call the suppressions
        whose stage has now run without them being used."""
        first = not self.stages
        self.stages |= set(stages)
        out: list[Diagnostic] = []
        extra = list(self.problems) if first else []
        for d in [*diags, *extra]:
            d = self._configured(d)
            if d is None:
                continue
            s = self._suppression(d) if self.suppressions and d.code not in _triage_codes() else None
            if s is not None:
                s.used.add(d.code)
                d = replace(d, suppressed=s.reason)
            out.append(d)
        if not self.suppressions:  # the common case; the catalogue costs ~20 ms to load
            return out
        cat = catalogue()
        for found in self.suppressions.values():
            for s in found:
                for code in s.codes:
                    if code in s.used or code in s.reported or cat[code].stage not in self.stages:
                        continue
                    s.reported.add(code)
                    unused = self._configured(diag("MP090", f"nothing here is reported as {code} "
                                                            f"({cat[code].name}); the suppression is unused", s.span))
                    if unused is not None:
                        out.append(unused)
        return out


@lru_cache(maxsize=1)
def _triage_codes() -> frozenset[str]:
    """Triage's own codes: a suppression comment cannot silence the checks on suppressions."""
    return frozenset(c for c, i in catalogue().items() if i.stage == "triage")
