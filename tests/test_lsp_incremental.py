"""The language server's incremental parser gives exactly what a full parse
gives: same items (with spans), comments and diagnostics, over sequences of
edits to the same file, on the examples and on generated, messy and
mutated programs."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshpolicy.lsp.incremental import IncrementalParser, chunks, rechunk
from meshpolicy.syntax.parser import parse_text
from tests.conftest import EXAMPLES, ROOT
from tests.strategies import mesh_programs

# Pieces that move the chunk boundaries: braces, strings, comments,
# continuation tokens, newlines, paths holding braces, stray characters.
PIECES = ["{", "}", "\r", '"', "#", ",", "->", "=", "\n", "\r\n", " ", ";", "/a{b}", "x", "service s {", "route s {",
          "version v {", "allow a -> b", '"{"', "# }", "100/s}", "é😀", "\t", "~>", "<=", "*"]


def _key(tree, diags):
    return tree.items, tree.comments, sorted(diags, key=lambda d: (d.sort_key(), repr(d.labels), repr(d.fixes)))


def _same(parser: IncrementalParser, text: str) -> None:
    if parser._chunks:  # the kept chunks plus a scan of the edit give what a full scan gives
        assert rechunk(parser._chunks, parser._len, parser._lines, text) == chunks(text), text
    got = _key(*parser.parse(text))
    want = _key(*parse_text(text, parser.path))
    assert got[0] == want[0], text
    assert got[1] == want[1], text
    assert got[2] == want[2], text


def _mutate(rng: random.Random, text: str) -> str:
    pos = rng.randrange(len(text) + 1)
    op = rng.random()
    if op < 0.5:
        return text[:pos] + rng.choice(PIECES) + text[pos:]
    end = min(len(text), pos + rng.randrange(1, 12))
    if op < 0.8:
        return text[:pos] + text[end:]
    return text[:pos] + text[pos:end][::-1] + text[end:]


def test_chunks_cover_the_text():
    text = (EXAMPLES / "shop" / "orders.mesh").read_text()
    parts = chunks(text)
    assert "".join(c for _, _, c in parts) == text
    assert len(parts) > 5  # blocks and statements, each on its own
    for offset, line, c in parts:
        assert text[offset:offset + len(c)] == c and text[:offset].count("\n") == line


def test_examples_and_edits_match_full_parse():
    rng = random.Random(7)
    for path in sorted(EXAMPLES.rglob("*.mesh")):
        text = path.read_text()
        parser = IncrementalParser(str(path))
        _same(parser, text)
        for _ in range(40):
            text = _mutate(rng, text)
            _same(parser, text)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=mesh_programs(messy=True), seed=st.integers(0, 2**32 - 1))
def test_generated_programs_and_edits_match_full_parse(program: str, seed: int):
    rng = random.Random(seed)
    parser = IncrementalParser("gen.mesh")
    _same(parser, program)
    text = program
    for _ in range(8):
        text = _mutate(rng, text)
        _same(parser, text)


def test_an_edit_reparses_only_its_chunk():
    sys.path.insert(0, str(ROOT))
    from bench.bench_lsp import one_file

    text = one_file(2000)
    parser = IncrementalParser("big.mesh")
    parser.parse(text)
    i = text.index("\nallow ") + 1
    edited = text[:i] + "allow ghost, " + text[i + len("allow "):]
    _, diags = parser.parse(edited)
    assert parser.parsed == 1 and parser.reused > 100
    _same(IncrementalParser("big.mesh"), edited)
    # and back again: everything is reused
    parser.parse(text)
    assert parser.parsed == 1  # the original chunk text was dropped when the edit replaced it
