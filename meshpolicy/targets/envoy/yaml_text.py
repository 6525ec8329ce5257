"""A small block-style YAML writer for plain data (dict, list, str, int,
float, bool).

PyYAML's representer spent most of a compile on the 1000-service bench
(150 ms per bootstrap); this writes the same kind of document several times
faster. Safety does not depend on care here: any string that is not a
short, obviously plain word is written as a JSON string, which is a valid
YAML double-quoted scalar (the approach of compile/templates.py's `j`
filter), so no policy string can add structure. The validator parses every
file back before anything is written.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

_PLAIN = re.compile(r"[A-Za-z/][A-Za-z0-9_./|-]*\Z")
# Words YAML 1.1 or 1.2 would read as something other than a string.
_RESERVED = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "nan", "inf"}


def scalar(v) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return json.dumps(v)
    if isinstance(v, str):
        return _string(v)
    raise TypeError(f"cannot write {type(v).__name__} as YAML")


@lru_cache(maxsize=65536)
def _string(v: str) -> str:
    if _PLAIN.match(v) and v.lower() not in _RESERVED:
        return v
    return json.dumps(v, ensure_ascii=True)


def _lines(v, indent: str, out: list[str]) -> None:
    """Write the items of a non-empty dict or list, one per line at indent."""
    if isinstance(v, dict):
        for k, x in v.items():
            key = scalar(k)
            if isinstance(x, (dict, list)) and x:
                out.append(f"{indent}{key}:")
                _lines(x, indent + ("  " if isinstance(x, dict) else ""), out)
            else:
                out.append(f"{indent}{key}: {_inline(x)}")
    else:
        for x in v:
            if isinstance(x, (dict, list)) and x:
                sub: list[str] = []
                _lines(x, indent + "  ", sub)
                # The first line of the item goes after "- ".
                out.append(f"{indent}- {sub[0][len(indent) + 2:]}")
                out.extend(sub[1:])
            else:
                out.append(f"{indent}- {_inline(x)}")


def _inline(x) -> str:
    if isinstance(x, dict):
        return "{}"
    if isinstance(x, list):
        return "[]"
    return scalar(x)


def dump(data: dict) -> str:
    if not data:
        return "{}\n"
    out: list[str] = []
    _lines(data, "", out)
    return "\n".join(out) + "\n"
