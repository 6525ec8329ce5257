"""SARIF 2.1.0 (`--format sarif`), for GitHub code scanning and other SARIF viewers.

One run, tool `meshc`, with rule metadata for every catalogued code (not only
the ones found), so viewers can explain a code and a clean run still says what
was checked. Locations are relative to a base (`%SRCROOT%`: the git top-level
above the files, else their mesh root) so results line up with the repository
wherever the command ran. Columns are UTF-16 code units, SARIF's default and
what GitHub expects, converted from the code-point columns of spans.
"""

from __future__ import annotations

import urllib.parse

import hashlib
import json
from pathlib import Path
from typing import Any, TextIO

from .. import __version__
from ..codes import CodeInfo, catalogue, doc_url
from ..diagnostics import Diagnostic, Fix, Severity
from ..span import SourceFile, Span

# Snippets (optional in SARIF) longer than this are left out: a long line quoted in
# every finding on it made a 200 KB file's report several MB.
MAX_SNIPPET = 4000

SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://meshpolicy.dev"
SRCROOT = "%SRCROOT%"
LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def rule_descriptor(info: CodeInfo) -> dict[str, Any]:
    summary = _sentence(info.summary)
    help_ = _sentence(info.help)
    return {
        "id": info.code,
        "name": info.name,
        "shortDescription": {"text": summary},
        "fullDescription": {"text": f"{summary} {help_}"},
        "help": {
            "text": help_,
            "markdown": f"**{info.code} {info.name}**: {summary}\n\n{help_}",
        },
        "helpUri": doc_url(info.code),
        "defaultConfiguration": {"level": LEVELS[info.severity]},
        "properties": {"stage": info.stage, "tags": [info.stage]},
    }


def _sentence(s: str) -> str:
    s = s.strip()
    s = s[:1].upper() + s[1:]
    return s if s.endswith((".", "!", "?")) else s + "."


class _Locator:
    """Maps display paths to SARIF artifact locations and spans to regions."""

    def __init__(self, sources: dict[str, SourceFile], diags: list[Diagnostic]):
        self.sources = sources
        files = [s.file for d in diags for s in _spans(d)]
        first = next(iter(files), None) or next(iter(sources), None)
        self.base = _base_dir(Path(first)) if first else None

    def artifact(self, file: str) -> dict[str, Any]:
        path = Path(file).resolve()
        if self.base is not None:
            try:
                # a URI reference: `%`, `#`, spaces and the like must be percent-encoded
                rel = urllib.parse.quote(path.relative_to(self.base).as_posix(), safe="/")
                return {"uri": rel, "uriBaseId": SRCROOT}
            except ValueError:
                pass
        return {"uri": path.as_uri()}

    def region(self, span: Span, snippet: bool = True) -> dict[str, Any]:
        src = self.sources.get(span.file)
        if src is None:  # no text to convert columns with; ASCII assumption is the best we can do
            return {"startLine": span.line, "startColumn": span.col,
                    "endLine": span.end_line, "endColumn": span.end_col}
        region: dict[str, Any] = {
            "startLine": span.line,
            "startColumn": src.utf16_col(span.line, span.col) + 1,
            "endLine": span.end_line,
            "endColumn": src.utf16_col(span.end_line, span.end_col) + 1,
        }
        if snippet and span.end - span.start <= MAX_SNIPPET:
            region["snippet"] = {"text": src.text[span.start:span.end]}
        return region

    def context(self, span: Span) -> dict[str, Any] | None:
        src = self.sources.get(span.file)
        if src is None:
            return None
        last = max(span.line, span.end_line)
        text = "\n".join(src.line_text(n) for n in range(span.line, last + 1))
        if len(text) > MAX_SNIPPET:
            return None
        return {"startLine": span.line, "endLine": last, "snippet": {"text": text}}

    def physical(self, span: Span) -> dict[str, Any]:
        out: dict[str, Any] = {"artifactLocation": self.artifact(span.file), "region": self.region(span)}
        ctx = self.context(span)
        if ctx is not None:
            out["contextRegion"] = ctx
        return out


def _spans(d: Diagnostic) -> list[Span]:
    spans = [d.span] if d.span is not None else []
    spans += [lb.span for lb in d.labels]
    spans += [f.span for f in d.fixes]
    return [s for s in spans if s.line > 0 and s.file]


def _base_dir(path: Path) -> Path:
    """The git top-level above path, else its mesh root (meshc.toml rule)."""
    from ..project import find_root

    path = path.resolve()
    start = path if path.is_dir() else path.parent
    for d in (start, *start.parents):
        if (d / ".git").exists():
            return d
    return find_root(path) if path.exists() else start


def _fix(f: Fix, loc: _Locator) -> dict[str, Any]:
    return {
        "description": {"text": f.title},
        "artifactChanges": [{
            "artifactLocation": loc.artifact(f.span.file),
            "replacements": [{
                "deletedRegion": loc.region(f.span, snippet=False),
                "insertedContent": {"text": f.replacement},
            }],
        }],
    }


def _fingerprint(d: Diagnostic, loc: _Locator) -> str:
    """Stable across unrelated edits: the code, the file and the text at the span."""
    s = d.span
    src = loc.sources.get(s.file)
    text = src.text[s.start:s.end] if src is not None else f"{s.line}:{s.col}"
    raw = "\0".join([d.code, loc.artifact(s.file)["uri"], " ".join(text.split())])
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def result(d: Diagnostic, loc: _Locator, rule_index: dict[str, int]) -> dict[str, Any]:
    text = d.message
    if d.help:
        text += f"\nhelp: {d.help}"
    out: dict[str, Any] = {"ruleId": d.code}
    if d.code in rule_index:
        out["ruleIndex"] = rule_index[d.code]
    out["level"] = LEVELS[d.severity]
    out["message"] = {"text": text}
    if d.span is not None and d.span.line > 0 and d.span.file:
        out["locations"] = [{"physicalLocation": loc.physical(d.span)}]
        out["partialFingerprints"] = {"meshcPrimary/v1": _fingerprint(d, loc)}
    related = [
        {"id": i, "physicalLocation": loc.physical(lb.span), "message": {"text": lb.message}}
        for i, lb in enumerate(lb for lb in d.labels if lb.span.line > 0 and lb.span.file)
    ]
    if related:
        out["relatedLocations"] = related
    fixes = [_fix(f, loc) for f in d.fixes if f.span.line > 0 and f.span.file]
    if fixes:
        out["fixes"] = fixes
    if d.suppressed is not None:  # a `# meshc: ignore[...]` comment in the policy
        out["suppressions"] = [{"kind": "inSource", "status": "accepted", "justification": d.suppressed}]
    props: dict[str, Any] = {}
    if d.notes:
        props["notes"] = list(d.notes)
    if d.witness is not None:
        props["witness"] = d.witness
    if props:
        out["properties"] = props
    return out


def sarif_log(diags: list[Diagnostic], sources: dict[str, SourceFile], command: str = "check") -> dict[str, Any]:
    rules = list(catalogue().values())
    rule_index = {r.code: i for i, r in enumerate(rules)}
    loc = _Locator(sources, diags)
    run: dict[str, Any] = {
        "tool": {"driver": {
            "name": "meshc",
            "version": __version__,
            "semanticVersion": __version__,
            "informationUri": INFORMATION_URI,
            "rules": [rule_descriptor(r) for r in rules],
        }},
        "automationDetails": {"id": f"meshc/{command}/"},
        "columnKind": "utf16CodeUnits",
        "invocations": [{"executionSuccessful": True, "commandLine": f"meshc {command}"}],
        "results": [result(d, loc, rule_index) for d in diags],
    }
    if loc.base is not None:
        run["originalUriBaseIds"] = {SRCROOT: {"uri": loc.base.as_uri().rstrip("/") + "/"}}
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}


def render(diags: list[Diagnostic], sources: dict[str, SourceFile], out: TextIO, *, command: str = "check",
           quiet: bool = False, **_: object) -> None:
    if quiet:
        diags = [d for d in diags if d.severity is Severity.ERROR]
    out.write(json.dumps(sarif_log(diags, sources, command), indent=2, ensure_ascii=False, default=str))  # one write
    out.write("\n")
