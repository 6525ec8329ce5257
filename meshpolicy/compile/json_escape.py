"""JSON text that YAML 1.1 readers read back unchanged.

Targets write JSON (a subset of YAML) with ensure_ascii=False, which leaves
every non-ASCII character raw, and DEL too. YAML 1.1 readers (PyYAML, and the
tools built on it) take NEL (U+0085), U+2028 and U+2029 for line breaks,
folding them into a space inside a quoted scalar, and refuse DEL, the other
C1 controls, U+FFFE/U+FFFF and surrogates (a lone surrogate cannot even be
written as UTF-8); a byte-order mark may be dropped. Those are written as
`\\uXXXX` escapes, which JSON and YAML read alike. Every other character is
left as it was, so ordinary output stays byte-identical.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")


def _escape(m: re.Match) -> str:
    return f"\\u{ord(m.group()):04x}"


def yaml_safe(json_text: str) -> str:
    """json_text (JSON written by json.dumps) with the characters above escaped.

    Outside strings JSON is ASCII without DEL, so every match is inside a
    string; a raw character is never part of an escape, so `\\uXXXX` in its
    place reads back as that character.
    """
    if _UNSAFE.search(json_text) is None:
        return json_text
    return _UNSAFE.sub(_escape, json_text)
