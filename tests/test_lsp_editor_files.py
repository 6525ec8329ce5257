"""The editor files under editors/ and the configs in docs/editors.md:
valid JSON, regexes that compile, a grammar that knows every keyword, and
snippets that expand to valid mesh text."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from meshpolicy.syntax.lexer import tokenize
from meshpolicy.syntax.parser import STATEMENT_WORDS, parse_text
from tests.conftest import EXAMPLES, ROOT, check_text

EDITORS = ROOT / "editors" / "vscode"
GRAMMAR = "syntaxes/mesh.tmLanguage.json"


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
    g = _load(GRAMMAR)
    assert g["scopeName"] == "source.mesh" and "mesh" in g["fileTypes"]
    pats = list(_regexes(g))
    assert len(pats) >= 10
    for p in pats:
        re.compile(p)
    for inc in re.findall(r'"include":\s*"#([a-z]+)"', json.dumps(g)):
        assert inc in g["repository"]


def test_grammar_highlights_every_keyword_of_the_language():
    g = _load(GRAMMAR)
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
    g = _load(GRAMMAR)
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
    assert conf["comments"]["lineComment"] == "#" and ["{", "}"] in conf["brackets"]
    assert pkg["main"] == "./out/extension.js" and (EDITORS / "src" / "extension.ts").is_file()
    assert "onLanguage:mesh" in pkg["activationEvents"]
    assert pkg["contributes"]["configuration"]["properties"]["meshc.path"]["default"] == "meshc"
    assert "vscode-languageclient" in pkg["dependencies"]
    source = (EDITORS / "src" / "extension.ts").read_text()
    for key in pkg["contributes"]["configuration"]["properties"]:  # every setting is read
        assert key.split(".", 1)[1].split(".")[0] in source or key == "meshc.trace.server", key
    re.compile(conf["wordPattern"])
    for p in conf["indentationRules"].values():
        re.compile(p)


def _expand(body: list[str]) -> str:
    text = "\n".join(body)
    text = re.sub(r"\$\{\d+\|([^,|]+)[^}]*\}", r"\1", text)  # choice: its first option
    return re.sub(r"\$\{\d+:([^}]*)\}", r"\1", text)  # placeholder: its default


def test_snippets_expand_to_valid_mesh():
    snippets = _load("snippets/mesh.code-snippets")
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
    settings = json.loads(re.findall(r"```json\n(.*?)```", doc, re.S)[-1])
    known = _load("package.json")["contributes"]["configuration"]["properties"]
    assert settings and set(settings) <= set(known)
    lua = re.findall(r"```lua\n(.*?)```", doc, re.S)
    assert any('vim.lsp.config("meshc"' in b and 'vim.lsp.enable("meshc")' in b for b in lua)  # 0.11
    assert any("configs.meshc" in b and 'require("lspconfig").meshc.setup' in b for b in lua)  # 0.7 to 0.10
    assert any("vim.lsp.start" in b for b in lua)
    for block in lua:
        if "cmd =" in block:
            assert 'cmd = { "meshc", "lsp" }' in block
        assert block.count("(") == block.count(")") and block.count("{") == block.count("}")
    toml = re.findall(r"```toml\n(.*?)```", doc, re.S)[0]
    import tomllib

    assert tomllib.loads(toml)["language-server"]["meshc"]["args"] == ["lsp"]


# ---- the VS Code extension, built and run with the real tools (npm, tsc, vsce, vscode-textmate)

def _npm(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    out = subprocess.run(["npm", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"npm {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def built_extension(tmp_path_factory) -> Path:
    """editors/vscode copied as committed (no node_modules, out, .vsix), then
    `npm ci && npm run compile && npx vsce package`, as a release would."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("npm is not installed: the VS Code extension cannot be built")
    dest = tmp_path_factory.mktemp("vscode") / "vscode"
    shutil.copytree(EDITORS, dest, ignore=shutil.ignore_patterns("node_modules", "out", "*.vsix"))
    _npm(["ci", "--no-audit", "--no-fund"], dest)
    _npm(["run", "compile"], dest)
    _npm(["exec", "--", "vsce", "package", "--out", "mesh.vsix"], dest)
    return dest


def test_vscode_extension_packages_to_a_vsix(built_extension: Path):
    import zipfile

    with zipfile.ZipFile(built_extension / "mesh.vsix") as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("extension/package.json"))
    assert {"extension/out/extension.js", "extension/" + GRAMMAR, "extension/snippets/mesh.code-snippets",
            "extension/language-configuration.json"} <= names
    assert "extension/node_modules/vscode-languageclient/package.json" in names  # the client ships with it
    assert not [n for n in names if n.startswith(("extension/src/", "extension/node_modules/typescript/"))]
    assert manifest["name"] == "mesh-language" and manifest["main"] == "./out/extension.js"


def _tm_tokens(built: Path, files: list[Path]) -> dict[str, list]:
    out = subprocess.run(["node", "scripts/tokenize.js", *map(str, files)], cwd=built,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_textmate_grammar_scopes_the_examples_as_the_lexer_reads_them(built_extension: Path):
    """The grammar through VS Code's own engine: comments, strings, numbers
    and statement keywords of every example get their scopes."""
    files = sorted(EXAMPLES.rglob("*.mesh"))
    tokens = _tm_tokens(built_extension, files)
    statement_words = {w for ws in STATEMENT_WORDS.values() for w in ws if re.fullmatch(r"[a-z_]+", w)}
    wrong = []
    for path in files:
        text = path.read_text()
        by_line: dict[int, list] = {}
        for line, start, end, scope in tokens[str(path)]:
            by_line.setdefault(line, []).append((start, end, scope))

        def scope_at(line: int, col: int) -> str:
            return next((sc for s, e, sc in by_line.get(line, []) if s <= col < e), "none")

        toks, comments, _ = tokenize(text)
        expected = [(c.line, c.col, "comment.line.number-sign.mesh", c.text) for c in comments]
        prev = None
        for t in toks:
            if t.type == "STRING":
                expected.append((t.line, t.column, "string.quoted.double.mesh", t.value))
            elif t.type in ("INT", "DURATION", "PERCENT", "RATE"):
                expected.append((t.line, t.column, "constant.numeric.", t.value))
            elif t.type == "WORD" and t.value in statement_words and (prev is None or prev.type == "NL"):
                expected.append((t.line, t.column, "keyword|storage", t.value))
            prev = t
        for line, col, want, what in expected:
            got = scope_at(line, col)
            ok = got.startswith(("keyword.", "storage.")) if want == "keyword|storage" else got.startswith(want)
            if not ok:
                wrong.append(f"{path.name}:{line}:{col} {what!r}: {got}, expected {want}")
    assert not wrong, "\n".join(wrong[:20])
