"""meshc fmt: idempotent, meaning-preserving, comment-keeping; and the CLI."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from meshpolicy.commands.fmt import command as fmt_command
from meshpolicy.fmt import format_text
from meshpolicy.syntax.parser import parse_text

from .conftest import EXAMPLES, check_text, codes, run_meshc
from .strategies import mesh_programs, small_policies

EXAMPLE_FILES = sorted(EXAMPLES.rglob("*.mesh"))
CLEAN_EXAMPLES = [p for p in EXAMPLE_FILES if "broken" not in p.parts]
GEN = settings(max_examples=40, deadline=10_000, suppress_health_check=[HealthCheck.too_slow])


def fmt(text: str) -> str:
    result = format_text(text, "t.mesh")
    assert result.ok, [(d.code, d.message) for d in result.diagnostics]
    return result.text


def _strip_spans(x):
    if isinstance(x, dict):
        return {k: _strip_spans(v) for k, v in x.items() if k not in ("span", "spans")}
    if isinstance(x, list):
        return [_strip_spans(v) for v in x]
    return x


def meaning(text: str) -> dict:
    return _strip_spans(check_text(text, "t.mesh").mesh.model_dump())


def comments(text: str) -> list[str]:
    tree, _ = parse_text(text, "t.mesh")
    return sorted(c.text.rstrip() for c in tree.comments)


def assert_formats_well(text: str) -> str:
    out = fmt(text)
    assert fmt(out) == out, "not idempotent"
    assert meaning(out) == meaning(text), "meaning changed"
    assert comments(out) == comments(text), "comments lost or changed"
    assert out == "" or (out.endswith("\n") and not out.endswith("\n\n"))
    assert "\r" not in out and all(ln == ln.rstrip() for ln in out.split("\n"))
    return out


# ---- properties on examples and generated programs ----------------------------------
@pytest.mark.parametrize("path", CLEAN_EXAMPLES, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_examples_format_well(path):
    assert_formats_well(path.read_text(encoding="utf-8"))


@GEN
@given(mesh_programs())
def test_generated_programs_format_well(text):
    assert not [d for d in check_text(text).diagnostics if d.is_error]
    assert_formats_well(text)


@GEN
@given(mesh_programs(messy=True))
def test_messy_programs_format_well(text):
    assert not [d for d in check_text(text).diagnostics if d.is_error]
    out = assert_formats_well(text)
    # Canonical layout does not depend on the input's layout.
    assert fmt(text.replace("\r\n", "\n")) == out


@settings(max_examples=60, deadline=10_000)
@given(small_policies())
def test_small_policies_are_valid(text):
    assert not [(d.code, d.message) for d in check_text(text).diagnostics if d.is_error]
    assert_formats_well(text)


@settings(max_examples=30, deadline=10_000)
@given(small_policies(path_kinds=("exact",), header_kinds=(), actions=("forward",), source_kinds=("service",),
                      mtls_modes=("strict",), assertions=False))
def test_small_policies_respect_restrictions(text):
    mesh = check_text(text).mesh
    assert not [d for d in check_text(text).diagnostics if d.is_error]
    assert all(p.kind == "exact" for r in mesh.auth_rules for p in r.paths)
    assert all(s.kind == "service" for r in mesh.auth_rules for s in r.sources)
    for route in mesh.routes:
        for rule in route.rules:
            assert rule.action.kind == "forward" and len(rule.action.destinations) == 1
            assert not rule.match.headers and rule.action.mirror is None
    assert not mesh.assertions and mesh.settings.mtls == "strict"


# ---- the layout, case by case -----------------------------------------------------------
def test_canonical_layout():
    src = ('service  a{port 80 http;namespace  shop\n  version v1 {version:"v1"}   version v2 {}\n'
           'retry 2 on 5xx,reset   per_try 100ms\n}\nroute a { GET /x -> v1\n * -> v1 50%,v2 50% }\n'
           "allow a->a\n\n\n\nallow b -> a GET")
    assert fmt(src) == (
        "service a {\n"
        "  port 80 http\n"
        "  namespace shop\n"
        '  version v1 { version: "v1" }\n'
        "  version v2\n"
        "  retry 2 per_try 100ms on 5xx, reset\n"
        "}\n"
        "\n"
        "route a {\n"
        "  GET /x -> v1\n"
        "  *      -> v1 50%, v2 50%\n"
        "}\n"
        "\n"
        "allow a -> a\n"
        "\n"
        "allow b -> a GET\n"
    )


def test_comment_placement():
    src = (
        "# file header\n"
        "\n"
        "service a { # opener\n"
        "  # before port\n"
        "  port 80 http # after port\n"
        "  version v1 {\n"
        "    # only a comment\n"
        "  }\n"
        "  # end of service\n"
        "} # after brace\n"
        "allow a, # inside\n"
        "  # own line inside\n"
        "  b -> a\n"
        "# end of file\n"
    )
    assert fmt(src) == (
        "# file header\n"
        "\n"
        "service a { # opener\n"
        "  # before port\n"
        "  port 80 http # after port\n"
        "  version v1 {\n"
        "    # only a comment\n"
        "  }\n"
        "  # end of service\n"
        "} # after brace\n"
        "\n"
        "# own line inside\n"
        "allow a, b -> a # inside\n"
        "# end of file\n"
    )


def test_statements_on_one_line_keep_their_comment():
    out = fmt("service a { namespace x; account y # who\n port 80 http }\n")
    assert "  account y # who\n" in out and out.count("#") == 1


def test_route_alignment_skips_long_matches():
    long = "GET " + " ".join(f"/p{i}" for i in range(12))
    out = fmt(f"service a {{ port 80 http\n version v1 }}\nroute a {{\n{long} -> v1\n/x -> v1\n/yy -> v1\n}}\n")
    lines = [ln for ln in out.splitlines() if "->" in ln]
    assert lines[0] == f"  {long} -> v1"
    assert lines[1].index("->") == lines[2].index("->") == len("  /yy ")


def test_strings_are_requoted_from_their_value():
    out = fmt('service a { port 80 http\n version v1\n}\nroute a { * -> respond 200 "tab\there \\q \\"x\\"" }\n')
    assert 'respond 200 "tab\\there \\\\q \\"x\\""' in out


def test_crlf_and_bom_and_empty():
    assert fmt("\ufeffallow a -> b\r\n\r\n\r\nallow b -> a\r\n") == "allow a -> b\n\nallow b -> a\n"
    assert fmt("") == "" and fmt("\n\n  \n") == ""
    assert fmt("# only\n\n\n# comments\n") == "# only\n\n# comments\n"


def test_syntax_errors_are_not_formatted():
    result = format_text("service a {\n  port 80\n}\n", "t.mesh")
    assert not result.ok and result.text is None
    assert codes(result.diagnostics) == ["MP002"]
    # Errors that drop written text (a repeated option) also stop formatting.
    assert not format_text("service a { port 80 http\n retry 2 per_try 1s per_try 2s }").ok


# ---- the command line ---------------------------------------------------------------------
UGLY = "allow  a->b\nservice a {port 80 http}\n"
PRETTY = fmt(UGLY)


def _invoke(*args, input=None):
    return CliRunner().invoke(fmt_command, list(args), input=input, catch_exceptions=False)


def test_cli_rewrites_only_changed_files(tmp_path):
    (tmp_path / "sub").mkdir()
    ugly, pretty = tmp_path / "sub" / "ugly.mesh", tmp_path / "pretty.mesh"
    ugly.write_text(UGLY)
    pretty.write_text(PRETTY)
    os.chmod(ugly, 0o640)
    before = pretty.stat().st_mtime_ns, pretty.stat().st_ino
    r = _invoke(str(tmp_path))
    assert r.exit_code == 0
    assert "ugly.mesh" in r.output and "pretty.mesh" not in r.output
    assert ugly.read_text() == PRETTY
    assert ugly.stat().st_mode & 0o777 == 0o640
    assert (pretty.stat().st_mtime_ns, pretty.stat().st_ino) == before
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["pretty.mesh", "ugly.mesh"]  # no temp files
    assert _invoke(str(tmp_path)).output == ""


def test_cli_check_and_diff_write_nothing(tmp_path):
    f = tmp_path / "x.mesh"
    f.write_text(UGLY)
    r = _invoke("--check", str(f))
    assert r.exit_code == 1 and "x.mesh" in r.output
    r = _invoke("--diff", str(f))
    assert r.exit_code == 0 and r.output.startswith("---") and "+allow a -> b" in r.output
    assert f.read_text() == UGLY
    f.write_text(PRETTY)
    r = _invoke("--check", str(f))
    assert (r.exit_code, r.output) == (0, "")


def test_cli_keeps_symlinks(tmp_path):
    real = tmp_path / "real.mesh"
    real.write_text(UGLY)
    link = tmp_path / "link.mesh"
    link.symlink_to(real)
    assert _invoke(str(link)).exit_code == 0
    assert link.is_symlink() and real.read_text() == PRETTY


def test_cli_stdin_to_stdout():
    r = _invoke("-", input=UGLY)
    assert (r.exit_code, r.output) == (0, PRETTY)
    r = CliRunner().invoke(fmt_command, ["-"], input="allow a ->\n")
    assert r.exit_code == 1 and "allow" not in r.stdout
    assert _invoke("--check", "-", input=UGLY).exit_code == 1
    assert _invoke("--check", "-", input=PRETTY).exit_code == 0


def test_cli_refuses_syntax_errors(tmp_path):
    bad, good = tmp_path / "bad.mesh", tmp_path / "good.mesh"
    bad.write_text("allow a ->\nservice   a {}\n")
    good.write_text(UGLY)
    r = _invoke("--format", "json", str(tmp_path))
    assert r.exit_code == 1
    assert bad.read_text() == "allow a ->\nservice   a {}\n"
    assert good.read_text() == PRETTY  # the other files are still formatted


def test_cli_unreadable_input_exits_2(tmp_path):
    f = tmp_path / "latin1.mesh"
    f.write_bytes(b"allow a -> b # caf\xe9\n")
    assert _invoke(str(f)).exit_code == 2
    assert _invoke(str(tmp_path / "missing.mesh")).exit_code == 2
    assert f.read_bytes() == b"allow a -> b # caf\xe9\n"


def test_cli_subprocess(tmp_path):
    """The real entry point: exit codes, and errors on stderr, never a traceback."""
    f = tmp_path / "x.mesh"
    f.write_text("service a {\n port 80\n}\n")
    r = run_meshc("fmt", str(f), timeout=60)
    assert r.returncode == 1 and "MP002" in r.stderr and "Traceback" not in r.stderr
    r = run_meshc("fmt", "-", input=UGLY, timeout=60)
    assert (r.returncode, r.stdout) == (0, PRETTY)
