"""Path matches that hold only for normalized paths, because Linkerd's
proxy matches the path as the caller sent it.

The policy's rules see the normalized path (docs/semantics.md, "Paths are
normalized first"): `/a/../admin` is `/admin` to them, `/%61dmin` too, and
`/a%2Fb` is refused. Linkerd normalizes nothing, and an application behind
it may well resolve `..` or decode `%61`: a path rule matched on the raw path
could be dodged by spelling. So on a Server authorized per route
(route_authz.py):

- every pattern's match is restricted to normalized paths (the language of
  `meshpolicy.verify.atoms.NORMALIZED_PATH`, whose pieces are reused here):
  `pattern_regex` walks a glob's or prefix's literal parts through the
  automaton of normalized paths and writes each wildcard as the normalized
  continuations from the state it starts in; a user's regex is used only
  when no path outside the normalized ones matches it (checked exactly by
  the verifier's automata), else MP751;
- `UNNORMALIZED` matches exactly the other paths and is written as a route
  nobody is authorized on: longer than the catch-all's `PathPrefix /`, and
  no other match can hold for such a path, so Linkerd refuses it (403).

A path the policy would normalize and then judge (`/a/./b`) is therefore
refused by Linkerd: stricter than the policy, never looser.
"""

from __future__ import annotations

import re

from ...verify.atoms import NORMALIZED_PATH
from ..meshproxy.lower import literal

MAX_REGEX = 1024  # the CRD's maxLength of a path value

# The automaton of normalized paths, over units (a character or an escape):
# I before the leading `/`; S at a segment's start (accepting: `/`, or a
# trailing `/`); D1, D2 after `.` / `..` at a segment's start; G inside a
# segment that is not a dot segment (accepting).
I, S, D1, D2, G = "I", "S", "D1", "D2", "G"
ACCEPTING = (S, G)
# NORMALIZED_PATH's pieces, spelled short (a route's path is at most 1024
# characters); tests/test_linkerd_authz.py checks the languages are equal.
_PCHAR = r'[!"$&-.0->@-\[\]-~]'  # visible ASCII but # % / ? \
_PCHAR_NODOT_NOSEMI = r'[!"$&-,\-0-:<->@-\[\]-~]'
_ESCAPE = r"%(?:[0189A-F][0-9A-F]|2[0-9A-C]|3[A-F]|[46]0|5[BDE]|7[B-DF])"  # kept by normalization
_CHAR = re.compile(_PCHAR)
_ESCAPE_RE = re.compile(_ESCAPE)
U = f"(?:{_PCHAR}|{_ESCAPE})"
B = f"(?:{_PCHAR_NODOT_NOSEMI}|{_ESCAPE})"
SEG = rf"(?:(?:\.\.?)?{B}|;|\.\.\.){U}*"  # a segment that is not `.`, `..`, `.;x`, `..;x`
W = f"(?:{U}|/{SEG})*"  # from inside a segment: more of it, then whole segments
_NOT_DOT_START = rf"(?:{B}|\.(?:{B}|\.))"  # from D1 into a non-dot segment

# `*` (one or more characters but `/`) from each state: end state -> regex
STAR = {
    G: {G: f"{U}+"},
    S: {D1: r"\.", D2: r"\.\.", G: SEG},
    D1: {D2: r"\.", G: f"{_NOT_DOT_START}{U}*"},
    D2: {G: rf"(?:{B}|\.){U}*"},
    I: {},
}


def _any() -> dict[str, dict[str, str]]:
    """`**` (any characters, none too) from each state: end state -> regex."""
    out = {
        G: {G: W, S: f"{W}/", D1: rf"{W}/\.", D2: rf"{W}/\.\."},
        S: {S: f"(?:{SEG}/)*", G: f"(?:{SEG}/)*{SEG}", D1: rf"(?:{SEG}/)*\.", D2: rf"(?:{SEG}/)*\.\."},
    }
    out[D2] = {t: rf"(?:{B}|\.){rx}" for t, rx in out[G].items()}
    out[D2][D2] = ""
    out[D1] = {t: f"{B}{rx}" for t, rx in out[G].items()}
    for t, rx in out[D2].items():
        out[D1][t] = _alt(out[D1].get(t), r"\." + rx)
    out[D1][D1] = _alt(out[D1].get(D1), "")
    out[I] = {t: "/" + rx for t, rx in out[S].items()}
    return out


# `**` as the last token: only the accepting ends matter, written shorter
ANY_TO_END = {
    G: f"{W}/?",
    S: f"(?:{SEG}/?)*",
    D1: f"{_NOT_DOT_START}{W}/?",
    D2: rf"(?:{B}|\.){W}/?",
    I: f"/(?:{SEG}/?)*",
}


def _alt(a: str | None, b: str) -> str:
    if a is None:
        return b
    if a == b:
        return a
    return f"(?:{a}|{b})"


ANY = _any()

# Exactly the paths that are not normalized (tests/test_linkerd_authz.py
# checks it is NORMALIZED_PATH's complement, with the verifier's automata).
UNNORMALIZED = (
    r"^(?s:|[^/].*|.*[^!-~].*|.*[\\?#].*"
    r"|.*%(?:[^0-9A-F]|[0-9A-F][^0-9A-F]|2[D-F]|3[0-9]|4[1-9A-F]|5[0-9ACF]|6[1-9A-F]|7[0-9AE]).*"
    r"|.*%[0-9A-F]?|.*//.*|.*/\.\.?(?:;[^/]*)?(?:/.*)?)$"
)


class NotLayable(Exception):
    pass


def _step(state: str, unit: str) -> str | None:
    """The automaton's move on one unit (a character or a `%XX` escape)."""
    if state == I:
        return S if unit == "/" else None
    if unit == "/":
        return S if state == G else None
    if unit == ".":
        return {S: D1, D1: D2, D2: G, G: G}[state]
    if unit == ";":
        return G if state in (S, G) else None
    if len(unit) == 3 or _CHAR.fullmatch(unit):
        return G
    return None


def _literal(state: str, text: str) -> str | None:
    i = 0
    while state is not None and i < len(text):
        if text[i] == "%":
            unit = text[i:i + 3]
            if len(unit) < 3:
                raise NotLayable(f"the pattern ends inside the escape `{unit}`")
            if not _ESCAPE_RE.fullmatch(unit):
                return None
            i += 3
        else:
            unit = text[i]
            i += 1
        state = _step(state, unit)
    return state


def _tokens(kind: str, value: str) -> list[tuple[str, str]]:
    """A glob or prefix as ("lit", text) / ("star", "") / ("any", "") tokens."""
    if kind == "prefix":
        return [("lit", value), ("any", "")]
    out: list[tuple[str, str]] = []
    for part in re.split(r"(\*\*|\*)", value):
        if part == "**":
            out.append(("any", ""))
        elif part == "*":
            out.append(("star", ""))
        elif part:
            out.append(("lit", part))
    return out


def pattern_regex(kind: str, value: str) -> str | None:
    """An anchored regex for the normalized paths a glob or prefix matches
    (None: no normalized path matches it). Raises NotLayable."""
    tokens = _tokens(kind, value)
    front: dict[str, str] = {I: ""}
    for n, (what, text) in enumerate(tokens):
        last = n == len(tokens) - 1
        nxt: dict[str, str] = {}
        for s, rx in front.items():
            if what == "lit":
                t = _literal(s, text)
                if t is not None:
                    nxt[t] = _alt(nxt.get(t), rx + literal(text))
            elif what == "any" and last:
                nxt[S] = _alt(nxt.get(S), rx + ANY_TO_END[s])  # (S stands for "accepting")
            else:
                for t, w in (STAR if what == "star" else ANY)[s].items():
                    nxt[t] = _alt(nxt.get(t), rx + w)
        front = nxt
    ends = [rx for s, rx in front.items() if s in ACCEPTING]
    if not ends:
        return None
    body = ends[0] if len(ends) == 1 else "|".join(ends)
    out = f"^(?:{body})$"
    if len(out) > MAX_REGEX:
        raise NotLayable(f"the match for `{value}` restricted to normalized paths is {len(out)} characters "
                         f"long, more than a route's {MAX_REGEX}")
    return out


def regex_is_normal(regex: str) -> str | None:
    """None when every path a (RE2) regex matches is normalized; else a path
    it matches that is not."""
    from ...verify.automata import NotRegular, TooLarge, witness

    try:
        return witness((("regex", regex),), (("regex", NORMALIZED_PATH),))
    except (TooLarge, NotRegular) as exc:
        raise NotLayable(f"whether `{regex}` matches only normalized paths cannot be decided ({exc})") from None
