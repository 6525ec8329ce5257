"""What the language server publishes after an edit: the edited document
(its version changed) and every file whose diagnostics changed, cleared
when they became empty; not the files whose diagnostics are what the
client already has (server.py, publish)."""

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
    return tmp_path_factory.mktemp("lsppublish")


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
                                  initialization_options={"verify": False})
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


A = """\
mesh m { trust_domain "example.org" }
service web {
  namespace front
  port 8080 http
}
allow web -> orders
"""
B = """\
service orders {
  namespace shop
  port 8080 http
}
"""
C = """\
allow web -> billing
"""  # MP101 until some file declares billing
BILLING = "service billing {\n  namespace pay\n  port 8080 http\n}\n"


def _codes(diags) -> list[str]:
    return sorted(d.code for d in diags)


async def _until(client: LanguageClient, start: int, uri: str, pred, timeout: float = 10.0) -> list:
    """The first publication for uri after log position start that satisfies pred."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for u, ds in client.diagnostics.log[start:]:
            if u == uri and pred(ds):
                return ds
        await asyncio.sleep(0.02)
    raise AssertionError(f"no publication for {uri} matched: {client.diagnostics.log[start:]}")


def _edit(client: LanguageClient, uri: str, version: int, line: int, text: str) -> None:
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[lsp.TextDocumentContentChangePartial(
            range=lsp.Range(lsp.Position(line, 0), lsp.Position(line, 0)), text=text)]))


async def test_an_edit_publishes_only_what_changed(client: LanguageClient, workspace: Path):
    d = workspace / "m"
    d.mkdir()
    (d / "meshc.toml").write_text("")
    uris = {}
    for name, text in (("a.mesh", A), ("b.mesh", B), ("c.mesh", C)):
        (d / name).write_text(text)
        uris[name] = from_fs_path(str((d / name).resolve()))
    a, b, c = uris["a.mesh"], uris["b.mesh"], uris["c.mesh"]
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        text_document=lsp.TextDocumentItem(uri=a, language_id="mesh", version=1, text=A)))
    # The first analysis publishes every file of the mesh, empty or not.
    await _until(client, 0, c, lambda ds: _codes(ds) == ["MP101"])
    await _until(client, 0, b, lambda ds: ds == [])
    await _until(client, 0, a, lambda ds: True)

    # A comment in a: a is published (its version changed); b and c are not.
    start = len(client.diagnostics.log)
    _edit(client, a, 2, 0, "# a comment\n")
    await _until(client, start, a, lambda ds: True)
    await asyncio.sleep(0.5)
    assert [u for u, _ in client.diagnostics.log[start:]] == [a]

    # Declaring billing in a clears c's MP101: c is published, empty; b is not.
    start = len(client.diagnostics.log)
    _edit(client, a, 3, 1, BILLING)
    assert await _until(client, start, c, lambda ds: True) == []
    await asyncio.sleep(0.5)
    assert sorted(u for u, _ in client.diagnostics.log[start:]) == sorted([a, c])

    # And taking it out again brings c's MP101 back.
    start = len(client.diagnostics.log)
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=a, version=4),
        content_changes=[lsp.TextDocumentContentChangeWholeDocument(text="# a comment\n" + A)]))
    assert _codes(await _until(client, start, c, lambda ds: True)) == ["MP101"]
    await asyncio.sleep(0.5)
    assert sorted(u for u, _ in client.diagnostics.log[start:]) == sorted([a, c])
    assert list(client.diagnostics[b]) == []  # b kept what it was first given
