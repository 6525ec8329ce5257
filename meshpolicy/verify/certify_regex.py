"""RE2 syntax to Z3 regexes, for the certifier (certify.py).

Written apart from the verifier's translation (atoms.py reads Python's `re`
parser): this is a parser of RE2's own syntax, so a difference between
Python's and RE2's reading of a pattern shows up as a disagreement instead
of being shared by both sides. It covers what the language lets a path or
header regex use (any pattern RE2 compiles, MP204): literals and escapes,
`.`, classes with ranges, Perl (`\\d \\w \\s`) and POSIX (`[:alpha:]`)
classes, groups, alternation, every repetition (lazy ones match the same
strings), and `^`/`$`/`\\A`/`\\z` where they can only stand at the ends of
the match. Anything else (word boundaries, flags, Unicode classes,
`\\C`, `\\Q...\\E`) raises `Untranslatable`: the certifier then says
"not certified" (MP591) rather than guessing.

Characters are code points. Z3's alphabet ends at U+2FFFF; every string the
certifier reasons about is ASCII or Latin-1 (the request space, see
certify_space.py), so ranges are clipped there and a literal beyond it
matches nothing in that space.
"""

from __future__ import annotations

from functools import lru_cache

MAX_CHAR = 0x2FFFF
_REPEAT_MAX = 1000  # RE2's limit on {n,m}


class Untranslatable(Exception):
    """A regex construct the certifier does not encode exactly."""


# ---- the syntax tree ---------------------------------------------------------------
# ("set", ((lo, hi), ...))   one character from the ranges
# ("cat", (node, ...))       concatenation; () is the empty string
# ("alt", (node, ...))
# ("rep", node, lo, hi)      hi None: unbounded
# ("bot",) / ("eot",)        start / end of the text

_WORD = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_PERL = {"d": ((0x30, 0x39),), "w": _WORD, "s": ((0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20))}
_POSIX = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)), "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0x00, 0x7F),), "blank": ((0x09, 0x09), (0x20, 0x20)), "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": ((0x30, 0x39),), "graph": ((0x21, 0x7E),), "lower": ((0x61, 0x7A),), "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)), "space": ((0x09, 0x0D), (0x20, 0x20)),
    "upper": ((0x41, 0x5A),), "word": _WORD, "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}
_SIMPLE_ESCAPES = {"n": 0x0A, "t": 0x09, "r": 0x0D, "f": 0x0C, "v": 0x0B, "a": 0x07}


def _normal(ranges) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((a, b) for a, b in out)


def _complement(ranges) -> tuple[tuple[int, int], ...]:
    out, nxt = [], 0
    for lo, hi in _normal(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CHAR:
        out.append((nxt, MAX_CHAR))
    return tuple(out)


class _Parser:
    def __init__(self, src: str):
        self.s = src
        self.i = 0

    def fail(self, what: str):
        raise Untranslatable(f"regex {self.s!r}: {what}")

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def parse(self):
        node = self.alt()
        if self.i != len(self.s):
            self.fail(f"unexpected `{self.peek()}` at {self.i}")
        return node

    def alt(self):
        branches = [self.cat()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.cat())
        return branches[0] if len(branches) == 1 else ("alt", tuple(branches))

    def cat(self):
        items = []
        while self.peek() not in ("", "|", ")"):
            atom = self.atom()
            items.append(self.repeats(atom))
        return ("cat", tuple(items))

    def repeats(self, atom):
        seen = False
        while True:
            c = self.peek()
            if c in ("*", "+", "?"):
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
                self.i += 1
            elif c == "{" and (counted := self._counted()) is not None:
                lo, hi = counted
            else:
                return atom
            if seen:
                self.fail("a repetition of a repetition")
            if atom[0] in ("bot", "eot"):
                self.fail("a repeated anchor")
            seen = True
            if self.peek() == "?":  # lazy: the same strings
                self.i += 1
            atom = ("rep", atom, lo, hi)

    def _counted(self):
        """`{n}`, `{n,}` or `{n,m}` at the cursor (consumed), else None: RE2
        reads any other `{` as a literal."""
        j = self.i + 1
        k = j
        while k < len(self.s) and self.s[k].isdigit():
            k += 1
        if k == j:
            return None
        lo = int(self.s[j:k])
        hi: int | None = lo
        if k < len(self.s) and self.s[k] == ",":
            m = k + 1
            while m < len(self.s) and self.s[m].isdigit():
                m += 1
            hi = int(self.s[k + 1:m]) if m > k + 1 else None
            k = m
        if k >= len(self.s) or self.s[k] != "}":
            return None
        if lo > _REPEAT_MAX or (hi is not None and (hi > _REPEAT_MAX or hi < lo)):
            self.fail("a bad repetition count")
        self.i = k + 1
        return lo, hi

    def atom(self):
        c = self.peek()
        if c == "(":
            return self.group()
        if c == "[":
            return ("set", self.bracket())
        if c == ".":
            self.i += 1
            return ("set", _complement(((0x0A, 0x0A),)))  # RE2's `.`: anything but a newline
        if c == "^":
            self.i += 1
            return ("bot",)
        if c == "$":
            self.i += 1
            return ("eot",)
        if c == "\\":
            return self.escape(in_class=False)
        if c in ("*", "+", "?"):
            self.fail("a repetition with nothing to repeat")
        self.i += 1
        return ("set", ((ord(c), ord(c)),))

    def group(self):
        self.i += 1  # (
        if self.peek() == "?":
            if self.s.startswith("?:", self.i):
                self.i += 2
            elif self.s.startswith("?P<", self.i) or self.s.startswith("?<", self.i):
                end = self.s.find(">", self.i)
                if end < 0:
                    self.fail("an unterminated group name")
                self.i = end + 1
            else:
                self.fail("flags or an unknown group kind")
        inner = self.alt()
        if self.peek() != ")":
            self.fail("a missing `)`")
        self.i += 1
        return inner

    def escape(self, in_class: bool):
        """`\\x` at the cursor: a node outside classes; inside them, a code
        point, or the ranges of a Perl class."""
        self.i += 1
        c = self.peek()
        if not c:
            self.fail("a trailing backslash")
        self.i += 1
        if c.lower() in _PERL:
            ranges = _PERL[c.lower()]
            ranges = _complement(ranges) if c.isupper() else ranges
            return ranges if in_class else ("set", ranges)
        if c in _SIMPLE_ESCAPES:
            cp = _SIMPLE_ESCAPES[c]
        elif c == "x":
            cp = self._hex()
        elif c in "01234567":
            cp = self._octal(c)
        elif not in_class and c == "A":
            return ("bot",)
        elif not in_class and c == "z":
            return ("eot",)
        elif ord(c) < 0x80 and not c.isalnum():
            cp = ord(c)  # escaped punctuation stands for itself
        else:
            self.fail(f"the escape `\\{c}`")
        return cp if in_class else ("set", ((cp, cp),))

    def _octal(self, first: str) -> int:
        """RE2: `\\0` and up to two more octal digits; `\\1`-`\\7` only with
        more digits (alone they would be backreferences)."""
        digits = first
        while len(digits) < 3 and self.peek() in tuple("01234567"):
            digits += self.peek()
            self.i += 1
        if first != "0" and len(digits) == 1:
            self.fail("a backreference")
        return int(digits, 8)

    def _hex(self) -> int:
        if self.peek() == "{":
            end = self.s.find("}", self.i)
            digits = self.s[self.i + 1:end] if end > 0 else ""
            self.i = end + 1
        else:
            digits = self.s[self.i:self.i + 2]
            self.i += 2
        try:
            if not digits or len(digits) > 8:
                raise ValueError
            return int(digits, 16)
        except ValueError:
            self.fail("a bad hex escape")

    def bracket(self):
        self.i += 1  # [
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            c = self.peek()
            if not c:
                self.fail("an unterminated class")
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if c == "[" and self.peek(1) == ":":
                end = self.s.find(":]", self.i + 2)
                name = self.s[self.i + 2:end] if end > 0 else ""
                neg = name.startswith("^")
                got = _POSIX.get(name.lstrip("^"))
                if got is None:
                    self.fail(f"the class [:{name}:]")
                ranges.extend(_complement(got) if neg else got)
                self.i = end + 2
                continue
            lo = self._class_char()
            if isinstance(lo, tuple):  # \d and friends
                ranges.extend(lo)
                continue
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                hi = self._class_char()
                if isinstance(hi, tuple) or hi < lo:
                    self.fail("a bad class range")
                ranges.append((lo, hi))
            else:
                ranges.append((lo, lo))
        ranges = list(_normal(ranges))
        return _complement(ranges) if negate else _normal(ranges)

    def _class_char(self):
        c = self.peek()
        if c == "\\":
            return self.escape(in_class=True)
        self.i += 1
        return ord(c)


def parse(regex: str):
    """The syntax tree of an RE2 regex (Untranslatable when outside the subset)."""
    return _Parser(regex).parse()


# ---- to Z3 -----------------------------------------------------------------------

def _z3():
    import z3

    return z3


def _set(ranges):
    z3 = _z3()
    parts = [z3.Range(z3.StringVal(chr(lo)), z3.StringVal(chr(min(hi, MAX_CHAR))))
             for lo, hi in ranges if lo <= MAX_CHAR]
    if not parts:
        return z3.Empty(z3.ReSort(z3.StringSort()))
    return parts[0] if len(parts) == 1 else z3.Union(*parts)


def _epsilon():
    z3 = _z3()
    return z3.Re(z3.StringVal(""))


def _concat(parts):
    if not parts:
        return _epsilon()
    return parts[0] if len(parts) == 1 else _z3().Concat(*parts)


def _only_anchors(nodes) -> bool:
    return all(n[0] in ("bot", "eot") for n in nodes)


def _to_z3(node, at_start: bool, at_end: bool, src: str):
    """`at_start`/`at_end`: nothing can have been matched before / come after
    this node, so an anchor here always holds. An anchor anywhere else would
    need lookaround: untranslatable."""
    z3 = _z3()
    kind = node[0]
    if kind == "set":
        return _set(node[1])
    if kind == "bot":
        if not at_start:
            raise Untranslatable(f"regex {src!r}: `^` or `\\A` inside the pattern")
        return _epsilon()
    if kind == "eot":
        if not at_end:
            raise Untranslatable(f"regex {src!r}: `$` or `\\z` inside the pattern")
        return _epsilon()
    if kind == "alt":
        return z3.Union(*[_to_z3(b, at_start, at_end, src) for b in node[1]])
    if kind == "cat":
        items = node[1]
        return _concat([_to_z3(n, at_start and _only_anchors(items[:i]), at_end and _only_anchors(items[i + 1:]), src)
                        for i, n in enumerate(items)])
    _, body, lo, hi = node
    inner = _to_z3(body, False, False, src)
    if hi == 0:
        return _epsilon()  # x{0}: note z3.Loop(x, 0, 0) would mean x*
    if hi is None:
        return z3.Star(inner) if lo == 0 else z3.Concat(z3.Loop(inner, lo, lo), z3.Star(inner))
    return z3.Loop(inner, lo, hi)


@lru_cache(maxsize=4096)
def regex_to_z3(regex: str):
    """The strings RE2 fully matches with `regex`, as a Z3 regex."""
    return _to_z3(parse(regex), True, True, regex)


def hex_escape(ch: str) -> str:
    """How the certifier spells a literal character inside a regex it builds
    (globs): unambiguous for the parser above whatever the character."""
    return f"\\x{{{ord(ch):x}}}"
