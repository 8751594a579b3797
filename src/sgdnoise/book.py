"""Helpers for the chapters: glue that always stores plain Python scalars, one figure theme."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["as_python_scalar", "glue", "set_theme", "PALETTE", "SCHEME_LABELS"]

SCHEME_LABELS = {
    "with_replacement": "with replacement",
    "without_replacement": "without replacement",
    "reshuffling": "random reshuffling",
}
PALETTE = "colorblind"


def as_python_scalar(value):
    """A Python ``int``/``float``/``bool``/``str`` from numpy, torch or Python scalars.

    numpy-2 scalars print as ``np.float64(…)`` in ``{glue:text}``; torch tensors likewise. Anything
    that is not a scalar raises, so a glued number is always one number.
    """
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not np.isfinite(value):
            raise ValueError(f"refusing to glue a non-finite number ({value})")
        return value
    if isinstance(value, str):
        return value
    raise TypeError(f"glue expects a scalar or a string, got {type(value).__name__}")


def glue(name: str, value, display: bool = False):
    """``myst_nb.glue`` with the value converted to a plain Python scalar first; returns it."""
    from myst_nb import glue as _glue

    value = as_python_scalar(value)
    _glue(name, value, display=display)
    return value


def set_theme():
    """The one seaborn theme every figure of the book uses."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    mpl.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "figure.figsize": (7.0, 4.0)})
