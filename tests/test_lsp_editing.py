"""Editing with the language server (a real client, pytest-lsp): verifier
findings stay through edits, moved with the text, until the next run
replaces them; quick fixes answer the diagnostics the client asks about;
unit completion continues only a bare number."""

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

pytestmark = pytest.mark.asyncio(loop_scope="module")

BASE = """\
mesh m { trust_domain "example.org" }
service web {
  port 8080 http
}
service orders {
  port 8080 http
}
allow web -> orders GET /orders/**
deny web -> orders
"""
DEAD_LINE = 7  # the allow rule the deny rule makes dead (MP501)


class PublishLog(dict):
    """client.diagnostics that also keeps every publication, in order."""

    def __init__(self):
        super().__init__()
        self.log: list[tuple[str, list]] = []

    def __setitem__(self, uri, diags):
        self.log.append((uri, list(diags)))
        super().__setitem__(uri, diags)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lspedit")


@pytest_lsp.fixture(
    scope="module",
    config=ClientServerConfig(server_command=[sys.executable, "-m", "meshpolicy.cli", "lsp", "--debounce-ms", "10"],
                              server_env=None),
)
async def client(lsp_client: LanguageClient, workspace: Path):
    @lsp_client.feature(lsp.CLIENT_REGISTER_CAPABILITY)
    def register(params: lsp.RegistrationParams):
        return None

    lsp_client.diagnostics = PublishLog()
    params = lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"),
                                  root_uri=from_fs_path(str(workspace)),
                                  initialization_options={"verifyDelayMs": 150})
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


def _mesh(workspace: Path, name: str, text: str) -> str:
    d = workspace / name
    d.mkdir()
    (d / "meshc.toml").write_text("")
    (d / "a.mesh").write_text(text)
    return from_fs_path(str((d / "a.mesh").resolve()))


def _open(client: LanguageClient, uri: str, text: str) -> None:
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        text_document=lsp.TextDocumentItem(uri=uri, language_id="mesh", version=1, text=text)))


def _edit(client: LanguageClient, uri: str, version: int, start: tuple[int, int], end: tuple[int, int],
          text: str) -> None:
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[lsp.TextDocumentContentChangePartial(
            range=lsp.Range(lsp.Position(*start), lsp.Position(*end)), text=text)]))


async def _wait(client: LanguageClient, uri: str, pred, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = client.diagnostics.get(uri)
        if got is not None and pred(got):
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"diagnostics for {uri} never matched: {client.diagnostics.get(uri)}")


def _dead(diags) -> list[lsp.Diagnostic]:
    return [d for d in diags if d.code == "MP501"]


async def _publications_after(client: LanguageClient, uri: str, start: int, seconds: float) -> list[list]:
    await asyncio.sleep(seconds)
    return [ds for u, ds in client.diagnostics.log[start:] if u == uri]


async def test_verifier_findings_stay_and_move_with_an_edit_elsewhere(client: LanguageClient, workspace: Path):
    uri = _mesh(workspace, "stay", BASE)
    _open(client, uri, BASE)
    (dead,) = _dead(await _wait(client, uri, _dead))
    assert dead.range.start.line == DEAD_LINE
    assert dead.related_information[0].location.range.start.line == DEAD_LINE + 1
    start = len(client.diagnostics.log)
    _edit(client, uri, 2, (1, 0), (1, 0), "# a comment\n# and another\n")  # two lines above both rules
    published = await _publications_after(client, uri, start, 1.5)
    assert len(published) >= 2  # the check, then the verifier
    for diags in published:  # never cleared in between
        (moved,) = _dead(diags)
        assert (moved.range.start.line, moved.range.start.character) == (DEAD_LINE + 2, 0)
        assert moved.range.end.line == DEAD_LINE + 2
        assert moved.related_information[0].location.range.start.line == DEAD_LINE + 3


async def test_a_finding_edited_over_goes_until_the_verifier_says_again(client: LanguageClient, workspace: Path):
    uri = _mesh(workspace, "touched", BASE)
    _open(client, uri, BASE)
    (dead,) = _dead(await _wait(client, uri, _dead))
    start = len(client.diagnostics.log)
    # Rewrite the rule's path: still dead, but the old finding cannot be trusted for it.
    _edit(client, uri, 2, (DEAD_LINE, 24), (DEAD_LINE, 34), "/shop/**")
    published = await _publications_after(client, uri, start, 1.5)
    assert not _dead(published[0])  # the check's publication: dropped, not moved
    (again,) = _dead(published[-1])  # the verifier's: found again
    assert again.range.start.line == DEAD_LINE


async def test_code_actions_follow_the_diagnostics_asked_about(client: LanguageClient, workspace: Path):
    text = BASE.replace("deny web -> orders\n", "allow wbe -> ordrs\n")
    uri = _mesh(workspace, "actions", text)
    _open(client, uri, text)
    diags = await _wait(client, uri, lambda ds: len([d for d in ds if d.code == "MP101"]) == 2)
    first, second = sorted((d for d in diags if d.code == "MP101"), key=lambda d: d.range.start.character)
    line = lsp.Range(lsp.Position(DEAD_LINE + 1, 0), lsp.Position(DEAD_LINE + 1, 18))

    async def actions(asked):
        return await client.text_document_code_action_async(lsp.CodeActionParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri), range=line,
            context=lsp.CodeActionContext(diagnostics=asked)))

    got = await actions([second])
    assert [a.edit.changes[uri][0].new_text for a in got] == ["orders"]
    assert list(got[0].diagnostics) == [second] and got[0].is_preferred
    got = await actions([first])
    assert [a.edit.changes[uri][0].new_text for a in got] == ["web"]
    assert not await actions([])  # no diagnostic asked about: nothing to fix
    stale = lsp.Diagnostic(range=lsp.Range(lsp.Position(0, 0), lsp.Position(0, 4)), message="x",
                           code="MP101", source="meshc")
    assert not await actions([stale])  # matches no current finding


async def _complete(client: LanguageClient, uri: str, line: int, col: int) -> list[str]:
    res = await client.text_document_completion_async(lsp.CompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line, col)))
    return [i.label for i in (res.items if isinstance(res, lsp.CompletionList) else res)]


async def test_units_complete_a_bare_number_only(client: LanguageClient, workspace: Path):
    text = BASE + "service s {\n  port 80 http\n  timeout 1s\n  retry 2 per_try 3m\n}\nlimit * -> s 5/s\n"
    uri = _mesh(workspace, "units", text)
    _open(client, uri, text)
    n = BASE.count("\n")
    assert await _complete(client, uri, n + 2, 12) == []  # `timeout 1s|`: complete
    assert set(await _complete(client, uri, n + 2, 11)) == {"1ms", "1s", "1m", "1h"}  # `timeout 1|`
    assert await _complete(client, uri, n + 3, 20) == ["3ms"]  # `per_try 3m|`: minutes, or milliseconds
    assert await _complete(client, uri, n + 5, 16) == []  # `5/s|`


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
async def test_an_edit_moves_ranges_by_its_lines_and_utf16_units(newline: str):
    from meshpolicy.lsp.carry import Edit, carry

    def rng(a, b, c, d):
        return lsp.Range(lsp.Position(a, b), lsp.Position(c, d))

    uri = "file:///m/a.mesh"
    same_line = lsp.Diagnostic(range=rng(3, 10, 3, 14), message="m", code="MP501")
    below = lsp.Diagnostic(range=rng(5, 2, 5, 6), message="m", code="MP502")
    touched = lsp.Diagnostic(range=rng(3, 2, 3, 6), message="m", code="MP503")
    # "é😀" is 3 UTF-16 units; the edit replaces 3:4-3:8 with two lines.
    edit = Edit(rng(3, 4, 3, 8), f"x{newline}é😀", lsp.PositionEncodingKind.Utf16)
    out = carry([same_line, below, touched], uri, uri, edit)
    assert [d.code for d in out] == ["MP501", "MP502"]
    assert out[0].range == rng(4, 3 + 2, 4, 3 + 6)
    assert out[1].range == rng(6, 2, 6, 6)
    assert carry([same_line], "file:///m/b.mesh", uri, edit) == [same_line]  # another file: unmoved


async def test_code_links_follow_doc_url_or_a_mirror():
    from meshpolicy.codes import doc_url
    from meshpolicy.lsp.convert import code_href

    assert code_href("MP101") == doc_url("MP101")
    assert code_href("MP101", "https://mirror.example/meshc/diagnostics/") == \
        "https://mirror.example/meshc/diagnostics/" + doc_url("MP101").rsplit("/", 1)[1]
