"""The error-recovering parser: tokens -> items -> blocks.

Lark's LALR tables parse one item (a statement, or a block opener ending in
`{`) at a time. This driver splits items at newlines and `;`, handles `{`
and `}` nesting itself, and chooses each token's terminal from what the
parser state accepts (contextual keywords). A syntax error skips the rest of
its item only, so one run reports every broken statement.
"""

from __future__ import annotations

import difflib
import heapq
import re
from functools import lru_cache

from lark.parsers.lalr_analysis import Shift

from ..codes import diag
from ..diagnostics import Diagnostic
from ..span import Span
from . import tables
from .lexer import Tok, tokenize
from .nodes import Node, SyntaxFile
from .tables import BLOCK_STARTS
from .transform import CURRENT, ParseContext, ToNodes, tspan

BLOCK_TITLES = {
    "top": "the top level",
    "mesh": "a `mesh` block",
    "service": "a `service` block",
    "version": "a `version` block",
    "route": "a `route` block",
    "jwt": "a `jwt` block",
    "ingress": "an `ingress` block",
    "external": "an `external` block",
}
# Words that open a statement, per block: for "did you mean" and for telling
# the user which block a misplaced statement belongs in.
STATEMENT_WORDS = {
    "top": ["mesh", "service", "route", "jwt", "ingress", "external", "allow", "deny", "limit", "assert"],
    "mesh": ["trust_domain", "mtls", "default", "tracing", "metrics", "egress"],
    "service": ["namespace", "account", "port", "mtls", "timeout", "retry", "circuit",
                "outlier", "balance", "fault", "version", "cors"],
    "version": ["circuit", "outlier", "balance"],
    "route": ["header", "query", "from", "prefix", "regex", "exact", "GET", "POST", "*", "/..."],
    "jwt": ["issuer", "audience", "jwks", "jwks_uri", "token"],
    "ingress": ["namespace", "account", "listen", "hosts", "jwt", "header", "query", "prefix", "regex",
                "exact", "GET", "POST", "*", "/..."],
    "external": ["namespace", "host", "port", "timeout", "retry"],
}

# Open-class terminals come after keywords when a token could be either.
_OPEN_CLASSES = ["NAME", "METHOD", "INT", "COND"]
_FIXED_CLASS = {
    "STRING": ("STRING",),
    "DURATION": ("DURATION",),
    "PERCENT": ("PERCENT",),
    "RATE": ("RATE",),
    "PATH": ("PATH",),
    "INT": ("INT", "COND"),
}
_FRIENDLY = {
    "NAME": "a name",
    "METHOD": "an HTTP method",
    "COND": "a retry condition",
    "STRING": 'a string like "text"',
    "INT": "a whole number",
    "PERCENT": "a percentage like 10%",
    "DURATION": "a duration like 500ms or 2s",
    "RATE": "a rate like 100/s",
    "PATH": "a path like /orders/*",
    "STAR": "`*`",
    "$END": "the end of the statement",
}


class Grammar:
    """The compiled grammar: parse tables, callbacks and terminal lookup.

    The driver below runs Lark's LALR tables and rule callbacks itself rather
    than through `Lark.parse`: it feeds one item at a time, picks each token's
    terminal from what the state accepts (contextual keywords) and recovers
    per item. That reads Lark internals (parser.parser.parser.parse_table and
    callbacks, Shift, rule.expansion/origin), stable through Lark 1.x;
    pyproject.toml pins the range tests/test_parser_cache.py runs against,
    and `_internals` fails with a clear message if a Lark release moves them.
    """

    def __init__(self) -> None:
        lark = tables.load(transformer=ToNodes())
        inner = _internals(lark)
        self.parse_table = inner.parse_table
        self.callbacks = inner.callbacks
        # Plain-str keys: Lark keys some entries with its Token (a str subclass
        # with a Python-level __eq__), which made every lookup slow.
        self.states = {
            st: {str(k): (a, self._plain(a, arg)) for k, (a, arg) in acts.items()}
            for st, acts in self.parse_table.states.items()
        }
        self.start_states = {b: self.parse_table.start_states[s] for b, s in BLOCK_STARTS.items()}
        self.end_states = {b: self.parse_table.end_states[s] for b, s in BLOCK_STARTS.items()}
        self._terms = []  # (name, matcher, is_exact_string)
        self._display = {}
        for t in lark.terminals:
            pat = t.pattern
            if pat.type == "str":
                self._terms.append((t.name, re.compile(re.escape(pat.value)), True))
                self._display[t.name] = f"`{pat.value}`"
            else:
                self._terms.append((t.name, re.compile(pat.to_regexp()), False))
                alts = re.findall(r"[a-z_0-9]+", pat.value) if t.name not in _FRIENDLY else []
                if t.name not in _FRIENDLY and "|" in pat.value:
                    self._display[t.name] = " or ".join(f"`{a}`" for a in alts)
        self._display.update(_FRIENDLY)
        # A text that no keyword or keyword set matches (a name, nearly always) can only be one of
        # the open classes: one match against all of them instead of one per terminal.
        closed = [rx.pattern for name, rx, is_str in self._terms
                  if name not in _OPEN_CLASSES and name not in _FIXED_CLASS]
        self._closed = re.compile("|".join(f"(?:{p})" for p in closed))
        self._open = sorted(((name, rx) for name, rx, _ in self._terms if name in _OPEN_CLASSES),
                            key=lambda t: _OPEN_CLASSES.index(t[0]))
        # Per-token lookups, filled as texts and states are met: the id of a token's candidates
        # (by lexical class alone where its text does not matter, else by class and text), and
        # (state, candidates id) -> the terminal the state takes (see pick).
        self.cand_tuples: list[tuple[str, ...]] = []
        self._cand_ids: dict[tuple[str, ...], int] = {}
        self.fixed_ids = {cls: self._intern(cands) for cls, cands in _FIXED_CLASS.items()}
        self.text_ids: dict[str, dict[str, int]] = {}
        self.picks: dict[tuple[int, int], str | None] = {}

    def _plain(self, action, arg):
        """Shift: the next state. Reduce: (size, origin name, callback) of the rule."""
        if action is Shift:
            return arg
        return (len(arg.expansion), str(arg.origin.name), _direct(self.callbacks[arg], len(arg.expansion)))

    @lru_cache(maxsize=4096)
    def candidates(self, cls: str, text: str) -> tuple[str, ...]:
        """Terminals a token could be, best first: keywords, then open classes."""
        if cls in _FIXED_CLASS:
            return _FIXED_CLASS[cls]
        if not self._closed.fullmatch(text):
            return tuple(name for name, rx in self._open if rx.fullmatch(text))
        exact, sets, open_ = [], [], []
        for name, rx, is_str in self._terms:
            if name in _FIXED_CLASS and name != "INT":
                continue
            if rx.fullmatch(text):
                if is_str:
                    exact.append(name)
                elif name in _OPEN_CLASSES:
                    open_.append(name)
                else:
                    sets.append(name)
        open_.sort(key=_OPEN_CLASSES.index)
        return tuple(exact + sets + open_)

    def _intern(self, cands: tuple[str, ...]) -> int:
        cid = self._cand_ids.get(cands)
        if cid is None:
            cid = self._cand_ids[cands] = len(self.cand_tuples)
            self.cand_tuples.append(cands)
        return cid

    def cand_id(self, cls: str, text: str) -> int:
        """The id of candidates(cls, text), remembered in text_ids (words and punctuation)."""
        cid = self._intern(self.candidates(cls, text))
        known = self.text_ids.setdefault(cls, {})
        if len(known) >= _TEXTS_KEPT:  # a long-lived process (the language server) meets texts without end
            known.clear()
        known[text] = cid
        return cid

    def pick(self, state, cid: int) -> str | None:
        """The first candidate the state accepts; AMBIGUOUS when a later one is accepted too; None
        when none is. Remembered in picks."""
        accepted = self.states[state]
        cands = self.cand_tuples[cid]
        ok = [n for n in cands if n in accepted]
        out = None if not ok else ok[0] if len(ok) == 1 else AMBIGUOUS
        self.picks[(state, cid)] = out
        return out

    def describe(self, terminals) -> str:
        names = sorted({self._display.get(t, f"`{t.lower()}`") for t in terminals if t.isupper() or t == "$END"})
        if len(names) > 8:
            names = names[:8] + ["..."]
        return ", ".join(names)


def _direct(callback, size: int):
    """A rule callback without Lark's child-filter wrapper where that only picks children.

    Lark wraps each transformer method in ChildFilterLALR_NoPlaceholders (drop the anonymous
    tokens, splice in `_rule` / `__x_star` children) and `?rule`s in ExpandSingleChild; a wrapper
    that splices nothing is a fixed selection of children, done here without its loop. Any other
    callback (or a Lark whose wrappers look different) is returned as it is.
    """
    from operator import itemgetter

    from lark.parse_tree_builder import ChildFilterLALR_NoPlaceholders, ExpandSingleChild

    if type(callback) is ExpandSingleChild:
        inner = _direct(callback.node_builder, size)
        return lambda children: children[0] if len(children) == 1 else inner(children)
    if type(callback) is not ChildFilterLALR_NoPlaceholders:
        return callback
    try:
        keep = [i for i, expand in callback.to_include if not expand]
        splice = [i for i, expand in callback.to_include if expand]
        build = callback.node_builder
    except (AttributeError, TypeError, ValueError):
        return callback
    if splice or not all(isinstance(i, int) for i in keep):
        return callback
    if keep == list(range(size)):
        return build  # every child kept: the slice the driver made is already a fresh list
    if not keep:
        return lambda children: build([])
    if len(keep) == 1:
        (i,) = keep
        return lambda children: build([children[i]])
    pick = itemgetter(*keep)
    return lambda children: build(list(pick(children)))


def _internals(lark):
    """Lark's LALR parser object (tables and callbacks), or a clear error."""
    try:
        inner = lark.parser.parser.parser
        table = inner.parse_table
        inner.callbacks, table.states, table.start_states, table.end_states  # noqa: B018
        rule = next(iter(inner.callbacks))
        rule.expansion, rule.origin.name  # noqa: B018
    except (AttributeError, StopIteration) as e:
        import lark as lark_pkg

        raise RuntimeError(
            f"meshpolicy's parser does not support the installed lark {lark_pkg.__version__} "
            f"(its LALR internals changed: {e}); install the version pyproject.toml asks for"
        ) from e
    return inner


@lru_cache(maxsize=1)
def grammar() -> Grammar:
    return Grammar()


class _Incomplete(Exception):
    pass


_TEXTS_KEPT = 200_000
AMBIGUOUS = "\0ambiguous"  # a pick: more than one candidate terminal is accepted (never a terminal name)
_CONTINUES = {",", "->", "~>", "<=", "="}


class _Frame:
    __slots__ = ("kind", "node", "items", "error")

    def __init__(self, kind: str, node: Node | None, error: bool = False):
        self.kind = kind
        self.node = node
        self.items: list[Node] = []
        self.error = error


def parse_text(text: str, path: str) -> tuple[SyntaxFile, list[Diagnostic]]:
    """Parse one file. Always returns a tree of what could be read, plus diagnostics."""
    ctx = ParseContext(path)
    token = CURRENT.set(ctx)
    try:
        return _Driver(text, path, ctx).run()
    finally:
        CURRENT.reset(token)


class _Driver:
    def __init__(self, text: str, path: str, ctx: ParseContext):
        self.g = grammar()
        self.text = text
        self.path = path
        self.ctx = ctx
        self.diags = ctx.diagnostics
        self.top = _Frame("top", None)
        self.stack = [self.top]
        self.item: list[Tok] = []
        self.failed = False
        self.ss: list | None = None  # LALR state stack of the current item
        self.vs: list = []  # its value stack
        self.end_state = None

    # -- the LALR loop (Lark's tables and callbacks, driven one item at a time)
    def _push(self, tok: Tok | None) -> object:
        """Shift tok (None: end of item, returns the item's node)."""
        states = self.g.states
        ss, vs = self.ss, self.vs
        typ = "$END" if tok is None else tok.type
        while True:
            try:
                action, arg = states[ss[-1]][typ]
            except KeyError:
                raise _Incomplete from None
            if action is Shift:
                ss.append(arg)
                vs.append(tok)
                return None
            size, origin, callback = arg
            if size:
                children = vs[-size:]
                del ss[-size:]
                del vs[-size:]
            else:
                children = []
            value = callback(children)
            ss.append(states[ss[-1]][origin][1])
            vs.append(value)
            if tok is None and ss[-1] == self.end_state:
                return value

    def run(self) -> tuple[SyntaxFile, list[Diagnostic]]:
        tokens, comments, lex_errors = tokenize(self.text)
        unclosed = []
        bad_on_line: dict[int, list] = {}  # line -> its unexpected characters
        for err in lex_errors:
            tok = err.token
            if err.kind == "BADSTRING":
                self.diags.append(diag("MP004", "this string is not closed before the end of the line", tspan(tok)))
                unclosed.append(tok)
            else:
                bad_on_line.setdefault(tok.line, []).append(tok)
        # One report per line, at its first unexpected character: a line of 100k `(` gave 100k
        # reports, each quoting the whole line (gigabytes of output).
        for toks in bad_on_line.values():
            ch, more = str(toks[0]), len(toks) - 1
            self.diags.append(diag("MP003", f"unexpected character `{ch}` (U+{ord(ch):04X})" +
                                   (f", and {more} more on this line" if more else ""), tspan(toks[0])))
        if unclosed:  # they stay in their item, so it fails without a second report
            tokens = list(heapq.merge(tokens, unclosed, key=lambda t: t.start_pos))
        for tok in tokens:
            v = tok.value
            typ = tok.type
            if typ == "BADSTRING":
                # The rest of the line is in this token: its item is broken, and said so (MP004).
                self.item.append(tok)
                self.failed = True
            elif typ == "NL":
                if self.item and self.item[-1].value in _CONTINUES:
                    continue
                self._end_item()
            elif typ == "PUNCT" and v == ";":
                self._end_item()
            elif typ == "PUNCT" and v == "}":
                self._end_item()
                self._close(tok)
            else:
                self._feed(tok)
                if typ == "PUNCT" and v == "{":
                    self._end_item()
        self._end_item()
        while len(self.stack) > 1:
            frame = self.stack.pop()
            if frame.node is not None and not frame.error:
                opener = frame.node
                self.diags.append(
                    diag("MP006", f"`{_title(opener)}` is never closed", opener.span,
                         help="add `}` after its last statement")
                )
                self._attach(frame)
        return SyntaxFile(self.path, self.top.items, comments), self.diags

    def _feed(self, tok: Tok) -> None:
        self.item.append(tok)
        if self.failed:
            return
        g = self.g
        ss = self.ss
        if ss is None:
            kind = self.stack[-1].kind
            ss = self.ss = [g.start_states[kind]]
            self.vs = []
            self.end_state = g.end_states[kind]
        state = ss[-1]
        cid = g.fixed_ids.get(tok.type)
        if cid is None:
            try:
                cid = g.text_ids[tok.type][tok.value]
            except KeyError:
                cid = g.cand_id(tok.type, tok.value)
        try:
            name = g.picks[(state, cid)]
        except KeyError:
            name = g.pick(state, cid)
        if name is None:
            self._syntax_error(tok, g.states[state])
            return
        if name is AMBIGUOUS:
            # Two readings the state accepts (`->` as an arrow or as `~>`'s class REACH): the one
            # whose reductions end in a shift. A state may reduce on a terminal that the state the
            # reduction leads to does not shift (LALR merged lookaheads).
            accepted = g.states[state]
            ok = [n for n in g.cand_tuples[cid] if n in accepted]
            name = next((n for n in ok if self._shifts(n)), ok[0])
        tok.type = name  # from lexical class to grammar terminal
        # The LALR loop for one token (as _push, inlined: this runs for every token).
        states = g.states
        vs = self.vs
        while True:
            act = states[ss[-1]].get(name)
            if act is None:
                self._syntax_error(tok, states[state])
                return
            action, arg = act
            if action is Shift:
                ss.append(arg)
                vs.append(tok)
                return
            size, origin, callback = arg
            if size:
                children = vs[-size:]
                del ss[-size:]
                del vs[-size:]
            else:
                children = []
            value = callback(children)
            ss.append(states[ss[-1]][origin][1])
            vs.append(value)

    def _shifts(self, typ: str) -> bool:
        """Whether the current item can shift `typ` after the reductions it causes (states only)."""
        states = self.g.states
        ss = list(self.ss)
        while True:
            act = states[ss[-1]].get(typ)
            if act is None:
                return False
            action, arg = act
            if action is Shift:
                return True
            size, origin, _ = arg
            if size:
                del ss[-size:]
            ss.append(states[ss[-1]][origin][1])

    def _end_item(self) -> None:
        toks = self.item
        if not toks:
            return
        self.item = []
        opens_block = toks[-1].value == "{" and toks[-1].type != "STRING"
        ss, self.ss = self.ss, None
        failed, self.failed = self.failed, False
        node = None
        if not failed and ss is not None:
            self.ss = ss
            accepted = self.g.states[ss[-1]]
            try:
                node = self._push(None)
            except _Incomplete:
                last = toks[-1]
                self.diags.append(
                    diag("MP002", f"this statement is incomplete; expected {self.g.describe(accepted)} after `{last}`",
                         self._span(toks[0], last))
                )
            self.ss = None
        if node is None:
            if opens_block:  # keep nesting right so later `}` and items line up
                self.stack.append(_Frame(_guess_block(toks), None, error=True))
            return
        node.span = self._span(toks[0], toks[-1])
        if node.kind == "block_open" or (node.kind == "version" and node.get("opens")):
            kind = node.get("block") if node.kind == "block_open" else "version"
            self.stack.append(_Frame(kind, node))
        else:
            self.stack[-1].items.append(node)

    def _close(self, tok: Tok) -> None:
        if len(self.stack) == 1:
            self.diags.append(diag("MP007", "this `}` closes no open block", tspan(tok)))
            return
        frame = self.stack.pop()
        if frame.node is not None:
            frame.node.span = frame.node.span.to(tspan(tok))
            self._attach(frame)

    def _attach(self, frame: _Frame) -> None:
        node = frame.node
        node.children = frame.items
        parent = self.stack[-1]
        parent.items.append(node)

    def _span(self, first: Tok, last: Tok) -> Span:
        end = last.end_pos
        return Span(self.path, first.line, first.column, last.line, last.column + (end - last.start_pos),
                    first.start_pos, end)

    def _syntax_error(self, tok: Tok, accepted) -> None:
        self.failed = True
        block = self.stack[-1].kind
        if self.stack[-1].error:
            return  # inside a block whose opener was already reported
        first = len(self.item) == 1
        sp = tspan(tok)
        if first and tok.type in ("WORD", "PUNCT"):
            word = str(tok)
            homes = [b for b, words in STATEMENT_WORDS.items() if word in words and b != block]
            if homes and tok.type == "WORD":
                where = " or ".join(BLOCK_TITLES[b] for b in homes)
                self.diags.append(
                    diag("MP005", f"`{word}` cannot stand in {BLOCK_TITLES[block]}; it belongs in {where}", sp)
                )
                return
            choices = [w for w in STATEMENT_WORDS[block] if w not in ("/...",)]
            close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
            help_ = f"{BLOCK_TITLES[block]} takes: " + ", ".join(f"`{w}`" for w in STATEMENT_WORDS[block])
            msg = f"`{word}` does not start a statement in {BLOCK_TITLES[block]}"
            fixes = []
            if close:
                msg += f"; did you mean `{close[0]}`?"
                from ..diagnostics import Fix

                fixes.append(Fix(f"Replace with `{close[0]}`", sp, close[0]))
            self.diags.append(diag("MP009", msg, sp, help=help_, fixes=fixes))
            return
        shown = str(tok) if len(str(tok)) <= 40 else str(tok)[:37] + "..."
        self.diags.append(
            diag("MP002", f"unexpected `{shown}`; expected {self.g.describe(accepted)}", sp)
        )


def _guess_block(toks: list[Tok]) -> str:
    word = str(toks[0])
    return word if word in BLOCK_STARTS and word != "top" else "top"


def _title(node: Node) -> str:
    if node.kind == "block_open":
        return f"{node.get('block')} {node.get('name').name}"
    return f"version {node.get('name').name}"
