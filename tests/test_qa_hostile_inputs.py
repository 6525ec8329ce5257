"""Hostile and broken inputs found by trying meshc as a new user and as an
attacker (docs/security.md): each ends in a diagnostic and exit 1 or 2, never
a traceback (exit 3) and never a file outside the output folder."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_meshc

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports: [{{port: 8080, name: http}}]
  selector: {{app: x}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: x, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: x}}}}
  template:
    metadata: {{labels: {{app: x, version: v1}}}}
    spec:
      serviceAccountName: sa
      containers: [{{name: x, image: x}}]
"""

HEADER_ROUTE = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: shop}
spec:
  hosts: [pwn]
  http:
  - match:
    - headers:
        "x-a\\"b": {exact: "q\\"uo{{te}}%s\\u0085x"}
    route:
    - destination: {host: pwn}
"""


def json_codes(proc) -> list[str]:
    assert proc.returncode in (1, 2), proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    return sorted({d["code"] for d in json.loads(proc.stdout)["diagnostics"]})


def test_import_namespace_with_path_traversal_is_a_diagnostic(tmp_path: Path):
    """A namespace `../../x` became the output file name `../../x.mesh`: the
    printer's own parse-back check stopped it, as an internal error (exit 3)."""
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "a.yaml").write_text(SERVICE.format(name="pwn", namespace='"../../escaped"'))
    proc = run_meshc("import", "istio", "k8s", "-o", "policy", "--format", "json", cwd=tmp_path)
    assert "MP205" in json_codes(proc)
    assert proc.returncode == 1
    assert not (tmp_path / "policy").exists()
    assert not (tmp_path.parent / "escaped.mesh").exists()


def test_import_does_not_write_a_policy_that_fails_its_checks(tmp_path: Path):
    """A header name with a quote and a value with U+0085 were written into the
    .mesh files (exit 0), which `meshc check` then refuses (MP210, MP214)."""
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "a.yaml").write_text(SERVICE.format(name="pwn", namespace="shop") + HEADER_ROUTE)
    proc = run_meshc("import", "istio", "k8s", "-o", "policy", "--format", "json", cwd=tmp_path)
    assert {"MP210", "MP214"} <= set(json_codes(proc))
    assert proc.returncode == 1
    assert not (tmp_path / "policy").exists()
    # The same YAML verified in place reports the same codes: one set of checks.
    assert {"MP210", "MP214"} <= set(json_codes(run_meshc("check", "k8s", "--format", "json", cwd=tmp_path)))


def test_unexpected_characters_are_one_report_per_line():
    """100k `(` on one line were 100k MP003 reports (and 5 GB of text output)."""
    from tests.conftest import check_text

    text = "assert never " + "(" * 5000 + "a ~> b" + ")" * 5000 + "\n" + "allow @ -> a $$\n"
    mp003 = [d for d in check_text(text).diagnostics if d.code == "MP003"]
    assert [(d.span.line, d.span.col) for d in mp003] == [(1, 14), (2, 7)]


def test_a_long_line_is_quoted_in_a_window(tmp_path: Path):
    """Each text diagnostic quoted its whole source line: an error on a 200 KB
    line printed 200 KB, once per finding on it."""
    (tmp_path / "meshc.toml").write_text("")
    (tmp_path / "a.mesh").write_text(
        "service a { namespace x; port 80 http; version v1 { v: \"1\" } }\n"
        "route a { GET /" + "x" * 200_000 + " -> v9 }\n"
        "allow a -> a GET /" + "y" * 200_000 + ", /z\nallow c -> a GET /" + "y" * 200_000 + "\n")
    proc = run_meshc("check", ".", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "MP101" in proc.stdout
    assert len(proc.stdout) < 20_000, len(proc.stdout)
    # The carets still stand under the reported text, at the start of a line and far into one.
    lines = proc.stdout.splitlines()
    for header, text in (("error[MP101]: caller `c`", "c"), ("error[MP102]: service `a` has no version", "v9")):
        i = next(i for i, line in enumerate(lines) if line.startswith(header))
        quoted, carets = lines[i + 3], lines[i + 4]
        col = carets.index("^")
        assert quoted[col:col + len(text)] == text and carets.count("^") == len(text), (quoted, carets)


def test_certs_do_not_follow_a_planted_namespace_symlink(tmp_path: Path):
    """`meshc certs -o DIR` with DIR/shop a symlink to another folder wrote the
    shop workloads' private keys into that folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "certs"
    out.mkdir()
    (out / "shop").symlink_to(elsewhere)
    proc = run_meshc("certs", "examples/shop", "-o", str(out), "--format", "json")
    assert json_codes(proc) == ["MP703"]
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == ["shop"]  # not even the CA was written


def test_mp532_labels_the_retries_that_multiply():
    """The shop example's `limit orders -> payments` finding labelled payments'
    `retry off` as "retries here"; the attempts come from orders' retries."""
    from meshpolicy.pipeline import check_project
    from meshpolicy.project import load
    from meshpolicy.verify import run
    from tests.conftest import EXAMPLES

    checked = check_project(load([EXAMPLES / "shop"]))
    found = [d for d in run(checked.mesh) if d.code == "MP532"]
    assert {tuple(d.witness["path"]) for d in found} >= {("frontend", "orders", "payments")}
    for d in found:
        assert d.labels
        for lb in d.labels:
            text = checked.project.files[lb.span.file].line_text(lb.span.line)[lb.span.col - 1:]
            assert text.startswith("retry") and not text.startswith("retry off"), (d.message, text)


def test_query_examples_show_a_route():
    """README's and `meshc query --help`'s example request (POST /orders/7)
    matched no route rule of the shop example: its answer was a 404, not the
    route, weights, timeout and retries the README says a query shows."""
    import re

    from tests.conftest import ROOT

    texts = (ROOT / "README.md").read_text() + run_meshc("query", "--help").stdout
    requests = set(re.findall(r'meshc query (?:PATHS|examples/shop|k8s/) "([^"]+)"', texts))
    assert len(requests) >= 2, requests
    for req in requests:
        proc = run_meshc("query", "examples/shop", req)
        assert proc.returncode == 0, proc.stderr
        assert "no rule matches" not in proc.stdout and "reaches the application" in proc.stdout, (req, proc.stdout)


def test_an_imported_service_account_is_named_in_its_error(tmp_path: Path):
    """A Deployment's serviceAccountName `../../x` was reported as "service
    `pwn` has no `account`, and its name ... is not a DNS label": the name was
    fine, the account was not, and the message did not show it."""
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "a.yaml").write_text(
        SERVICE.format(name="pwn", namespace="shop").replace("serviceAccountName: sa",
                                                             'serviceAccountName: "../../x"'))
    proc = run_meshc("check", "k8s", "--format", "json", cwd=tmp_path)
    assert json_codes(proc) == ["MP205"]
    [d] = json.loads(proc.stdout)["diagnostics"]
    assert "`../../x`" in d["message"]


def test_sarif_leaves_out_snippets_of_long_lines(tmp_path: Path):
    """SARIF quoted each finding's whole line as its context (and a long span
    as its snippet): 3 findings on 200 KB lines were 640 KB of results."""
    (tmp_path / "meshc.toml").write_text("")
    (tmp_path / "a.mesh").write_text(
        "service a { namespace x; port 80 http; version v1 { v: \"1\" } }\n"
        "route a { GET /" + "x" * 200_000 + " -> v9 }\n"
        "allow c -> a GET /" + "y" * 200_000 + "\nallow d -> a GET /short\n")
    proc = run_meshc("check", ".", "--format", "sarif", cwd=tmp_path)
    assert proc.returncode == 1
    results = json.loads(proc.stdout)["runs"][0]["results"]
    assert {r["ruleId"] for r in results} >= {"MP101", "MP102"}
    assert len(json.dumps(results)) < 20_000
    # a short line keeps its snippet and context
    [short] = [r for r in results if r["ruleId"] == "MP101" and "`d`" in r["message"]["text"]]
    loc = short["locations"][0]["physicalLocation"]
    assert loc["region"]["snippet"]["text"] == "d" and "/short" in loc["contextRegion"]["snippet"]["text"]


def test_init_leaves_nothing_behind_when_a_name_is_a_dangling_link(tmp_path):
    from .conftest import run_meshc

    (tmp_path / "mesh.mesh").symlink_to(tmp_path / "nowhere" / "mesh.mesh")
    proc = run_meshc("init", str(tmp_path))
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.mesh"]  # only the link that was there
    assert not (tmp_path / "nowhere").exists()


def test_a_file_over_the_size_limit_is_refused_at_once(tmp_path):
    """A 10 MB mesh file took 30 s to check (and buried findings under 300k warnings)."""
    import time

    from .conftest import run_meshc

    (tmp_path / "a.mesh").write_text("".join(f"service s{i} {{ port 80 http }}\n" for i in range(200_000)))
    t0 = time.monotonic()
    proc = run_meshc("check", str(tmp_path), "--format", "json")
    assert proc.returncode == 2 and "MP001" in proc.stdout and "max_file_mb" in proc.stdout
    assert time.monotonic() - t0 < 20  # the interpreter's start-up, not the file
    (tmp_path / "meshc.toml").write_text("[limits]\nmax_file_mb = 0.001\n")
    (tmp_path / "a.mesh").write_text("service a { port 80 http }\n" * 100)
    assert "over the limit of 0.001 MB" in run_meshc("check", str(tmp_path)).stdout
