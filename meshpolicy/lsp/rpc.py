"""JSON-RPC 2.0 error replies pygls leaves out.

pygls logs a message it cannot read and answers nothing, so a client
waiting on a request whose parameters do not fit waits forever. JSON-RPC
2.0 (section 5.1) requires an answer: -32700 for a body that is not JSON
(id null), -32600 for JSON that is not a request, -32602 for a request
whose parameters do not fit its method. A notification gets no answer,
whatever is wrong with it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pygls.exceptions import JsonRpcException
from pygls.protocol import LanguageServerProtocol

log = logging.getLogger("meshc.lsp")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602


class Refused:
    """A message that could not become a request or notification: answered
    with `code` when `reply` (a request, or no valid message at all)."""

    def __init__(self, msg_id: Any, code: int, message: str, reply: bool) -> None:
        self.id, self.code, self.message, self.reply = msg_id, code, message, reply


def _valid_id(value: Any) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


class MeshProtocol(LanguageServerProtocol):
    def structure_message(self, data: dict[str, Any]):
        if "jsonrpc" in data and data["jsonrpc"] != "2.0":
            msg_id = data.get("id")
            return Refused(msg_id if _valid_id(msg_id) else None, INVALID_REQUEST, "not JSON-RPC 2.0", True)
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:  # pygls: fields that do not fit the method's types
            method, msg_id = data.get("method"), data.get("id")
            if method is None and ("result" in data or "error" in data):
                log.warning("ignored a response that does not fit its request: %s", exc.message)
                return Refused(msg_id, INVALID_PARAMS, exc.message, False)
            if not isinstance(method, str) or not _valid_id(msg_id):
                return Refused(msg_id if _valid_id(msg_id) else None, INVALID_REQUEST, "invalid request", True)
            return Refused(msg_id, INVALID_PARAMS, f"invalid params for {method}: {exc.message}", "id" in data)

    def handle_message(self, message):
        if isinstance(message, Refused):
            if message.reply:
                self.reply_error(message.id, message.code, message.message)
            else:
                log.warning("ignored a notification: %s", message.message)
            return None
        if getattr(message, "jsonrpc", None) != "2.0":
            # A JSON value that is not a JSON-RPC 2.0 object (a list, a number, no "jsonrpc").
            msg_id = message.get("id") if isinstance(message, dict) else getattr(message, "id", None)
            self.reply_error(msg_id if _valid_id(msg_id) else None, INVALID_REQUEST, "invalid request")
            return None
        return super().handle_message(message)

    def reply_error(self, msg_id: Any, code: int, message: str) -> None:
        # A plain dict: the converter would drop `"id": null`, which the reply must carry.
        self._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})


def is_parse_error(error: BaseException) -> bool:
    """What json.loads raises on a body that is not JSON (or nests too deep)."""
    return isinstance(error, (json.JSONDecodeError, UnicodeDecodeError, RecursionError))
