"""What the experiment drivers share: argument checks, seed streams, evaluation steps, torch threads."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch


def is_int(v) -> bool:
    """An integer (Python or numpy), and not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_real(v) -> bool:
    """A finite real number (Python or numpy), and not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def child_seed(seed: int, stream: int) -> int:
    """Independent 63-bit seeds for the separate random streams of one run."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]) % 2**63


def eval_steps(steps: int, per_decade: int) -> list[int]:
    """``0``, ``round(10^(j/per_decade))`` for ``j = 0, 1, …`` up to ``steps``, and ``steps``; sorted, unique."""
    out = {0, steps}
    if steps >= 1:
        top = int(math.floor(per_decade * math.log10(steps) + 1e-9))
        out.update(min(steps, int(round(10 ** (j / per_decade)))) for j in range(top + 1))
    return sorted(out)


def check_threads(threads) -> None:
    """``threads`` must be ``None`` (leave torch's setting alone) or an int ``>= 1``."""
    if threads is not None and (not is_int(threads) or threads < 1):
        raise ValueError(f"threads={threads!r} must be None or an int >= 1")


def check_steps_and_seeds(steps, seed, data_seed) -> None:
    """The fields every experiment configuration has: ``steps`` and ``seed`` ints ``>= 0``, ``data_seed``
    ``None`` or an int ``>= 0``."""
    if not is_int(steps) or steps < 0:
        raise ValueError(f"steps={steps!r} must be an int >= 0")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an int >= 0")
    if data_seed is not None and (not is_int(data_seed) or data_seed < 0):
        raise ValueError(f"data_seed={data_seed!r} must be None or an int >= 0")


def check_device(device) -> None:
    """``device`` must name a CPU or CUDA device: ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``."""
    if not isinstance(device, str):
        raise ValueError(f"device={device!r} must be a string: 'cpu', 'cuda' or 'cuda:<index>'")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device={device!r} is not a device name; use 'cpu', 'cuda' or 'cuda:<index>'") from err
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}; valid devices are 'cpu', 'cuda' and 'cuda:<index>'")


def set_canonical_types(cfg, floats, ints, optional_ints=("data_seed",)) -> None:
    """Store the fields of a frozen dataclass as plain ``float``/``int`` (``None`` kept for
    ``optional_ints``), so that equal configurations (``lr=100`` and ``lr=100.0``, numpy scalars) make
    the same cache key."""
    for name in floats:
        object.__setattr__(cfg, name, float(getattr(cfg, name)))
    for name in ints:
        object.__setattr__(cfg, name, int(getattr(cfg, name)))
    for name in optional_ints:
        if getattr(cfg, name) is not None:
            object.__setattr__(cfg, name, int(getattr(cfg, name)))


def check_cache(cache) -> None:
    """``cache`` must be ``None`` (no caching) or a :class:`~sgdnoise.experiments.cache.ResultCache`."""
    from .cache import ResultCache

    if cache is not None and not isinstance(cache, ResultCache):
        raise TypeError(f"cache must be None or a ResultCache (e.g. ResultCache('results/')); got a {type(cache).__name__}")


@contextlib.contextmanager
def torch_threads(threads):
    """Run the block with ``torch.set_num_threads(threads)``, restored afterwards (``None``: unchanged)."""
    check_threads(threads)
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
