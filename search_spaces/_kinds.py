"""The kinds of value a setting takes, as pydantic types whose errors say what must hold and what came.

``Int(1)`` is an integer >= 1 (booleans and ``1.5`` refused), ``Float(0, below=1)`` a finite number in
``[0, 1)`` (ints and strings such as ``"1e-4"`` accepted: YAML 1.1 reads an exponent without a decimal
point as a string), ``OneOf(names)`` a closed set of strings. Each raises :class:`snnet.SNNetError` (a
``ValueError``) with ``must ..., got ...``; pydantic keeps it in the error's context, and :func:`problems`
reads it back with the error's location, so the messages stay ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import PlainValidator, ValidationError, WithJsonSchema

from snnet import SNNetError
from snnet.text import did_you_mean

__all__ = ["Kind", "Int", "Float", "OneOf", "Bool", "Str", "Problem", "describe", "did_you_mean", "num", "problems"]
_TYPES = {"int": (int, "integer"), "float": (float, "number"), "bool": (bool, "boolean"), "str": (str, "string")}


def num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else repr(x)


def describe(raw: Any) -> str:
    """What came, in words: ``a mapping``, ``a list``, ``null`` or the value itself."""
    kind = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return kind.get(type(raw), repr(raw))


@dataclass(frozen=True)
class Kind:
    """The values one setting accepts: a type plus bounds or a closed set of names."""

    type: str  # "int" | "float" | "bool" | "str"
    minimum: float | None = None
    below: float | None = None  # exclusive upper bound
    maximum: float | None = None  # inclusive upper bound
    above: float | None = None  # exclusive lower bound
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    text: str | None = None  # the predicate, when the generic one reads badly

    def describe(self) -> str:
        """What must hold, as the words after "must": ``be an integer >= 1``."""
        if self.text or self.choices is not None:
            return self.text or "be one of " + ", ".join(self.choices)
        if self.type in ("bool", "str"):
            return "be true or false" if self.type == "bool" else "be a string"
        if self.below is not None:
            return f"lie in [{num(self.minimum)}, {num(self.below)})"
        if self.maximum is not None:
            low = f"({num(self.above)}" if self.above is not None else f"[{num(self.minimum)}"
            return f"lie in {low}, {num(self.maximum)}]"
        return f"be {'an integer' if self.type == 'int' else 'a number'}" + (
            f" >= {num(self.minimum)}" if self.minimum is not None else "")

    def __call__(self, value: Any) -> Any:
        """``value`` in canonical form, or :class:`SNNetError` saying what must hold and what came."""
        if value is None and self.nullable:
            return None
        bad, raw = SNNetError(f"must {self.describe()}, got {value!r}"), value
        if self.type == "float" and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if not isinstance(value, (int, float) if self.type == "float" else _TYPES[self.type][0]) or (
                self.type != "bool" and isinstance(value, bool)) or (self.type == "float" and not math.isfinite(value)):
            raise bad
        if self.choices is not None and value not in self.choices:
            raise SNNetError(f"must {self.describe()}, got {raw!r}{did_you_mean(raw, self.choices)}")
        if (self.minimum is not None and value < self.minimum) or (self.below is not None and value >= self.below) or (
                self.above is not None and value <= self.above) or (self.maximum is not None and value > self.maximum):
            raise bad
        return float(value) if self.type == "float" else value

    def annotated(self) -> Any:
        """This kind as a pydantic field type."""
        base = _TYPES[self.type][0]
        return Annotated[base | None if self.nullable else base, PlainValidator(self),
                         WithJsonSchema({"type": _TYPES[self.type][1]})]


def Int(minimum: int | None = None, nullable: bool = False) -> Any:
    return Kind("int", minimum=minimum, nullable=nullable).annotated()


def Float(minimum: float | None = None, below: float | None = None, maximum: float | None = None) -> Any:
    return Kind("float", minimum=minimum, below=below, maximum=maximum).annotated()


def OneOf(choices: tuple[str, ...], text: str | None = None) -> Any:
    return Kind("str", choices=tuple(choices), text=text).annotated()


Bool = Kind("bool").annotated()
Str = Kind("str").annotated()


class Problem(SNNetError):
    """A problem found by a whole-object check, at ``path`` below the object checked."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


def problems(error: ValidationError) -> list[tuple[tuple[Any, ...], str]]:
    """``(location, message)`` per error: our own message where a validator raised (a :class:`Problem`'s
    ``path`` is appended to the location), else pydantic's."""
    out = []
    for e in error.errors():
        cause, loc = (e.get("ctx") or {}).get("error"), tuple(e["loc"])
        if isinstance(cause, Exception) and e["type"] in ("value_error", "assertion_error"):
            message, loc = str(cause), loc + ((cause.path,) if isinstance(cause, Problem) else ())
        else:
            message = {"missing": "is required", "extra_forbidden": "unknown key"}.get(
                e["type"], f"{e['msg'][:1].lower()}{e['msg'][1:]}, got {e['input']!r}")
        out.append((loc, message))
    return out
