"""Exact emptiness and shortest witnesses for Boolean combinations of patterns,
by automata: each pattern becomes a Thompson NFA over character intervals,
and a breadth-first search over the product of their subset states finds the
shortest string that is in every positive pattern and in no negative one (or
proves there is none: the product space is finite and fully explored).

This decides the common cases (exact, prefix, glob and ordinary regexes) in
microseconds where Z3's string solver needs tenths of a second for a
containment proof. Patterns whose automaton would be too large raise
`TooLarge` and atoms.py falls back to Z3's regex theory.

Regex meaning follows RE2 (as `meshpolicy.semantics.patterns` uses it):
whole-string match, `.` is any character but newline, `\\d \\w \\s` are ASCII.
"""

from __future__ import annotations

import re._constants as C
import re._parser as sre
from collections import deque
from functools import lru_cache

MAX_CHAR = 0x10FFFF
MAX_STATES = 4000
MAX_PRODUCT = 200_000

Interval = tuple[int, int]  # inclusive
CharSet = tuple[Interval, ...]


_POSIX = {"alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": " \\t",
          "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
          "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_",
          "xdigit": "0-9A-Fa-f"}


def parse_re2(value: str):
    """Python's parse tree of an RE2 regex. RE2's POSIX classes inside a
    bracket (`[[:digit:]]`) mean nothing to Python's parser (it reads a set
    holding `[`, `:`, `d`...), so they are spelled as ranges first; a negated
    one (`[[:^alpha:]]`) has no such spelling and is refused."""
    if "[:" not in value:
        return sre.parse(value)
    out, i, depth = [], 0, 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            out.append(value[i:i + 2])
            i += 2
            continue
        if depth and value.startswith("[:", i):
            end = value.find(":]", i + 2)
            name = value[i + 2:end] if end != -1 else ""
            if name.startswith("^") or name not in _POSIX:
                raise sre.error(f"POSIX class [:{name}:] is not supported here")
            out.append(_POSIX[name])
            i = end + 2
            continue
        if ch == "[" and not depth:
            depth = 1
            out.append(ch)
            i += 1
            if value.startswith("^", i):
                out.append("^")
                i += 1
            if value.startswith("]", i):  # a leading `]` is a literal member
                out.append("\\]")
                i += 1
            continue
        if ch == "]" and depth:
            depth = 0
        out.append(ch)
        i += 1
    return sre.parse("".join(out))


class TooLarge(Exception):
    """The automaton (or the product search) would be too large."""


class NotRegular(Exception):
    """A construct this translation does not encode (anchors inside, flags...)."""


ANY: CharSet = ((0, MAX_CHAR),)


def _negate(cs: CharSet) -> CharSet:
    out, lo = [], 0
    for a, b in sorted(cs):
        if a > lo:
            out.append((lo, a - 1))
        lo = max(lo, b + 1)
    if lo <= MAX_CHAR:
        out.append((lo, MAX_CHAR))
    return tuple(out)


def _chars(*cs: str) -> CharSet:
    return tuple((ord(c), ord(c)) for c in cs)


NOT_SLASH = _negate(_chars("/"))
NOT_NEWLINE = _negate(_chars("\n"))
_CATEGORIES = {
    C.CATEGORY_DIGIT: ((0x30, 0x39),),
    C.CATEGORY_WORD: ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
    C.CATEGORY_SPACE: ((0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)),
}
_NOT = {C.CATEGORY_NOT_DIGIT: C.CATEGORY_DIGIT, C.CATEGORY_NOT_WORD: C.CATEGORY_WORD,
        C.CATEGORY_NOT_SPACE: C.CATEGORY_SPACE}


class NFA:
    """States 0..n-1; edges[s]: (charset, target); eps[s]: targets."""

    def __init__(self) -> None:
        self.edges: list[list[tuple[CharSet, int]]] = []
        self.eps: list[list[int]] = []

    def new(self) -> int:
        if len(self.edges) >= MAX_STATES:
            raise TooLarge("automaton too large")
        self.edges.append([])
        self.eps.append([])
        return len(self.edges) - 1

    # fragments are (start, end) pairs
    def chars(self, cs: CharSet) -> tuple[int, int]:
        a, b = self.new(), self.new()
        self.edges[a].append((cs, b))
        return a, b

    def empty(self) -> tuple[int, int]:
        a = self.new()
        return a, a

    def seq(self, frags: list[tuple[int, int]]) -> tuple[int, int]:
        if not frags:
            return self.empty()
        for (_, e), (s, _) in zip(frags, frags[1:]):
            self.eps[e].append(s)
        return frags[0][0], frags[-1][1]

    def alt(self, frags: list[tuple[int, int]]) -> tuple[int, int]:
        a, b = self.new(), self.new()
        for s, e in frags:
            self.eps[a].append(s)
            self.eps[e].append(b)
        return a, b

    def star(self, frag: tuple[int, int]) -> tuple[int, int]:
        a, b = self.new(), self.new()
        s, e = frag
        self.eps[a] += [s, b]
        self.eps[e] += [s, b]
        return a, b


class Compiled:
    def __init__(self, nfa: NFA, start: int, accept: int):
        self.nfa, self.start, self.accept = nfa, start, accept
        n = len(nfa.edges)
        self.closure: list[frozenset[int]] = []
        for s in range(n):
            seen, stack = {s}, [s]
            while stack:
                for t in nfa.eps[stack.pop()]:
                    if t not in seen:
                        seen.add(t)
                        stack.append(t)
            self.closure.append(frozenset(seen))

    def charsets(self) -> set[CharSet]:
        return {cs for es in self.nfa.edges for cs, _ in es}


@lru_cache(maxsize=16384)
def compile_key(key: tuple[str, str]) -> Compiled:
    kind, value = key
    nfa = NFA()
    lit = lambda s: nfa.seq([nfa.chars(_chars(ch)) for ch in s])  # noqa: E731
    if kind == "exact":
        frag = lit(value)
    elif kind == "prefix":
        frag = nfa.seq([lit(value), nfa.star(nfa.chars(ANY))])
    elif kind == "glob":
        parts, i = [], 0
        while i < len(value):
            if value.startswith("**", i):
                # `**` is RE2's `.*` (semantics/patterns.py): any run without a newline
                parts.append(nfa.star(nfa.chars(NOT_NEWLINE)))
                i += 2
            elif value[i] == "*":
                one = nfa.chars(NOT_SLASH)
                parts.append(nfa.seq([one, nfa.star(nfa.chars(NOT_SLASH))]))
                i += 1
            else:
                parts.append(nfa.chars(_chars(value[i])))
                i += 1
        frag = nfa.seq(parts)
    else:
        try:
            tree = parse_re2(value)
        except Exception as exc:
            raise NotRegular(f"regex {value!r}: {exc}") from None
        if tree.state.flags & ~C.SRE_FLAG_UNICODE:
            raise NotRegular(f"regex {value!r}: inline flags")
        frag = _seq(nfa, list(tree), value, True, True)
    return Compiled(nfa, *frag)


def _class(items, src: str) -> CharSet:
    negate, out = False, []
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            out.append((av, av))
        elif op is C.RANGE:
            out.append(av)
        elif op is C.CATEGORY and av in _CATEGORIES:
            out.extend(_CATEGORIES[av])
        elif op is C.CATEGORY and av in _NOT:
            out.extend(_negate(_CATEGORIES[_NOT[av]]))
        else:
            raise NotRegular(f"regex {src!r}: class item {op} {av}")
    cs = tuple(sorted(out))
    return _negate(cs) if negate else cs


def _seq(nfa: NFA, items, src: str, at_start: bool, at_end: bool):
    frags = []
    n = len(items)
    for i, (op, av) in enumerate(items):
        first, last = at_start and i == 0, at_end and i == n - 1
        if op is C.AT:
            if (av in (C.AT_BEGINNING, C.AT_BEGINNING_STRING) and first) or (av in (C.AT_END, C.AT_END_STRING) and last):
                continue
            raise NotRegular(f"regex {src!r}: anchor or boundary {av} inside the pattern")
        frags.append(_item(nfa, op, av, src, first, last))
    return nfa.seq(frags)


def _item(nfa: NFA, op, av, src: str, first: bool, last: bool):
    if op is C.LITERAL:
        return nfa.chars(((av, av),))
    if op is C.NOT_LITERAL:
        return nfa.chars(_negate(((av, av),)))
    if op is C.ANY:
        return nfa.chars(NOT_NEWLINE)
    if op is C.IN:
        return nfa.chars(_class(av, src))
    if op is C.SUBPATTERN:
        _g, add, rem, sub = av
        if add or rem:
            raise NotRegular(f"regex {src!r}: inline flags")
        return _seq(nfa, list(sub), src, first, last)
    if op is C.BRANCH:
        return nfa.alt([_seq(nfa, list(b), src, first, last) for b in av[1]])
    if op in (C.MAX_REPEAT, C.MIN_REPEAT):
        lo, hi, sub = av
        body = lambda: _seq(nfa, list(sub), src, False, False)  # noqa: E731
        parts = [body() for _ in range(lo)]
        if hi is C.MAXREPEAT:
            parts.append(nfa.star(body()))
        else:
            opt = []
            for _ in range(hi - lo):
                opt.append(nfa.alt([body(), nfa.empty()]))
            parts.extend(opt)
        return nfa.seq(parts)
    raise NotRegular(f"regex {src!r}: construct {op}")


# ---- the product search -----------------------------------------------------------

_NICE = "xabcdefghijklmnopqrstuvwyz0123456789-_.~ABCDEFGHIJKLMNOPQRSTUVWXYZ/!$&'()+,;=:@%*"


def _intervals(charsets: set[CharSet]) -> tuple[list[Interval], list[int]]:
    """The alphabet cut at every charset boundary, and one character per piece
    (a readable one where the piece has one)."""
    points = {0, MAX_CHAR + 1}
    for cs in charsets:
        for a, b in cs:
            points.add(a)
            points.add(b + 1)
    pts = sorted(points)
    pieces = [(a, b - 1) for a, b in zip(pts, pts[1:])]
    reps = []
    for a, b in pieces:
        rep = next((ord(ch) for ch in _NICE if a <= ord(ch) <= b), None)
        if rep is None:
            rep = next((c for c in range(max(a, 0x21), min(b, 0x7E) + 1)), a)
        reps.append(rep)
    return pieces, reps


def _member(cs: CharSet, c: int) -> bool:
    return any(a <= c <= b for a, b in cs)


@lru_cache(maxsize=65536)
def witness(pos: tuple[tuple[str, str], ...], neg: tuple[tuple[str, str], ...]) -> str | None:
    """The shortest string (readable characters first) in every pos pattern and
    no neg pattern, or None when there is none. Raises TooLarge/NotRegular."""
    autos = [compile_key(k) for k in pos] + [compile_key(k) for k in neg]
    if not pos:
        raise TooLarge("no positive pattern bounds the search")
    npos = len(pos)
    charsets = set()
    for a in autos:
        charsets |= a.charsets()
    pieces, reps = _intervals(charsets)
    # a character no positive automaton can read never occurs in an answer
    readable = [set().union(*a.charsets()) if a.charsets() else set() for a in autos[:npos]]
    keep = [i for i, c in enumerate(reps) if all(any(a <= c <= b for a, b in r) for r in readable)]
    # characters that every charset treats alike are one letter of the search alphabet
    classes: dict[tuple, int] = {}
    for i in keep:
        sig = tuple(_member(cs, reps[i]) for cs in sorted(charsets))
        classes.setdefault(sig, i)
    keep = sorted(classes.values())
    pieces, reps = [pieces[i] for i in keep], [reps[i] for i in keep]
    # order pieces so that readable characters are tried first
    order = sorted(range(len(pieces)), key=lambda i: (_NICE.find(chr(reps[i])) if chr(reps[i]) in _NICE else 999, i))
    # per automaton, per state: piece -> targets (through the piece's representative)
    steps: list[dict] = [{} for _ in autos]

    def step(ai: int, state: frozenset[int], piece: int) -> frozenset[int]:
        key = (state, piece)
        got = steps[ai].get(key)
        if got is None:
            a = autos[ai]
            c = reps[piece]
            out: set[int] = set()
            for s in state:
                for cs, t in a.nfa.edges[s]:
                    if _member(cs, c):
                        out |= a.closure[t]
            got = steps[ai][key] = frozenset(out)
        return got

    def accepting(st) -> bool:
        return all(autos[i].accept in st[i] for i in range(npos)) and not any(
            autos[i].accept in st[i] for i in range(npos, len(autos)))

    start = tuple(a.closure[a.start] for a in autos)
    prev: dict = {start: None}
    queue = deque([start])
    while queue:
        st = queue.popleft()
        if accepting(st):
            out = []
            while prev[st] is not None:
                st, c = prev[st]
                out.append(chr(c))
            return "".join(reversed(out))
        for p in order:
            nxt = []
            dead = False
            for i, s in enumerate(st):
                t = step(i, s, p)
                if i < npos and not t:
                    dead = True  # a positive pattern can no longer match
                    break
                nxt.append(t)
            if dead:
                continue
            nt = tuple(nxt)
            if nt not in prev:
                prev[nt] = (st, reps[p])
                if len(prev) > MAX_PRODUCT:
                    raise TooLarge("product automaton too large")
                queue.append(nt)
    return None
