"""The meshproxy target refuses ports meshproxy cannot serve (http2, grpc:
meshproxy speaks HTTP/1.1 only) with MP701 naming the port and the target,
instead of compiling a sidecar that would break every call."""

from __future__ import annotations

import pytest

from meshpolicy.compile import CompileOptions, compile_mesh

from .conftest import check_text, codes, run_meshc

MESH = """
mesh m {{ trust_domain "m.test" }}
service web {{ port 8080 http }}
service api {{ port 8080 http
  port 9090 {proto} }}
allow web -> api
"""


@pytest.mark.parametrize("proto", ["http2", "grpc"])
def test_http2_and_grpc_ports_are_mp701(proto):
    checked = check_text(MESH.format(proto=proto))
    assert checked.ok
    outs, diags = compile_mesh(checked.mesh, "meshproxy")
    assert codes(diags) == ["MP701"] and outs == []
    d = diags[0]
    assert f"port 9090 {proto}" in d.message and "meshproxy" in d.message  # the construct and the target
    assert d.span is not None and d.span.line == 5


def test_http_and_tcp_ports_compile():
    checked = check_text(MESH.format(proto="tcp"))
    outs, diags = compile_mesh(checked.mesh, "meshproxy")
    assert diags == [] and outs


def test_a_service_whose_app_speaks_http1_is_accepted():
    checked = check_text(MESH.format(proto="grpc"))
    outs, diags = compile_mesh(checked.mesh, "meshproxy", CompileOptions(settings={"http1_apps": ["api"]}))
    assert diags == [] and outs
    _, diags = compile_mesh(checked.mesh, "meshproxy", CompileOptions(settings={"http1_apps": ["web"]}))
    assert codes(diags) == ["MP701"]
    _, diags = compile_mesh(checked.mesh, "meshproxy", CompileOptions(settings={"http1_apps": "api"}))
    assert codes(diags) == ["MP730"]


def test_the_command_exits_1_and_writes_nothing(tmp_path):
    (tmp_path / "m.mesh").write_text(MESH.format(proto="grpc"))
    out = tmp_path / "out"
    r = run_meshc("compile", str(tmp_path), "--target", "meshproxy", "-o", str(out))
    assert r.returncode == 1 and "MP701" in r.stdout + r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
