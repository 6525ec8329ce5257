"""`make()`, the model's constructor without validation (model/types.py)."""

from __future__ import annotations

import pickle

import pytest

from meshpolicy.model import types as t
from meshpolicy.span import Span

SPAN = Span("a.mesh", 1, 1, 1, 4, 0, 3)


def test_make_equals_validated_construction():
    made = t.Retry.make(attempts=2, on=["5xx"], span=SPAN)
    validated = t.Retry(attempts=2, on=["5xx"], span=SPAN)
    assert made == validated and made.model_dump() == validated.model_dump()
    assert made.model_fields_set == validated.model_fields_set == {"attempts", "on", "span"}
    assert list(made.__dict__) == list(t.Retry.model_fields)  # fields in declaration order


def test_defaults_are_not_shared():
    a, b = t.Service.make(name="a"), t.Service.make(name="b")
    a.ports.append(t.Port.make(number=80, protocol="http"))
    a.spans["x"] = SPAN
    assert b.ports == [] and b.spans == {}
    m1, m2 = t.Mesh.make(), t.Mesh.make()
    assert m1.settings is not m2.settings and m1.settings.tracing is not m2.settings.tracing


def test_missing_or_unknown_fields_are_type_errors():
    with pytest.raises(TypeError, match="name"):
        t.Ref.make()
    with pytest.raises(TypeError, match="bogus"):
        t.Ref.make(name="a", bogus=1)
    with pytest.raises(TypeError):
        t.Ref.make("a")  # keywords only


def test_subclasses_get_their_own_make():
    class Tagged(t.Ref):
        tag: str = "x"

    r = Tagged.make(name="a")
    assert type(r) is Tagged and r.tag == "x" and r.name == "a"
    assert type(t.Ref.make(name="b")) is t.Ref


def test_made_models_copy_pickle_and_cache():
    mesh = t.Mesh.make(services=[t.Service.make(name="a"), t.Service.make(name="a")])
    assert mesh.service("a") is mesh.services[0]  # cached_property over a made model
    copy = mesh.model_copy(deep=True)
    assert copy == mesh and copy.services[0] is not mesh.services[0]
    assert pickle.loads(pickle.dumps(mesh)) == mesh
    assert t.Mesh.model_validate(mesh.model_dump()).model_dump() == mesh.model_dump()
