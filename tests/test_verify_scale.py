"""What keeps `meshc verify` fast on large meshes, outside the analysis
itself (docs/performance.md, "Verify at 10,000 services"): the command
settles (freezes) what it built instead of leaving it to the cyclic GC, and
machine-readable reports are written in one piece."""

from __future__ import annotations

import gc
import io
import json

import pytest
from click.testing import CliRunner

from meshpolicy.pipeline import check_project
from meshpolicy.project import load
from meshpolicy.render import render
from meshpolicy.verify import run

from .conftest import EXAMPLES


def test_verify_command_settles_what_it_built():
    """The model, partitions and findings live until exit: at 10,000 services
    the collections that rescanned them cost 15 s of CPU, more than the run."""
    from meshpolicy.commands.verify import command

    gc.collect()
    frozen = gc.get_freeze_count()
    try:
        result = CliRunner().invoke(command, [str(EXAMPLES / "shop")])
        assert result.exit_code == 0, result.output
        assert gc.get_freeze_count() > frozen
        assert gc.isenabled()
    finally:
        gc.unfreeze()


class _CountingWriter(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_reports_are_written_in_one_piece(fmt):
    """json.dump writes token by token: 2.6 million writes for the findings of
    a 10,000-service mesh. The document is one write (and its newline)."""
    checked = check_project(load([EXAMPLES / "shop"]))
    found = run(checked.mesh, checked.project.config)
    assert found
    out = _CountingWriter()
    render(fmt, found, checked.project.files, out, command="verify")
    assert out.writes == 2
    doc = json.loads(out.getvalue())
    listed = doc["diagnostics"] if fmt == "json" else doc["runs"][0]["results"]
    assert len(listed) == len(found)
