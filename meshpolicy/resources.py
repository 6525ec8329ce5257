"""Where the grammar and target templates live, installed or in a checkout.

A wheel carries them under meshpolicy/_data/ (see pyproject's force-include);
an editable install or a plain checkout reads the top-level folders.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    installed = _PKG / "_data" / name
    if installed.is_dir():
        return installed
    checkout = _PKG.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"meshpolicy data folder {name!r} is missing from the installation")


def grammar_path() -> Path:
    return data_dir("grammar") / "mesh.lark"


def target_dir(target: str) -> Path:
    return data_dir("targets") / target
