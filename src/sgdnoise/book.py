"""Helpers for the chapters: glue that always stores plain Python scalars, one figure theme, and a
recorder of per-cell execution times for the book's execution-statistics page."""

from __future__ import annotations

import json
import numbers
import os
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["as_python_scalar", "glue", "set_theme", "set_threads", "record_cell_times", "CELL_TIMES_ENV", "PALETTE", "SCHEME_LABELS"]

CELL_TIMES_ENV = "SGDNOISE_CELL_TIMES"  # a directory; `make book` sets it to _build/cell_times

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


def glue_markdown(name: str, text: str) -> str:
    """Glue ``text`` as Markdown (for ``{glue:md}`name```), and the same text as a plain string under
    ``name + "-plain"``, which the determinism check compares; returns ``text``."""
    from IPython.display import Markdown
    from myst_nb import glue as _glue

    if not isinstance(text, str):
        raise TypeError(f"glue_markdown({name!r}, ...) needs a str; got a {type(text).__name__}")
    _glue(name, Markdown(text), display=False)
    _glue(name + "-plain", text, display=False)
    return text


def set_theme():
    """The one seaborn theme every figure of the book uses."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    mpl.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "figure.figsize": (7.0, 4.0)})


def set_threads(default: int = 2) -> int:
    """Give torch the number of threads that ``OMP_NUM_THREADS`` asks for (``default`` when it is unset), so
    that a page honours ``OMP_NUM_THREADS=1 make test`` instead of pinning its own count; returns it."""
    import torch

    raw = os.environ.get("OMP_NUM_THREADS", "")
    try:
        n = int(raw) if raw.strip() else int(default)
    except ValueError:
        raise ValueError(f"OMP_NUM_THREADS={raw!r}; expected a positive integer such as 1 or 2") from None
    if n < 1:
        raise ValueError(f"OMP_NUM_THREADS={raw!r} (or default={default!r}); expected a positive integer such as 1 or 2")
    torch.set_num_threads(n)
    return n


def _first_line(source: str) -> str:
    """The first line of a cell that is not blank or a comment, shortened: how the times table names it."""
    for line in source.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line if len(line) <= 70 else line[:67] + "..."
    return "(comments only)"


def _write_json_atomically(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_cell_times(page: str, directory: str | os.PathLike | None = None, *, shell=None) -> Path | None:
    """Record the wall time of every code cell of this notebook, from the calling cell on.

    Writes ``<directory>/<page>.json`` (rewritten atomically after each cell, so the file is whole at any
    moment) with the page, when it ran, and for each cell its index among the code cells executed, its
    first line and its wall time in seconds. The book's execution-statistics page renders these files.
    ``directory`` defaults to the environment variable ``SGDNOISE_CELL_TIMES`` (set by ``make book``);
    with neither, or outside IPython, nothing is recorded and ``None`` is returned.
    """
    from ._args import ArgumentTypeError, show

    if not isinstance(page, str):
        raise ArgumentTypeError(f"record_cell_times: page={show(page)} is a {type(page).__name__}; valid: a str, "
                                f"the page's file name without its directory or suffix")
    if not page or "/" in page or "\\" in page or page.startswith("."):
        raise ValueError(f"record_cell_times: page={page!r}; give the page's file name without its "
                         f"directory or suffix, e.g. '01_gradient_noise'")
    directory = directory if directory is not None else os.environ.get(CELL_TIMES_ENV)
    if not directory:
        return None
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython ships with the book's requirements
            return None
        shell = get_ipython()
        if shell is None:
            return None
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{page}.json"
    record = {"page": page, "recorded": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cells": []}
    history = getattr(shell, "user_ns", {}).get("In") or [""]  # IPython's input history: this cell is the last
    state = {"start": time.perf_counter(), "source": history[-1] or "record_cell_times(...)"}

    def pre(info):
        state["start"], state["source"] = time.perf_counter(), info.raw_cell

    def post(result):
        seconds = time.perf_counter() - state["start"]
        record["cells"].append({"index": len(record["cells"]), "first_line": _first_line(state["source"]),
                                "seconds": round(seconds, 3), "ok": bool(result.success)})
        _write_json_atomically(path, record)

    shell.events.register("pre_run_cell", pre)
    shell.events.register("post_run_cell", post)
    _write_json_atomically(path, record)
    return path
