"""The parser's fast paths give what the plain paths they replace give.

meshpolicy/syntax takes shortcuts for speed (docs/performance.md, "Ten times
the scale"): the tokenizer's regex takes the blanks before a token in the same
match, candidate terminals are found with one union match, Lark's child-filter
wrappers are replaced by direct selections, and whole-number durations skip
Fraction. Each is compared here with the plain path it stands for.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from datetime import timedelta

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from meshpolicy.gc_pause import gc_paused
from meshpolicy.syntax import parser as P
from meshpolicy.syntax.lexer import _TOKEN_RE, Comment, LexError, Tok, tokenize

from .conftest import EXAMPLES, codes


def reference_tokenize(text: str):
    """The tokenizer as it was: one match per blank run and per token, from _TOKEN_RE."""
    tokens, comments, errors = [], [], []
    line, line_start, own_line = 1, 0, True
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        start, end = m.span()
        if kind == "WS":
            continue
        col = start - line_start + 1
        if kind == "NL":
            tokens.append(Tok("NL", "\n", start, end, line, col))
            line, line_start, own_line = line + 1, end, True
            continue
        if kind == "COMMENT":
            comments.append(Comment(m.group(), line, col, start, end, own_line))
            continue
        own_line = False
        tok = Tok(kind, m.group(), start, end, line, col)
        if kind in ("BAD", "BADSTRING"):
            errors.append(LexError(kind, tok))
        else:
            tokens.append(tok)
    return tokens, comments, errors


def _plain(result):
    toks, comments, errors = result
    as_tuple = lambda t: (t.type, t.value, t.start_pos, t.end_pos, t.line, t.column, t.end_line, t.end_column)  # noqa: E731
    return ([as_tuple(t) for t in toks], comments, [(e.kind, as_tuple(e.token)) for e in errors])


# Texts made of the pieces that matter to the tokenizer: blanks of every kind, line ends of
# every kind, words, numbers with units, strings (closed or not), comments, stray characters.
_PIECES = st.sampled_from([" ", "  ", "\t", "\f", "\n", "\r\n", "\r", "service", "a-b", "5xx", "10", "2.5s",
                           "500ms", "10/s", "50%", '"x y"', '"open', '"a\\"b"', "# note", "->", "~>", "<=",
                           "{", "}", ";", ",", "=", "*", "/p/*", "(", "é", "\x0b", "1.5", "-", "\\"])


@settings(max_examples=300, deadline=timedelta(seconds=5))
@given(st.lists(_PIECES, max_size=40).map("".join))
def test_tokenizer_matches_the_one_match_per_blank_reference(text):
    assert _plain(tokenize(text)) == _plain(reference_tokenize(text))


def test_tokenizer_matches_the_reference_on_the_examples():
    for path in sorted(EXAMPLES.glob("*/*.mesh")):
        text = path.read_text(encoding="utf-8")
        assert _plain(tokenize(text)) == _plain(reference_tokenize(text)), path
        for ends in ("\r\n", "\r"):
            other = text.replace("\n", ends)
            assert _plain(tokenize(other)) == _plain(reference_tokenize(other)), (path, ends)


def reference_candidates(g: P.Grammar, cls: str, text: str) -> tuple[str, ...]:
    """Every terminal's pattern tried in turn (what candidates() did before its union match)."""
    if cls in P._FIXED_CLASS:
        return P._FIXED_CLASS[cls]
    exact, sets, open_ = [], [], []
    for name, rx, is_str in g._terms:
        if name in P._FIXED_CLASS and name != "INT":
            continue
        if rx.fullmatch(text):
            (exact if is_str else open_ if name in P._OPEN_CLASSES else sets).append(name)
    open_.sort(key=P._OPEN_CLASSES.index)
    return tuple(exact + sets + open_)


def test_candidates_match_the_per_terminal_reference_for_every_keyword():
    g = P.grammar()
    words = {rx.pattern.replace("\\", "") for _, rx, is_str in g._terms if is_str}
    words |= {w for _, rx, is_str in g._terms if not is_str for w in rx.pattern.strip("(?:)").split("|")}
    words |= {"GET", "get", "Get", "5xx", "retriable-4xx", "a-b", "_x", "x_1", "HTTP", "off", "->", "~>"}
    assert len(words) > 100
    for word in sorted(words):
        for cls in ("WORD", "PUNCT"):
            assert g.candidates(cls, word) == reference_candidates(g, cls, word), word


@settings(max_examples=300, deadline=timedelta(seconds=5))
@given(st.from_regex(r"[A-Za-z0-9_]{1,12}(-[A-Za-z0-9_]{1,6}){0,2}", fullmatch=True))
def test_candidates_match_the_reference_for_any_word(word):
    g = P.grammar()
    assert g.candidates("WORD", word) == reference_candidates(g, "WORD", word)


def _lark_wrappers(g: P.Grammar) -> int:
    """Reductions that go through one of Lark's callback wrappers."""
    return sum(1 for acts in g.states.values() for action, arg in acts.values()
               if action is not P.Shift and type(arg[2]).__module__ == "lark.parse_tree_builder")


def test_direct_callbacks_build_the_same_trees_as_larks_wrappers(monkeypatch):
    fast = P.grammar()
    wrapped_calls = []
    monkeypatch.setattr(P, "_direct", lambda callback, size: wrapped_calls.append(1) or callback)
    plain = P.Grammar()  # every rule through Lark's own wrappers
    assert wrapped_calls
    assert _lark_wrappers(fast) < _lark_wrappers(plain), "no callback took the direct path: the test compares nothing"
    texts = [p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*/*.mesh"))]
    texts.append("service a {\n port 80 http\n retry 3 per_try 2s on 5xx, reset\n timeout \"2s\"\n}\n"
                 "allow a, b -> c GET, POST /x/*\nroute a {\n GET /p -> v1 90%, v2 10%\n}\n")
    for text in texts:
        monkeypatch.setattr(P, "grammar", lambda: fast)
        with_fast = P.parse_text(text, "t.mesh")
        monkeypatch.setattr(P, "grammar", lambda: plain)
        with_plain = P.parse_text(text, "t.mesh")
        assert with_fast == with_plain


def test_a_duration_with_thousands_of_digits_is_a_diagnostic_not_a_traceback():
    # int() and Fraction() refuse more than 4300 digits: this raised ValueError before
    for number in ("9" * 5000, "9" * 5000 + ".5", "0." + "0" * 4500 + "1"):
        tree, diags = P.parse_text("service a {\n timeout " + number + "ms\n}\n", "t.mesh")
        assert codes(diags) == ["MP008"], number


def test_whole_and_decimal_durations_keep_their_values():
    for text, ms, bad in (("2s", 2000, False), ("0500ms", 500, False), ("1.5s", 1500, False), ("1.5m", 90000, False),
                          ("0.5ms", 0, True), ("1.0001s", 1000, True), ("11574075h", 10**12, True)):
        tree, diags = P.parse_text(f"service a {{\n timeout {text}\n}}\n", "t.mesh")
        assert tree.items[0].children[0].get("duration").value == ms, text
        assert (codes(diags) == ["MP008"]) is bad, (text, codes(diags))


def test_settled_gc_pause_leaves_nothing_for_the_next_collection_to_scan():
    gc.collect()
    frozen = gc.get_freeze_count()
    try:
        with gc_paused(settle=True):
            kept = [[i] for i in range(50_000)]  # tracked containers that stay alive
        assert gc.get_count()[0] < 1000  # no backlog: the next young collection would scan ~nothing
        assert gc.get_freeze_count() >= frozen + 50_000
        assert gc.isenabled()
    finally:
        gc.unfreeze()
    del kept


def test_check_command_settles_what_it_built_in_meshcs_own_process(monkeypatch):
    from meshpolicy.cli import LazyGroup
    from meshpolicy.commands.check import command

    monkeypatch.setattr(LazyGroup, "settle_imports", True)  # what meshc's main() says (not a CliRunner test)
    gc.collect()
    frozen = gc.get_freeze_count()
    try:
        result = CliRunner().invoke(command, [str(EXAMPLES / "shop")])
        assert result.exit_code == 0, result.output
        assert gc.get_freeze_count() > frozen  # the trees and the model, frozen rather than rescanned
    finally:
        gc.unfreeze()


def test_python_dash_m_runs_one_cli_module(tmp_path):
    # `python -m meshpolicy.cli` (bench/bench_scale.py runs it so) must not import a second copy of
    # the module: the check command reads main()'s settle flag from `meshpolicy.cli`.
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import atexit, os, runpy, sys\n"
        "atexit.register(lambda: os.write(2, b'settle=%d' % sys.modules['meshpolicy.cli'].LazyGroup.settle_imports))\n"
        f"sys.argv = ['meshc', 'check', {str(EXAMPLES / 'shop')!r}]\n"
        "runpy.run_module('meshpolicy.cli', run_name='__main__', alter_sys=True)\n", encoding="utf-8")
    r = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.endswith("settle=1"), r.stderr[-2000:]


def test_kept_objects_are_not_freed_at_exit_and_only_the_last_is_kept(tmp_path):
    # `meshc check` ends without freeing its trees and model one by one (keep_until_exit)
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os\n"
        "from meshpolicy.gc_pause import gc_paused, keep_until_exit\n"
        "class Built:\n"
        "    def __init__(self, name): self.name, self.parts = name, [[i] for i in range(1000)]\n"
        "    def __del__(self): os.write(2, b'freed ' + self.name.encode() + b';')\n"
        "with gc_paused(settle=True):\n"
        "    first = Built('first')\n"
        "keep_until_exit(first)\n"
        "del first\n"
        "with gc_paused(settle=True):\n"
        "    last = Built('last')\n"
        "keep_until_exit(last)  # lets go of the first\n"
        "del last\n"
        "os.write(2, b'exit;')\n", encoding="utf-8")
    r = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "freed first;exit;"
