"""The language server's incremental parser gives exactly what a full parse
gives: same items (with spans), comments and diagnostics, over sequences of
edits to the same file, on the examples and on generated, messy and
mutated programs."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
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


# ---- the model, built per file and reused for unchanged files

def _analysis_key(checked):
    return checked.mesh.model_dump(), _full_key(checked)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(mesh_programs(), min_size=3, max_size=3), st.integers(0, 2**32 - 1))
def test_cached_models_match_a_fresh_build(programs: list[str], seed: int):
    """Edits to one file of a three-file mesh, rules added and removed
    (which moves the auth rule indexes of the files after it): the mesh and
    diagnostics from the language server's caches equal a fresh check."""
    from meshpolicy.lsp.meshes import ParseCache
    from meshpolicy.pipeline import check_project
    from meshpolicy.project import from_texts

    rng = random.Random(seed)
    texts = {f"f{i}.mesh": p for i, p in enumerate(programs)}
    cache = ParseCache()
    for step in range(12):
        name = f"f{rng.randrange(3)}.mesh"
        if step % 3 == 0:
            texts[name] += f"allow s{step} -> t{step}\n"  # one more auth rule
        elif step % 3 == 1 and "allow" in texts[name]:
            i = texts[name].index("allow")  # one fewer (or a broken one)
            texts[name] = texts[name][:i] + texts[name][i + 5:]
        else:
            texts[name] = _mutate(rng, texts[name])
        cached = check_project(from_texts(dict(texts)), parser=cache, model_cache=cache.models,
                               check_cache=cache.checks)
        fresh = check_project(from_texts(dict(texts)))
        assert _analysis_key(cached) == _analysis_key(fresh), (step, name)
        assert [r.index for r in cached.mesh.auth_rules] == list(range(len(cached.mesh.auth_rules)))


def test_an_unchanged_file_is_not_built_again():
    from meshpolicy.lsp.meshes import ParseCache
    from meshpolicy.pipeline import check_project
    from meshpolicy.project import from_texts

    texts = {"a.mesh": "service a { port 80 http }\nallow b -> a\n", "b.mesh": "service b { port 80 http }\n"}
    cache = ParseCache()
    first = check_project(from_texts(dict(texts)), parser=cache, model_cache=cache.models)
    texts["b.mesh"] += "allow a -> b\n"
    second = check_project(from_texts(dict(texts)), parser=cache, model_cache=cache.models)
    assert second.mesh.services[0] is first.mesh.services[0]  # a.mesh's model, reused
    assert second.mesh.services[1] is not first.mesh.services[1]  # b.mesh's, built again
    assert set(cache.models) == {id(t) for t in second.syntax.values()}  # nothing else kept


# ---- the checks, per file: the per-file rules re-run only where a file's model (or their context) changed

def _full_key(checked):
    return [(d.code, d.severity, d.message, d.span, repr(d.labels), repr(d.fixes), d.help, d.suppressed)
            for d in checked.diagnostics]


def _move_chunk(rng: random.Random, texts: dict[str, str], copy: bool = False, start: str = "") -> None:
    """Move (or copy) one top-level statement or block (starting with `start`) to the end of another file."""
    src, dst = rng.sample(sorted(texts), 2)
    parts = [c for c in chunks(texts[src]) if c[2].strip() and c[2].startswith(start)]
    if not parts:
        return
    offset, _, text = rng.choice(parts)
    if not copy:
        texts[src] = texts[src][:offset] + texts[src][offset + len(text):]
    texts[dst] += ("" if texts[dst].endswith("\n") else "\n") + text


def _replace_one(rng: random.Random, texts: dict[str, str], old: str, new: str) -> None:
    hits = [(f, i) for f in sorted(texts) for i in range(len(texts[f])) if texts[f].startswith(old, i)]
    if hits:
        f, i = rng.choice(hits)
        texts[f] = texts[f][:i] + new + texts[f][i + len(old):]


def _edit_mesh(rng: random.Random, texts: dict[str, str], names: list[str]) -> None:
    """One edit of the kinds that change what the whole-mesh summaries hold
    (service names, namespaces, tcp-only services, who is allowed, the mesh
    default) or only one file (text noise)."""
    op = rng.randrange(12)
    if op == 0:
        _move_chunk(rng, texts)  # a rule apart from its target, a service apart from its callers
    elif op == 9:
        _move_chunk(rng, texts, start="route ")  # a route apart from its service
    elif op == 10:
        _move_chunk(rng, texts, copy=True)  # declared twice, in two files
    elif op == 11:
        _replace_one(rng, texts, '  version v2 {', '  version v9 { version: "v9" }\n  version v2 {')
    elif op == 1:
        _replace_one(rng, texts, " http", " tcp")
    elif op == 2:
        name = rng.choice(names)
        _replace_one(rng, texts, f" {name} ", f" {name}x ")  # a declaration or a use renamed
    elif op == 3:
        _replace_one(rng, texts, "default deny", "default allow")
    elif op == 4:
        _replace_one(rng, texts, "default allow", "default deny")
    elif op == 5:
        _replace_one(rng, texts, "namespace ", "namespace z")
    elif op == 6:
        f = rng.choice(sorted(texts))
        texts[f] += f"allow {rng.choice(names)}, namespace {rng.choice(['edge', 'zz'])} -> {rng.choice(names)} GET\n"
    elif op == 7:
        _replace_one(rng, texts, "allow ", "deny ")
    else:
        f = rng.choice(sorted(texts))
        texts[f] = _mutate(rng, texts[f])


@pytest.mark.parametrize("seed", range(6))
def test_cached_checks_match_a_full_check(seed: int):
    """Edits across a generated multi-file mesh: the language server's
    analysis (parse, model and check caches) gives exactly the diagnostics,
    labels and fixes of a fresh full check, after every edit."""
    from bench.gen import generate
    from meshpolicy.lsp.meshes import ParseCache
    from meshpolicy.pipeline import check_project
    from meshpolicy.project import from_texts

    sys.path.insert(0, str(ROOT))
    rng = random.Random(seed)
    texts = {k: v for k, v in generate(60, seed=seed + 1).items() if k.endswith(".mesh")}
    names = sorted({ln.split()[1] for t in texts.values() for ln in t.splitlines() if ln.startswith("service ")})
    cache = ParseCache()
    for step in range(20):
        cached = check_project(from_texts(dict(texts)), parser=cache, model_cache=cache.models,
                               check_cache=cache.checks)
        fresh = check_project(from_texts(dict(texts)))
        assert _full_key(cached) == _full_key(fresh), (seed, step)
        _edit_mesh(rng, texts, names)


def test_an_edit_rechecks_only_its_file():
    from bench.gen import generate
    from meshpolicy.checks import rules, scope
    from meshpolicy.lsp.meshes import ParseCache
    from meshpolicy.pipeline import check_project
    from meshpolicy.project import from_texts

    sys.path.insert(0, str(ROOT))
    texts = {k: v for k, v in generate(100).items() if k.endswith(".mesh")}
    per_file = sum(1 for _, fn in rules() if scope(fn).per_file)
    assert per_file >= 15  # most rules: their cost no longer grows with the mesh
    cache = ParseCache()
    check_project(from_texts(dict(texts)), parser=cache, model_cache=cache.models, check_cache=cache.checks)
    assert cache.checks.ran == per_file * len(texts)
    team = sorted(k for k in texts if k.startswith("teams/"))[0]
    texts[team] += "# a comment: the file's model is built again, nothing else changes\n"
    check_project(from_texts(dict(texts)), parser=cache, model_cache=cache.models, check_cache=cache.checks)
    assert cache.checks.ran == per_file  # the edited file only
    check_project(from_texts(dict(texts)), parser=cache, model_cache=cache.models, check_cache=cache.checks)
    assert cache.checks.ran == 0
