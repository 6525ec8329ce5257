"""The model's base class (meshpolicy/model/base.py): the model classes are
not pydantic's, yet validate through pydantic exactly where they are
validated on purpose, and behave as BaseModel did where the code uses it."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import typing

import pytest
from pydantic import ValidationError

from meshpolicy.model import types as t
from meshpolicy.span import Span

SPAN = Span("a.mesh", 1, 1, 1, 4, 0, 3)


def test_importing_the_model_does_not_import_pydantic():
    # pydantic (and the asyncio, ssl and sockets it brings) cost a cold
    # `meshc verify` about a third of its time (docs/performance.md).
    r = subprocess.run([sys.executable, "-c", "import sys, meshpolicy.model.types, meshpolicy.model.build; "
                        "print(sorted(m for m in ('pydantic', 'pydantic_core', 'asyncio') if m in sys.modules))"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stderr


def test_validated_construction_refuses_what_pydantic_refuses():
    assert t.Retry(attempts=2, on=["5xx"], span=SPAN).attempts == 2
    with pytest.raises(ValidationError):
        t.Retry(attempts="two")  # wrong type
    with pytest.raises(ValidationError):
        t.Ref(name="a", bogus=1)  # a Node forbids unknown fields
    with pytest.raises(ValidationError):
        t.Ref()  # missing
    with pytest.raises(ValidationError):
        t.Port(number=80, protocol="ftp")  # not one of the literal's values
    assert t.Tracing(sample_percent=5).sample_percent == 5.0


def test_the_tagged_union_picks_its_member_by_kind():
    dest = t.WeightedVersion.make(version=t.Ref.make(name="v1"), weight=100.0)
    for action in (t.Forward.make(destinations=[dest]), t.Redirect.make(uri="/x"), t.DirectResponse.make(status=404)):
        rule = t.RouteRule.make(index=0, match=t.Match.make(), action=action)
        again = t.RouteRule.model_validate(rule.model_dump())
        assert type(again.action) is type(action) and again == rule


def test_fields_are_declared_as_in_pydantic():
    assert list(t.Retry.model_fields)[:2] == ["span", "spans"]  # inherited first
    assert t.Port.model_fields["protocol"].annotation == t.Protocol
    assert typing.get_args(t.LoadBalancer.model_fields["policy"].annotation)
    assert t.Service.model_fields["name"].is_required() and not t.Service.model_fields["ports"].is_required()
    assert not hasattr(t.Service, "namespace")  # defaults live in model_fields, not on the class


def test_copy_dump_equality_and_pickle():
    svc = t.Service.make(name="a", ports=[t.Port.make(number=80, protocol="http")], span=SPAN)
    shallow = svc.model_copy(update={"namespace": "ns"})
    assert shallow.ports is svc.ports and shallow.namespace == "ns" and svc.namespace == "default"
    assert shallow.model_fields_set == {"name", "ports", "span", "namespace"}
    deep = svc.model_copy(deep=True)
    assert deep == svc and deep.ports[0] is not svc.ports[0]
    dumped = svc.model_dump()
    assert type(dumped["ports"][0]) is dict and dumped["ports"][0]["number"] == 80 and dumped["name"] == "a"
    assert "mtls" not in svc.model_dump(exclude_none=True) and "span" not in svc.model_dump(exclude={"span"})
    for other in (pickle.loads(pickle.dumps(svc)), copy.deepcopy(svc), copy.copy(svc)):
        assert other == svc and other.model_fields_set == svc.model_fields_set
    assert svc != t.Service.make(name="b") and t.Ref.make(name="a") != t.Version.make(name="a")
    mesh = t.Mesh.make(services=[svc])
    assert mesh.service("a") is svc and mesh == t.Mesh.make(services=[svc])  # a cached lookup is not a field
    assert dict(svc)["name"] == "a" and repr(t.Ref.make(name="a")).startswith("Ref(")
