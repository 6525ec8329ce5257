"""`meshc diff` classes a reviewer can act on: a class naming only part of a
pattern is split by shape, each with a typical witness inside the change;
text and markdown show method, path, headers and the caller's identity."""

from __future__ import annotations

import pytest

from meshpolicy.semantics import Request, evaluate
from meshpolicy.verify.diff import diff, markdown, text

from .conftest import check_text

BASE = """
mesh m { trust_domain "t.example" }
service api { namespace a; port 8080 http }
service web { namespace a; port 8080 http }
"""


def _diff(old_rule: str, new_rule: str):
    old, new = check_text(BASE + old_rule + "\n"), check_text(BASE + new_rule + "\n")
    assert old.ok and new.ok
    return old.mesh, new.mesh, diff(old.mesh, new.mesh)


@pytest.mark.parametrize("old_rule, new_rule, wanted", [
    ("allow web -> api GET /orders/**", "allow web -> api GET /orders/*", "/orders/1/items"),
    ("allow web -> api GET /read/**", 'allow web -> api GET prefix "/read"', "/readme"),
])
def test_witness_is_typical_and_inside_the_change(old_rule, new_rule, wanted):
    old, new, d = _diff(old_rule, new_rule)
    paths = [c.witness["path"] for c in d.decisions]
    assert wanted in paths, [c.line() for c in d.decisions]
    for c in d.decisions:  # every class's witness really changed
        req = Request(c.witness["source"], "api", c.witness["method"], c.witness["path"])
        assert evaluate(old, req).decision.effect == c.old and evaluate(new, req).decision.effect == c.new


def test_whole_pattern_changes_stay_one_class():
    _, _, d = _diff("allow web -> api GET, POST /orders, /orders/**", "allow web -> api GET /orders, /orders/**")
    assert len(d.decisions) == 1 and d.decisions[0].methods == ["POST"]


def test_text_and_markdown_show_identity_and_request():
    _, _, d = _diff("allow web -> api GET /orders/**", "allow web -> api GET /orders/*")
    t, md = text(d), markdown(d)
    assert "web -> api GET /orders/1/items" in t and "spiffe://t.example/ns/a/sa/web" in t
    assert "`web -> api GET /orders/1/items` as `spiffe://t.example/ns/a/sa/web`" in md
