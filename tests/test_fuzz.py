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
import yaml

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


# ---- control characters in every string position --------------------------------------
# One mesh with a placeholder in each place a string (or a path token) can be written.
POSITIONS_MESH = '''mesh m {
  trust_domain "{TD}"
}
service web { port 80 http }
service api {
  namespace {NS}
  port 80 http
  balance hash header "{HASH}"
  version v1 { version: "v1", "{LKEY}": "x", app: "{LVAL}" }
  version v2 { version: "v2" }
}
route api {
  GET /a{PATH} -> v1
  exact "{EXACT}" -> v1
  prefix "{PREFIX}" -> v1
  regex "{REGEX}" -> v1
  header "{HNAME}" = "x" -> v2
  header "x-a" = "{HVAL}" -> v2
  header "x-b" prefix "{HPRE}" -> v2
  header "x-c" ~ "{HRE}" -> v2
  GET /old -> redirect "{REDIR}" 302
  GET /r -> respond 200 "{BODY}"
  * -> v1
}
allow web -> api GET /ok, exact "{AEXACT}"
assert can web -> api GET exact "{CEXACT}"
'''
POSITIONS = dict(TD="example.org", NS="back", HASH="x-user", LKEY="tier", LVAL="web", PATH="/b", EXACT="/e", PREFIX="/p",
                 REGEX="/r[0-9]+", HNAME="x-h", HVAL="v", HPRE="p", HRE="v[0-9]", REDIR="/new", BODY="ok",
                 AEXACT="/z", CEXACT="/ok")
# Not strings: a name and a path token (no escapes there).
TOKENS = ("NS", "PATH")
# Where a control character is fine (see meshpolicy/checks/controls.py).
ALLOWED = {"HVAL": "\t", "HPRE": "\t", "HRE": "\t", "BODY": "\t\n\r"}
CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f", "\x80", "\x85", "\x9f", "\u2028", "\u2029", "\ufffe", "\uffff"]
_ESCAPE = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# What no target may hold raw: every control but the line feeds of the file format itself.
_RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ufffe\uffff]")


def positions_mesh(**values) -> str:
    text = POSITIONS_MESH
    for key, value in {**POSITIONS, **values}.items():
        text = text.replace("{" + key + "}", value)
    return text


def _with(position: str, ch: str, escaped: bool) -> str:
    base = POSITIONS[position]
    written = _ESCAPE[ch] if escaped else ch
    return positions_mesh(**{position: base[:1] + written + base[1:]})


def _compile(folder: Path, target: str, out: Path):
    from meshpolicy.commands.compile import command as compile_command

    return CliRunner().invoke(compile_command, [str(folder), "--target", target, "-o", str(out)])


def test_positions_mesh_is_clean():
    assert [d.code for d in check_text(positions_mesh()).diagnostics if d.severity.value == "error"] == []


@pytest.mark.parametrize("position", list(POSITIONS))
def test_control_characters_in_every_string_position(position, tmp_path):
    for ch in CONTROLS:
        for escaped in ([False, True] if ch in _ESCAPE and position not in TOKENS else [False]):
            if ch in "\r\n" and not escaped and position not in TOKENS:
                continue  # a raw line end ends the string: MP004, covered by the line-ending tests
            text = _with(position, ch, escaped)
            checked = check_text(text)  # must not raise
            errors = [d.code for d in checked.diagnostics if d.severity.value == "error"]
            case = (position, hex(ord(ch)), escaped, errors)
            if position not in TOKENS and ch not in ALLOWED.get(position, ""):
                # a string holds it: reported once, as MP214, where it was written
                assert errors.count("MP214") == 1, case
                assert [d.span.line for d in checked.diagnostics if d.code == "MP214"][0] > 0
            elif position not in TOKENS:
                assert errors == [], case
            else:
                assert errors, case  # a name or path token: split (and broken), refused or reported
            f = tmp_path / "fuzz.mesh"
            f.write_bytes(text.encode("utf-8"))
            result = CliRunner().invoke(check_command, [str(f), "--format", "json"])
            assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
                (case, repr(result.exception))
            assert result.exit_code == (1 if errors else 0), case


@pytest.mark.parametrize("target", ["istio", "envoy", "meshproxy"])
def test_no_control_character_reaches_a_target(target, tmp_path):
    src = tmp_path / "mesh"
    src.mkdir()
    # Refused: nothing is written.
    for position in POSITIONS:
        if position in TOKENS:
            continue
        (src / "a.mesh").write_text(_with(position, "\x01", False), encoding="utf-8")
        out = tmp_path / f"refused-{position}"
        result = _compile(src, target, out)
        assert result.exit_code == 1 and not out.exists(), (position, result.output[-500:])
    # Allowed (tabs and line breaks in a body, a tab in header values): written escaped.
    (src / "a.mesh").write_text(positions_mesh(HVAL="x\\ty", HPRE="p\\tq", BODY="a\\tb\\r\\nc"), encoding="utf-8")
    out = tmp_path / "out"
    result = _compile(src, target, out)
    assert result.exit_code == 0, result.output[-2000:]
    texts = [p.read_text(encoding="utf-8") for p in sorted(out.rglob("*")) if p.is_file()]
    for text in texts:
        assert not _RAW_CONTROL.search(text)
    assert any("a\\tb\\r\\nc" in t for t in texts)  # the body, escaped as JSON/YAML escapes


# ---- the YAML/JSON writers of the targets ---------------------------------------------
# Characters a YAML 1.1 reader (PyYAML's pure-Python loader here) breaks (NEL,
# U+2028 as line breaks) or refuses (DEL, C1, non-characters, surrogates), and
# ordinary ones that must be written exactly as before.
AWKWARD = ["\x85", "\x80", "\x9f", "\x7f", "\uffff", "\ufffe", "\u2028", "\u2029", "\ud800", "\udfff", "\ufeff",
           "\x00", "\x1b", "\n", "\r", "\t"]
ORDINARY = ["é", "名前", "𝔘nïcode", '"', "\\", "a: b", "- x", "#", "on", "\u00a0", "\u202e"]


def _writers():
    from meshpolicy.compile.templates import to_json_scalar
    from meshpolicy.targets.envoy import json_lines

    def envoy(value):
        return json_lines.dump({"node": {"id": value}, "static_resources": {"listeners": [{"name": value}],
                                                                             "clusters": []}})

    def envoy_read(text):
        doc = yaml.load(text, Loader=yaml.SafeLoader)
        assert doc == json_lines.load(text)
        return doc["static_resources"]["listeners"][0]["name"]

    def meshproxy(value):
        from meshpolicy.targets.meshproxy import dump

        return dump({"service": value})

    def meshproxy_read(text):
        import json

        assert yaml.load(text, Loader=yaml.SafeLoader) == json.loads(text)
        return json.loads(text)["service"]

    return {"istio j filter": (to_json_scalar, lambda t: yaml.load(t, Loader=yaml.SafeLoader)),
            "envoy bootstrap": (envoy, envoy_read), "meshproxy config": (meshproxy, meshproxy_read)}


@pytest.mark.parametrize("writer", ["istio j filter", "envoy bootstrap", "meshproxy config"])
def test_writers_round_trip_through_a_yaml_1_1_reader(writer):
    write, read = _writers()[writer]
    for ch in AWKWARD + ORDINARY:
        value = f"a{ch}b\\{ch}"
        text = write(value)
        text.encode("utf-8")  # a lone surrogate could not be written
        assert read(text) == value, (writer, hex(ord(ch[0])), text)


def test_writers_keep_ordinary_strings_byte_identical():
    import json

    from meshpolicy.compile.templates import to_json_scalar

    for s in ORDINARY + ["plain", "/orders/*", "x\ny"]:
        assert to_json_scalar(s) == json.dumps(s, ensure_ascii=False)
