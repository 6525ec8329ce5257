"""The LALR tables: shipped as plain data, never unpickled from the temp directory.

`Lark(cache=True)` (what the parser used before) unpickles
$TMPDIR/.lark_cache_<user>_<hash>_<py>.tmp, a name any local user can
predict and plant. These tests plant a hostile pickle at exactly that path
and show `meshc` never loads it, nor unpickles anything else; that the
shipped tables are what the grammar gives today; and that stale tables fall
back to an in-process build that writes nothing.
"""

from __future__ import annotations

import getpass
import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

from meshpolicy.syntax import tables
from meshpolicy.syntax.parser import Grammar, _internals, parse_text

from .conftest import EXAMPLES, ROOT

# The lexer class as the old parser.py named it: part of Lark's cache hash.
OLD_LEXER_REPR = "<class 'meshpolicy.syntax.parser._NoLexer'>"
OLD_OPTIONS = dict(parser="lalr", lexer=OLD_LEXER_REPR, start=list(tables.BLOCK_STARTS.values()),
                   transformer=None, propagate_positions=False, maybe_placeholders=False, cache=True)


def lark_cache(tmpdir: str, grammar: str, options: dict) -> tuple[str, str]:
    """The file `Lark(grammar, **options, cache=True)` reads, and the hash it checks (lark/lark.py)."""
    import hashlib

    import lark

    unhashable = ("transformer", "postlex", "lexer_callbacks", "edit_terminals", "_plugins")
    options_str = "".join(k + str(v) for k, v in options.items() if k not in unhashable)
    digest = hashlib.sha256((grammar + options_str + lark.__version__ + str(sys.version_info[:2])).encode()).hexdigest()
    return os.path.join(tmpdir, ".lark_cache_%s_%s_%s_%s.tmp" % (getpass.getuser(), digest, *sys.version_info[:2])), digest


class _Plant:
    """Unpickling this creates the marker file: stands for arbitrary code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _env(tmp) -> dict:
    return {**os.environ, "TMPDIR": str(tmp), "NO_COLOR": "1"}


def test_lark_cache_path_formula_matches_lark(tmp_path):
    # The helper must name the file Lark really writes, or planting proves nothing.
    grammar = tables.grammar_path().read_text(encoding="utf-8")
    options = dict(parser="lalr", lexer="basic", start=["top_item"], cache=True)
    code = ("import sys; from lark import Lark; "
            f"Lark(open({str(tables.grammar_path())!r}, encoding='utf-8').read(), **{options!r})")
    subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), check=True)
    assert os.listdir(tmp_path) == [os.path.basename(lark_cache(str(tmp_path), grammar, options)[0])]


def test_planted_lark_cache_is_never_loaded(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    marker = tmp_path / "pwned"
    grammar = tables.grammar_path().read_text(encoding="utf-8")
    planted, digest = lark_cache(str(tmpdir), grammar, OLD_OPTIONS)
    with open(planted, "wb") as f:
        # Lark's cache file: the hash on a line, then pickles, the first loaded unchecked
        f.write(digest.encode() + b"\n")
        pickle.dump(_Plant(str(marker)), f)

    # The plant works: the old call (cache=True, same grammar and options) runs it.
    old_call = textwrap.dedent(f"""
        from lark import Lark
        from meshpolicy.syntax import tables
        from meshpolicy.syntax.transform import ToNodes
        Old = type("_NoLexer", (tables.NoLexer,), {{"__module__": "meshpolicy.syntax.parser"}})
        Old.__qualname__ = "_NoLexer"
        Lark(tables.grammar_path().read_text(encoding="utf-8"), parser="lalr", lexer=Old,
             start=list(tables.BLOCK_STARTS.values()), transformer=ToNodes(),
             propagate_positions=False, maybe_placeholders=False, cache=True)
    """)
    subprocess.run([sys.executable, "-c", old_call], env=_env(tmpdir), capture_output=True)
    assert marker.exists(), "the planted cache should run under the old cache=True call"
    marker.unlink()

    for args in (["check", "examples/shop"], ["fmt", "--check", *map(str, sorted((EXAMPLES / "shop").glob("*.mesh")))]):
        r = subprocess.run([sys.executable, "-m", "meshpolicy.cli", *args], cwd=ROOT, env=_env(tmpdir),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert not marker.exists(), f"meshc {args[0]} loaded the planted cache"
    assert sorted(os.listdir(tmpdir)) == [os.path.basename(planted)]  # and wrote nothing there


def test_meshc_uses_no_pickle(tmp_path):
    # Closes the class, not just Lark's file name: no pickle is read (or written) at all.
    code = textwrap.dedent("""
        import pickle, sys
        def trap(*a, **k):
            raise SystemExit("pickle used while parsing")
        pickle.load = pickle.loads = pickle.dump = pickle.dumps = trap
        pickle.Unpickler = pickle.Pickler = trap
        from meshpolicy.cli import main
        sys.argv = ["meshc", "check", "examples/bookinfo"]
        main()
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "pickle used" not in r.stderr


def test_shipped_tables_are_up_to_date():
    # Same idea as docs/diagnostics.md: regenerating gives the committed file, byte for byte.
    assert tables.TABLES_PATH.read_text(encoding="utf-8") == tables.render(), \
        f"meshpolicy/syntax/lalr_tables.json is stale; regenerate it with `{tables.REGENERATE}`"


def test_shipped_tables_are_plain_json():
    doc = json.loads(tables.TABLES_PATH.read_bytes())
    assert doc["key"] == tables.grammar_key(tables.grammar_path().read_text(encoding="utf-8"))


def test_rendering_does_not_depend_on_the_hash_seed():
    outs = set()
    for seed in ("1", "2"):
        code = "import sys; from meshpolicy.syntax.tables import render; sys.stdout.write(render())"
        r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                           capture_output=True, check=True)
        outs.add(r.stdout)
    assert len(outs) == 1


def _table_of(lark) -> dict:
    from lark.grammar import Rule
    from lark.lexer import TerminalDef

    data, memo = lark.memo_serialize([TerminalDef, Rule])
    table = tables._canonical(tables._plain(data)["parser"]["parser"])
    rules = {i: str(r) for i, r in enumerate(lark.rules)}
    # through JSON, as shipped: tuples and lists alike
    return json.loads(json.dumps({"table": table, "memo": tables._plain(memo), "rules": rules}))


def test_loaded_tables_equal_a_fresh_build():
    shipped = tables.load_shipped()  # raises rather than falling back
    assert shipped is not None
    assert _table_of(shipped) == _table_of(tables.build())


def test_unreadable_tables_fall_back(tmp_path, monkeypatch):
    doc = json.loads(tables.TABLES_PATH.read_bytes())
    doc["data"]["parser"]["parser"]["states"] = {"0": "garbage"}
    bad = tmp_path / "tables.json"
    bad.write_text(json.dumps(doc), encoding="utf-8")
    monkeypatch.setattr(tables, "TABLES_PATH", bad)
    with pytest.raises(Exception):
        tables.load_shipped()
    assert _table_of(tables.load()) == _table_of(tables.build())


def test_stale_tables_fall_back_to_an_in_process_build(tmp_path, monkeypatch):
    import tempfile

    grammar = tmp_path / "mesh.lark"
    grammar.write_text(tables.grammar_path().read_text(encoding="utf-8") + "\n// edited\n", encoding="utf-8")
    monkeypatch.setattr(tables, "grammar_path", lambda: grammar)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "t"))
    (tmp_path / "t").mkdir()
    built = tables.load()
    assert _table_of(built) == _table_of(tables.build())
    monkeypatch.setattr(tables, "TABLES_PATH", tmp_path / "missing.json")
    assert _table_of(tables.load()) == _table_of(tables.build())
    assert os.listdir(tmp_path / "t") == []  # nothing cached anywhere
    # and the parser built from it reads the examples as the shipped one does
    monkeypatch.setattr("meshpolicy.syntax.parser.grammar", lambda g=Grammar(): g)
    for path in sorted(EXAMPLES.glob("shop/*.mesh")):
        assert parse_text(path.read_text(encoding="utf-8"), str(path))[1] == []


def test_changed_lark_internals_give_a_clear_error():
    class Moved:
        parser = object()

    import lark

    with pytest.raises(RuntimeError, match=f"lark {lark.__version__}"):
        _internals(Moved())


def test_a_crlf_checkout_of_the_grammar_uses_the_shipped_tables():
    text = tables.grammar_path().read_text(encoding="utf-8")
    assert tables.grammar_key(text.replace("\n", "\r\n")) == tables.grammar_key(text)
    assert tables.grammar_key(text + "\n// edited\n") != tables.grammar_key(text)
