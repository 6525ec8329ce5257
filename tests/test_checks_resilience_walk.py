"""MP301-MP303 walk only the settings whose retries make attempts
(checks/resilience.py): the same entries the full walk would report on, and
no per-target index of every auth rule built for it (the language server
builds a new mesh on every edit, and both cost milliseconds there)."""

from __future__ import annotations

from bench.gen import generate
from meshpolicy.checks._walk import effective
from meshpolicy.checks.resilience import resilience
from tests.conftest import check_texts


def _mesh():
    files = generate(150)
    checked = check_texts({k: v for k, v in files.items() if k.endswith(".mesh")})
    return checked.mesh


def test_retrying_walk_keeps_exactly_the_entries_that_retry():
    mesh = _mesh()
    full = list(effective(mesh))
    retrying = list(effective(mesh, retrying=True))
    assert retrying == [e for e in full if e.retries_on]
    assert 0 < len(retrying) < len(full)  # the bench mesh has both


def test_resilience_does_not_index_every_auth_rule():
    mesh = _mesh()
    assert any(e.rule is None for e in effective(mesh, retrying=True))  # route-less services that retry
    list(resilience(mesh))
    assert "rules_by_target" not in mesh.__dict__
