"""Checks of constructor arguments that fail with one ``DistillError`` line naming the field.

Every check names the field as a config file or the command line sets it (``model.temperature_policy.init_args.T``),
says what was given and what is expected, and returns the value converted (``float``/``int``), so a constructor reads

    self.T = positive(f"{POLICY}.T", T, "a temperature")
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real

from distill.errors import DistillError

# Where each kind of object sits in a config (its fields are ``<prefix>.<argument>``).
POLICY = "model.temperature_policy.init_args"
DIVERGENCE = "model.divergence.init_args"
DATA = "data.init_args"
MODEL = "model"


def fail(field: str, given: object, expected: str) -> DistillError:
    """The error ``<field>: got <given>, expected <expected>`` (raise it)."""
    return DistillError(f"{field}: got {given!r}, expected {expected}")


def number(field: str, value: object, what: str) -> float:
    """``value`` as a finite float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise fail(field, value, f"{what} (a finite number)")
    return float(value)


def positive(field: str, value: object, what: str = "a number") -> float:
    """A finite float > 0."""
    result = number(field, value, f"{what} > 0")
    if result <= 0:
        raise fail(field, value, f"{what} > 0")
    return result


def non_negative(field: str, value: object, what: str = "a number") -> float:
    """A finite float >= 0."""
    result = number(field, value, f"{what} >= 0")
    if result < 0:
        raise fail(field, value, f"{what} >= 0")
    return result


def fraction(field: str, value: object, what: str = "a fraction") -> float:
    """A float strictly between 0 and 1."""
    result = number(field, value, f"{what} in (0, 1)")
    if not 0.0 < result < 1.0:
        raise fail(field, value, f"{what} strictly between 0 and 1")
    return result


def integer(field: str, value: object, minimum: int, what: str = "an integer") -> int:
    """An int (not a bool, not a float) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise fail(field, value, f"{what} >= {minimum}")
    return int(value)


def one_of(field: str, value: object, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise fail(field, value, f"one of {', '.join(repr(choice) for choice in choices)}")
    return str(value)
