"""A searched setting of a search space: ``T | Choice[T] | Range``, read from YAML.

In a space's ``space:`` and ``training:`` sections a setting is a value, a list (:class:`Choice`: search over
these values) or ``{low, high, log}`` (:class:`IntRange`, :class:`FloatRange`: search over an interval,
uniformly or on a log scale). :func:`searchable` is the pydantic type of such a setting for one
:class:`~search_spaces._kinds.Kind` of value; the schema (:mod:`search_spaces.schema`) builds its sections of it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Discriminator, PlainSerializer, PlainValidator, Tag, create_model

from snnet import SNNetError

from ._kinds import Bool, Kind, num

__all__ = ["Choice", "FloatRange", "IntRange", "Param", "searchable"]


class _Param:
    """A searched setting: ``canonical(value)`` is the value as the space holds it, or an error."""


@dataclass(frozen=True)
class Choice(_Param):
    """Search over these values (a categorical distribution)."""

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.values, (list, tuple)) or not self.values:
            raise SNNetError(f"a choice needs at least one value, got {self.values!r}")
        object.__setattr__(self, "values", tuple(self.values))

    def canonical(self, value: Any) -> Any:
        """The listed value equal to ``value`` (a searcher's numpy scalar becomes plain Python; 1 is not true)."""
        for v in self.values:
            if v == value and isinstance(v, bool) == isinstance(value, bool):
                return v
        raise SNNetError(f"{value!r} is not one of {list(self.values)}")

    def grid_values(self) -> list[Any]:
        return list(self.values)

    def first(self) -> Any:
        return self.values[0]

    plain = grid_values


@dataclass(frozen=True)
class _Range(_Param):
    """Search over ``[low, high]``, uniformly or on a log scale."""

    low: Any
    high: Any
    log: bool = False

    def __post_init__(self) -> None:
        got = f"(low={num(self.low)}, high={num(self.high)})"
        if self.low > self.high:
            raise SNNetError(f"`low <= high` must hold, but got {got}")
        if self.log and self.low <= 0:
            raise SNNetError(f"a log range needs `low > 0`, but got {got}")

    def first(self) -> Any:
        """The documented default point: the geometric mean of a log range, else the low end."""
        return math.sqrt(self.low * self.high) if self.log else self.low

    def plain(self) -> dict[str, Any]:
        return asdict(self)


class FloatRange(_Range):
    """Search over the real numbers in ``[low, high]``."""

    def canonical(self, value: Any) -> float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and self.low <= value <= self.high:
            return float(value)
        raise SNNetError(f"{value!r} lies outside [{num(self.low)}, {num(self.high)}]")


class IntRange(_Range):
    """Search over the integers in ``[low, high]``."""

    def canonical(self, value: Any) -> int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and self.low <= value <= self.high:
            return int(value)
        raise SNNetError(f"{value!r} is not an integer in [{self.low}, {self.high}]")

    def grid_values(self) -> list[int]:
        return list(range(self.low, self.high + 1))

    def first(self) -> int:
        return round(super().first())


#: A searched setting.
Param = Choice | FloatRange | IntRange


def _choice(values: list[Any]) -> Choice:
    if not values:
        raise SNNetError("an empty list searches over nothing: give at least one value")
    seen: set[Any] = set()  # one kind per list (ints, floats, strings or booleans): hashing is exact
    repeated = sorted({repr(v) for v in values if v in seen or seen.add(v)})
    if repeated:
        raise SNNetError(f"lists {', '.join(repeated)} more than once")
    return Choice(tuple(values))


def _form(raw: Any) -> str:
    return "choice" if isinstance(raw, (list, tuple)) else "range" if isinstance(raw, dict) else "value"


def searchable(kind: Kind) -> Any:
    """The type of a ``T | Choice[T] | Range`` setting: a value, a list, or ``{low, high, log}``."""
    value = kind.annotated()
    if kind.type in ("int", "float"):
        bounds = create_model(f"{kind.type.title()}Bounds", __config__=ConfigDict(extra="forbid", frozen=True),
                              low=(value, ...), high=(value, ...), log=(Bool, False))
        make = IntRange if kind.type == "int" else FloatRange
        ranged = Annotated[bounds, AfterValidator(lambda b: make(b.low, b.high, b.log))]
    else:
        def refuse(raw: Any) -> Any:
            raise SNNetError(f"must {kind.describe()}, or a list of them to search over, got a mapping")
        ranged = Annotated[Any, PlainValidator(refuse)]
    return Annotated[Annotated[value, Tag("value")]
                     | Annotated[list[value], AfterValidator(_choice), Tag("choice")]
                     | Annotated[ranged, Tag("range")],
                     Discriminator(_form), PlainSerializer(lambda v: v.plain() if isinstance(v, _Param) else v)]
