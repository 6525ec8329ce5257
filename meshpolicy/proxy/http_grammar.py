"""The HTTP/1.1 grammar meshproxy's two parsers full-match (RFC 9110, 9112):
its own server reading a caller's request head (http1.py) and its upstream
client reading a response head (upstream.py). Defined once, so the two never
disagree on what a token, a field value, a chunk size or a length is."""

from __future__ import annotations

import re

TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # a method or a field name (tchar)
FIELD_CHAR = rb"[\t !-~\x80-\xff]"  # a field value's bytes: visible ASCII, blanks, obs-text


def header_line(end: bytes = b"") -> re.Pattern[bytes]:
    """`name: value`, the blanks around the value not part of it, then `end`."""
    return re.compile(rb"(" + TOKEN + rb"):[\t ]*(" + FIELD_CHAR + rb"*?)[\t ]*" + end)


def chunk_size(end: bytes = b"") -> re.Pattern[bytes]:
    """A chunk's hexadecimal size, chunk extensions allowed and ignored, then `end`."""
    return re.compile(rb"([0-9A-Fa-f]{1,15})[\t ]*(?:;" + FIELD_CHAR + rb"*)?" + end)


METHOD = re.compile(TOKEN)
FIELD_VALUE = re.compile(FIELD_CHAR + rb"*")
DIGITS = re.compile(rb"[0-9]{1,18}")  # a Content-Length (at most 18 digits: no overflow anywhere)
