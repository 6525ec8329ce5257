"""Machine-readable JSON: a stable list of diagnostics (`meshc ... --format json`)."""

from __future__ import annotations

import json
from typing import TextIO

from ..diagnostics import Diagnostic
from ..span import SourceFile, Span


def span_json(s: Span | None) -> dict | None:
    if s is None or s.line <= 0:
        return None
    return {"file": s.file, "line": s.line, "column": s.col, "end_line": s.end_line, "end_column": s.end_col}


def diagnostic_json(d: Diagnostic) -> dict:
    return {
        "code": d.code,
        "severity": d.severity.value,
        "message": d.message,
        "span": span_json(d.span),
        "labels": [{"span": span_json(lb.span), "message": lb.message} for lb in d.labels],
        "help": d.help,
        "notes": d.notes,
        "fixes": [{"title": f.title, "span": span_json(f.span), "replacement": f.replacement} for f in d.fixes],
        "witness": d.witness,
    }


def render(diags: list[Diagnostic], sources: dict[str, SourceFile], out: TextIO, **_: object) -> None:
    doc = {
        "version": 1,
        "diagnostics": [diagnostic_json(d) for d in diags],
        "summary": {
            "errors": sum(d.severity.value == "error" for d in diags),
            "warnings": sum(d.severity.value == "warning" for d in diags),
        },
    }
    json.dump(doc, out, indent=2, sort_keys=False)
    out.write("\n")
