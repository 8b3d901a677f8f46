"""Argument checks shared by the data loaders: one clear ValueError naming the parameter."""
from __future__ import annotations

import math
import numbers
from antlr_snn.errors import UserError


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; ValueError naming ``name`` otherwise.

    Integer types only (numpy ints too): a float such as 2.5 is rejected rather
    than truncated, and so is a bool.

    >>> check_int("num_steps", 30)
    30
    >>> check_int("num_steps", 2.5)
    Traceback (most recent call last):
    antlr_snn.errors.UserError: num_steps must be an integer >= 1, got 2.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_float(name: str, value) -> float:
    """``value`` as a finite float > 0; ValueError naming ``name`` otherwise.

    >>> check_positive_float("window_ms", 300)
    300.0
    >>> check_positive_float("window_ms", float("nan"))
    Traceback (most recent call last):
    antlr_snn.errors.UserError: window_ms must be a finite number > 0, got nan
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{name} must be a finite number > 0, got {value!r}")
    result = float(value)
    if not (math.isfinite(result) and result > 0):
        raise UserError(f"{name} must be a finite number > 0, got {value!r}")
    return result
