"""Never crash, never hang: mutated programs get diagnostics and exit codes.

Valid generated programs are broken token by token (deletions,
duplications, swaps, insertions of nasty text: NUL, BOM, bidi controls,
non-ASCII names, 10k braces, 100-digit numbers, stray quotes and CR), and
written to disk with random bytes (including invalid UTF-8). For every
case: `check_project` returns diagnostics without raising; `meshc check`
exits 1 exactly when there is an error diagnostic (2 when the bytes are not
UTF-8) without an exception; and a program that still parses formats
idempotently without changing its meaning or its comments.
"""

from __future__ import annotations

import re
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshpolicy.commands.check import command as check_command
from meshpolicy.diagnostics import has_errors
from meshpolicy.fmt import format_text

from .conftest import check_text, run_meshc
from .strategies import mesh_programs
from .test_fmt import comments, meaning

_TOKEN = re.compile(r'\s+|[A-Za-z0-9_.%/-]+|"[^"\n]*"|.', re.S)
HUGE = ["9" * 100, "1" + "0" * 99 + "ms", "9" * 100 + ".5s", "1." + "9" * 60 + "%", "9" * 100 + "%",
        "9" * 40 + "/s", "0" * 50 + "1", "18446744073709551616"]
NASTY = [
    "{", "}", "{" * 10_000, "}" * 300, "\x00", "\ufeff", "\u202e", "\u00a0", "é", "名前", "𝔘nïcode", '"', '"é\\',
    "#", "->", "~>", "<=", ";", ",", ":", "*", "\r", "\r\n", "\n", "\t", "\x7f", "\\", "\ud800", "-", "%", "/",
    "service", "route", "version v9 {", "mesh", "allow", "assert never", "header", "0", "-1", "1e9", "0x10",
    "/**/", "regex \"(\"", "regex \"" + "a" * 5000 + "\"",
    *HUGE,
]


@st.composite
def mutated_programs(draw) -> str:
    text = draw(mesh_programs(messy=draw(st.booleans())))
    toks = _TOKEN.findall(text)
    for _ in range(draw(st.integers(1, 6))):
        if not toks:
            toks = [""]
        i = draw(st.integers(0, len(toks) - 1))
        op = draw(st.sampled_from(("delete", "duplicate", "swap", "insert", "insert", "number", "text")))
        if op == "delete":
            del toks[i]
        elif op == "duplicate":
            toks.insert(i, toks[i])
        elif op == "swap":
            j = draw(st.integers(0, len(toks) - 1))
            toks[i], toks[j] = toks[j], toks[i]
        elif op == "insert":
            toks.insert(i, draw(st.sampled_from(NASTY)))
        elif op == "number":
            nums = [k for k, t in enumerate(toks) if t[:1].isdigit()]
            if nums:
                toks[draw(st.sampled_from(nums))] = draw(st.sampled_from(HUGE))
        else:
            toks.insert(i, draw(st.text(max_size=6)))
    out = "".join(toks)
    if draw(st.integers(0, 4)) == 0:
        out = out.replace("\n", "\r\n")
    return out


def _encoded(text: str, junk: bytes, at: float) -> bytes:
    # Lone surrogates become invalid UTF-8 on disk, like the random junk.
    data = text.encode("utf-8", "surrogatepass")
    cut = int(len(data) * at)
    return data[:cut] + junk + data[cut:]


def _expected_exit(data: bytes, text: str, checked) -> int:
    """What `meshc check` must exit with for a file holding data."""
    try:
        read = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return 2
    if read != text:
        checked = check_text(read)
    return 1 if has_errors(checked.diagnostics) else 0


# The deadline is generous because the machine is shared; a hang still fails it.
@settings(max_examples=60, deadline=timedelta(seconds=10),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_programs(), st.binary(max_size=3) | st.just(b""), st.floats(0, 1))
def test_mutations_never_crash(text, junk, at):
    checked = check_text(text)  # must not raise
    assert all(d.code and d.severity for d in checked.diagnostics)

    formatted = format_text(text, "t.mesh")
    if formatted.ok:
        again = format_text(formatted.text, "t.mesh")
        assert again.ok and again.text == formatted.text
        assert meaning(formatted.text) == meaning(text.removeprefix("\ufeff"))
        assert comments(formatted.text) == comments(text.removeprefix("\ufeff"))
    else:
        assert has_errors(formatted.diagnostics)

    data = _encoded(text, junk, at)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.mesh"
        path.write_bytes(data)
        result = CliRunner().invoke(check_command, [str(path), "--format", "json"])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == _expected_exit(data, text, checked)


# A few of the worst inputs through the real entry point, in a subprocess.
SUBPROCESS_CASES = {
    "open-braces": ("{" * 10_000).encode(),
    "nested-blocks": ("service a { port 80 http\n" + "version v {\n" * 10_000).encode(),
    "nul-and-invalid-utf8": b"service a\x00 { port 80 http }\n\xff\xfe",
    "huge-numbers": ("service a { port " + "9" * 100 + " http\n timeout " + "9" * 100 + "ms\n fault delay "
                     + "9" * 100 + ".5s " + "9" * 100 + "%\n}\nlimit a -> a " + "9" * 100 + "/s burst "
                     + "9" * 100 + "\n").encode(),
    "non-ascii-crlf": "sérvice 名前 {\r\n port 80 http\r\n}\r\nallow 名前 -> a\r\n".encode(),
}


@pytest.mark.parametrize("name", list(SUBPROCESS_CASES))
def test_worst_inputs_through_the_cli(name, tmp_path):
    data = SUBPROCESS_CASES[name]
    path = tmp_path / "worst.mesh"
    path.write_bytes(data)
    for cmd in ("check", "fmt"):
        r = run_meshc(cmd, str(path), timeout=60)
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr[-2000:]
        assert r.returncode == (2 if name == "nul-and-invalid-utf8" else 1), (cmd, r.stdout[-500:], r.stderr[-500:])
    assert path.read_bytes() == data
