"""A result cache for experiment drivers: compute once, reload when nothing relevant has changed.

**Key.** An entry is addressed by

    key = sha256( canonical JSON of {"name": name, "config": config, "code": code_version} ),

where ``config`` is a frozen dataclass (turned into a dict by ``dataclasses.asdict``, together
with its class name) or a plain dict of JSON-able values, and the canonical JSON sorts keys, writes
tuples as lists and floats by their shortest round-trip ``repr`` (so ``1`` and ``1.0`` differ, as
their types do). The code version is ``sgdnoise.__version__`` joined with a sha256 of the *source
text* of the driver module(s) and of any extra strings passed in: editing a driver invalidates its
entries, editing an unrelated module does not.

**Storage.** One file per entry, ``<root>/<name>/<key>.sgdc``, where ``root`` is, in this order, the
``root`` argument, the environment variable ``SGDNOISE_CACHE_DIR``, or ``.cache/experiments/`` under
the repository root (found from this file; the current directory when the package is not run from
a checkout). A file is

    b"SGDNOISE-CACHE 1\\n" + header JSON + b"\\n" + payload,

the payload being an ``.npz`` archive (loaded with ``allow_pickle=False``): every array of the result
(numpy arrays, torch tensors, moved to the CPU) is one member, and the rest of the result (nested
dicts, lists, strings, numbers, booleans, ``None``) is a JSON text stored as one more member, with the
arrays replaced by placeholders. The header holds the key, the name, the configuration, the code
version, the payload's byte count and its sha256. Tuples come back as lists and numpy scalars as
Python numbers.

**Atomicity.** A file is written to a temporary file in the same directory, flushed, ``fsync``-ed
and moved into place with ``os.replace``: a reader sees either no entry or a complete one, and
if the computation raises nothing is written at all.

**Corruption.** Loading checks the magic line, the header, the key, the byte count and the checksum;
an entry that fails is deleted and recomputed. That is reported through ``logging`` (logger
``sgdnoise.experiments.cache``) and recorded in ``ResultCache.recomputed``, never through
``warnings``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import math
import logging
import os
import re
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

__all__ = ["ResultCache", "CacheCorruption", "code_version", "config_dict", "canonical_json", "cache_key",
           "default_cache_dir", "encode_payload", "decode_payload", "ENV_VAR"]

ENV_VAR = "SGDNOISE_CACHE_DIR"
TEMP_GRACE_S = 600.0  # clear() keeps temporary files younger than this: they may be stores in progress
MAGIC = b"SGDNOISE-CACHE 1\n"
SUFFIX = ".sgdc"
_JSON_MEMBER = "__json__"
_ARRAY_TAG = "__array__"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

log = logging.getLogger(__name__)
_MISSING = object()


class CacheCorruption(ValueError):
    """A cache file that is truncated, altered, or not the entry it is named for."""


# ----------------------------------------------------------------------------- keys
def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON-able data: tuples → lists, numpy scalars → Python numbers; else TypeError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where}={value!r}: a configuration must hold finite numbers (NaN and ±inf have no "
                             "JSON form, so they cannot key a cached result)")
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__}; keys must be str")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    raise TypeError(f"{where} is a {type(value).__name__}; a configuration may hold only None, bool, int, float, "
                    "str and (nested) tuples, lists and dicts of these")


def config_dict(config: Any) -> dict:
    """A configuration as a dict: a dataclass instance via ``dataclasses.asdict`` (plus its class
    name under ``"__class__"``), or a dict as it is; values checked to be JSON-able."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        d = {"__class__": type(config).__qualname__, **dataclasses.asdict(config)}
    elif isinstance(config, dict):
        d = dict(config)
    else:
        raise TypeError(f"config is a {type(config).__name__}; pass a dataclass instance or a dict")
    return _plain(d, "config")


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces, tuples as lists; rejects NaN and infinities (they have no JSON form)."""
    return json.dumps(_plain(obj, "value"), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _source_text(module: Any) -> str:
    if isinstance(module, types.ModuleType):
        try:
            return inspect.getsource(module)
        except (OSError, TypeError) as err:
            raise ValueError(f"cannot read the source of module {module.__name__!r} for the cache key: {err}") from err
    if isinstance(module, (str, os.PathLike)):
        path = Path(module)
        if not path.is_file():
            raise ValueError(f"module path {str(path)!r} is not a file; pass a module object or a source file path")
        return path.read_text(encoding="utf-8")
    raise TypeError(f"modules must be module objects or source file paths; got a {type(module).__name__}")


def code_version(modules: Iterable[Any] = (), extra: Iterable[str] = ()) -> str:
    """``"<sgdnoise.__version__>+<sha256 prefix>"``: the package version and a hash of the source text of
    ``modules`` (module objects or paths to source files) and of the ``extra`` strings, in order."""
    from .. import __version__

    h = hashlib.sha256()
    for m in modules:
        text = _source_text(m)
        h.update(b"module\0" + text.encode("utf-8") + b"\0")
    for e in extra:
        if not isinstance(e, str):
            raise TypeError(f"extra code-version items must be str; got a {type(e).__name__}")
        h.update(b"extra\0" + e.encode("utf-8") + b"\0")
    return f"{__version__}+{h.hexdigest()[:16]}"


def cache_key(name: str, config: Any, version: str) -> str:
    """sha256 hex digest of the canonical JSON of ``(name, config, version)``."""
    text = canonical_json({"name": name, "config": config_dict(config), "code": version})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"experiment name {name!r} must be a non-empty string of letters, digits, '_', '-', '.' "
                         "starting with a letter or digit (it names a directory)")
    return name


# ----------------------------------------------------------------------------- payload
def encode_payload(payload: Any) -> bytes:
    """An ``.npz`` archive of ``payload``: arrays as members, everything else as one JSON member."""
    arrays: dict[str, np.ndarray] = {}

    def walk(v: Any, where: str) -> Any:
        if type(v).__module__.startswith("torch") and hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        if isinstance(v, np.ndarray):
            if v.dtype == object:
                raise TypeError(f"payload{where} is an object array; store numeric or string arrays only")
            name = f"a{len(arrays)}"
            arrays[name] = v
            return {_ARRAY_TAG: name}
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if not isinstance(k, str):
                    raise TypeError(f"payload{where} has a key {k!r} of type {type(k).__name__}; keys must be str")
                if k == _ARRAY_TAG:
                    raise ValueError(f"payload{where} uses the reserved key {_ARRAY_TAG!r}")
                out[k] = walk(x, f"{where}[{k!r}]")
            return out
        if isinstance(v, (list, tuple)):
            return [walk(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, np.generic):
            return v.item()
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        raise TypeError(f"payload{where} is a {type(v).__name__}; a result may hold numpy arrays, torch tensors, "
                        "None, bool, int, float, str and (nested) lists, tuples and str-keyed dicts of these")

    tree = walk(payload, "")
    text = json.dumps(tree, sort_keys=True, allow_nan=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{_JSON_MEMBER: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)})
    return buf.getvalue()


def decode_payload(data: bytes) -> Any:
    """Inverse of :func:`encode_payload` (tuples come back as lists)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    tree = json.loads(members.pop(_JSON_MEMBER).tobytes().decode("utf-8"))

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            if set(v) == {_ARRAY_TAG}:
                return members[v[_ARRAY_TAG]]
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(tree)


# ----------------------------------------------------------------------------- directory
def default_cache_dir() -> Path:
    """``$SGDNOISE_CACHE_DIR`` if set, else ``<repository root>/.cache/experiments`` (the current directory
    stands in for the repository root when the package is not imported from a checkout)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "sgdnoise").is_dir():
            return parent / ".cache" / "experiments"
    return Path.cwd() / ".cache" / "experiments"


WRITE_ATTEMPTS = 5  # tries to create an entry's directory and temporary file while a clear() may remove it


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- the cache
class ResultCache:
    """Results of experiment drivers on disk, keyed by experiment name, configuration and code version.

    ``get_or_compute(name, config, compute_fn, modules=(driver_module,))`` returns the stored payload when
    a valid entry exists and otherwise calls ``compute_fn()`` and stores what it returns. Counters:
    ``hits``, ``misses``, ``recomputed`` (a list of ``(path, reason)`` for corrupt entries that were
    deleted and recomputed) and ``store_failures`` (``(path, reason)`` for results that were computed and
    returned but could not be stored).
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0
        self.recomputed: list[tuple[Path, str]] = []
        self.store_failures: list[tuple[Path, str]] = []

    def __repr__(self) -> str:
        return f"ResultCache(root={str(self.root)!r})"

    # -- addressing
    def key(self, name: str, config: Any, *, modules: Iterable[Any] = (), extra: Iterable[str] = ()) -> str:
        """The sha256 key of ``(name, config, code_version(modules, extra))``."""
        return cache_key(_check_name(name), config, code_version(modules, extra))

    def path_for(self, name: str, config: Any, *, modules: Iterable[Any] = (), extra: Iterable[str] = ()) -> Path:
        """Where the entry for ``(name, config, code version)`` lives (whether or not it exists)."""
        return self.root / _check_name(name) / f"{self.key(name, config, modules=modules, extra=extra)}{SUFFIX}"

    # -- reading and writing
    def _read(self, path: Path, key: str) -> Any:
        raw = path.read_bytes()
        if not raw.startswith(MAGIC):
            raise CacheCorruption("bad magic line")
        end = raw.find(b"\n", len(MAGIC))
        if end < 0:
            raise CacheCorruption("truncated header")
        try:
            header = json.loads(raw[len(MAGIC):end].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CacheCorruption(f"unreadable header ({err})") from err
        if not isinstance(header, dict) or header.get("key") != key:
            raise CacheCorruption("header key does not match the requested entry")
        data = raw[end + 1:]
        if len(data) != header.get("size"):
            raise CacheCorruption(f"payload has {len(data)} bytes, header says {header.get('size')}")
        if hashlib.sha256(data).hexdigest() != header.get("sha256"):
            raise CacheCorruption("payload checksum mismatch")
        try:
            return decode_payload(data)
        except Exception as err:  # a checksum-valid but undecodable payload: treat as corrupt
            raise CacheCorruption(f"undecodable payload ({type(err).__name__}: {err})") from err

    def _write(self, path: Path, header: dict, data: bytes) -> None:
        header = {**header, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        head = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
        for attempt in range(WRITE_ATTEMPTS):
            # A concurrent clear() may remove the directory at any moment: between mkdir's own "exists" check and
            # its is_dir() (Path.mkdir(exist_ok=True) then raises FileExistsError), or before mkstemp (which
            # raises FileNotFoundError). Either way the directory is gone: create it again.
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=SUFFIX)
                break
            except (FileNotFoundError, FileExistsError):
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC)
                f.write(head)
                f.write(b"\n")
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(path.parent)

    def load(self, name: str, config: Any, *, modules: Iterable[Any] = (), extra: Iterable[str] = ()) -> Any:
        """The stored payload, or ``None`` if there is no valid entry (a corrupt one is deleted)."""
        found = self._load(name, config, tuple(modules), tuple(extra))
        return None if found is _MISSING else found

    def _load(self, name: str, config: Any, modules: tuple, extra: tuple) -> Any:
        version = code_version(modules, extra)
        key = cache_key(_check_name(name), config, version)
        path = self.root / name / f"{key}{SUFFIX}"
        if not path.is_file():
            return _MISSING
        try:
            return self._read(path, key)
        except FileNotFoundError:  # removed by a concurrent clear() after the check: simply absent
            return _MISSING
        except (CacheCorruption, OSError) as err:
            reason = str(err)
            log.warning("cache entry %s is corrupt (%s); deleting it and recomputing", path, reason)
            self.recomputed.append((path, reason))
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as unlink_err:  # e.g. a read-only file system: recompute all the same
                log.warning("could not delete the corrupt cache entry %s (%s)", path, unlink_err)
            return _MISSING

    def store(self, name: str, config: Any, payload: Any, *, modules: Iterable[Any] = (), extra: Iterable[str] = ()) -> Path:
        """Write ``payload`` as the entry for ``(name, config, code version)``; returns its path."""
        version = code_version(modules, extra)
        key = cache_key(_check_name(name), config, version)
        path = self.root / name / f"{key}{SUFFIX}"
        self._write(path, {"key": key, "name": name, "config": config_dict(config), "code_version": version},
                    encode_payload(payload))
        return path

    def get_or_compute(self, name: str, config: Any, compute_fn: Callable[[], Any], *, modules: Iterable[Any] = (),
                       extra: Iterable[str] = (), recompute: bool = False) -> Any:
        """The payload for ``(name, config, code version)``: loaded if a valid entry exists (and
        ``recompute`` is false), else ``compute_fn()``, stored and returned. If ``compute_fn`` raises,
        nothing is written. The returned payload is the decoded form of what is stored, so a fresh result
        and a cached one look the same (tuples as lists, tensors as numpy arrays).

        A computed result is never lost to a failed store: when writing fails (a read-only directory, a
        full disk, a concurrent :meth:`clear`) the result is returned all the same, and the failure is
        logged and recorded in ``store_failures`` as ``(path, reason)``; a payload the format cannot
        hold (e.g. a bfloat16 tensor) is returned as computed, with its reason recorded the same way."""
        modules, extra = tuple(modules), tuple(extra)
        version = code_version(modules, extra)
        key = cache_key(_check_name(name), config, version)
        path = self.root / name / f"{key}{SUFFIX}"
        if not recompute:
            found = self._load(name, config, modules, extra)
            if found is not _MISSING:
                self.hits += 1
                return found
        self.misses += 1
        payload = compute_fn()
        try:
            data = encode_payload(payload)
        except (TypeError, ValueError) as err:
            self._store_failed(path, f"the result cannot be stored ({err})")
            return payload
        try:
            self._write(path, {"key": key, "name": name, "config": config_dict(config), "code_version": version}, data)
        except OSError as err:
            self._store_failed(path, f"writing failed ({type(err).__name__}: {err})")
        return decode_payload(data)

    def _store_failed(self, path: Path, reason: str) -> None:
        log.warning("cache entry %s was not stored: %s; returning the computed result", path, reason)
        self.store_failures.append((path, reason))

    def entries(self, name: str | None = None) -> list[Path]:
        """The entry files, of one experiment or of all."""
        base = self.root / _check_name(name) if name is not None else self.root
        if not base.is_dir():
            return []
        pattern = f"*{SUFFIX}" if name is not None else f"*/*{SUFFIX}"
        return sorted(p for p in base.glob(pattern) if p.is_file() and not p.name.startswith(".tmp-"))

    def clear(self, name: str | None = None) -> int:
        """Delete the entries of experiment ``name`` (all experiments when ``None``) and leftover temporary
        files; returns how many entry files were removed. Other files under the root are left alone, and
        an experiment directory is removed only when it is empty afterwards.

        Safe against concurrent writers: a temporary file younger than ``TEMP_GRACE_S`` may belong to a
        store in progress and is kept (older ones are leftovers of a crashed writer), and files that vanish
        while it runs are skipped."""
        base = self.root / _check_name(name) if name is not None else self.root
        if not base.is_dir():
            return 0
        count = 0
        try:
            dirs = [base] if name is not None else [d for d in base.iterdir() if d.is_dir()]
        except FileNotFoundError:  # removed by a concurrent clear()
            return 0
        for d in dirs:
            try:
                files = list(d.iterdir())
            except FileNotFoundError:
                continue
            for f in files:
                try:
                    if not (f.is_file() and f.suffix == SUFFIX):
                        continue
                    temp = f.name.startswith(".tmp-")
                    if temp and time.time() - f.stat().st_mtime < TEMP_GRACE_S:
                        continue  # perhaps a store in progress
                    f.unlink()
                    count += not temp
                except FileNotFoundError:  # removed meanwhile (a writer's rename, another clear)
                    continue
            try:
                d.rmdir()
            except OSError:  # not empty: something else lives there
                pass
        return count
