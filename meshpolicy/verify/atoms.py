"""Atoms: the classes of strings that a set of patterns cannot tell apart.

For the patterns one destination uses (paths, or the values of one header),
every string falls in exactly one Boolean combination "in p1, not in p2, ...".
We compute the non-empty combinations, each with a concrete witness string,
by splitting regions one pattern at a time. Emptiness and witnesses come from
cheap exact reasoning where it is decisive (exact strings, literal prefixes,
candidate strings checked with the reference matcher) and otherwise from Z3's
regex theory, which decides intersection/complement emptiness exactly. A
regex construct we cannot translate exactly raises `Unsupported`, and a Z3
`unknown` raises `Undecided`: never a silent approximation.

Every witness is checked with `meshpolicy.semantics.patterns` (RE2), so a
translation mistake shows up as an internal error, not a wrong atom.
"""

from __future__ import annotations

import bisect
import re._constants as C
import re._parser as sre
from dataclasses import dataclass
from functools import cached_property, lru_cache

from ..model.types import PathPattern
from ..semantics.patterns import normalize_path, pattern_regex

# Z3's string alphabet ends here; patterns that mention characters at or above
# it cannot be encoded exactly (all characters above it behave alike otherwise).
_MAX_CHAR = 0x2FFFF
MAX_ATOMS = 4096

Key = tuple[str, str]  # (kind, value): "exact", "prefix", "glob", "regex"


class Unsupported(Exception):
    """A pattern uses a construct the verifier cannot encode exactly."""


class Undecided(Exception):
    """Z3 answered unknown (usually a timeout) for an emptiness question."""


@dataclass(frozen=True)
class Atom:
    witness: str
    members: frozenset[Key]  # the patterns this atom's strings match


def key_of(p: PathPattern) -> Key:
    return (p.kind, p.value)


def matches(key: Key, s: str) -> bool:
    """The reference meaning (semantics/patterns.py), with the regex compiled once."""
    kind, value = key
    if kind == "exact":
        return s == value
    if kind == "prefix":
        return s.startswith(value)
    return _compiled(key).fullmatch(s) is not None


@lru_cache(maxsize=16384)
def _compiled(key: Key):
    import re2

    try:
        return re2.compile(pattern_regex(PathPattern.make(kind=key[0], value=key[1])))
    except re2.error:
        # MP204 reports it; the verifier only declines to reason about it
        raise Unsupported(f"regex {key[1]!r} is not valid RE2") from None


# ---- translation to Z3 regexes -------------------------------------------------

def _z3():
    import z3

    return z3


@lru_cache(maxsize=16384)
def z3_regex(key: Key):
    """The exact language of a pattern as a Z3 regex (whole-string match)."""
    z3 = _z3()
    kind, value = key
    _check_chars(value)
    if kind == "exact":
        return z3.Re(z3.StringVal(value))
    if kind == "prefix":
        return z3.Concat(z3.Re(z3.StringVal(value)), z3.Star(_any_char()))
    if kind == "glob":
        return _glob(value)
    try:
        from .automata import parse_re2  # RE2's POSIX classes, spelled for Python's parser

        tree = parse_re2(value)
    except Exception as exc:  # invalid for Python's parser: RE2-only syntax such as \pN
        raise Unsupported(f"regex {value!r}: {exc}") from None
    if tree.state.flags & ~(C.SRE_FLAG_UNICODE):
        raise Unsupported(f"regex {value!r}: inline flags")
    return _seq(list(tree), value, True, True)


def _check_chars(value: str) -> None:
    if any(ord(ch) >= _MAX_CHAR for ch in value):
        raise Unsupported(f"pattern {value!r} uses characters beyond U+2FFFF")


def _any_char():
    z3 = _z3()
    return z3.AllChar(z3.ReSort(z3.StringSort()))


def _glob(glob: str):
    z3 = _z3()
    parts = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            parts.append(z3.Star(_char_not("\n")))  # RE2's `.*`: no newline
            i += 2
        elif glob[i] == "*":
            parts.append(z3.Plus(_char_not("/")))
            i += 1
        else:
            j = i
            while j < len(glob) and glob[j] != "*":
                j += 1
            parts.append(z3.Re(z3.StringVal(glob[i:j])))
            i = j
    return _concat(parts)


def _concat(parts):
    z3 = _z3()
    if not parts:
        return z3.Re(z3.StringVal(""))
    return parts[0] if len(parts) == 1 else z3.Concat(*parts)


def _char_not(*chars: str):
    """Any single character except the given ones."""
    z3 = _z3()
    excluded = z3.Union(*[z3.Re(z3.StringVal(c)) for c in chars]) if len(chars) > 1 else z3.Re(z3.StringVal(chars[0]))
    return z3.Intersect(_any_char(), z3.Complement(excluded))


def _range(lo: int, hi: int):
    z3 = _z3()
    if lo >= _MAX_CHAR or hi >= _MAX_CHAR:
        raise Unsupported("character range beyond U+2FFFF")
    return z3.Range(z3.StringVal(chr(lo)), z3.StringVal(chr(hi)))


# RE2's Perl classes are ASCII-only (unlike Python's), so spell them out.
_CATEGORIES = {
    C.CATEGORY_DIGIT: [(0x30, 0x39)],
    C.CATEGORY_WORD: [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A), (0x5F, 0x5F)],
    C.CATEGORY_SPACE: [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)],
}
_NOT_CATEGORIES = {
    C.CATEGORY_NOT_DIGIT: C.CATEGORY_DIGIT,
    C.CATEGORY_NOT_WORD: C.CATEGORY_WORD,
    C.CATEGORY_NOT_SPACE: C.CATEGORY_SPACE,
}


def _class(items, src: str):
    """A character class: a union of ranges, complemented if NEGATE leads."""
    z3 = _z3()
    negate = False
    alts = []
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            alts.append(_range(av, av))
        elif op is C.RANGE:
            alts.append(_range(*av))
        elif op is C.CATEGORY:
            if av in _CATEGORIES:
                alts.extend(_range(a, b) for a, b in _CATEGORIES[av])
            elif av in _NOT_CATEGORIES:
                inner = z3.Union(*[_range(a, b) for a, b in _CATEGORIES[_NOT_CATEGORIES[av]]] + [z3.Empty(z3.ReSort(z3.StringSort()))])
                alts.append(z3.Intersect(_any_char(), z3.Complement(inner)))
            else:
                raise Unsupported(f"regex {src!r}: class {av}")
        else:
            raise Unsupported(f"regex {src!r}: class item {op}")
    empty = z3.Empty(z3.ReSort(z3.StringSort()))
    union = z3.Union(*alts, empty) if alts else empty
    if negate:
        return z3.Intersect(_any_char(), z3.Complement(union))
    return union


def _seq(items, src: str, at_start: bool, at_end: bool):
    """A sequence of regex items. `^` may only stand where nothing can precede
    it and `$` where nothing can follow (anchors elsewhere are not encoded)."""
    parts = []
    n = len(items)
    for i, (op, av) in enumerate(items):
        first, last = at_start and i == 0, at_end and i == n - 1
        if op is C.AT:
            if av is C.AT_BEGINNING and first or av in (C.AT_END, C.AT_END_STRING) and last:
                continue
            if av is C.AT_BEGINNING_STRING and first:
                continue
            raise Unsupported(f"regex {src!r}: anchor or boundary {av} inside the pattern")
        parts.append(_item(op, av, src, first, last))
    return _concat(parts)


def _item(op, av, src: str, first: bool, last: bool):
    z3 = _z3()
    if op is C.LITERAL:
        return _range(av, av)
    if op is C.NOT_LITERAL:
        if av >= _MAX_CHAR:
            raise Unsupported("character beyond U+2FFFF")
        return _char_not(chr(av))
    if op is C.ANY:
        return _char_not("\n")
    if op is C.IN:
        return _class(av, src)
    if op is C.SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        if add_flags or del_flags:
            raise Unsupported(f"regex {src!r}: inline flags")
        return _seq(list(sub), src, first, last)
    if op is C.BRANCH:
        return z3.Union(*[_seq(list(b), src, first, last) for b in av[1]])
    if op in (C.MAX_REPEAT, C.MIN_REPEAT):
        lo, hi, sub = av
        body = _seq(list(sub), src, False, False)
        if hi is C.MAXREPEAT:
            return z3.Concat(z3.Loop(body, lo, lo), z3.Star(body)) if lo else z3.Star(body)
        if hi == 0:  # `x{0}` is the empty string; Z3 reads Loop(x, 0, 0) as x* (0 means "no bound")
            return z3.Re(z3.StringVal(""))
        return z3.Loop(body, lo, hi)
    raise Unsupported(f"regex {src!r}: construct {op}")


# ---- splitting ------------------------------------------------------------------

@dataclass
class _Region:
    """The strings in every `pos` pattern and in none of the other patterns
    split so far (`keys[:upto]`); `neg` is derived, not stored: copying it
    into every region at every step made splitting cubic in the patterns."""

    pos: tuple[Key, ...]
    keys: list[Key]
    upto: int
    witness: str
    lit: str = ""  # the longest literal prefix of the positive patterns: every string here starts with it

    @cached_property
    def neg(self) -> tuple[Key, ...]:
        pos = set(self.pos)
        return tuple(k for k in self.keys[:self.upto] if k not in pos)

    def admits(self, s: str, match=None) -> bool:
        m = match or matches
        return all(m(k, s) for k in self.pos) and not any(m(k, s) for k in self.neg)


@lru_cache(maxsize=65536)
def _literal_prefix(key: Key) -> str | None:
    kind, value = key
    if kind in ("exact", "prefix"):
        return value
    if kind == "glob":
        return value.split("*", 1)[0]
    return None


def _candidates(key: Key) -> list[str]:
    kind, value = key
    if kind == "exact":
        return [value]
    if kind == "prefix":
        return [value, value + "x", value + "/x", value + "/"]
    if kind == "glob":
        out = []
        for seg, dbl in (("x", ""), ("x", "x/y"), ("y", "/"), ("1", "x")):
            out.append(value.replace("**", "\0").replace("*", seg).replace("\0", dbl))
        return out
    return []


# The strings a request can carry, as rules see them (docs/semantics.md).
# A path is a *normalized* path (semantics.patterns.normalize_path is the
# identity on it): `/` then segments of visible ASCII other than `/ % \\ ? #`
# or escapes that normalization keeps (upper-case hex, not of an unreserved
# character, not `%2F`/`%5C`); no empty, `.` or `..` segment (nor `.;x`,
# `..;x`), except one trailing `/`. tests/test_request_model.py checks this
# regex against normalize_path's fixed points. Spelling tricks (`//`, `/./`, `%61`) are outside it: rules
# never see them. A header value is visible ASCII, space, tab and obs-text
# (RFC 9110). Neither holds a newline, so RE2's `.` is "any character" here.
_PCHAR = r"[\x21\x22\x24\x26-\x2e\x30-\x3e\x40-\x5b\x5d-\x7e]"
_PCHAR_NODOT = r"[\x21\x22\x24\x26-\x2d\x30-\x3e\x40-\x5b\x5d-\x7e]"
_ESCAPE = r"%(?:[01][0-9A-F]|2[0-9A-C]|3[A-F]|40|5[BDE]|60|7[BCDF]|[89A-F][0-9A-F])"
_PCHAR_NODOT_NOSEMI = r"[\x21\x22\x24\x26-\x2d\x30-\x3a\x3c-\x3e\x40-\x5b\x5d-\x7e]"
_UNIT, _UNIT_NODOT = f"(?:{_PCHAR}|{_ESCAPE})", f"(?:{_PCHAR_NODOT}|{_ESCAPE})"
_UNIT_NODOT_NOSEMI = f"(?:{_PCHAR_NODOT_NOSEMI}|{_ESCAPE})"
# a segment is not `.` or `..`, nor `.;x` / `..;x` (those count as `.` / `..`)
_SEGMENT = rf"(?:{_UNIT_NODOT}{_UNIT}*|\.{{1,2}}{_UNIT_NODOT_NOSEMI}{_UNIT}*|\.\.\.{_UNIT}*)"
NORMALIZED_PATH = rf"/|(?:/{_SEGMENT})+/?"
UNIVERSES: dict[str, Key] = {
    "path": ("regex", NORMALIZED_PATH),
    "value": ("regex", "[\t -~\x80-\xff]*"),
}


def is_normalized(s: str) -> bool:
    """In the path universe: visible ASCII that normalization leaves as it is."""
    if not s.startswith("/") or not all("!" <= ch <= "~" for ch in s):
        return False
    if not any(t in s for t in ("//", "/.", "%", "\\", "?", "#")):
        return True  # nothing normalization would touch (asked very often)
    return normalize_path(s) == s


class Splitter:
    """Splits one universe of strings (see UNIVERSES) into atoms."""

    def __init__(self, universe: str, timeout_ms: int, stats: dict | None = None):
        self.universe = universe
        self.universe_key = UNIVERSES[universe]
        self._memo: dict[tuple[Key, str], bool] = {}
        self.timeout_ms = timeout_ms
        self.stats = stats if stats is not None else {}
        self.pool: list[str] = []
        # the pool sorted, with insertion order: candidates sharing a literal
        # prefix are found by bisection instead of scanning the whole pool
        # (with many patterns, scanning made splitting cubic in them)
        self._sorted: list[tuple[str, int]] = []
        for c in (["/", "/x", "/x/y"] if universe == "path" else ["", "x", "yes"]):
            self._add(c)

    def _add(self, c: str) -> None:
        bisect.insort(self._sorted, (c, len(self.pool)))
        self.pool.append(c)

    def _with_prefix(self, lit: str) -> list[str]:
        """Pool strings starting with lit, in the order they were added."""
        lo = bisect.bisect_left(self._sorted, (lit, -1))
        found = []
        for s, i in self._sorted[lo:]:
            if not s.startswith(lit):
                break
            found.append((i, s))
        return [s for _, s in sorted(found)]

    def in_universe(self, s: str) -> bool:
        if self.universe == "path":  # NORMALIZED_PATH, spelled out: it is asked very often
            return is_normalized(s)
        return all(ch == "\t" or " " <= ch <= "~" or "\x80" <= ch <= "\xff" for ch in s)

    def match(self, k: Key, s: str) -> bool:
        """matches(), remembered: candidate strings are tried against many regions."""
        lit = _literal_prefix(k)
        if lit and not s.startswith(lit):
            return False  # a string without the pattern's literal prefix cannot match it
        got = self._memo.get((k, s))
        if got is None:
            got = self._memo[(k, s)] = matches(k, s)
        return got

    def split(self, keys: list[Key]) -> list[Atom]:
        for k in keys:
            for c in _candidates(k):
                if self.in_universe(c):
                    self._add(c)
        order = list(dict.fromkeys(keys))
        self._index_keys(order)
        root = _Region((), order, 0, self.pool[0])
        regions = [root]
        # Each region is updated in place; a region split off at step s gets
        # its parent's rank plus (-s,), so sorting by rank at the end gives
        # the order of splitting every region at every step (a child right
        # after its parent, later children first). Regions are found by the
        # literal prefix their patterns force (`lit`): a pattern with
        # literal prefix L can only meet regions whose `lit` is a prefix of L
        # or extends it, so the others are not visited at all.
        rank = {id(root): ()}
        by_lit: dict[str, dict[int, _Region]] = {"": {id(root): root}}
        lits: list[str] = [""]
        for step, k in enumerate(order, 1):
            lk = _literal_prefix(k) or ""
            if not lk:
                visit = list(regions)
            else:
                visit = [r for j in range(len(lk) + 1) for r in by_lit.get(lk[:j], {}).values()]
                i = bisect.bisect_right(lits, lk)
                while i < len(lits) and lits[i].startswith(lk):
                    visit.extend(by_lit[lits[i]].values())
                    i += 1
            for r in visit:
                inside = self.match(k, r.witness)
                joint = max(r.lit, lk, key=len)
                if not inside and not (joint.startswith(r.lit) and joint.startswith(lk)):
                    continue  # r and k need incompatible literal prefixes: they share no string
                other = _Region(r.pos, order, step, "", r.lit) if inside else _Region(r.pos + (k,), order, step, "", joint)
                if inside:
                    r.pos = r.pos + (k,)
                    self._relit(r, joint, by_lit, lits)
                other.__dict__["neg"] = self._relevant_neg(other)
                w = self._witness(other)
                if w is not None:
                    other.witness = w
                    regions.append(other)
                    rank[id(other)] = rank[id(r)] + (-step,)
                    by_lit.setdefault(other.lit, {})[id(other)] = other
                    if other.lit not in lits[bisect.bisect_left(lits, other.lit):][:1]:
                        bisect.insort(lits, other.lit)
            if len(regions) > MAX_ATOMS:
                raise Undecided(f"more than {MAX_ATOMS} path classes")
        regions.sort(key=lambda r: rank[id(r)])
        out = []
        for r in regions:
            # (its witness is in no other pattern by construction: a later
            # pattern it matches was added to `pos` at that step)
            assert all(self.match(k, r.witness) for k in r.pos) and self.in_universe(r.witness), \
                (r, "witness outside its atom")
            out.append(Atom(r.witness, frozenset(r.pos)))
        return out

    def _index_keys(self, order: list[Key]) -> None:
        """Keys by literal prefix, for _relevant_neg."""
        self._by_lit: dict[str, list[tuple[int, Key]]] = {}
        for i, k in enumerate(order):
            self._by_lit.setdefault(_literal_prefix(k) or "", []).append((i, k))
        self._key_lits = sorted(self._by_lit)

    def _relevant_neg(self, r: _Region) -> tuple[Key, ...]:
        """The patterns split so far that r is outside of and that could
        match one of its strings: those whose literal prefix is compatible
        with r's (a prefix of it, or extending it). The others match nothing
        that starts with r.lit, so leaving them out changes no answer, and
        a region no longer looks at every pattern of the destination."""
        found = [x for j in range(len(r.lit) + 1) for x in self._by_lit.get(r.lit[:j], ())]
        i = bisect.bisect_right(self._key_lits, r.lit)
        while i < len(self._key_lits) and self._key_lits[i].startswith(r.lit):
            found.extend(self._by_lit[self._key_lits[i]])
            i += 1
        pos = set(r.pos)
        return tuple(k for i, k in sorted(found) if i < r.upto and k not in pos)

    @staticmethod
    def _relit(r: _Region, lit: str, by_lit: dict, lits: list[str]) -> None:
        """Move r to the bucket of its new literal prefix."""
        if lit == r.lit:
            return
        del by_lit[r.lit][id(r)]
        r.lit = lit
        by_lit.setdefault(lit, {})[id(r)] = r
        if lit not in lits[bisect.bisect_left(lits, lit):][:1]:
            bisect.insort(lits, lit)

    def _witness(self, r: _Region) -> str | None:
        # a positive exact pattern makes the region a single string
        exact = next((k for k in r.pos if k[0] == "exact"), None)
        if exact is not None:
            return exact[1] if r.admits(exact[1], self.match) and self.in_universe(exact[1]) else None
        # patterns with incompatible literal prefixes share no string
        lits = [p for p in (_literal_prefix(k) for k in r.pos) if p]
        if self.universe == "path":
            lits.append("/")
        for a in lits:
            for b in lits:
                if not (a.startswith(b) or b.startswith(a)):
                    return None
        # a glob without `**` (or an exact path) fixes how many `/` a string has;
        # other globs need at least as many as their literal parts hold
        fixed = {k[1].count("/") for k in r.pos if k[0] in ("exact", "glob") and "**" not in k[1]}
        least = max((k[1].replace("**", "").count("/") for k in r.pos if k[0] in ("glob", "prefix")), default=0)
        if len(fixed) > 1 or (fixed and least > min(fixed)):
            return None
        # a negative prefix-like pattern (prefix L, or glob L** with no other
        # wildcard) holds every string of the universe that starts with L
        for k in r.neg:
            cover = k[1] if k[0] == "prefix" else (k[1][:-2] if k[0] == "glob" and k[1].endswith("**")
                                                   and "*" not in k[1][:-2] else None)
            if cover is not None and any(p.startswith(cover) for p in lits):
                return None
        longest = max(lits, key=len, default="")
        for c in (self._with_prefix(longest) if len(longest) > 1 else self.pool):
            if self.in_universe(c) and r.admits(c, self.match):
                return c
        w = self._solve(r)
        if w is not None:
            self._add(w)
        return w

    def _solve(self, r: _Region) -> str | None:
        from . import automata

        try:
            self.stats["automaton_queries"] = self.stats.get("automaton_queries", 0) + 1
            w = automata.witness(tuple(sorted(set(r.pos) | {self.universe_key})), tuple(sorted(set(r.neg))))
            return None if w is None else self._decode(w, r)
        except automata.NotRegular as exc:
            raise Unsupported(str(exc)) from None
        except automata.TooLarge:
            return self._solve_z3(r)

    def _solve_z3(self, r: _Region) -> str | None:
        z3 = _z3()
        s = z3.String("s")
        base = [z3.InRe(s, z3_regex(k)) for k in r.pos] + [z3.Not(z3.InRe(s, z3_regex(k))) for k in r.neg]
        base.append(z3.InRe(s, z3_regex(self.universe_key)))
        # Prefer a readable witness (printable ASCII); fall back to any string.
        nice = z3.InRe(s, z3.Star(z3.Range(z3.StringVal("!"), z3.StringVal("~"))))
        solver = z3.Solver()
        solver.set("timeout", self.timeout_ms)
        solver.add(*base)
        self.stats["string_queries"] = self.stats.get("string_queries", 0) + 1
        res = solver.check(nice)
        if res == z3.sat:
            return self._decode(solver.model()[s].as_string(), r)
        res = solver.check()
        if res == z3.sat:
            return self._decode(solver.model()[s].as_string(), r)
        if res == z3.unsat:
            return None
        raise Undecided(f"Z3 could not decide a path class ({solver.reason_unknown()})")

    @staticmethod
    def _decode(w: str, r: _Region) -> str:
        if not r.admits(w):
            raise AssertionError(f"Z3 witness {w!r} disagrees with the reference matcher for {r}")
        return w


def split(keys: list[Key], universe: str = "path", timeout_ms: int = 2000, stats: dict | None = None) -> list[Atom]:
    """The atoms of `keys` (in first-seen order of the keys; repeated calls with
    the same patterns, common across services, are answered from a cache)."""
    return list(_split(tuple(dict.fromkeys(keys)), universe, timeout_ms, stats))


@lru_cache(maxsize=4096)
def _split_cached(keys: tuple[Key, ...], universe: str, timeout_ms: int) -> tuple[Atom, ...]:
    return tuple(Splitter(universe, timeout_ms).split(list(keys)))


def _split(keys, universe, timeout_ms, stats):
    if stats is not None:
        stats["splits"] = stats.get("splits", 0) + 1
    return _split_cached(keys, universe, timeout_ms)
