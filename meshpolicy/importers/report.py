"""`meshc import --report`: what was imported, approximated and refused."""

from __future__ import annotations

import re

from .context import Coverage


def coverage_table(cov: Coverage) -> str:
    lines = ["", "Resources", "", "| kind | read | imported |", "|---|---:|---:|"]
    for kind in sorted(cov.resources):
        lines.append(f"| {kind} | {cov.resources[kind]} | {cov.imported.get(kind, 0)} |")
    lines += ["", "Fields", "", "| kind | field | imported | approximated | refused |", "|---|---|---:|---:|---:|"]
    merged: dict[tuple[str, str], dict[str, int]] = {}
    for (kind, field), counts in cov.fields.items():
        key = (kind, re.sub(r"\[[0-9]+\]", "[]", field))  # one row per field, not per list position
        row = merged.setdefault(key, {"imported": 0, "approximated": 0, "refused": 0})
        for status, n in counts.items():
            row[status] += n
    for (kind, field), row in sorted(merged.items()):
        lines.append(f"| {kind} | `{field}` | {row['imported']} | {row['approximated']} | {row['refused']} |")
    return "\n".join(lines) + "\n"
