"""The language server answers what it cannot read as JSON-RPC 2.0 requires
(a real client, pytest-lsp, writing bytes straight to the server's stdin):
-32700 for a body that is not JSON, -32600 for JSON that is not a request,
-32602 for a request whose parameters do not fit; and it keeps serving."""

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

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lsprpc")


@pytest_lsp.fixture(
    scope="module",
    config=ClientServerConfig(server_command=[sys.executable, "-m", "meshpolicy.cli", "lsp", "--no-verify"],
                              server_env=None),
)
async def client(lsp_client: LanguageClient, workspace: Path):
    lsp_client.orphan_errors = []  # error replies to no request of the client's (id null, or raw ids)
    handle = lsp_client.protocol._handle_response

    def record(msg_id, result=None, error=None):
        if error is not None and msg_id not in lsp_client.protocol._request_futures:
            lsp_client.orphan_errors.append((msg_id, error))
            return None
        return handle(msg_id, result, error)

    lsp_client.protocol._handle_response = record

    @lsp_client.feature(lsp.CLIENT_REGISTER_CAPABILITY)
    def register(params: lsp.RegistrationParams):
        return None

    params = lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"),
                                  root_uri=from_fs_path(str(workspace)))
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


def _write_raw(client: LanguageClient, body: bytes) -> None:
    client.protocol.writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)


async def _orphan_error(client: LanguageClient, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.orphan_errors:
            return client.orphan_errors.pop(0)
        await asyncio.sleep(0.02)
    raise AssertionError("the server did not answer")


async def _still_serving(client: LanguageClient, workspace: Path) -> None:
    path = workspace / "alive.mesh"
    path.write_text("")
    uri = from_fs_path(str(path))
    symbols = await client.text_document_document_symbol_async(
        lsp.DocumentSymbolParams(text_document=lsp.TextDocumentIdentifier(uri=uri)))
    assert symbols is not None


@pytest.mark.parametrize("body", [b"{not json", b'{"jsonrpc": "2.0", "id": 7, "method": "x"', b"\xff\xfe{}",
                                  b"[" * 100_000 + b"]" * 100_000])
async def test_a_body_that_is_not_json_gets_a_parse_error(client: LanguageClient, workspace: Path, body: bytes):
    _write_raw(client, body)
    msg_id, error = await _orphan_error(client)
    assert (msg_id, error.code) == (None, -32700)
    await _still_serving(client, workspace)


@pytest.mark.parametrize("message, expected_id", [
    ([1, 2], None),
    (5, None),
    ({"id": 8, "method": "textDocument/hover"}, 8),  # no "jsonrpc"
    ({"jsonrpc": "1.0", "id": "v1", "method": "textDocument/hover"}, "v1"),
    ({"jsonrpc": "2.0", "id": 9, "method": 12}, 9),
    ({"jsonrpc": "2.0", "id": [9], "method": "textDocument/hover", "params": 3}, None),
])
async def test_json_that_is_not_a_request_gets_invalid_request(client: LanguageClient, workspace: Path,
                                                               message, expected_id):
    _write_raw(client, json.dumps(message).encode())
    msg_id, error = await _orphan_error(client)
    assert (msg_id, error.code) == (expected_id, -32600)
    await _still_serving(client, workspace)


async def test_a_request_with_parameters_that_do_not_fit_gets_invalid_params(client: LanguageClient,
                                                                               workspace: Path):
    uri = from_fs_path(str(workspace / "alive.mesh"))
    bad = [{"textDocument": 5}, {"textDocument": {"uri": uri}, "position": {"line": "x", "character": 0}},
           [1, 2], None]
    for n, params in enumerate(bad):
        message = {"jsonrpc": "2.0", "id": f"bad-{n}", "method": "textDocument/hover", "params": params}
        _write_raw(client, json.dumps(message).encode())
        msg_id, error = await _orphan_error(client)
        assert (msg_id, error.code) == (f"bad-{n}", -32602), params
    await _still_serving(client, workspace)


async def test_a_notification_that_does_not_fit_gets_no_answer(client: LanguageClient, workspace: Path):
    message = {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {"uri": 5}}}
    _write_raw(client, json.dumps(message).encode())
    await _still_serving(client, workspace)
    await asyncio.sleep(0.2)
    assert not client.orphan_errors
