"""Argument checks shared by the package.

Each check returns the value, normalised (an ``int``, a ``float``, a ``tuple``…), or raises an error that
names the argument, shows the value (its ``repr`` on one line, cut short; a large tensor or array by its
shape) and says what would be valid: ``f"{name}={value!r} must be …"``.

A value of the wrong type raises :class:`ArgumentTypeError`; a value of the right type outside its range
raises ``ValueError``. ``ArgumentTypeError`` is a ``TypeError`` that is also a ``ValueError``: before these
checks were shared, many of them raised ``ValueError`` for a wrong type (``steps=2.5``), and code that
catches that keeps working (numpy's ``AxisError`` is a ``ValueError`` and an ``IndexError`` for the same
reason).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

__all__ = ["ArgumentTypeError", "show", "as_int", "as_real", "is_one_of", "integer", "real", "flag", "tensor",
           "number_array", "function", "items", "shape", "float_dtype", "device"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a ``TypeError``, and a ``ValueError`` for callers that caught that)."""


def show(value, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters; a tensor or array of more than 8 entries by its
    shape and dtype (its entries say nothing about what is wrong with it)."""
    if isinstance(value, Tensor) and value.numel() > 8:
        return f"<tensor of shape {tuple(value.shape)}, {value.dtype}>"
    if isinstance(value, np.ndarray) and value.size > 8:
        return f"<array of shape {value.shape}, {value.dtype}>"
    try:
        text = " ".join(repr(value).split())
    except Exception:  # noqa: BLE001  (a broken __repr__ must not hide the real error)
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_)) or (isinstance(value, Tensor) and value.dtype == torch.bool)


def as_int(value) -> int | None:
    """``value`` as an ``int`` if it is an integer (Python, numpy, a 0-d integer tensor), not a bool; else None."""
    if _is_bool(value):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def as_real(value) -> float | None:
    """``value`` as a ``float`` if it is a real number (Python, numpy, a 0-d real tensor or array) and not a bool;
    else None. Infinities and NaN are returned as they are."""
    if _is_bool(value):
        return None
    if isinstance(value, Tensor):
        return float(value) if value.ndim == 0 and not value.is_complex() else None
    if isinstance(value, np.ndarray):
        return float(value) if value.ndim == 0 and value.dtype.kind in "iuf" else None
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def is_one_of(value, options) -> bool:
    """Whether ``value`` is one of ``options`` (strings, or ``None``): a safe ``value in options`` that never
    compares an array or a tensor elementwise ("the truth value of an array is ambiguous")."""
    return any(value is o or (isinstance(o, str) and isinstance(value, str) and value == o) for o in options)


def _int_range(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f"an int in [{minimum}, {maximum}]"
    if minimum is not None:
        return f"an int >= {minimum}"
    if maximum is not None:
        return f"an int <= {maximum}"
    return "an int"


def integer(name: str, value, *, minimum: int | None = None, maximum: int | None = None,
            valid: str | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``; Python and numpy ints and 0-d integer tensors count,
    bools and floats (even ``2.0``) do not. ``valid`` replaces the description of what is valid."""
    what = valid or _int_range(minimum, maximum)
    v = as_int(value)
    if v is None:
        raise ArgumentTypeError(f"{name}={show(value)} must be {what}")
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise ValueError(f"{name}={show(value)} must be {what}")
    return v


def _real_range(gt, ge, lt, le, finite: bool) -> str:
    low = f"({gt}" if gt is not None else f"[{ge}" if ge is not None else None
    high = f"{lt})" if lt is not None else f"{le}]" if le is not None else None
    if low and high:
        return f"a number in {low}, {high}"
    word = "a finite number" if finite else "a number"
    for op, bound in ((">", gt), (">=", ge), ("<", lt), ("<=", le)):
        if bound is not None:
            return f"{word} {op} {bound}"
    return word


def real(name: str, value, *, gt=None, ge=None, lt=None, le=None, finite: bool = True, valid: str | None = None,
         as_given: bool = False) -> float:
    """``value`` as a ``float`` within the given bounds (``gt``: ``>``, ``ge``: ``>=``, ``lt``: ``<``, ``le``: ``<=``),
    finite unless ``finite=False``. Python and numpy numbers and 0-d real tensors count; bools, strings, None and
    arrays do not. ``valid`` replaces the description of what is valid.

    ``as_given=True`` returns a Python or numpy number unchanged, so that arithmetic on it is exactly what it
    was before the check (a ``np.float32`` stays one), and only a 0-d tensor or array as a ``float``."""
    what = valid or _real_range(gt, ge, lt, le, finite)
    v = as_real(value)
    if v is None:
        raise ArgumentTypeError(f"{name}={show(value)} must be {what}")
    ok = not math.isnan(v) and (not finite or math.isfinite(v))
    ok = ok and (gt is None or v > gt) and (ge is None or v >= ge)
    ok = ok and (lt is None or v < lt) and (le is None or v <= le)
    if not ok:
        raise ValueError(f"{name}={show(value)} must be {what}")
    return value if as_given and isinstance(value, numbers.Real) else v


def flag(name: str, value) -> bool:
    """``value`` if it is ``True`` or ``False`` (a numpy bool counts); anything else is refused, not read as truthy."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ArgumentTypeError(f"{name}={show(value)} must be True or False")


def tensor(name: str, value, what: str = "a torch tensor") -> Tensor:
    """``value`` if it is a ``torch.Tensor``; ``what`` says which tensor is expected, e.g. ``"a (n, d) tensor"``."""
    if not isinstance(value, Tensor):
        raise ArgumentTypeError(f"{name}={show(value)} must be {what}")
    return value


def number_array(name: str, value, what: str) -> Tensor:
    """``value`` (a tensor, array or list of numbers) as a float64 tensor, or an :class:`ArgumentTypeError` saying
    ``name`` must be ``what``."""
    try:
        bad = value is None or isinstance(value, (str, bytes, dict))
        t = None if bad else torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        t = None
    if t is None:
        raise ArgumentTypeError(f"{name}={show(value)} must be {what}")
    return t


def function(name: str, value, signature: str):
    """``value`` if it is callable; ``signature`` says how it is called, e.g. ``"drift(x) -> an array"``."""
    if not callable(value):
        raise ArgumentTypeError(f"{name}={show(value)} must be callable, {signature}")
    return value


def items(name: str, value, what: str) -> list:
    """The items of ``value`` as a list: a list, tuple, range, 1-D array or tensor, or an iterator (read once).
    Strings, mappings, None, non-iterables and 0-d tensors or arrays are refused; ``what`` says what is expected."""
    bad = value is None or isinstance(value, (str, bytes, Mapping))
    bad = bad or (isinstance(value, (Tensor, np.ndarray)) and value.ndim == 0)
    if not bad:
        try:
            return list(value)
        except TypeError:
            pass
    raise ArgumentTypeError(f"{name}={show(value)} must be {what}")


def shape(name: str, value) -> tuple[int, ...]:
    """A shape as a tuple of ints ``>= 0``: an int ``k`` is ``(k,)``; a tuple, list or ``torch.Size`` of ints."""
    what = "a shape: an int or a tuple of ints >= 0"
    k = as_int(value)
    dims = [k] if k is not None else [as_int(d) for d in items(name, value, what)]
    if any(d is None for d in dims):
        raise ArgumentTypeError(f"{name}={show(value)} must be {what}")
    if any(d < 0 for d in dims):
        raise ValueError(f"{name}={show(value)} must be {what}")
    return tuple(dims)


def float_dtype(name: str, value) -> torch.dtype:
    """``value`` if it is a floating-point ``torch.dtype`` (``None`` is refused: it would mean torch's default)."""
    if not isinstance(value, torch.dtype):
        raise ArgumentTypeError(f"{name}={show(value)} must be a floating-point torch.dtype, e.g. torch.float64")
    if not value.is_floating_point:
        raise ValueError(f"{name}={value} must be a floating-point torch.dtype, e.g. torch.float64")
    return value


def device(name: str, value) -> torch.device:
    """``value`` as a ``torch.device``: a ``torch.device`` or a device name such as ``"cpu"`` or ``"cuda:0"``."""
    if isinstance(value, torch.device):
        return value
    if isinstance(value, str):
        try:
            return torch.device(value)
        except RuntimeError:
            raise ValueError(f"{name}={value!r} is not a device name; use e.g. 'cpu', 'cuda' or 'cuda:0'") from None
    raise ArgumentTypeError(f"{name}={show(value)} must be a device: a name such as 'cpu' or 'cuda', or a torch.device")
