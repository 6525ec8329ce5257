"""Parser: every construct parses into the right node; errors recover per statement."""

from __future__ import annotations

from meshpolicy.syntax.parser import parse_text

from .conftest import EXAMPLES, check_text, codes


def parse(text: str):
    return parse_text(text, "t.mesh")


def test_examples_parse_cleanly():
    for path in sorted(EXAMPLES.glob("shop/*.mesh")) + sorted(EXAMPLES.glob("bookinfo/*.mesh")):
        _, diags = parse_text(path.read_text(), str(path))
        assert diags == [], (path, [d.message for d in diags])


def test_blocks_and_statements_on_one_line():
    tree, diags = parse('mesh m { trust_domain "a.b"; mtls strict; default deny }\n'
                        'service s { port 80 http\n version v1 { version: "v1" }   version v2 { version: "v2" } }')
    assert diags == []
    mesh, svc = tree.items
    assert [c.kind for c in mesh.children] == ["trust_domain", "mtls", "default"]
    assert [c.kind for c in svc.children] == ["port", "version", "version"]


def test_keywords_are_contextual():
    # `version` as a label key, `on` as a retry keyword, a service named like a keyword elsewhere
    tree, diags = parse('service retry { port 80 http\n version v1 { version: "v1", namespace: "x" } }\n'
                        'allow retry -> retry')
    assert diags == []
    labels = tree.items[0].children[1].children[0].get("labels")
    assert [k.value for k, _ in labels] == ["version", "namespace"]


def test_one_run_reports_every_broken_statement():
    src = "\n".join([
        "service a {",
        "  port 8080",            # incomplete
        "  timeout \"2s\"",       # wrong token
        "  acount a",             # unknown keyword with suggestion
        "}",
        "servce b { }",           # unknown top-level keyword
        "allow a ->",             # incomplete
        "}",                      # stray
        "service c {",            # unclosed
    ])
    _, diags = parse(src)
    assert [(d.code, d.span.line) for d in diags] == [
        ("MP002", 2), ("MP002", 3), ("MP009", 4), ("MP009", 6), ("MP002", 7), ("MP007", 8), ("MP006", 9),
    ]


def test_misplaced_statement_names_its_block():
    _, diags = parse("service a {\n  allow b -> a\n}")
    assert codes(diags) == ["MP005"]


def test_lexical_errors():
    _, diags = parse('allow a -> b @\nservice x { namespace "unterminated }')
    assert "MP003" in codes(diags) and "MP004" in codes(diags)


def test_continuation_after_comma_and_arrow():
    tree, diags = parse("route r {\n  GET /a ->\n    v1 50%,\n    v2 50%\n}")
    assert diags == []
    (rule,) = tree.items[0].children
    assert len(rule.get("action").get("destinations")) == 2


def test_spans_point_at_the_name():
    result = check_text("allow ghost -> ghost2")
    (d1, d2) = [d for d in result.diagnostics if d.code == "MP101"]
    assert (d1.span.line, d1.span.col, d1.span.end_col) == (1, 7, 12)


def test_model_values_are_normalised():
    result = check_text(
        'service s { port 80 http\n version v1\n timeout 1.5s\n retry 2 per_try 250ms on 5xx backoff 10ms max 1m }'
    )
    svc = result.mesh.services[0]
    assert svc.timeout_ms == 1500
    assert svc.retry.per_try_ms == 250 and svc.retry.backoff_max_ms == 60_000
    assert svc.versions[0].labels == {"version": "v1"}
    assert svc.account == "s" and svc.namespace == "default"


def test_built_models_pass_validation():
    """The builder skips validation for its most numerous nodes (model_construct);
    every node it builds must still be exactly what validation would accept."""
    from hypothesis import HealthCheck, given, settings

    from meshpolicy.model.types import Mesh
    from meshpolicy.pipeline import check_project
    from meshpolicy.project import load

    from .strategies import mesh_programs

    def roundtrip(mesh):
        again = Mesh.model_validate(mesh.model_dump())
        assert again.model_dump() == mesh.model_dump()

    for example in ("shop", "bookinfo"):
        roundtrip(check_project(load([EXAMPLES / example])).mesh)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(mesh_programs())
    def generated(text):
        roundtrip(check_text(text).mesh)

    generated()


def test_unclosed_string_is_one_diagnostic():
    # MP004 only: the statement it cuts short is not also "incomplete" (MP002).
    for src in ('mesh m { trust_domain "a.b\n}', 'mesh m {\n  trust_domain "a.b\n}', 'service a {\n port 80 http\n'
                ' balance hash header "x\n}', 'service a { port 80 http }\nallow a -> a GET exact "/x\\\n'):
        _, diags = parse(src)
        assert codes(diags) == ["MP004"], (src, [(d.code, d.message) for d in diags])
    # the next statement is read again
    _, diags = parse('mesh m {\n  trust_domain "a.b\n  mtls strct\n}')
    assert codes(diags) == ["MP002", "MP004"] and sorted(d.span.line for d in diags) == [2, 3]


def test_north_south_keywords_stay_contextual():
    # `jwt`, `host`, `query`, `set`, `cors` name services; `internet` does not (it is a source word)
    tree, diags = parse("service jwt { port 80 http }\nservice host { port 80 http }\nservice set { port 80 http }\n"
                        "allow jwt, host -> set\nroute set {\n  query \"q\" present -> v1 set request header \"a\" \"b\"\n}\n"
                        "jwt cors {\n  issuer \"i\"\n  jwks_uri \"https://i.example/k\"\n}\n")
    assert diags == []
    assert [n.get("block") for n in tree.items if n.kind == "block_open"] == ["service"] * 3 + ["route", "jwt"]


def test_a_broken_item_in_a_new_block_costs_that_item_only():
    _, diags = parse('jwt p {\n  isuer "i"\n  jwks\n  jwks_uri "https://i.example/k"\n}\n'
                     'ingress g {\n  listen 80\n  hosts "a.example"\n  * -> a\n}\nexternal e {\n  port 443 https\n}\n')
    assert [(d.code, d.span.line) for d in diags] == [("MP009", 2), ("MP002", 3), ("MP002", 7), ("MP002", 12)]
    assert diags[0].fixes[0].replacement == "issuer"


def test_arrow_after_a_token_requirement():
    # `->` is both the rules' arrow and one of `~>`/`->` of a never-assertion: the driver takes the
    # reading whose reductions end in a shift (LALR merges the lookaheads of the states before it).
    for src in ('assert never internet with jwt role = "x" -> a\n', "assert never a -> b\n",
                'allow internet with jwt role = "x" -> a\n', 'assert can internet with jwt p -> a\n'):
        _, diags = parse(src)
        assert diags == [], (src, [(d.code, d.message) for d in diags])
