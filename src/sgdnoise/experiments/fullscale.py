"""Full-scale results committed with the book, and the check that a live run still reproduces them.

Some of the book's experiments need more chains, seeds or sizes than a chapter can run within its
build budget. Such an experiment is registered here as an :class:`Experiment`: a function that
computes it from a configuration, a **full** configuration (the science) and a **reduced** one (what
the chapter runs live). Then:

* ``make experiments`` (``python -m sgdnoise.experiments.fullscale``) runs every full configuration
  and writes ``results/<name>.json`` at the repository root: the configuration, the result, and where
  and how it was computed (code version, machine, torch version, device, date, wall time). A file is
  written atomically (temporary file, ``fsync``, ``os.replace``), so a reader never sees half of one.
* a chapter calls :func:`load`, which refuses a file whose configuration is not the registered full
  one (a stale file fails the build, naming the command that regenerates it), and quotes
  :meth:`FullScaleResult.provenance` next to the figure it draws from the file;
* the chapter runs the reduced configuration with *other seeds* and calls :func:`agreement` on the
  quantities the two share. Under a correct file each difference, divided by its combined standard
  error, is a standard normal; the check allows a family-wise two-sided level ``alpha`` (Bonferroni
  over the compared quantities). A committed file that the code no longer reproduces fails the build.

Nothing falls back to another result: a missing or stale file raises :class:`StaleResult`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import importlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .cache import _plain, canonical_json, code_version

__all__ = ["Experiment", "FullScaleResult", "StaleResult", "Agreement", "register", "experiments", "results_dir",
           "compute", "save", "load", "agreement", "sample_agreement", "main", "ENV_VAR", "FORMAT"]

ENV_VAR = "SGDNOISE_RESULTS_DIR"
FORMAT = "sgdnoise-fullscale 1"
# The driver modules whose experiments are registered (imported on demand by experiments()).
_DRIVERS = ("sgdnoise.experiments.weak_error", "sgdnoise.experiments.chapter4", "sgdnoise.experiments.chapter5",
            "sgdnoise.experiments.chapter6", "sgdnoise.experiments.parity")


class StaleResult(RuntimeError):
    """A committed full-scale result that is missing, unreadable, or not the registered configuration."""


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment: ``compute(**config, device=device)`` returns a dict of numbers, strings, lists and
    arrays. ``full`` and ``reduced`` are configurations (dicts of JSON-able values); ``modules`` are the
    modules whose source text makes up the recorded code version."""

    name: str
    compute: Callable[..., dict]
    full: dict
    reduced: dict
    description: str
    modules: tuple = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"experiment name {self.name!r} must be letters, digits, '_' or '-' (it names a file)")
        for which in ("full", "reduced"):
            cfg = getattr(self, which)
            if not isinstance(cfg, dict):
                raise TypeError(f"{self.name}: the {which} configuration must be a dict; got {type(cfg).__name__}")
            _plain(cfg, f"{self.name}.{which}")  # JSON-able, or a TypeError naming the field


_REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to the registry (once per name)."""
    old = _REGISTRY.get(experiment.name)
    if old is not None and old is not experiment:
        raise ValueError(f"an experiment named {experiment.name!r} is already registered")
    _REGISTRY[experiment.name] = experiment
    return experiment


def experiments() -> dict[str, Experiment]:
    """Every registered experiment, by name (imports the driver modules)."""
    for mod in _DRIVERS:
        for exp in importlib.import_module(mod).EXPERIMENTS:
            register(exp)
    return dict(sorted(_REGISTRY.items()))


def _get(name: str) -> Experiment:
    reg = experiments()
    if name not in reg:
        raise KeyError(f"no full-scale experiment named {name!r}; registered: {', '.join(reg) or 'none'}")
    return reg[name]


def results_dir() -> Path:
    """``$SGDNOISE_RESULTS_DIR`` if set, else ``results/`` at the repository root (found from this file)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "src" / "sgdnoise").is_dir():
            return parent / "results"
    return Path.cwd() / "results"


def _jsonable(value: Any) -> Any:
    """Arrays and tensors → nested lists; numpy scalars → Python numbers; dicts and lists recursively."""
    try:
        import torch

        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency of the package
        pass
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"result keys must be strings; got {k!r}")
            out[k] = _jsonable(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("a full-scale result holds a non-finite number; a diverging run must be recorded "
                             "as censored (a flag), not as inf or nan")
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a full-scale result")


def _device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device={device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'")
    return device


def compute(name: str, which: str = "full", *, device: str = "cpu") -> dict:
    """Run experiment ``name`` at its ``"full"`` or ``"reduced"`` configuration; the result as plain data."""
    if which not in ("full", "reduced"):
        raise ValueError(f"which={which!r} must be 'full' or 'reduced'")
    exp = _get(name)
    return _jsonable(exp.compute(**getattr(exp, which), device=_device(device)))


def _machine(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def save(name: str, *, device: str = "auto", root: str | os.PathLike | None = None) -> Path:
    """Compute experiment ``name`` at its full configuration and write ``<root>/<name>.json`` atomically."""
    exp = _get(name)
    device = _device(device)
    start = time.perf_counter()
    result = compute(name, "full", device=device)
    wall = time.perf_counter() - start
    doc = {"format": FORMAT, "name": name, "description": exp.description, "config": _plain(exp.full, name),
           "code_version": code_version(exp.modules), "machine": _machine(device),
           "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "wall_s": round(wall, 1),
           "result": result}
    out_dir = Path(root) if root is not None else results_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0o600 is for secrets; this file is committed and read by everyone
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@dataclasses.dataclass(frozen=True)
class FullScaleResult:
    """A committed full-scale result: its configuration, the result (lists as numpy arrays) and metadata."""

    name: str
    config: dict
    result: dict
    meta: dict
    path: Path

    def provenance(self) -> str:
        """One sentence naming the data: the file, when, where and with which code it was computed."""
        m = self.meta["machine"]
        where = m.get("gpu") or f"{m['cpu_count']}-core {m['cpu']} CPU"
        return (f"full-scale result `results/{self.path.name}`, computed {self.meta['date']} on {where} "
                f"(torch {m['torch']}, {self.meta['wall_s']:.0f} s, code {self.meta['code_version']})")


def _arrays(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _arrays(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in value):
        return np.asarray(value, dtype=float)
    if isinstance(value, list):
        return [_arrays(v) for v in value]
    return value


def load(name: str, *, root: str | os.PathLike | None = None) -> FullScaleResult:
    """Read ``<root>/<name>.json``; :class:`StaleResult` if it is missing, malformed, or computed for a
    configuration other than the registered full one."""
    exp = _get(name)
    path = (Path(root) if root is not None else results_dir()) / f"{name}.json"
    regen = f"run `make experiments` (or `python -m sgdnoise.experiments.fullscale --only {name}`) and commit {path.name}"
    if not path.exists():
        raise StaleResult(f"no full-scale result for {name!r} at {path}; {regen}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StaleResult(f"{path} is not a readable full-scale result ({err}); {regen}") from err
    missing = {"format", "name", "config", "code_version", "machine", "date", "wall_s", "result"} - set(doc)
    if missing or doc.get("format") != FORMAT or doc.get("name") != name:
        raise StaleResult(f"{path} is not a {FORMAT!r} file for {name!r} (missing {sorted(missing)}); {regen}")
    want = canonical_json(_plain(exp.full, name))
    if canonical_json(doc["config"]) != want:
        raise StaleResult(f"{path} holds configuration {canonical_json(doc['config'])}, but the registered full "
                          f"configuration is {want}; {regen}")
    meta = {k: doc[k] for k in ("code_version", "machine", "date", "wall_s")}
    return FullScaleResult(name=name, config=doc["config"], result=_arrays(doc["result"]), meta=meta, path=path)


@dataclasses.dataclass(frozen=True)
class Agreement:
    """Differences between a live and a full-scale estimate in units of their combined standard error."""

    labels: tuple
    z: np.ndarray
    threshold: float
    alpha: float

    @property
    def ok(self) -> bool:
        return bool(np.all(np.abs(self.z) <= self.threshold))

    @property
    def max_abs_z(self) -> float:
        return float(np.max(np.abs(self.z)))

    def __str__(self) -> str:
        worst = int(np.argmax(np.abs(self.z)))
        verdict = "agree" if self.ok else "DISAGREE"
        return (f"live and full-scale results {verdict}: max |z| = {self.max_abs_z:.2f} at {self.labels[worst]} "
                f"against {self.threshold:.2f} (two-sided family-wise level {self.alpha:g}, Bonferroni over "
                f"{len(self.z)})")


def agreement(full_mean: Sequence[float], full_se: Sequence[float], live_mean: Sequence[float],
              live_se: Sequence[float], *, labels: Sequence[str] | None = None, alpha: float = 0.01,
              df: int | None = None) -> Agreement:
    """z = (live − full) / √(se_live² + se_full²) for each compared quantity, with the Bonferroni threshold
    Φ⁻¹(1 − α/(2m)) for ``m`` quantities. The two estimates must come from independent seeds. Where both
    standard errors are zero the quantity must be reproduced exactly (z = 0, else z = ±inf). When the
    standard errors come from a spread estimated on few draws, pass its degrees of freedom ``df``: the
    threshold is then Student's t quantile, not the normal one."""
    from scipy.stats import norm, t as student_t

    arrays = [np.asarray(a, dtype=float).ravel() for a in (full_mean, full_se, live_mean, live_se)]
    m = arrays[0].size
    if m == 0 or any(a.size != m for a in arrays):
        raise ValueError(f"agreement needs four arrays of one non-zero length; got sizes {[a.size for a in arrays]}")
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError("agreement got a non-finite mean or standard error")
    if np.any(arrays[1] < 0) or np.any(arrays[3] < 0):
        raise ValueError("agreement got a negative standard error")
    se = np.hypot(arrays[1], arrays[3])
    if not (isinstance(alpha, float) and 0 < alpha < 1):
        raise ValueError(f"alpha={alpha!r} must be a float in (0, 1)")
    labels = tuple(labels) if labels is not None else tuple(str(i) for i in range(m))
    if len(labels) != m:
        raise ValueError(f"{len(labels)} labels for {m} quantities")
    diff = arrays[2] - arrays[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        # Both standard errors zero (every seed gave the same value in both runs): equal values agree
        # (z = 0), different ones disagree (z = ±inf).
        z = np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
    if df is not None and (not isinstance(df, (int, np.integer)) or isinstance(df, bool) or df < 1):
        raise ValueError(f"df={df!r} must be None or an int >= 1")
    q = 1 - alpha / (2 * m)
    threshold = float(norm.ppf(q) if df is None else student_t.ppf(q, df))
    return Agreement(labels=labels, z=z, threshold=threshold, alpha=alpha)


def sample_agreement(full_samples: Sequence[Sequence[float]], live_samples: Sequence[Sequence[float]], *,
                     labels: Sequence[str] | None = None, alpha: float = 0.01) -> Agreement:
    """Rank version of :func:`agreement` for skewed quantities, where a mean's standard error from a few dozen
    draws is not reliable: for each quantity, the Mann–Whitney statistic of the live sample against the
    committed one as a z-score, ``(U − n₁n₂/2) / √(n₁n₂(n₁+n₂+1)/12)`` (no ties: continuous data), with the
    same Bonferroni threshold. Under a correct file both samples come from one law and each z is
    approximately standard normal."""
    from scipy.stats import mannwhitneyu, norm

    if len(full_samples) != len(live_samples) or not len(full_samples):
        raise ValueError(f"sample_agreement needs one live sample per committed one; got {len(full_samples)} and "
                         f"{len(live_samples)}")
    if not (isinstance(alpha, float) and 0 < alpha < 1):
        raise ValueError(f"alpha={alpha!r} must be a float in (0, 1)")
    z = []
    for f, l in zip(full_samples, live_samples):
        f, l = np.asarray(f, dtype=float).ravel(), np.asarray(l, dtype=float).ravel()
        if f.size < 2 or l.size < 2 or not (np.all(np.isfinite(f)) and np.all(np.isfinite(l))):
            raise ValueError("sample_agreement needs at least two finite values in every sample")
        u = mannwhitneyu(l, f, alternative="two-sided").statistic
        n1, n2 = l.size, f.size
        z.append((u - n1 * n2 / 2) / math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12))
    m = len(z)
    labels = tuple(labels) if labels is not None else tuple(str(i) for i in range(m))
    if len(labels) != m:
        raise ValueError(f"{len(labels)} labels for {m} quantities")
    return Agreement(labels=labels, z=np.asarray(z), threshold=float(norm.ppf(1 - alpha / (2 * m))), alpha=alpha)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sgdnoise.experiments.fullscale",
                                     description="Recompute the book's committed full-scale results.")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these experiments")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--device", default="auto", help="'auto' (a GPU when present), 'cpu', 'cuda', 'cuda:<i>'")
    args = parser.parse_args(argv)
    reg = experiments()
    if args.list:
        for name, exp in reg.items():
            print(f"{name}: {exp.description}")
        return 0
    names = args.only or list(reg)
    unknown = [n for n in names if n not in reg]
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; registered: {', '.join(reg)}")
    for name in names:
        start = time.perf_counter()
        path = save(name, device=args.device)
        print(f"{name}: wrote {path} in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
