"""Plain typed data: dataclasses to and from JSON/YAML values, every value checked against its declared type.

One coercion serves the command line, the preset and sweep YAML files and the ``config.json`` a job reads back, so a
setting has one type everywhere. Supported field types: dataclasses, ``list[T]``, ``tuple[T, ...]``, ``T | None``,
``Literal[...]``, ``bool``, ``int``, ``float`` and ``str``. Numbers must be finite; a float field also takes an int or
a string in scientific notation (YAML reads ``3e-4`` as a string), an int field an integral float (``1e5``) up to
2**53 (beyond it a float is not exact); integers fit in 64 bits.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable
from typing import Any

INT64 = 2**63  # integers are held as int64 by torch and numpy
EXACT = 2**53  # floats are exact integers up to here


class TypedDataError(ValueError):
    """A value that does not fit its declared type; the message names the dotted key, the value and the type."""


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of every field of a dataclass."""
    return dict(_field_types(cls))


@functools.cache
def _field_types(cls: type) -> tuple[tuple[str, Any], ...]:
    """:func:`field_types`, resolved once per class (resolving the annotations is most of a plan's time)."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


def type_name(tp: Any) -> str:
    """A readable name of a declared type for error messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "one of: " + ", ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {type_name(args[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a finite number", str: "a string"}.get(tp, str(tp))


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a number or a numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check and convert a JSON/YAML value to the declared type ``tp`` of the dotted key ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def bad() -> TypedDataError:
        return TypedDataError(f"{key}={value!r}: expected {type_name(tp)}")

    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):  # type: ignore[arg-type]
            return value
        if not isinstance(value, dict):
            raise bad()
        return from_data(tp, value, key)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if value is None:
            raise bad()
        return coerce(value, inner[0], key)
    if origin is typing.Literal:
        if value in args and type(value) is type(args[0]):
            return value
        raise TypedDataError(f"{key}={value!r} is not one of: {', '.join(map(str, args))}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise bad()
        if origin is tuple and args[-1] is not Ellipsis:  # a fixed-length tuple, e.g. AdamW's betas
            if len(value) != len(args):
                raise TypedDataError(f"{key}={value!r}: expected {len(args)} values")
            return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        return [coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if -INT64 <= value < INT64:
                return value
            raise TypedDataError(f"{key}={value!r}: expected an integer within 64 bits (below 2**63 in magnitude)")
        x = _number(value)
        if x is not None and math.isfinite(x) and x == int(x):
            if abs(x) > EXACT:
                raise TypedDataError(f"{key}={value!r}: expected an integer; beyond 2**53 a number in float notation "
                                     "is not exact (write its digits)")
            return int(x)
        raise bad()
    if tp is float:
        x = _number(value)
        if x is None:
            raise bad()
        if not math.isfinite(x):
            raise TypedDataError(f"{key}={value!r}: expected a finite number")
        return x
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad()
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        return {coerce(k, args[0], key): coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    raise TypedDataError(f"{key}: unsupported type {tp}")


Check = tuple[Callable[[Any], bool], str]  # (predicate on one value, what is expected)


def checked(default: Any = dataclasses.MISSING, *, check: Check, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field whose value (each element, for a list) must satisfy ``check``.

    Example: ``lr: float = checked(3e-4, check=POSITIVE)``; a bad value is a TypedDataError naming the key.
    """
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"check": check})
    return dataclasses.field(default=default, metadata={"check": check})


POSITIVE: Check = (lambda x: x > 0, "a value > 0")
NON_NEGATIVE: Check = (lambda x: x >= 0, "a value >= 0")
UNIT: Check = (lambda x: 0 <= x <= 1, "a value in [0, 1]")
UNIT_OPEN: Check = (lambda x: 0 <= x < 1, "a value in [0, 1)")


def at_most(check: Check, hi: int, why: str) -> Check:
    """``check`` and ``x <= hi``, the message saying why the bound is what it is."""
    ok, expected = check
    return (lambda x: ok(x) and x <= hi, f"{expected} and at most {hi:,} ({why})")


def check_fields(obj: Any, prefix: str = "") -> None:
    """Apply every field's ``check`` (see :func:`checked`) to a dataclass's values, recursively."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            check_fields(value, key)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for i, v in enumerate(value):
                check_fields(v, f"{key}[{i}]")
        elif "check" in f.metadata and value is not None:
            ok, expected = f.metadata["check"]
            values = value if isinstance(value, list | tuple) else [value]
            if not values and isinstance(value, list):
                raise TypedDataError(f"{key}=[]: expected a non-empty list")
            for v in values:
                if not ok(v):
                    raise TypedDataError(f"{key}={value!r}: expected {expected}")


def _default(f: dataclasses.Field[Any]) -> Any:
    """A field's default value (made by its factory), or MISSING."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def from_data(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """A dataclass from a (partial) mapping: missing fields take their defaults, unknown ones are errors. A partial
    mapping for a section whose default is a dataclass value fills its missing fields from that value (a model
    family's section, e.g., defaults to the family's own network), not from the section type's defaults."""
    types_ = field_types(cls)
    unknown = [k for k in data if k not in types_]
    if unknown:
        raise TypedDataError(f"unknown key {prefix + '.' if prefix else ''}{unknown[0]}")
    given = dict(data)
    for f in dataclasses.fields(cls):
        if isinstance(given.get(f.name), dict) and dataclasses.is_dataclass(default := _default(f)):
            given[f.name] = {**to_data(default), **given[f.name]}
    kwargs = {k: coerce(v, types_[k], f"{prefix}.{k}" if prefix else k) for k, v in given.items()}
    obj = cls(**kwargs)
    check_fields(obj, prefix)
    return obj


def to_data(obj: Any) -> Any:
    """A dataclass (or nested lists of them) as plain JSON data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    return obj


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable dotted key of a (nested) dataclass."""
    keys = []
    for name, tp in field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            keys.append(f"{prefix}{name}")
    return keys
