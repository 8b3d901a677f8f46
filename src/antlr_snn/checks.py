"""Argument checks, one set for the whole library: predicates and checks that raise one
:class:`~antlr_snn.errors.UserError` naming the parameter.

Example:
    >>> check_int("num_steps", 30)
    30
    >>> check_int("num_steps", 2.5)
    Traceback (most recent call last):
    antlr_snn.errors.UserError: num_steps must be an integer >= 1, got 2.5
    >>> check_number("window_ms", float("nan"), minimum=0, strict=True)
    Traceback (most recent call last):
    antlr_snn.errors.UserError: window_ms must be a finite number > 0, got nan
"""
from __future__ import annotations

import math
import numbers

from antlr_snn.errors import UserError

__all__ = ["is_int", "is_number", "is_real", "shown", "check_int", "check_number"]


def is_int(v, low=None) -> bool:
    """An integer (numpy's too, not a bool), at least ``low`` when given."""
    return (isinstance(v, numbers.Integral) and not isinstance(v, bool)
            and (low is None or v >= low))


def is_number(v) -> bool:
    """A real number (not a bool); NaN and infinities included."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def is_real(v) -> bool:
    """A finite real number (not a bool)."""
    return is_number(v) and math.isfinite(v)


def shown(v) -> str:
    """``repr(v)`` on one line, cut to 60 characters (for error messages)."""
    text = " ".join(repr(v).split())
    return text if len(text) <= 60 else text[:57] + "..."


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; a float such as 2.5 is rejected rather than
    truncated, and so is a bool."""
    if not is_int(value, minimum):
        raise UserError(f"{name} must be an integer >= {minimum}, got {shown(value)}")
    return int(value)


def check_number(name: str, value, minimum=None, strict: bool = False) -> float:
    """``value`` as a finite float, ``> minimum`` (``strict``) or ``>= minimum``."""
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
    ok = is_real(value) and (minimum is None or (value > minimum if strict else value >= minimum))
    if not ok:
        raise UserError(f"{name} must be a finite number{bound}, got {shown(value)}")
    return float(value)
