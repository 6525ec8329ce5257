"""What the language server takes on, bounded: files over MAX_FILE_BYTES are
not analysed (their mesh gets one diagnostic instead of an 844 MB analysis),
a root-less file pulls in only the files beside it (as `meshc check` does),
and closing the last file of a mesh drops what was kept for it.

A real client (pytest-lsp) drives `meshc lsp`; memory is read from the
server's /proc entry."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from pygls.uris import from_fs_path

from meshpolicy.lsp import MAX_FILE_BYTES
from meshpolicy.project import ROOTLESS_LIMIT
from tests.conftest import run_meshc

pytestmark = pytest.mark.asyncio(loop_scope="module")

HEAD = 'mesh m { trust_domain "example.org" }\n'


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lsplimits")


@pytest_lsp.fixture(
    scope="module",
    config=ClientServerConfig(server_command=[sys.executable, "-m", "meshpolicy.cli", "lsp", "--no-verify",
                                              "--debounce-ms", "10"], server_env=None),
)
async def client(lsp_client: LanguageClient, workspace: Path):
    @lsp_client.feature(lsp.CLIENT_REGISTER_CAPABILITY)
    def register(params: lsp.RegistrationParams):
        return None

    params = lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"),
                                  root_uri=from_fs_path(str(workspace)))
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


def _uri(p: Path) -> str:
    return from_fs_path(str(p.resolve()))


def _open(client: LanguageClient, path: Path, text: str | None = None) -> str:
    uri = _uri(path)
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(text_document=lsp.TextDocumentItem(
        uri=uri, language_id="mesh", version=1, text=path.read_text() if text is None else text)))
    return uri


def _close(client: LanguageClient, uri: str) -> None:
    client.text_document_did_close(lsp.DidCloseTextDocumentParams(text_document=lsp.TextDocumentIdentifier(uri=uri)))


async def _diags(client: LanguageClient, uri: str, pred, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = client.diagnostics.get(uri)
        if got is not None and pred(got):
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"diagnostics for {uri} never matched: {client.diagnostics.get(uri)}")


def _codes(diags) -> list[str]:
    return sorted(d.code for d in diags)


def _peak_mb(client: LanguageClient) -> float:
    status = Path(f"/proc/{client._server.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def _big(size: int) -> str:
    """A valid mesh of about `size` characters."""
    line = "service s{:07d} {{ port 8080 http }}\n"
    return HEAD + "".join(line.format(i) for i in range(size // len(line.format(0)) + 1))


async def test_a_file_over_the_limit_is_not_analysed_and_its_mesh_says_why(client: LanguageClient,
                                                                          workspace: Path):
    d = workspace / "big"
    d.mkdir()
    (d / "meshc.toml").write_text("")
    small = d / "small.mesh"
    small.write_text("allow * -> nowhere\n")
    (d / "big.mesh").write_text("")
    small_uri = _uri(small)
    big_text = _big(5_000_000)
    assert len(big_text) > 5_000_000 > MAX_FILE_BYTES
    big_uri = _open(client, d / "big.mesh", big_text)
    got = await _diags(client, big_uri, lambda ds: ds)
    assert _codes(got) == ["MP001"] and got[0].range.start == lsp.Position(0, 0)
    assert not await _diags(client, small_uri, lambda ds: not ds)  # not checked: no MP101 for `nowhere`
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        text_document=lsp.TextDocumentIdentifier(uri=big_uri), options=lsp.FormattingOptions(2, True)))
    assert not edits
    t0 = time.monotonic()
    items = await client.text_document_completion_async(lsp.CompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri=big_uri), position=lsp.Position(100_000, 0)))
    assert not items and time.monotonic() - t0 < 2  # tokenizing up to the cursor took 8 s
    assert _peak_mb(client) < 300, _peak_mb(client)  # 70 MB measured; analysing it peaked at 844 MB

    # Cut down below the limit, the mesh is checked again.
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=big_uri, version=2),
        content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=HEAD + "service web { port 80 http }\n")]))
    assert _codes(await _diags(client, small_uri, lambda ds: ds)) == ["MP101"]
    assert "MP001" not in _codes(await _diags(client, big_uri, lambda ds: "MP001" not in _codes(ds)))
    _close(client, big_uri)


async def test_a_large_file_on_disk_is_not_read(client: LanguageClient, workspace: Path):
    d = workspace / "bigdisk"
    d.mkdir()
    (d / "meshc.toml").write_text("")
    (d / "big.mesh").write_text(_big(MAX_FILE_BYTES + 10))
    uri = _open(client, d / "small.mesh", "allow * -> nowhere\n")
    got = await _diags(client, _uri(d / "big.mesh"), lambda ds: ds)
    assert _codes(got) == ["MP001"]
    assert not await _diags(client, uri, lambda ds: not ds)
    _close(client, uri)


async def test_a_rootless_file_takes_only_the_files_beside_it(client: LanguageClient, workspace: Path):
    d = workspace / "loose"
    (d / "sub").mkdir(parents=True)
    assert not any((p / "meshc.toml").exists() for p in [d, *d.parents])
    (d / "a.mesh").write_text(HEAD + "service web { port 80 http }\n")
    (d / "b.mesh").write_text("allow * -> nowhere\nallow * -> web\n")
    (d / "sub" / "c.mesh").write_text("service web { port 80 http }\n")  # would be MP103 if pulled in
    uri = _open(client, d / "a.mesh")
    assert _codes(await _diags(client, _uri(d / "b.mesh"), lambda ds: ds)) == ["MP101"]
    assert not await _diags(client, uri, lambda ds: True)
    assert _uri(d / "sub" / "c.mesh") not in client.diagnostics
    _close(client, uri)
    # The command line forms the same mesh.
    out = run_meshc("check", "--format", "json", str(d / "a.mesh"))
    assert sorted(x["code"] for x in json.loads(out.stdout)["diagnostics"]) == ["MP101"]


async def test_a_rootless_file_among_too_many_is_a_mesh_of_its_own(client: LanguageClient, workspace: Path):
    d = workspace / "crowd"
    d.mkdir()
    for i in range(ROOTLESS_LIMIT + 1):
        (d / f"f{i:04d}.mesh").write_text("allow * -> nowhere\n")
    mine = d / "mine.mesh"
    mine.write_text(HEAD + "service web { port 80 http }\nallow * -> web\nallow web -> elsewhere\n")
    uri = _open(client, mine)
    got = await _diags(client, uri, lambda ds: ds)
    assert _codes(got) == ["MP001", "MP101"]  # checked, on its own
    assert [d.severity for d in got if d.code == "MP001"] == [lsp.DiagnosticSeverity.Warning]
    await asyncio.sleep(0.3)
    assert not any(u.startswith(_uri(d) + "/f") for u in client.diagnostics)  # the others were not read
    _close(client, uri)
    out = run_meshc("check", "--format", "json", str(mine))
    assert out.returncode == 2  # the mesh meant could not be read: MP001's exit code
    assert sorted(x["code"] for x in json.loads(out.stdout)["diagnostics"]) == ["MP001", "MP101"]


async def test_closing_the_last_file_of_a_mesh_clears_its_diagnostics(client: LanguageClient, workspace: Path):
    d = workspace / "closing"
    d.mkdir()
    (d / "meshc.toml").write_text("")
    (d / "other.mesh").write_text("allow * -> nowhere\n")
    uri = _open(client, d / "a.mesh", HEAD + "service web { port 80 http }\nallow * -> web\n")
    other = _uri(d / "other.mesh")
    assert _codes(await _diags(client, other, lambda ds: ds)) == ["MP101"]
    _close(client, uri)
    await _diags(client, other, lambda ds: not ds)
    await _diags(client, uri, lambda ds: not ds)
