"""The LALR tables of grammar/mesh.lark, built ahead of time as plain data.

Building the tables from the grammar takes ~90 ms, too slow for a pre-commit
hook started per commit. Lark's own answer, `Lark(cache=True)`, unpickles a
file with a predictable name in the shared temp directory: any local user who
plants that file runs code as whoever runs `meshc` next. So the tables are
generated once, with Lark's serializer (the one its standalone generator
uses), into meshpolicy/syntax/lalr_tables.json, shipped in the package:
JSON, read with json.loads (~1 ms; a Python-literal module would cost ~45 ms
to compile where no .pyc can be written), never unpickled. Its "key" is a
hash of the grammar text and start symbols; when the grammar changed since,
the tables are built in-process (no cache, nothing written) and
tests/test_parser_cache.py fails until they are regenerated:

    python -m meshpolicy.syntax.tables --write
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from lark import Lark
from lark.lexer import Lexer

from ..resources import grammar_path

# The start symbol of each kind of block (see grammar/mesh.lark).
BLOCK_STARTS = {
    "top": "top_item",
    "mesh": "mesh_item",
    "service": "service_item",
    "version": "version_item",
    "route": "route_item",
    "jwt": "jwt_item",
    "ingress": "ingress_item",
    "external": "external_item",
}
TABLES_PATH = Path(__file__).with_name("lalr_tables.json")
REGENERATE = "python -m meshpolicy.syntax.tables --write"
# Stands in the data for the lexer class, which is code, not data.
_LEXER_MARK = "meshpolicy.syntax.lexer"
_OPTIONS = dict(parser="lalr", start=list(BLOCK_STARTS.values()), propagate_positions=False,
                maybe_placeholders=False)


class NoLexer(Lexer):
    """Lark insists on a lexer; tokens come from syntax.lexer instead."""

    def __init__(self, conf):
        pass

    def lex(self, *args):  # pragma: no cover - never called
        raise NotImplementedError


def grammar_key(grammar_text: str) -> str:
    """What the committed tables were built from: the grammar and its start symbols
    (line ends aside: a checkout with CRLF line ends has the same grammar)."""
    h = hashlib.sha256(grammar_text.replace("\r\n", "\n").encode("utf-8"))
    h.update("\0".join(BLOCK_STARTS.values()).encode())
    return h.hexdigest()


def build(grammar_text: str | None = None, transformer=None) -> Lark:
    """The tables built from the grammar in this process (slow; never cached on disk)."""
    text = grammar_path().read_text(encoding="utf-8") if grammar_text is None else grammar_text
    return Lark(text, lexer=NoLexer, transformer=transformer, cache=False, **_OPTIONS)


def _plain(x):
    """Lark's serialized form with the lexer class replaced by a marker string."""
    if x is NoLexer:
        return _LEXER_MARK
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_plain(v) for v in x)
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    raise TypeError(f"not plain data in the LALR tables: {type(x).__name__}")


def _restore(x):
    if x == _LEXER_MARK:
        return NoLexer
    if isinstance(x, dict):
        return {k: _restore(v) for k, v in x.items()}
    return x


def _canonical(table: dict) -> dict:
    """The serialized parse table renumbered the same way on every run.

    Lark numbers states and terminals in set iteration order, which changes
    from process to process; here terminals are numbered by name and states
    in breadth-first order from the start states, following shifts by name.
    """
    names = table["tokens"]
    token_id = {old: new for new, old in enumerate(sorted(names, key=lambda t: names[t]))}
    states = table["states"]
    order: list[int] = []
    seen: set[int] = set()
    queue = [table["start_states"][k] for k in sorted(table["start_states"])]
    while queue:
        st = queue.pop(0)
        if st in seen:
            continue
        seen.add(st)
        order.append(st)
        for tok in sorted(states[st], key=lambda t: names[t]):
            action, arg = states[st][tok]
            if action == 0 and arg not in seen:
                queue.append(arg)
    order += sorted(set(states) - seen)  # unreachable: none in practice
    state_id = {old: new for new, old in enumerate(order)}
    new_states = {}
    for old in order:
        acts = states[old]
        new_states[state_id[old]] = {
            token_id[tok]: (0, state_id[arg]) if action == 0 else (action, arg)
            for tok, (action, arg) in sorted(acts.items(), key=lambda kv: token_id[kv[0]])
        }
    return {
        **table,
        "tokens": {token_id[old]: name for old, name in sorted(names.items(), key=lambda kv: token_id[kv[0]])},
        "states": new_states,
        "start_states": {k: state_id[v] for k, v in sorted(table["start_states"].items())},
        "end_states": {k: state_id[v] for k, v in sorted(table["end_states"].items())},
    }


def render(grammar_text: str | None = None) -> str:
    """The text of lalr_tables.json for the grammar (what `--write` stores)."""
    from lark.grammar import Rule
    from lark.lexer import TerminalDef

    text = grammar_path().read_text(encoding="utf-8") if grammar_text is None else grammar_text
    data, memo = build(text).memo_serialize([TerminalDef, Rule])
    data = _plain(data)
    data["parser"]["parser"] = _canonical(data["parser"]["parser"])
    # Only options that differ from Lark's defaults, so that Lark releases
    # with other option sets (1.2 has no cache_grammar) load the same file.
    from lark.lark import LarkOptions

    defaults = {k: _plain(v) for k, v in LarkOptions._defaults.items()}
    data["options"] = {k: v for k, v in data["options"].items() if k not in defaults or defaults[k] != v}
    doc = {
        "generated_by": REGENERATE,
        "key": grammar_key(text),
        "data": data,
        "memo": _plain(memo),
    }
    return json.dumps(doc, indent=0, ensure_ascii=True) + "\n"


def _int_keys(d: dict) -> dict:
    return {int(k): v for k, v in d.items()}


def _decode(doc: dict) -> tuple[dict, dict]:
    """Lark's serialized data back from JSON: the integer keys JSON made strings, the lexer class."""
    data = doc["data"]
    table = data["parser"]["parser"]
    table = {**table, "tokens": _int_keys(table["tokens"]),
             "states": {int(st): _int_keys(acts) for st, acts in table["states"].items()}}
    parser = {**data["parser"], "parser": table, "lexer_conf": _restore(data["parser"]["lexer_conf"])}
    data = {**data, "parser": parser, "options": _restore(data["options"])}
    return data, _int_keys(doc["memo"])


def load_shipped(transformer=None, grammar_text: str | None = None) -> Lark | None:
    """The parser from lalr_tables.json; None when it is missing or was built from another grammar."""
    text = grammar_path().read_text(encoding="utf-8") if grammar_text is None else grammar_text
    try:
        doc = json.loads(TABLES_PATH.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("key") != grammar_key(text):
        return None
    data, memo = _decode(doc)
    # Lark's entry point for its standalone parsers: plain dicts in, no pickle.
    return Lark._load_from_dict(data, memo, transformer=transformer)


def load(transformer=None) -> Lark:
    """The parser from the shipped tables, or built in-process when they are stale."""
    text = grammar_path().read_text(encoding="utf-8")
    try:
        lark = load_shipped(transformer, text)
    except Exception:  # a Lark release that reads its serialized form differently
        lark = None
    return build(text, transformer) if lark is None else lark


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        TABLES_PATH.write_text(render(), encoding="utf-8")
        print(f"wrote {TABLES_PATH}")
        return 0
    if argv == ["--check"]:
        ok = TABLES_PATH.is_file() and TABLES_PATH.read_text(encoding="utf-8") == render()
        print("up to date" if ok else f"stale: run `{REGENERATE}`")
        return 0 if ok else 1
    print(f"usage: {REGENERATE} | --check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
