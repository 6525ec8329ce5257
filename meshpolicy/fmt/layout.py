"""Entries -> lines: indentation, blocks, blank lines and aligned arrows."""

from __future__ import annotations

from .comments import Entry
from .statements import opener, rule_parts, statement

INDENT = "  "
# Route rules align their `->` on the longest match up to this width; longer
# matches are left out of the alignment so one long rule does not push every
# arrow far to the right.
ALIGN_LIMIT = 40


def _comment(c) -> str:
    return c.text.rstrip()


def _with_trailing(line: str, c) -> str:
    return f"{line} {_comment(c)}" if c is not None else line


def _rule_lines(entries: list[Entry]) -> dict[int, str]:
    """Aligned text of the route rules among entries, by id of the entry."""
    parts = {id(e): rule_parts(e.node) for e in entries if e.node is not None and e.node.kind == "rule"}
    fitting = [len(m) for m, _ in parts.values() if len(m) <= ALIGN_LIMIT]
    width = max(fitting, default=0)
    return {k: f"{m.ljust(width)} {rest}" for k, (m, rest) in parts.items()}


def render(entries: list[Entry], depth: int, out: list[str]) -> None:
    pad = INDENT * depth
    rules = _rule_lines(entries)
    for e in entries:
        if e.blank:
            out.append("")
        if e.node is None:
            out.append(pad + _comment(e.comment))
        elif e.body or e.has_comments or e.opener_trailing is not None:
            _block(e, depth, out)
        elif e.node.kind == "block_open":
            out.append(_with_trailing(f"{pad}{opener(e.node)} {{}}", e.trailing))
        elif e.node.kind == "version":
            # `version v1 {}` means the same as `version v1`.
            out.append(_with_trailing(pad + opener(e.node), e.trailing))
        else:
            text = rules.get(id(e)) or statement(e.node)
            out.append(_with_trailing(pad + text, e.trailing))


def _block(e: Entry, depth: int, out: list[str]) -> None:
    pad = INDENT * depth
    head = f"{pad}{opener(e.node)} {{"
    only = e.body[0] if len(e.body) == 1 else None
    if (e.node.kind == "version" and only is not None and only.node is not None and not e.has_comments
            and not only.body):
        # A version with a single setting stays on one line: `version v1 { version: "v1" }`.
        out.append(_with_trailing(f"{head} {statement(only.node)} }}", e.trailing))
        return
    out.append(_with_trailing(head, e.opener_trailing))
    render(e.body, depth + 1, out)
    out.append(_with_trailing(pad + "}", e.trailing))
