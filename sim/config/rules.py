"""Value rules of the config: what a key may hold, and the one-line message when it does not.

    Num(0, 1, hi_open=True).check("client.momentum", 1.5)
    # ConfigError: client.momentum=1.5 is not allowed: must be a number in [0, 1)

`sim.config.schema` gives every config key one of these rules (and its meaning).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from sim.errors import ConfigError


def show(value: Any) -> str:
    """A value as it would be written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if value.strip() else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def error(key: str, value: Any, problem: str, allowed: str) -> ConfigError:
    """`key=value problem: allowed`, kept on one line."""
    return ConfigError(f"{key}={show(value)} {problem}: {allowed}".replace("\n", "\\n"))


def counted(count: float, noun: str) -> str:
    """`1 CPU`, `2 CPUs`, `0.5 GPUs`: a count and its noun, as a message says them."""
    return f"{count:g} {noun}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class Num:
    """A finite number (an integer if `integer`) within bounds; `null` allows None."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    null: bool = False

    def allowed(self) -> str:
        """What the rule accepts, e.g. `must be a number in [0, 1)`."""
        kind = "an integer" if self.integer else "a number"
        if self.lo is not None and self.hi is not None and self.integer:
            bounds = f" in {self.lo:g}..{self.hi:g}"
        elif self.lo is not None and self.hi is not None:
            bounds = f" in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            bounds = f" {'>' if self.lo_open else '>='} {self.lo:g}"
        else:
            bounds = ""
        return f"must be {kind}{bounds}" + (" or null" if self.null else "")

    def check(self, key: str, value: Any) -> None:
        """Raise ConfigError unless `value` fits the rule."""
        if value is None and self.null:
            return
        types = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, types):
            raise error(key, value, f"is not {'an integer' if self.integer else 'a number'}", self.allowed())
        if not math.isfinite(value):
            raise error(key, value, "is not a finite number", self.allowed())
        too_low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        too_high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if too_low or too_high:
            raise error(key, value, "is not allowed", self.allowed())


@dataclass(frozen=True)
class Nums:
    """A non-empty list of numbers, each fitting `each`."""

    each: Num
    null: bool = False

    def allowed(self) -> str:
        """What the rule accepts, e.g. `must be a list of numbers, each > 0`."""
        each = self.each.allowed().removeprefix("must be a number ").removeprefix("must be an integer ")
        return f"must be a list of numbers, each {each}" + (", or null" if self.null else "")

    def check(self, key: str, value: Any) -> None:
        """Raise ConfigError unless `value` is a list whose entries fit `each` (or None when `null`)."""
        if value is None and self.null:
            return
        if not isinstance(value, list) or not value:
            raise error(key, value, "is not a list of numbers", self.allowed())
        try:
            for item in value:
                self.each.check(key, item)
        except ConfigError:
            raise error(key, value, "is not allowed", self.allowed()) from None


@dataclass(frozen=True)
class Choice:
    """One of a few values (an exact match: `true` is not `1`); or a string matching `pattern`."""

    options: tuple[Any, ...] = ()
    pattern: str | None = None
    text: str = ""

    def allowed(self) -> str:
        """What the rule accepts, e.g. `must be one of cpu, cuda`."""
        return f"must be {self.text or 'one of ' + ', '.join(show(o) for o in self.options)}"

    def check(self, key: str, value: Any) -> None:
        """Raise ConfigError unless `value` is one of `options` or matches `pattern`."""
        if any(type(value) is type(o) and value == o for o in self.options):
            return
        if self.pattern and isinstance(value, str) and re.fullmatch(self.pattern, value):
            return
        raise error(key, value, "is not allowed", self.allowed())


# The CNN's two (5x5 conv, 2x2 pool) stages need images of at least this side: the one minimum of
# dataset.image_size (sim.config.schema), also named by sim.models.cnn's own error.
MIN_IMAGE_SIZE = 16

BOOL = Choice((True, False), text="true or false")
TEXT = Choice(pattern=r"(?s).*\S.*", text="a non-empty string")
TEXT_OR_NULL = Choice((None,), pattern=r"(?s).*\S.*", text="a non-empty string or null")
POSITIVE, NON_NEGATIVE = Num(0, lo_open=True), Num(0)
FRACTION, BELOW_ONE = Num(0, 1), Num(0, 1, hi_open=True)


@dataclass(frozen=True)
class Names:
    """A non-empty list of non-empty strings (layer-name prefixes)."""

    def allowed(self) -> str:
        """What the rule accepts."""
        return "must be a non-empty list of layer names, e.g. [fc3]"

    def check(self, key: str, value: Any) -> None:
        """Raise ConfigError unless `value` is a non-empty list of non-empty strings."""
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise error(key, value, "is not allowed", self.allowed())


Rule = Num | Nums | Choice | Names


def integer(lo: int, hi: int | None = None, null: bool = False) -> Num:
    """An integer rule."""
    return Num(lo, hi, integer=True, null=null)
