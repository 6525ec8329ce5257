"""The editor files under editors/ and the configs in docs/editors.md:
valid JSON, regexes that compile, a grammar that knows every keyword, and
snippets that expand to valid mesh text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from meshpolicy.syntax.parser import STATEMENT_WORDS, parse_text
from tests.conftest import EXAMPLES, ROOT, check_text

EDITORS = ROOT / "editors"


def _load(name: str) -> dict:
    return json.loads((EDITORS / name).read_text(encoding="utf-8"))


def _regexes(node):
    """Every match/begin/end pattern in a TextMate grammar."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("match", "begin", "end") and isinstance(value, str):
                yield value
            else:
                yield from _regexes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _regexes(item)


def _scopes(grammar: dict, text: str) -> dict[str, str]:
    """word -> scope name, for each word the grammar's keyword patterns name."""
    out = {}
    for pat in grammar["repository"]["keyword"]["patterns"]:
        for m in re.finditer(pat["match"], text):
            out.setdefault(m.group(), pat["name"])
    return out


def test_grammar_is_valid_and_its_regexes_compile():
    g = _load("mesh.tmLanguage.json")
    assert g["scopeName"] == "source.mesh" and "mesh" in g["fileTypes"]
    pats = list(_regexes(g))
    assert len(pats) >= 10
    for p in pats:
        re.compile(p)
    for inc in re.findall(r'"include":\s*"#([a-z]+)"', json.dumps(g)):
        assert inc in g["repository"]


def test_grammar_highlights_every_keyword_of_the_language():
    g = _load("mesh.tmLanguage.json")
    lark = (ROOT / "grammar" / "mesh.lark").read_text()
    words = {w for w in re.findall(r'"([a-z_][a-z0-9_]*)"', lark)}
    words |= {w for ws in STATEMENT_WORDS.values() for w in ws if re.fullmatch(r"[a-z_]+", w)}
    block = re.compile(g["repository"]["block"]["match"])
    missing = []
    for w in sorted(words):
        if w in ("mesh", "service", "route", "version"):
            ok = block.fullmatch(f"{w} x") is not None
        else:
            ok = w in _scopes(g, w)
        if not ok:
            missing.append(w)
    assert not missing, f"keywords the TextMate grammar does not highlight: {missing}"


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.mesh")), ids=lambda p: p.name)
def test_grammar_names_every_declared_block(path: Path):
    g = _load("mesh.tmLanguage.json")
    text = path.read_text()
    tree, _ = parse_text(text, str(path))
    declared = {(n.get("block"), n.get("name").name) for n in tree.items if n.kind == "block_open"}
    found = {(m.group(1), m.group(2)) for m in re.finditer(g["repository"]["block"]["match"], text)
             if m.group(1) != "version"}
    assert declared <= found


def test_vscode_extension_manifest_points_at_real_files():
    pkg = _load("package.json")
    lang = pkg["contributes"]["languages"][0]
    assert lang["id"] == "mesh" and ".mesh" in lang["extensions"]
    for ref in [lang["configuration"], *(g["path"] for g in pkg["contributes"]["grammars"]),
                *(s["path"] for s in pkg["contributes"]["snippets"])]:
        assert (EDITORS / ref).is_file(), ref
    conf = _load("language-configuration.json")
    assert conf["comments"]["lineComment"] == "#"
    re.compile(conf["wordPattern"])
    for p in conf["indentationRules"].values():
        re.compile(p)


def _expand(body: list[str]) -> str:
    text = "\n".join(body)
    text = re.sub(r"\$\{\d+\|([^,|]+)[^}]*\}", r"\1", text)  # choice: its first option
    return re.sub(r"\$\{\d+:([^}]*)\}", r"\1", text)  # placeholder: its default


def test_snippets_expand_to_valid_mesh():
    snippets = _load("mesh.code-snippets")
    service = _expand(snippets["service"]["body"])
    assert service.startswith("service name {")

    def named(n: str) -> str:
        return service.replace("service name {", f"service {n} {{", 1)

    caller = "service caller { port 80 http }\n"
    texts = {
        "service": service,
        "route": named("service") + "\n" + _expand(snippets["route"]["body"]),
        "canary": named("orders") + "\nroute orders {\n  " + _expand(snippets["canary"]["body"])
        .replace("v2", "v1").replace("v1 90%, v1 10%", "v1") + "\n}",
        "allow": caller + named("service") + "\n" + _expand(snippets["allow"]["body"]),
        "assert": caller + named("service") + "\n" + _expand(snippets["assert"]["body"]),
    }
    assert set(texts) == set(snippets)
    for name, text in texts.items():
        checked = check_text(text)
        syntax = [d.code for d in checked.diagnostics if d.code < "MP100"]
        assert not syntax, (name, text, syntax)


def test_editor_configs_in_docs_are_valid():
    doc = (ROOT / "docs" / "editors.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", doc, re.S)
    assert blocks
    settings = json.loads(blocks[-1])
    assert settings["glspc.server.command"] == "meshc" and settings["glspc.server.commandArguments"] == ["lsp"]
    assert settings["glspc.server.languageId"] == [_load("package.json")["contributes"]["languages"][0]["id"]]
    lua = re.findall(r"```lua\n(.*?)```", doc, re.S)[0]
    assert 'cmd = { "meshc", "lsp" }' in lua and "vim.lsp.start" in lua
    toml = re.findall(r"```toml\n(.*?)```", doc, re.S)[0]
    import tomllib

    assert tomllib.loads(toml)["language-server"]["meshc"]["args"] == ["lsp"]
