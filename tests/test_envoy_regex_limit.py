"""A regex the policy may hold runs on the Envoys meshc configures.

Envoy's own runtime refuses a regex whose compiled RE2 program is over 100,
which ordinary route regexes are; meshc's bootstraps run with Istio's 32768
(targets/envoy/runtime.py) and the checker refuses regexes above that
(MP215). The real Envoy binary is the judge."""

from __future__ import annotations

import shutil

import pytest
import yaml

from meshpolicy.semantics.regex_size import RE2_PROGRAM_SIZE_LIMIT, RUNTIME_KEY, program_size

from .test_target_envoy import compile_text, envoy_validate

pytestmark = pytest.mark.skipif(shutil.which("envoy") is None, reason="needs the envoy binary")

REGEX = "^/(alpha|beta|gamma|delta|epsilon|zeta|eta|theta|iota|kappa|lambda|mu)/[a-z0-9]{1,32}/(items|orders|carts)$"
MESH = f"""mesh m {{ mtls off; default deny }}
service web {{ namespace front; port 8080 http; version v1 }}
service api {{ namespace back; port 8080 http; version v1 }}
route api {{
  GET regex "{REGEX}" -> v1
  * -> v1
}}
allow * -> api
allow * -> web
"""


def _validate_all(tmp_path, outputs):
    results = []
    for o in outputs:
        if not o.path.endswith(".yaml"):
            continue
        p = tmp_path / o.path.replace("/", "-")
        p.write_text(o.content)
        results.append((yaml.safe_load(o.content), envoy_validate(p)))
    assert results
    return results


def test_a_regex_over_envoys_default_limit_runs(tmp_path):
    assert 100 < program_size(REGEX) <= RE2_PROGRAM_SIZE_LIMIT
    outputs, diags = compile_text(MESH)
    assert not [d for d in diags if d.is_error]
    for boot, r in _validate_all(tmp_path, outputs):
        assert r.returncode == 0, r.stderr[-2000:]
        layers = boot["layered_runtime"]["layers"]
        assert layers[0]["static_layer"][RUNTIME_KEY] == RE2_PROGRAM_SIZE_LIMIT
        assert len(layers) == 1  # no admin layer: /runtime_modify cannot change what Envoy runs with


def test_runtime_values_from_the_settings_are_what_envoy_runs_with(tmp_path):
    outputs, diags = compile_text(MESH, runtime={RUNTIME_KEY: 100, "overload.global_downstream_max_connections": 50})
    assert not [d for d in diags if d.is_error]
    results = _validate_all(tmp_path, outputs)
    # the caller's sidecar holds the route: an operator's lower limit makes Envoy refuse it
    refused = [r for _, r in results if r.returncode != 0]
    assert refused and all("max program size" in r.stderr for r in refused)
    for boot, _ in results:
        assert boot["layered_runtime"]["layers"][0]["static_layer"] == {
            RUNTIME_KEY: 100, "overload.global_downstream_max_connections": 50}


@pytest.mark.parametrize("value", ["100", {"bad key!": 1}, {RUNTIME_KEY: [1]}, {"": 1}, {"a\nb": 1}])
def test_runtime_settings_are_checked(value):
    checked_diags = compile_text(MESH, runtime=value)[1]
    assert "MP720" in {d.code for d in checked_diags}
