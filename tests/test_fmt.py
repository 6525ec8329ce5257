"""meshc fmt: idempotent, meaning-preserving, comment-keeping; and the CLI."""

from __future__ import annotations

import os
import sys

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
GEN = settings(max_examples=30, deadline=10_000, suppress_health_check=[HealthCheck.too_slow])


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


@settings(max_examples=40, deadline=10_000)
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


def test_cli_check_says_how_to_fix_in_a_pasteable_command(tmp_path):
    import subprocess

    f = tmp_path / "ugly file.mesh"
    f.write_text(UGLY)
    r = run_meshc("fmt", "--check", str(f), cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == "would reformat 'ugly file.mesh'\n"  # as given, relative
    assert "1 file not in meshc's layout" in r.stderr
    fix = r.stderr.split("fix with: ", 1)[1].strip()
    # the suggested command, run by a shell as printed, fixes the file
    fixed = subprocess.run(fix.replace("meshc ", f"{sys.executable} -m meshpolicy.cli ", 1), shell=True,
                           capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert fixed.returncode == 0 and f.read_text() == PRETTY


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


# ---- the generators cover what they promise ----------------------------------------------
def _features(node, out: set) -> None:
    """Names of the constructs a syntax node uses, for the coverage test."""
    k, f = node.kind, node.fields
    out.add(k)
    if k == "block_open":
        out.add(f"block {f['block']}")
    elif k == "version":
        out.add("version block" if f.get("opens") else "version bare")
    elif k in ("tracing", "retry"):
        out.add(f"{k} off" if f.get("off") else f"{k} on")
        out.update(f"{k} {opt}" for opt in ("sample", "per_try", "backoff", "budget") if f.get(opt))
        out.update(f"{k} {opt}" for opt in ("on", "non_idempotent") if f.get(opt))
        out.update(f"{k} {opt} 2" for opt in ("backoff", "budget") if len(f.get(opt) or ()) > 1)
        out.update(["retry status"] if any(c.text.isdigit() for c in f.get("on") or ()) else [])
    elif k in ("circuit", "outlier", "fault"):
        out.update(f"{k} {opt}" for opt in f)
    elif k == "balance":
        out.add(f"balance {f['policy'].value}")
    elif k in ("mtls", "port", "metrics", "default"):
        out.add(f"{k} {next(iter(f.values())).text}" if k != "port" else f"port {f['protocol'].text}")
    elif k == "token":
        out.add(f"token {f['where']}" + (" prefix" if f.get("prefix") else ""))
    elif k == "listen":
        out.add(f"listen {f['protocol'].text}")
    elif k == "egress":
        out.add(f"egress {f['stance'].text}")
    elif k == "cors":
        out.update(f"cors {opt}" for opt in f)
    elif k == "labels":
        out.update("label string key" for key, _ in f["labels"] if key.text.startswith('"'))
    elif k == "rule":
        m, a = f["match"], f["action"]
        out.add("match *" if m.get("all") else "match")
        out.update(f"match {part}" for part in ("methods", "sources") if m.get(part))
        out.update(f"header {h.get('test')}" for h in m.get("headers"))
        out.update(f"query {q.get('test')}" for q in m.get("queries"))
        out.update(f"header op {o.get('op') if isinstance(o.get('op'), str) else o.get('op').text} "
                   f"{o.get('side').text}" for o in f.get("header_ops", []))
        if "rewrite" in f:
            out.update(f"rewrite {part}" for part in ("path", "host") if f["rewrite"].get(part))
        if "cors" in f:
            out.add("rule cors")
            _features(f["cors"], out)
        out.update(f"override {o}" for o in ("timeout", "retry", "fault") if o in f)
        if a.kind == "forward":
            out.add("split" if len(a.get("destinations")) > 1 else "forward")
            out.update(["mirror"] if a.get("mirror") else [])
            out.update(["weight"] if any(d.get("weight") for d in a.get("destinations")) else [])
        else:
            out.add(a.kind + (" 2" if a.get("code") or a.get("body") else ""))
        for sub in ("timeout", "retry", "fault"):
            if sub in f:
                _features(f[sub], out)
    if k in ("auth", "assert", "limit"):
        out.update(f"source {s.get('kind')}" for s in f.get("sources", []))
        out.update(["methods"] if f.get("methods") else [])
        out.add(f"{k} {f.get('kind') or (f.get('effect').text if k == 'auth' else f['rate'].value[1])}")
        out.update(["transitive"] if f.get("transitive") else [])
        out.update(["burst"] if f.get("burst") else [])
        if f.get("key") is not None:
            out.add(f"limit key {f['key'].get('kind')}")
        jwts = [s.get("jwt") for s in f.get("sources", []) if s.get("jwt")] + ([f["source_jwt"]] if f.get("source_jwt") else [])
        for j in jwts:
            out.add("jwt provider" if j.get("provider") else "jwt any provider")
            out.update(f"claim {c.get('op').value}" for c in j.get("claims"))
            out.update(["claim string name"] if any(c.get("claim").text.startswith('"') for c in j.get("claims")) else [])
        if k == "assert" and f.get("source") is not None and f["source"].name == "internet":
            out.add(f"assert {f.get('kind')} internet")
    for p in list(f.get("paths", [])) + list(f["match"].get("paths") if k == "rule" else []):
        out.add(f"path {p.get('kind')}" + (" string" if p.get("value").text.startswith('"') else ""))
    for child in node.children:
        _features(child, out)


ALL_FEATURES = {
    "block mesh", "block service", "block route", "trust_domain", "default allow", "default deny",
    "tracing off", "tracing on", "tracing sample", "metrics on", "metrics off", "namespace", "account",
    "port http", "port http2", "port grpc", "port tcp", "mtls strict", "mtls permissive", "mtls off", "timeout",
    "retry off", "retry on", "retry per_try", "retry on", "retry backoff", "retry backoff 2", "retry budget",
    "retry budget 2", "retry non_idempotent", "circuit max_connections", "circuit max_pending",
    "circuit max_requests", "circuit max_retries", "outlier consecutive_5xx", "outlier consecutive_gateway",
    "outlier interval", "outlier eject", "outlier max", "balance round_robin", "balance least_request",
    "balance random", "balance hash_header", "balance hash_source_ip", "fault delay", "fault abort",
    "version bare", "version block", "labels", "label string key", "match *", "match", "match methods",
    "match sources", "header exact", "header prefix", "header regex", "header present", "header absent",
    "path exact", "path exact string", "path glob", "path prefix string", "path regex string", "forward",
    "weight", "split", "mirror", "redirect", "redirect 2", "respond", "respond 2", "override timeout",
    "override retry", "override fault", "auth allow", "auth deny", "source service", "source namespace",
    "source any", "source authenticated", "methods", "limit s", "limit m", "limit h", "burst",
    "assert never", "assert only", "assert can", "assert amplification", "assert latency", "transitive",
    # north-south (issue 15)
    "block jwt", "block ingress", "block external", "egress registry_only", "egress allow_any", "issuer",
    "audience", "jwks", "jwks_uri", "token header", "token header prefix", "token query", "token cookie",
    "listen http", "listen https", "hosts", "ingress_jwt", "host", "port tls", "retry status",
    "query exact", "query prefix", "query regex", "query present", "header op set request",
    "header op add request", "header op remove request", "header op set response", "header op add response",
    "header op remove response", "rewrite path", "rewrite host", "rule cors", "cors", "cors origins",
    "cors methods", "cors headers", "cors expose", "cors credentials", "cors max_age", "source internet",
    "jwt provider", "jwt any provider", "claim eq", "claim has", "claim string name", "limit key claim",
    "limit key header", "limit key source_ip", "assert never internet", "assert can internet",
}


def test_mesh_programs_cover_every_construct():
    seen: set[str] = set()

    # Derandomized: a fixed sample, so the test does not flake on a rare construct. 100 examples
    # missed `redirect` and `tracing off` inside a full run (not alone): a wider sample, parse-only.
    @settings(max_examples=400, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(mesh_programs())
    def collect(text):
        tree, _ = parse_text(text, "t.mesh")
        for item in tree.items:
            _features(item, seen)

    collect()
    assert ALL_FEATURES - seen == set()


def test_small_policies_cover_their_vocabulary():
    seen: set[str] = set()

    @settings(max_examples=80, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(small_policies())
    def collect(text):
        mesh = check_text(text).mesh
        seen.update(f"mtls {s.mtls}" for s in mesh.services if s.mtls)
        seen.add(f"default {mesh.settings.default}")
        for route in mesh.routes:
            for rule in route.rules:
                a = rule.action
                seen.add(a.kind if a.kind != "forward" else
                         "mirror" if a.mirror else "split" if len(a.destinations) > 1 else "forward")
                seen.update(f"header {h.kind}" for h in rule.match.headers)
                seen.update(f"path {p.kind}" for p in rule.match.paths)
                seen.update(["from"] if rule.match.sources else [])
        for r in mesh.auth_rules:
            seen.add(r.effect)
            seen.update(f"source {s.kind}" for s in r.sources)
            seen.update(f"path {p.kind}" for p in r.paths)
        seen.update(f"assert {a.kind}" for a in mesh.assertions)

    collect()
    expected = {f"mtls {m}" for m in ("strict", "permissive", "off")} | {"default allow", "default deny"}
    expected |= {"forward", "split", "mirror", "redirect", "respond", "from", "allow", "deny"}
    expected |= {f"header {k}" for k in ("exact", "prefix", "regex", "present", "absent")}
    expected |= {f"path {k}" for k in ("exact", "prefix", "glob", "regex")}
    expected |= {f"source {k}" for k in ("service", "namespace", "authenticated", "any")}
    expected |= {f"assert {k}" for k in ("never", "only", "can")}
    assert expected - seen == set()


def test_fmt_check_orders_errors_as_check_does(tmp_path):
    # The lexer's MP004 (line 4) is found before the parser's MP002 (line 2);
    # both commands list them by file and position.
    f = tmp_path / "x.mesh"
    f.write_text('service a {\n  port 80\n}\nallow a -> a GET exact "/x\nservice b { prot 1 }\n')
    import json

    def listed(*args):
        r = run_meshc(*args, str(f), "--format", "json")
        out = r.stdout  # check, and fmt --check in a machine format, write the document to stdout
        return [(d["code"], d["span"]["line"], d["span"]["column"]) for d in json.loads(out)["diagnostics"]
                if d["code"].startswith("MP0")]

    from_check = listed("check")
    assert [c for c, *_ in from_check] == ["MP002", "MP004", "MP009"]
    assert listed("fmt", "--check") == from_check
