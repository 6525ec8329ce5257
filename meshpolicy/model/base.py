"""The model's base class: typed fields, `make()`, and pydantic on demand.

The model (types.py) is one set of typed classes, validated by pydantic
where a model is validated on purpose (the tests validate every built model
of the examples and of generated programs; `Cls(**fields)` and
`Cls.model_validate`). A `meshc` run never validates one: the builder's
values already have the grammar's types and it makes nodes with `make()`.
So the classes do not need pydantic to exist, and importing it cost a cold
`meshc verify` about a third of its time (pydantic's model machinery, and
the asyncio, ssl and sockets pydantic_core pulls in through
typing_extensions' `@deprecated`: about 85 ms of a 256 ms hook run on an
idle machine, docs/performance.md). `Model` declares fields as pydantic
does (annotations, defaults, `Field(default_factory=...)`), keeps pydantic's
instance layout (`__dict__` holds the fields, `__pydantic_fields_set__` the
ones given), offers the part of BaseModel's API the code uses (`make`,
`model_fields`, `model_fields_set`, `model_copy`, `model_dump`,
`model_validate`, equality by fields), and gives pydantic its schema when
asked (`__get_pydantic_core_schema__`), importing pydantic only then.
`tests/test_model_base.py` checks that it agrees with pydantic's BaseModel.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

_UNSET: Any = object()


class FieldInfo:
    """A field's default (or default factory) and its annotation, resolved
    on first use (the module's names, as pydantic resolves them)."""

    __slots__ = ("default", "default_factory", "_raw", "_module", "_annotation")

    def __init__(self, default: Any = _UNSET, default_factory: Any = None) -> None:
        self.default, self.default_factory = default, default_factory
        self._raw: Any = None
        self._module = ""
        self._annotation: Any = _UNSET

    def is_required(self) -> bool:
        return self.default is _UNSET and self.default_factory is None

    def _bound(self, raw: Any, module: str) -> FieldInfo:
        f = FieldInfo(self.default, self.default_factory)
        f._raw, f._module = raw, module
        return f

    @property
    def annotation(self) -> Any:
        if self._annotation is _UNSET:
            raw = self._raw
            self._annotation = eval(raw, vars(sys.modules[self._module])) if isinstance(raw, str) else raw
        return self._annotation

    def __repr__(self) -> str:
        what = "required" if self.is_required() else (
            f"default={self.default!r}" if self.default_factory is None else f"default_factory={self.default_factory!r}")
        return f"FieldInfo({self._raw!r}, {what})"


def Field(default: Any = _UNSET, *, default_factory: Any = None) -> Any:  # noqa: N802  (pydantic's spelling)
    """A field's default, or a factory making a fresh one per instance."""
    return FieldInfo(default, default_factory)


class SkipValidation:
    """`Annotated[T, SkipValidation()]`: pydantic accepts any value for the field
    (spans: a NamedTuple the builder made; validating it would only cost)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.any_schema()


class Tagged:
    """`Annotated[Union[...], Tagged("kind")]`: a union whose members tell
    themselves apart by their `kind` literal. pydantic's smart union picks
    the one member whose `kind` matches; the marker says which field that is."""

    def __init__(self, field: str) -> None:
        self.field = field

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        return handler(source)


def _compile_make(cls: type) -> Any:
    """`make(**fields)`: a constructor without validation, generated from the
    class's fields as dataclasses generate `__init__`: a missing or unknown
    field is a TypeError, as in any Python call, and it runs at a third of
    the cost of a generic loop over the fields."""
    ns = {"_new": object.__new__, "_set": object.__setattr__, "cls": cls, "_UNSET": _UNSET}
    params, body, names = [], [], []
    for i, (name, f) in enumerate(cls.model_fields.items()):
        names.append(name)
        if f.is_required():
            params.append(name)
            body.append(f"    fs.add({name!r})")
            continue
        params.append(f"{name}=_UNSET")
        if f.default_factory is not None:
            ns[f"_f{i}"] = f.default_factory
            fallback = f"_f{i}()"
        else:
            ns[f"_d{i}"] = f.default
            fallback = f"_d{i}"
        body.append(f"    if {name} is _UNSET:\n        {name} = {fallback}\n    else:\n        fs.add({name!r})")
    fields = ", ".join(f"{n!r}: {n}" for n in names)
    src = (f"def make(*, {', '.join(params)}):\n    fs = set()\n" + "\n".join(body) +
           f"\n    o = _new(cls)\n    _set(o, '__dict__', {{{fields}}})\n"
           "    _set(o, '__pydantic_fields_set__', fs)\n    _set(o, '__pydantic_extra__', None)\n"
           "    _set(o, '__pydantic_private__', None)\n    return o\n")
    exec(compile(src, f"<make {cls.__name__}>", "exec"), ns)
    make = ns["make"]
    make.__qualname__ = f"{cls.__name__}.make"
    return staticmethod(make)


def _dump(value: Any, exclude_none: bool) -> Any:
    if isinstance(value, Model):
        return value.model_dump(exclude_none=exclude_none)
    if isinstance(value, list):
        return [_dump(v, exclude_none) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v, exclude_none) for k, v in value.items()}
    return value


class Model:
    """A model class: fields from its annotations (its bases' first), as pydantic's BaseModel.
    `class X(Model, extra="forbid")` refuses unknown fields when validating."""

    # pydantic's instance layout: the fields in __dict__, the rest in slots,
    # so that pydantic_core's validator can make instances of these classes.
    __slots__ = ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")
    model_fields: dict[str, FieldInfo] = {}
    _extra = "ignore"

    def __init_subclass__(cls, extra: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if extra is not None:
            cls._extra = extra
        fields = dict(cls.model_fields)  # inherited ones first, in their order
        for name, raw in cls.__dict__.get("__annotations__", {}).items():
            if isinstance(raw, str) and raw.startswith(("ClassVar", "typing.ClassVar")):
                continue
            value = cls.__dict__.get(name, _UNSET)
            info = value if isinstance(value, FieldInfo) else FieldInfo(value)
            fields[name] = info._bound(raw, cls.__module__)
            if value is not _UNSET:
                delattr(cls, name)  # as pydantic: the default lives in model_fields, not on the class
        cls.model_fields = fields
        cls.make = _compile_make(cls)

    # ---- validation (pydantic, imported here and only here)
    @classmethod
    def _validator(cls) -> Any:
        v = cls.__dict__.get("_Model__validator")
        if v is None:
            from pydantic import TypeAdapter

            v = TypeAdapter(cls).validator
            type.__setattr__(cls, "_Model__validator", v)
        return v

    @classmethod
    def model_validate(cls, obj: Any, *, strict: bool | None = None, from_attributes: bool | None = None) -> Any:
        """Validate a dict (or an instance) into an instance of cls; pydantic's ValidationError if it is not one."""
        return cls._validator().validate_python(obj, strict=strict, from_attributes=from_attributes)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        import typing

        from pydantic_core import core_schema as cs

        hints = typing.get_type_hints(cls, include_extras=True)  # each class's names from its own module
        fields = {}
        for name, f in cls.model_fields.items():
            schema = handler.generate_schema(hints[name])
            if f.default_factory is not None:
                schema = cs.with_default_schema(schema, default_factory=f.default_factory)
            elif f.default is not _UNSET:
                schema = cs.with_default_schema(schema, default=f.default)
            fields[name] = cs.model_field(schema)
        return cs.model_schema(cls, cs.model_fields_schema(fields, model_name=cls.__name__, extra_behavior=cls._extra),
                               config=cs.CoreConfig(title=cls.__name__, extra_fields_behavior=cls._extra))

    def __init__(self, **data: Any) -> None:
        """Validated construction (tests; the code uses `make`)."""
        v = type(self).model_validate(data)
        object.__setattr__(self, "__dict__", v.__dict__)
        object.__setattr__(self, "__pydantic_fields_set__", v.__pydantic_fields_set__)
        object.__setattr__(self, "__pydantic_extra__", None)
        object.__setattr__(self, "__pydantic_private__", None)

    # ---- BaseModel's API, as far as the code uses it
    @property
    def model_fields_set(self) -> set[str]:
        return self.__pydantic_fields_set__

    def model_dump(self, *, exclude: set[str] | None = None, exclude_none: bool = False) -> dict[str, Any]:
        """The fields as plain data (nested models as dicts), as pydantic's python-mode dump."""
        d = self.__dict__
        return {n: _dump(d[n], exclude_none) for n in type(self).model_fields
                if not (exclude and n in exclude) and not (exclude_none and d[n] is None)}

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy (fields copied shallowly, or deeply), with `update`'s fields replaced."""
        cls = type(self)
        new = object.__new__(cls)
        d = copy.deepcopy(self.__dict__) if deep else dict(self.__dict__)
        fs = set(self.__pydantic_fields_set__)
        if update:
            d.update(update)
            fs.update(update)
        object.__setattr__(new, "__dict__", d)
        object.__setattr__(new, "__pydantic_fields_set__", fs)
        object.__setattr__(new, "__pydantic_extra__", None)
        object.__setattr__(new, "__pydantic_private__", None)
        return new

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        a, b = self.__dict__, other.__dict__
        return a == b or all(a.get(n) == b.get(n) for n in type(self).model_fields)

    __hash__ = None  # type: ignore[assignment]  (mutable, as BaseModel)

    def __iter__(self):
        d = self.__dict__
        return ((n, d[n]) for n in type(self).model_fields)

    def __repr__(self) -> str:
        d = self.__dict__
        return f"{type(self).__name__}({', '.join(f'{n}={d[n]!r}' for n in type(self).model_fields)})"
