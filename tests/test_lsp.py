"""The language server, driven over stdio by a real LSP client (pytest-lsp).

One server process serves the whole module (startup costs ~0.5 s); each
test works on its own files in a temporary workspace.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from pygls.uris import from_fs_path

from meshpolicy.codes import doc_url
from meshpolicy.lsp.convert import path_of
from tests.conftest import ROOT

pytestmark = pytest.mark.asyncio(loop_scope="module")

SHOP = (ROOT / "examples" / "shop")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lspws")


@pytest_lsp.fixture(
    scope="module",
    config=ClientServerConfig(server_command=[sys.executable, "-m", "meshpolicy.cli", "lsp", "--debounce-ms", "10"],
                              server_env=None),
)
async def client(lsp_client: LanguageClient, workspace: Path):
    lsp_client.registrations = []

    @lsp_client.feature(lsp.CLIENT_REGISTER_CAPABILITY)
    def register(params: lsp.RegistrationParams):  # as VS Code does: accept, and watch the files
        lsp_client.registrations.extend(params.registrations)

    # VS Code's capabilities: no positionEncodings offered, so columns are UTF-16.
    params = lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"),
                                  root_uri=from_fs_path(str(workspace)))
    result = await lsp_client.initialize_session(params)
    lsp_client.server_caps = result.capabilities
    yield
    await lsp_client.shutdown_session()


def make_mesh(workspace: Path, name: str, files: dict[str, str]) -> dict[str, str]:
    """A mesh directory (with meshc.toml) holding files; returns name -> URI."""
    d = workspace / name
    d.mkdir()
    (d / "meshc.toml").write_text("")
    out = {}
    for fname, text in files.items():
        (d / fname).write_text(text)
        out[fname] = from_fs_path(str((d / fname).resolve()))
    return out


async def wait_diags(client: LanguageClient, uri: str, pred, timeout: float = 10.0):
    """Wait until the diagnostics published for uri satisfy pred; return them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        diags = client.diagnostics.get(uri)
        if diags is not None and pred(diags):
            return diags
        await asyncio.sleep(0.02)
    raise AssertionError(f"diagnostics for {uri} never matched: {client.diagnostics.get(uri)}")


def codes(diags) -> list[str]:
    return sorted(d.code for d in diags)


def errors(diags) -> list[str]:
    """Error codes only: other engineers' warnings (unused versions...) may come and go."""
    return sorted(d.code for d in diags if d.severity == lsp.DiagnosticSeverity.Error)


def open_doc(client: LanguageClient, uri: str, text: str, version: int = 1) -> None:
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        text_document=lsp.TextDocumentItem(uri=uri, language_id="mesh", version=version, text=text)))


def change(client: LanguageClient, uri: str, version: int, start: tuple[int, int], end: tuple[int, int],
           text: str) -> None:
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[lsp.TextDocumentContentChangePartial(
            range=lsp.Range(lsp.Position(*start), lsp.Position(*end)), text=text)]))


BASE = """\
mesh m { trust_domain "example.org" }
service web {
  namespace front
  port 8080 http
}
service orders {
  namespace shop
  port 8080 http
  version v1
  version v2
}
route orders {
  GET /orders/** -> v1 90%, v2 10%
  * -> v1
}
allow web -> orders GET /orders/**
"""


async def test_capabilities(client: LanguageClient):
    caps = client.server_caps
    assert caps.text_document_sync.change == lsp.TextDocumentSyncKind.Incremental
    assert caps.hover_provider and caps.definition_provider and caps.references_provider
    assert caps.completion_provider and caps.document_symbol_provider and caps.code_action_provider
    assert caps.position_encoding in (None, lsp.PositionEncodingKind.Utf16)


async def test_open_publishes_parse_and_check_diagnostics(client: LanguageClient, workspace: Path):
    text = BASE + "allow web -> ordrs\nservice web { port 80 http }\nretry 3\n"
    uri = make_mesh(workspace, "open", {"a.mesh": text})["a.mesh"]
    open_doc(client, uri, text)
    diags = await wait_diags(client, uri, lambda d: len(d) >= 3)
    assert errors(diags) == ["MP005", "MP101", "MP103"]
    by = {d.code: d for d in diags}
    line = BASE.count("\n")
    # MP101 on the misspelled callee, with the exact range of `ordrs`
    assert by["MP101"].range == lsp.Range(lsp.Position(line, 13), lsp.Position(line, 18))
    assert by["MP101"].severity == lsp.DiagnosticSeverity.Error and by["MP101"].source == "meshc"
    for d in diags:  # each code links its page (meshpolicy.codes.doc_url)
        assert d.code_description.href == doc_url(d.code)
    # MP103's label ("first declared here") becomes related information
    rel = by["MP103"].related_information
    assert rel and rel[0].location.uri == uri and rel[0].location.range.start.line == 1
    assert by["MP103"].range.start.line == line + 1


async def test_incremental_change_updates_diagnostics(client: LanguageClient, workspace: Path):
    text = BASE + "allow web -> ordrs\n"
    uri = make_mesh(workspace, "change", {"a.mesh": text})["a.mesh"]
    open_doc(client, uri, text)
    await wait_diags(client, uri, lambda d: errors(d) == ["MP101"])
    line = BASE.count("\n")
    change(client, uri, 2, (line, 13), (line, 18), "orders")  # fix the name in place
    await wait_diags(client, uri, lambda d: errors(d) == [])
    change(client, uri, 3, (line, 0), (line, 5), "allw")  # break the keyword
    diags = await wait_diags(client, uri, lambda d: errors(d) != [])
    assert errors(diags) == ["MP009"]


async def test_rapid_edits_publish_the_last_version(client: LanguageClient, workspace: Path):
    text = BASE + "allow web -> x\n"
    uri = make_mesh(workspace, "rapid", {"a.mesh": text})["a.mesh"]
    open_doc(client, uri, text)
    await wait_diags(client, uri, lambda d: errors(d) == ["MP101"])
    line = BASE.count("\n")
    # Ten whole-line edits in a row, each an unknown name but the last.
    names = ["y", "z", "q", "w", "e", "r", "t", "u", "i", "orders"]
    for v, name in enumerate(names, start=2):
        change(client, uri, v, (line, 0), (line + 1, 0), f"allow web -> {name}\n")
    await wait_diags(client, uri, lambda d: errors(d) == [])
    await asyncio.sleep(0.3)  # nothing stale may arrive after the final result
    assert errors(client.diagnostics[uri]) == []


async def test_multi_file_edit_updates_other_file(client: LanguageClient, workspace: Path):
    a_text = "service orders {\n  port 8080 http\n}\n"
    b_text = "service web { port 80 http }\nallow web -> orders\n"
    uris = make_mesh(workspace, "multi", {"a.mesh": a_text, "b.mesh": b_text})
    open_doc(client, uris["a.mesh"], a_text)
    open_doc(client, uris["b.mesh"], b_text)
    await wait_diags(client, uris["b.mesh"], lambda d: "MP101" not in codes(d))
    # Rename the service in a.mesh (unsaved): b.mesh's reference breaks.
    change(client, uris["a.mesh"], 2, (0, 8), (0, 14), "billing")
    diags = await wait_diags(client, uris["b.mesh"], lambda d: "MP101" in codes(d))
    assert [d.range.start.line for d in diags if d.code == "MP101"] == [1]
    # Rename it back: the diagnostic in b.mesh goes away again.
    change(client, uris["a.mesh"], 3, (0, 8), (0, 15), "orders")
    await wait_diags(client, uris["b.mesh"], lambda d: "MP101" not in codes(d))


async def test_unopened_files_of_the_mesh_get_diagnostics(client: LanguageClient, workspace: Path):
    uris = make_mesh(workspace, "disk", {"a.mesh": BASE, "b.mesh": "allow web -> nosuch\n"})
    open_doc(client, uris["a.mesh"], BASE)
    diags = await wait_diags(client, uris["b.mesh"], lambda d: len(d) > 0)
    assert errors(diags) == ["MP101"]


async def test_files_changed_on_disk_are_picked_up(client: LanguageClient, workspace: Path):
    # The server asks to watch .mesh files and meshc.toml (VS Code accepts).
    deadline = time.monotonic() + 10
    while not client.registrations and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    patterns = set()
    for r in client.registrations:
        if r.method == lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES:
            opts = r.register_options  # a plain mapping on the client's side
            patterns |= {w["globPattern"] for w in opts["watchers"]}
    assert patterns == {"**/*.mesh", "**/meshc.toml"}
    a_text = "service web { port 80 http }\nallow web -> orders\n"
    uris = make_mesh(workspace, "watched", {"a.mesh": a_text, "b.mesh": "service orders { port 80 http }\n"})
    open_doc(client, uris["a.mesh"], a_text)
    await wait_diags(client, uris["a.mesh"], lambda d: "MP101" not in codes(d))
    # b.mesh is deleted outside the editor (git checkout, rm): the reference breaks
    Path(path_of(uris["b.mesh"])).unlink()
    client.workspace_did_change_watched_files(lsp.DidChangeWatchedFilesParams(
        changes=[lsp.FileEvent(uri=uris["b.mesh"], type=lsp.FileChangeType.Deleted)]))
    diags = await wait_diags(client, uris["a.mesh"], lambda d: "MP101" in codes(d))
    assert [d.range.start.line for d in diags if d.code == "MP101"] == [1]
    await wait_diags(client, uris["b.mesh"], lambda d: len(d) == 0)  # its old diagnostics are cleared


async def test_closing_an_unsaved_buffer_clears_its_diagnostics(client: LanguageClient):
    uri = "untitled:Untitled-7"
    open_doc(client, uri, "allow a -> nosuch\n")
    await wait_diags(client, uri, lambda d: "MP101" in codes(d))
    client.text_document_did_close(lsp.DidCloseTextDocumentParams(lsp.TextDocumentIdentifier(uri=uri)))
    await wait_diags(client, uri, lambda d: len(d) == 0)
    await asyncio.sleep(0.2)  # and nothing is published for it afterwards
    assert len(client.diagnostics.get(uri)) == 0


async def test_a_byte_order_mark_is_not_a_syntax_error(client: LanguageClient, workspace: Path):
    uris = make_mesh(workspace, "bom", {"a.mesh": BASE})
    open_doc(client, uris["a.mesh"], "\ufeff" + BASE)
    diags = await wait_diags(client, uris["a.mesh"], lambda d: d is not None)
    assert "MP003" not in codes(diags) and not errors(diags)


async def test_requests_for_documents_not_open_return_nothing(client: LanguageClient, workspace: Path):
    uri = from_fs_path(str(workspace / "nowhere" / "x.mesh"))
    doc = lsp.TextDocumentIdentifier(uri=uri)
    items = await client.text_document_completion_async(lsp.CompletionParams(doc, lsp.Position(0, 0)))
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        doc, options=lsp.FormattingOptions(tab_size=2, insert_spaces=True)))
    assert not items and not edits


async def test_hover_service_and_rule(client: LanguageClient, workspace: Path):
    uri = make_mesh(workspace, "hover", {"a.mesh": BASE})["a.mesh"]
    open_doc(client, uri, BASE)
    line = BASE.count("\n") - 1  # allow web -> orders ...
    h = await client.text_document_hover_async(lsp.HoverParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line, 15)))
    value = h.contents.value
    assert "spiffe://example.org/ns/shop/sa/orders" in value
    assert "8080/http" in value and "`v1`" in value and "web" in value
    assert h.range == lsp.Range(lsp.Position(line, 13), lsp.Position(line, 19))
    # web's hover lists whom it may call
    h = await client.text_document_hover_async(lsp.HoverParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(1, 9)))
    assert "`orders`" in h.contents.value and "spiffe://example.org/ns/front/sa/web" in h.contents.value
    # hovering the rule's keyword describes the rule
    h = await client.text_document_hover_async(lsp.HoverParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line, 1)))
    assert "allow rule" in h.contents.value and "`orders`" in h.contents.value


async def test_definition_and_references(client: LanguageClient, workspace: Path):
    uris = make_mesh(workspace, "nav", {"a.mesh": BASE, "b.mesh": "limit web -> orders 10/s\n"})
    uri = uris["a.mesh"]
    open_doc(client, uri, BASE)
    line = BASE.count("\n") - 1
    doc = lsp.TextDocumentIdentifier(uri=uri)
    defs = await client.text_document_definition_async(lsp.DefinitionParams(text_document=doc, position=lsp.Position(line, 16)))
    assert defs.uri == uri and defs.range == lsp.Range(lsp.Position(5, 8), lsp.Position(5, 14))
    # version reference in the route -> the version declaration
    route_line = 12  # GET /orders/** -> v1 90%, v2 10%
    col = BASE.splitlines()[route_line].index("v2")
    defs = await client.text_document_definition_async(lsp.DefinitionParams(text_document=doc, position=lsp.Position(route_line, col)))
    assert defs.range.start.line == 9
    refs = await client.text_document_references_async(lsp.ReferenceParams(
        text_document=doc, position=lsp.Position(5, 10), context=lsp.ReferenceContext(include_declaration=True)))
    where = sorted((Path(r.uri).name, r.range.start.line) for r in refs)
    # declaration, `route orders`, the allow rule, and the limit in the other file
    assert where == [("a.mesh", 5), ("a.mesh", 11), ("a.mesh", line), ("b.mesh", 0)]
    refs = await client.text_document_references_async(lsp.ReferenceParams(
        text_document=doc, position=lsp.Position(9, 10), context=lsp.ReferenceContext(include_declaration=False)))
    assert sorted(r.range.start.line for r in refs) == [12]


async def _complete(client, uri, line, col) -> list[str]:
    res = await client.text_document_completion_async(lsp.CompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line, col)))
    items = res.items if isinstance(res, lsp.CompletionList) else res
    return [i.label for i in items]


async def test_completion(client: LanguageClient, workspace: Path):
    text = BASE + "allow \nroute orders {\n  GET /x -> \n  * -> v1 retry 2 on \n}\nservice s {\n  timeout 30\n  \n}\n"
    uri = make_mesh(workspace, "complete", {"a.mesh": text})["a.mesh"]
    open_doc(client, uri, text)
    base = BASE.count("\n")
    labels = await _complete(client, uri, base, 6)  # after `allow `
    assert {"web", "orders", "namespace", "authenticated"} <= set(labels) and "v1" not in labels
    labels = await _complete(client, uri, base + 2, 12)  # after `->` in route orders
    assert {"v1", "v2", "redirect", "respond"} <= set(labels) and "web" not in labels
    labels = await _complete(client, uri, base + 3, 21)  # after `on`
    assert {"5xx", "reset", "connect-failure"} <= set(labels)
    labels = await _complete(client, uri, base + 6, 12)  # `timeout 30|`
    assert {"30ms", "30s"} <= set(labels)
    labels = await _complete(client, uri, base + 7, 2)  # empty line in a service block
    assert {"namespace", "port", "retry", "version"} <= set(labels) and "allow" not in labels
    labels = await _complete(client, uri, base + 9, 0)  # top level
    assert {"service", "route", "allow", "deny", "assert"} <= set(labels)


async def test_code_action_applies_did_you_mean(client: LanguageClient, workspace: Path):
    text = BASE + "allow web -> ordrs\n"
    uri = make_mesh(workspace, "fix", {"a.mesh": text})["a.mesh"]
    open_doc(client, uri, text)
    diags = await wait_diags(client, uri, lambda d: errors(d) == ["MP101"])
    diags = [d for d in diags if d.code == "MP101"]
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), range=diags[0].range,
        context=lsp.CodeActionContext(diagnostics=list(diags))))
    assert actions and actions[0].kind == lsp.CodeActionKind.QuickFix
    edits = actions[0].edit.changes[uri]
    assert [(e.range, e.new_text) for e in edits] == [(diags[0].range, "orders")]
    assert actions[0].diagnostics[0].code == "MP101"


async def test_document_symbols(client: LanguageClient, workspace: Path):
    uri = make_mesh(workspace, "symbols", {"a.mesh": BASE})["a.mesh"]
    open_doc(client, uri, BASE)
    syms = await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri)))
    names = [(s.name, s.kind) for s in syms]
    assert names[:3] == [("m", lsp.SymbolKind.Namespace), ("web", lsp.SymbolKind.Class),
                         ("orders", lsp.SymbolKind.Class)]
    assert [c.name for c in syms[2].children] == ["v1", "v2"]
    assert names[3] == ("route orders", lsp.SymbolKind.Interface) and len(syms[3].children) == 2
    assert syms[4].kind == lsp.SymbolKind.Key


async def test_non_ascii_columns_are_utf16(client: LanguageClient, workspace: Path):
    # 😀 is one code point but two UTF-16 units; é is one of each.
    prefix = '  header "x-note" = "é😀😀" -> '
    text = BASE.replace("route orders {\n", "route orders {\n" + prefix + "v9\n")
    uri = make_mesh(workspace, "utf16", {"a.mesh": text})["a.mesh"]
    open_doc(client, uri, text)
    diags = await wait_diags(client, uri, lambda d: "MP102" in codes(d))
    d = next(d for d in diags if d.code == "MP102")
    utf16 = len(prefix.encode("utf-16-le")) // 2
    assert utf16 == len(prefix) + 2
    assert d.range == lsp.Range(lsp.Position(12, utf16), lsp.Position(12, utf16 + 2))
    # a position given in UTF-16 units finds the right name (`v1` after emoji)
    text2 = text.replace(prefix + "v9", prefix + "v1")
    change(client, uri, 2, (0, 0), (len(text.splitlines()) + 1, 0), text2)
    await wait_diags(client, uri, lambda d: "MP102" not in codes(d))
    defs = await client.text_document_definition_async(lsp.DefinitionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(12, utf16 + 1)))
    assert defs is not None and defs.range.start.line == 8


async def test_formatting(client: LanguageClient, workspace: Path):
    from meshpolicy.fmt import format_text

    assert client.server_caps.document_formatting_provider
    messy = "service   orders {\n port 8080 http\n      version v1\n}\n"
    uri = make_mesh(workspace, "fmt", {"a.mesh": messy})["a.mesh"]
    open_doc(client, uri, messy)
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), options=lsp.FormattingOptions(tab_size=2, insert_spaces=True)))
    assert edits and edits[0].new_text == format_text(messy).text and edits[0].new_text != messy
    assert edits[0].range.start == lsp.Position(0, 0) and edits[0].range.end.line == 4
    # a file with syntax errors is not formatted
    change(client, uri, 2, (0, 0), (0, 7), "servce")
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), options=lsp.FormattingOptions(tab_size=2, insert_spaces=True)))
    assert not edits


async def test_verifier_findings_follow_and_show_in_rule_hover(client: LanguageClient, workspace: Path):
    text = BASE + "deny web -> orders\n"  # wins over every request the allow rule matches
    uri = make_mesh(workspace, "verify", {"a.mesh": text})["a.mesh"]
    open_doc(client, uri, text)
    line = BASE.count("\n") - 1
    diags = await wait_diags(client, uri, lambda d: "MP501" in codes(d), timeout=60)
    dead = next(d for d in diags if d.code == "MP501")
    assert dead.range.start.line == line and "witness:" in dead.message
    assert dead.related_information and dead.related_information[0].location.range.start.line == line + 1
    h = await client.text_document_hover_async(lsp.HoverParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line, 1)))
    assert "MP501" in h.contents.value
    # fixing the policy clears the finding
    change(client, uri, 2, (line + 1, 0), (line + 2, 0), "")
    await wait_diags(client, uri, lambda d: "MP501" not in codes(d), timeout=60)


@pytest.mark.parametrize("clean", [True, False], ids=["shutdown-then-exit", "exit-alone"])
async def test_exit_code_follows_the_protocol(clean: bool):
    from pygls.lsp.client import LanguageClient as Client

    c = Client("exit-test", "1")
    await c.start_io(sys.executable, "-m", "meshpolicy.cli", "lsp")
    await c.initialize_async(lsp.InitializeParams(capabilities=lsp.ClientCapabilities()))
    c.initialized(lsp.InitializedParams())
    if clean:
        await c.shutdown_async(None)
    c.exit(None)
    code = await asyncio.wait_for(c._server.wait(), 10)
    await c.stop()
    assert code == (0 if clean else 1)  # exit without shutdown is an unclean stop
