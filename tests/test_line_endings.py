"""CRLF, LF and a lone CR are one thing: a line end, everywhere.

The tokenizer, strings, comments, spans (line/column), the formatter and the
language server's positions all end a line at `\\r\\n`, `\\n` or a lone `\\r`,
and at nothing else (not at the form feed, NEL, U+2028 and the other
characters Python's str.splitlines also splits at). Every example and every
generated program, re-encoded with any mix of line ends, gives the same
model, the same diagnostics (codes and line/column) and the same formatted
text.
"""

from __future__ import annotations

import re
import sys

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pygls.uris import from_fs_path
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshpolicy.fmt import format_text
from meshpolicy.span import SourceFile, split_lines
from meshpolicy.syntax.lexer import tokenize
from meshpolicy.syntax.parser import parse_text

from .conftest import EXAMPLES, check_texts
from .strategies import mesh_programs
from .test_fmt import _strip_spans

ENDINGS = ("\n", "\r\n", "\r")
EXAMPLE_DIRS = sorted({p.parent for p in EXAMPLES.rglob("*.mesh")})
# The examples hold comments (the CR-only bug lost every rule after one).
assert any("#" in p.read_text(encoding="utf-8") for p in EXAMPLES.rglob("*.mesh"))
GEN = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reencode(text: str, ends) -> str:
    """text with its i-th line end replaced by ends[i % len(ends)] (a LF
    right after a lone CR would join it into one CRLF: CRLF is used there)."""
    parts = re.split(r"\r\n|\r|\n", text)
    out = [parts[0]]
    for i, part in enumerate(parts[1:]):
        end = ends[i % len(ends)]
        if end == "\n" and out[-1] == "" and out[-2:-1] == ["\r"]:
            end = "\r\n"
        out.append(end)
        out.append(part)
    return "".join(out)


def observed(files: dict[str, str]) -> dict:
    """What a user of meshc sees from these files, line ends aside."""
    checked = check_texts(files)
    diags = [(d.code, d.span.file, d.span.line, d.span.col, d.span.end_line, d.span.end_col) if d.span else (d.code,)
             for d in checked.diagnostics]
    formatted = {}
    for name, text in files.items():
        result = format_text(text, name)
        formatted[name] = result.text if result.ok else sorted((d.code, d.span.line, d.span.col)
                                                               for d in result.diagnostics)
    model = _strip_spans(checked.mesh.model_dump()) if checked.mesh is not None else None
    return {"model": model, "diagnostics": diags, "formatted": formatted}


def assert_spans_agree(text: str) -> None:
    """Every token's line/column is where SourceFile (the LSP's positions) puts its offset."""
    src = SourceFile("t.mesh", text)
    toks, comments, errors = tokenize(text)
    for t in toks + [e.token for e in errors]:
        assert src.position(t.start_pos) == (t.line, t.column), t
    for c in comments:
        assert src.position(c.start) == (c.line, c.col), c
        assert "\r" not in c.text and "\n" not in c.text


@pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
@pytest.mark.parametrize("ending", ENDINGS, ids=["LF", "CRLF", "CR"])
def test_examples_mean_the_same_with_every_line_end(folder, ending):
    files = {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.mesh"))}
    expected = observed(files)
    assert expected["model"]
    again = {name: reencode(text, [ending]) for name, text in files.items()}
    assert observed(again) == expected
    for text in again.values():
        assert_spans_agree(text)


@GEN
@given(mesh_programs(messy=True), st.lists(st.sampled_from(ENDINGS), min_size=1, max_size=4))
def test_generated_programs_mean_the_same_with_any_mix_of_line_ends(text, ends):
    files = {"t.mesh": reencode(text, ["\n"])}
    mixed = {"t.mesh": reencode(text, ends)}
    assert observed(mixed) == observed(files)
    assert_spans_agree(mixed["t.mesh"])


@pytest.mark.parametrize("ending", ENDINGS, ids=["LF", "CRLF", "CR"])
def test_a_comment_ends_at_every_line_end(ending):
    text = ending.join(["service a { port 80 http }  # the API", "service b { port 80 http }",
                        "# who may call it", "allow a -> b", "deny * -> b"]) + ending
    tree, diags = parse_text(text, "t.mesh")
    assert diags == []
    assert [n.kind for n in tree.items] == ["block_open", "block_open", "auth", "auth"]
    assert [c.text for c in tree.comments] == ["# the API", "# who may call it"]


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n"])
def test_a_string_ends_at_every_line_end(ending):
    # An unclosed string stops at the line end; the next line is read on its own.
    for broken in (f'mesh m {{ trust_domain "a{ending}}}{ending}', f'mesh m {{ trust_domain "a\\{ending}}}{ending}'):
        tree, diags = parse_text(broken, "t.mesh")
        assert [d.code for d in diags] == ["MP004"], broken
        assert diags[0].span.line == 1


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
def test_other_unicode_line_separators_are_not_line_ends(char):
    # Python's str.splitlines splits at these; the language and the LSP do not.
    text = f'# a{char}b\nmesh m {{ trust_domain "x{char}y" }}\nallow a -> b\n'
    src = SourceFile("t.mesh", text)
    assert src.line_count == 4
    assert src.line_text(1) == f"# a{char}b"
    assert split_lines(text) == text.split("\n")
    assert split_lines("a\rb\r\nc\n", keepends=True) == ["a\r", "b\r\n", "c\n"]
    tree, _ = parse_text(text, "t.mesh")
    assert [c.text for c in tree.comments] == [f"# a{char}b"]
    assert tree.items[-1].span.line == 3


# ---- the language server's documents ------------------------------------------------
def test_lsp_documents_count_lines_as_the_language_does():
    from pygls.workspace import Workspace

    from meshpolicy.lsp.convert import use_lsp_line_ends

    for sep in ["\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]:
        for end in ENDINGS:
            ws = Workspace(None)
            use_lsp_line_ends(ws)
            text = f"# a{sep}b{end}service a {{ port 80 http }}{end}servce b {{}}{end}"
            ws.put_text_document(lsp.TextDocumentItem(uri="file:///t.mesh", language_id="mesh", version=1, text=text))
            ws.update_text_document(
                lsp.VersionedTextDocumentIdentifier(uri="file:///t.mesh", version=2),
                lsp.TextDocumentContentChangePartial(range=lsp.Range(lsp.Position(2, 0), lsp.Position(2, 6)),
                                                     text="service"))
            assert ws.get_text_document("file:///t.mesh").source == text.replace("servce", "service"), (sep, end)


@pytest_lsp.fixture(config=ClientServerConfig(
    server_command=[sys.executable, "-m", "meshpolicy.cli", "lsp", "--debounce-ms", "10"]))
async def lsp_session(lsp_client: LanguageClient, tmp_path):
    (tmp_path / "meshc.toml").write_text("")

    @lsp_client.feature(lsp.CLIENT_REGISTER_CAPABILITY)
    def register(params: lsp.RegistrationParams):  # the server asks to watch files; accept, as editors do
        return None

    await lsp_client.initialize_session(lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"),
                                                             root_uri=from_fs_path(str(tmp_path))))
    yield
    await lsp_client.shutdown_session()


@pytest.mark.asyncio
async def test_language_server_applies_edits_after_a_form_feed(lsp_session: LanguageClient, tmp_path):
    # A real client and server: the edit on line 2 fixes the typo on line 2 (the
    # server's text is read back through formatting, which refuses broken text).
    from meshpolicy.fmt import format_text

    from .test_lsp import change, errors, open_doc, wait_diags

    lsp_client = lsp_session
    uri = from_fs_path(str(tmp_path / "t.mesh"))
    text = "# a\x0cb\nservice a { port 80 http }\nservce b { port 80 http }\nallow a -> b\n"
    open_doc(lsp_client, uri, text)
    await wait_diags(lsp_client, uri, lambda d: "MP009" in errors(d), timeout=60)
    change(lsp_client, uri, 2, (2, 0), (2, 6), "service")
    edits = await lsp_client.text_document_formatting_async(lsp.DocumentFormattingParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), options=lsp.FormattingOptions(tab_size=2, insert_spaces=True)))
    assert edits and edits[0].new_text == format_text(text.replace("servce", "service")).text
