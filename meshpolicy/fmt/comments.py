"""Where each comment goes: attach comments to the items around them.

The syntax tree keeps comments aside, with their offsets. For one block body
(or the file's top level) `arrange` returns the body as a list of entries in
output order, each an item or an own-line comment, with the decision whether
a blank line precedes it. The rules (docs/formatting.md):

- a comment alone on its line stays alone on its line, before the item it
  preceded (or at the end of its block);
- a comment after code on its line trails the item that ended on that line
  (or the block opener `{` of that line);
- a comment inside a block stays inside it; one inside a statement split over
  lines moves before it (own-line) or after it (trailing), since the
  statement is printed on one line;
- blank lines between entries are kept, at most one in a row.

Entries keep the source line they came from so that the same rules give the
same answer on the formatter's own output, which makes formatting idempotent.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from ..span import split_lines
from ..syntax.lexer import Comment
from ..syntax.nodes import Node


def is_block(node: Node) -> bool:
    return node.kind == "block_open" or (node.kind == "version" and bool(node.get("opens")))


@dataclass
class Entry:
    node: Node | None = None  # an item, or None for a comment
    comment: Comment | None = None
    blank: bool = False  # a blank line precedes it
    trailing: Comment | None = None  # after the item on its (last) line
    opener_trailing: Comment | None = None  # blocks: after `{`
    body: list["Entry"] = field(default_factory=list)  # blocks: their entries
    has_comments: bool = False  # blocks: some comment sits inside


class Lines:
    """Which source lines are blank, to keep a blank line where one was."""

    def __init__(self, text: str):
        # Line breaks as the tokenizer counts them: CRLF, CR or LF (and
        # `strip` would also eat \x1c-\x1f and \x85, which are not blanks).
        blank = [not ln.strip(" \t\f") for ln in split_lines(text)]
        # prefix[i] = number of blank lines among lines 1..i
        self.prefix = [0]
        for b in blank:
            self.prefix.append(self.prefix[-1] + b)

    def blank_between(self, after_line: int, before_line: int) -> bool:
        """Some line strictly between the two (1-based) lines is blank."""
        lo, hi = after_line, before_line - 1
        if hi <= lo:
            return False
        hi = min(hi, len(self.prefix) - 1)
        return self.prefix[hi] - self.prefix[lo] > 0


def arrange(items: list[Node], comments: list[Comment], lines: Lines, opener_line: int | None = None,
            top: bool = False) -> tuple[list[Entry], Comment | None]:
    """The entries of one body, and the comment trailing its opener `{`."""
    starts = [n.span.start for n in items]
    inner: dict[int, list[Comment]] = {}
    moved: dict[int, list[Comment]] = {}
    trails: dict[int, list[Comment]] = {}
    free: list[Comment] = []
    opener_trailing = None
    for c in comments:
        i = bisect.bisect_right(starts, c.start) - 1
        host = items[i] if i >= 0 and c.start < items[i].span.end else None
        if host is not None:
            if is_block(host):
                inner.setdefault(i, []).append(c)
            elif c.own_line:
                moved.setdefault(i, []).append(c)
            else:
                trails.setdefault(i, []).append(c)
        elif not c.own_line and i >= 0 and items[i].span.end_line == c.line:
            trails.setdefault(i, []).append(c)
        elif not c.own_line and c.line == opener_line and opener_trailing is None:
            opener_trailing = c
        else:
            # Own-line, or after a bare `;`: a comment of its own.
            free.append(c)

    # Items and free comments in source order, each with its source lines.
    seq: list[tuple[int, int, int, Entry]] = []  # (start offset, first line, last line, entry)
    for i, n in enumerate(items):
        e = Entry(node=n)
        if is_block(n):
            name_line = n.get("name").span.line
            e.body, e.opener_trailing = arrange(n.children, inner.get(i, []), lines, name_line)
            e.has_comments = bool(inner.get(i))
        seq.append((n.span.start, n.span.line, n.span.end_line, e))
    for c in free:
        seq.append((c.start, c.line, c.line, Entry(comment=c)))
    seq.sort(key=lambda x: x[0])

    prev_last = None
    for _, first, last, e in seq:
        e.blank = prev_last is not None and lines.blank_between(prev_last, first)
        prev_last = last
    # Attach moved and trailing comments (kept by item index).
    final: list[Entry] = []
    index_of = {id(n): i for i, n in enumerate(items)}
    for _, _, _, e in seq:
        if e.node is None:
            final.append(e)
            continue
        i = index_of[id(e.node)]
        before = moved.get(i, [])
        if before:
            # The moved comments take the item's place, blank line included.
            for j, c in enumerate(before):
                final.append(Entry(comment=c, blank=e.blank and j == 0))
            e.blank = False
        final.append(e)
        after = trails.get(i, [])
        if after:
            e.trailing = after[0]
            final.extend(Entry(comment=c) for c in after[1:])
    if top:
        _separate_blocks(final)
    if final:
        final[0].blank = False
    return final, opener_trailing


def _separate_blocks(entries: list[Entry]) -> None:
    """At the top level a blank line sets off each block, with the comments
    glued (no blank line between) to its start."""
    for i, e in enumerate(entries):
        if e.node is None or not is_block(e.node):
            continue
        j = i
        while j > 0 and entries[j - 1].node is None and not entries[j].blank:
            j -= 1
        if j > 0:
            entries[j].blank = True
        if i + 1 < len(entries):
            entries[i + 1].blank = True
