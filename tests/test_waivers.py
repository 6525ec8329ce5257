"""Waivers ([compile.<target>] waive in meshc.toml, meshpolicy/targets/waivers.py):
a waived construct is left out and reported per use (MP706), recorded in
the output, honoured by every target and by a target's own partial MP701s;
unknown names (MP708), security and routing constructs (MP707) are refused;
a waiver that leaves nothing out is MP709; the verifier is unaffected."""

from __future__ import annotations

import json
import shutil

import pytest

from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.targets.constructs import CONSTRUCTS
from meshpolicy.targets.waivers import SECURITY, WAIVABLE, refusal

from .conftest import ROOT, check_text, run_meshc

FIXTURES = ROOT / "tests" / "fixtures" / "codes"

POLICY = """
mesh demo {
  trust_domain "example.org"
  mtls strict
  default deny
}
service web {
  namespace front
  port 8080 http
  retry 2 per_try 100ms on 5xx backoff 10ms
}
service api {
  namespace back
  port 8080 http
  version v1
  version v2
  timeout 2s
  fault delay 100ms 5%
}
route api {
  GET /a -> v1 fault abort 503 1%
  * -> v1 90%, v2 10%
}
allow web -> api
"""


def _compile(text: str, target: str, settings: dict):
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    return compile_mesh(checked.mesh, target, CompileOptions(settings=settings))


def _mp706(diags) -> list[tuple[str, int]]:
    return sorted((d.message.rsplit("`", 2)[-2], d.span.line) for d in diags if d.code == "MP706")


def test_the_lists_are_constructs_and_security_is_never_waivable():
    assert set(WAIVABLE) <= set(CONSTRUCTS) and SECURITY <= set(CONSTRUCTS)
    assert not set(WAIVABLE) & SECURITY
    for c in ("allow", "deny", "source-service", "auth-methods", "auth-paths", "default-deny", "mtls-strict",
              "mtls-permissive", "rate-limit", "match-source", "split", "redirect", "respond", "forward"):
        assert refusal(c) is not None, c


def test_without_a_waiver_the_constructs_are_errors():
    outputs, diags = _compile(POLICY, "gateway-api", {"mesh": "istio"})
    assert {d.code for d in diags if d.is_error} == {"MP701"} and outputs == []


def test_a_waived_construct_is_a_warning_per_use_and_left_out():
    waive = ["retry", "retry-backoff", "fault-delay", "fault-abort"]
    outputs, diags = _compile(POLICY, "gateway-api", {"mesh": "istio", "waive": waive})
    assert [d for d in diags if d.is_error] == []
    # one per use, each where it is written: web's retry and backoff, api's delay, rule 1's abort
    assert _mp706(diags) == [("fault-abort", 21), ("fault-delay", 18), ("retry", 10), ("retry-backoff", 10)]
    assert all(d.span is not None for d in diags if d.code == "MP706")
    text = "".join(o.content for o in outputs if o.path != "kustomization.yaml")
    assert "fixedDelay" not in text and "abort" not in text and "retries" not in text.lower()
    assert "request: \"2s\"" in text or "request: 2s" in text  # what is not waived is still there


def test_the_output_records_what_was_waived():
    outputs, diags = _compile(POLICY, "gateway-api", {"mesh": "istio", "waive": ["retry", "retry-backoff",
                                                                                  "fault-delay", "fault-abort"]})
    kust = next(o.content for o in outputs if o.path == "kustomization.yaml")
    head = [ln for ln in kust.splitlines() if ln.startswith("#")]
    assert any("fault-delay: test.mesh:18" in ln for ln in head), head
    assert any("retry-backoff: test.mesh:10" in ln for ln in head), head
    import yaml

    assert yaml.safe_load(kust)["kind"] == "Kustomization"  # still the same document


def test_targets_without_a_kustomization_get_a_waived_file():
    outputs, diags = _compile(POLICY.replace("  fault delay 100ms 5%\n", ""), "linkerd",
                              {"waive": ["retry-backoff", "fault-abort"]})
    assert [d for d in diags if d.is_error] == []
    # linkerd writes a kustomization: the record is in it
    assert "fault-abort: test.mesh:" in next(o.content for o in outputs if o.path == "kustomization.yaml")
    outputs, diags = _compile(POLICY, "meshproxy", {"waive": ["tracing"]})
    assert "WAIVED.txt" not in {o.path for o in outputs}  # nothing left out: no record, and MP709
    assert [d.code for d in diags if d.code.startswith("MP70")] == ["MP709"]


def test_a_record_cannot_add_structure_to_the_output(tmp_path):
    """A file name with a line break stays inside its comment."""
    text = POLICY
    checked = check_text(text, name="evil\nkind: Secret\n.mesh")
    assert checked.ok
    outputs, _ = compile_mesh(checked.mesh, "gateway-api", CompileOptions(settings={
        "mesh": "istio", "waive": ["retry", "retry-backoff", "fault-delay", "fault-abort"]}))
    kust = next(o.content for o in outputs if o.path == "kustomization.yaml")
    assert "\nkind: Secret" not in kust and "evil\\nkind: Secret" in kust


def test_a_targets_own_mp701_honours_the_waiver():
    """linkerd refuses retries on conditions it cannot name (its own MP701):
    waived, the route carries no retry annotation and each retry is MP706."""
    text = POLICY.replace("  fault delay 100ms 5%\n", "").replace(" fault abort 503 1%", "") \
        .replace("on 5xx backoff 10ms", "on reset").replace("default deny", "default allow") \
        .replace("route api {", "route web {\n  * -> v1\n}\nroute api {").replace(
            "  namespace front\n  port 8080 http\n", "  namespace front\n  port 8080 http\n  version v1\n")
    outputs, diags = _compile(text, "linkerd", {})
    assert [d.code for d in diags if d.is_error] == ["MP701"]
    outputs, diags = _compile(text, "linkerd", {"waive": ["retry"]})
    assert [d for d in diags if d.is_error] == [] and _mp706(diags) == [("retry", 11)]
    assert "retry.linkerd.io" not in "".join(o.content for o in outputs)


def test_grpcroute_timeout_waived_keeps_the_rest_of_the_rule():
    text = POLICY.replace("port 8080 http\n  version v1\n  version v2", "port 9000 grpc\n  version v1\n  version v2") \
        .replace("  fault delay 100ms 5%\n", "").replace("  GET /a -> v1 fault abort 503 1%\n", "") \
        .replace("  retry 2 per_try 100ms on 5xx backoff 10ms\n", "")
    outputs, diags = _compile(text, "gateway-api", {"mesh": "istio"})
    assert [d.code for d in diags if d.is_error] == ["MP701"]
    outputs, diags = _compile(text, "gateway-api", {"mesh": "istio", "waive": ["timeout"]})
    assert [d for d in diags if d.is_error] == [] and _mp706(diags) == [("timeout", 16)]
    text_out = "".join(o.content for o in outputs)
    assert "GRPCRoute" in text_out and "weight: 90" in text_out and "timeouts" not in text_out


@pytest.mark.parametrize("waive, code", [(["deny"], "MP707"), (["match-source"], "MP707"),
                                         (["rate-limit"], "MP707"), (["retry-budgets"], "MP708"),
                                         ("retry", "MP012")])
def test_refused_waivers_are_errors_in_meshc_toml(tmp_path, waive, code):
    (tmp_path / "p.mesh").write_text(POLICY)
    (tmp_path / "meshc.toml").write_text(f'[compile.gateway-api]\nmesh = "istio"\nwaive = {json.dumps(waive)}\n')
    r = run_meshc("check", str(tmp_path), "--format", "json")
    assert r.returncode == 1, r.stdout
    found = [d for d in json.loads(r.stdout)["diagnostics"] if d["severity"] == "error"]
    assert [d["code"] for d in found] == [code]
    assert found[0]["span"] is not None  # points at the `waive` line of meshc.toml


def test_compile_refuses_a_bad_waiver_given_through_the_api():
    outputs, diags = _compile(POLICY, "gateway-api", {"mesh": "istio", "waive": ["allow", "nope"]})
    assert outputs == [] and sorted(d.code for d in diags) == ["MP707", "MP708"]


def test_waiving_what_the_target_expresses_is_needless():
    outputs, diags = _compile(POLICY, "istio", {"waive": ["fault-delay", "circuit"]})
    assert [d for d in diags if d.is_error] == []
    assert sorted(d.message.split("`")[1] for d in diags if d.code == "MP709") == ["circuit", "fault-delay"]
    assert "fault" in "".join(o.content for o in outputs)  # istio expresses it: nothing is left out


def test_cli_prints_the_summary_and_the_verifier_is_unaffected(tmp_path):
    (tmp_path / "p.mesh").write_text(POLICY)
    (tmp_path / "meshc.toml").write_text('[compile.gateway-api]\nmesh = "istio"\n'
                                         'waive = ["retry", "retry-backoff", "fault-delay", "fault-abort"]\n')
    out = tmp_path / "out"
    r = run_meshc("compile", str(tmp_path), "--target", "gateway-api", "-o", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "waived (not in the output): fault-abort (1 use), fault-delay (1 use), retry (1 use), " \
           "retry-backoff (1 use)" in r.stdout
    assert "retry-backoff: p.mesh:10" in (out / "kustomization.yaml").read_text() or \
        "p.mesh:10" in (out / "kustomization.yaml").read_text()
    # the verifier reads the policy, not a target's output: the same findings with or without waivers
    v1 = run_meshc("verify", str(tmp_path), "--format", "json")
    (tmp_path / "meshc.toml").write_text('[compile.gateway-api]\nmesh = "istio"\n')
    v2 = run_meshc("verify", str(tmp_path), "--format", "json")
    assert v1.returncode == v2.returncode
    assert json.loads(v1.stdout)["diagnostics"] == json.loads(v2.stdout)["diagnostics"]


@pytest.mark.parametrize("code", ["MP706", "MP707", "MP708", "MP709"])
def test_code_fixtures(code, tmp_path):
    fx = FIXTURES / code
    args = (fx / "command").read_text().split()
    for name in ("bad", "good"):
        work = tmp_path / name
        work.mkdir()
        shutil.copy(fx / f"{name}.mesh", work / "p.mesh")
        shutil.copy(fx / f"{name}.toml", work / "meshc.toml")
        r = run_meshc(*args[:1], str(work), *args[1:], "--format", "json")
        found = r.stderr if "--stdout" in args else r.stdout
        report = json.loads(found) if found.strip() else {"diagnostics": []}
        got = {d["code"] for d in report["diagnostics"]}
        assert (code in got) == (name == "bad"), (name, got)
        if name == "good":
            assert r.returncode == 0, r.stderr


OUTLIER = POLICY.replace("  timeout 2s\n", "  timeout 2s\n  outlier consecutive_5xx 5 interval 10s eject 30s max 12.5%\n") \
    .replace("  fault delay 100ms 5%\n", "").replace(" fault abort 503 1%", "")


@pytest.mark.parametrize("target, field", [("istio", "maxEjectionPercent"), ("envoy", "max_ejection_percent")])
def test_istio_and_envoy_own_partial_refusals_honour_the_waiver(target, field):
    """A fractional outlier `max` is the target's own MP701 (the rest of the
    outlier is expressible); waived, it is MP706 and the max is left out."""
    outputs, diags = _compile(OUTLIER, target, {})
    assert [d.code for d in diags if d.is_error] == ["MP701"]
    outputs, diags = _compile(OUTLIER, target, {"waive": ["outlier"]})
    assert [d for d in diags if d.is_error] == [] and _mp706(diags) == [("outlier", 18)]
    text = "".join(o.content for o in outputs)
    assert field not in text and ("consecutive5xxErrors" in text or "consecutive_5xx" in text)
    assert ("WAIVED.txt" in {o.path for o in outputs}) == (target == "envoy")


def test_the_record_is_the_same_from_any_working_directory(tmp_path):
    """Uses are named relative to the mesh's folder, so the output does not
    depend on where meshc ran."""
    proj = tmp_path / "proj" / "mesh"
    proj.mkdir(parents=True)
    (proj / "p.mesh").write_text(POLICY)
    (proj / "meshc.toml").write_text('[compile.gateway-api]\nmesh = "istio"\n'
                                     'waive = ["retry", "retry-backoff", "fault-delay", "fault-abort"]\n')
    a = run_meshc("compile", "mesh", "--target", "gateway-api", "--stdout", cwd=tmp_path / "proj")
    b = run_meshc("compile", str(proj), "--target", "gateway-api", "--stdout", cwd=ROOT)
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and "#   fault-delay: p.mesh:18\n" in a.stdout


def test_meshc_up_reads_envoy_output_with_a_waiver_record():
    """`meshc up` turns the Envoy target's files into xDS snapshots; the
    record of waivers next to them is not a bootstrap."""
    from meshpolicy.xds.resources import snapshots

    outputs, diags = _compile(OUTLIER, "envoy", {"waive": ["outlier"]})
    assert "WAIVED.txt" in {o.path for o in outputs}
    assert sorted(snapshots(outputs)) == sorted(snapshots([o for o in outputs if o.path != "WAIVED.txt"]))
