import dataclasses
import errno
import logging
import os
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from sgdnoise.experiments.cache import (
    ResultCache,
    cache_key,
    code_version,
    config_dict,
    decode_payload,
    default_cache_dir,
    encode_payload,
)


@dataclasses.dataclass(frozen=True)
class Cfg:
    p: int = 7
    lr: float = 0.5
    name: str = "gd"
    sizes: tuple = (1, 2)


def payload():
    return {"x": np.arange(5.0), "t": torch.ones(3), "n": 3, "f": 0.25, "none": None, "flag": True, "s": "ok",
            "nested": {"a": [1, 2, np.float32(1.5)], "arr": [np.zeros((2, 2), dtype=np.float32)]}, "tup": (1, 2)}


def check_payload(out):
    np.testing.assert_array_equal(out["x"], np.arange(5.0))
    np.testing.assert_array_equal(out["t"], np.ones(3, dtype=np.float32))
    assert out["n"] == 3 and out["f"] == 0.25 and out["none"] is None and out["flag"] is True and out["s"] == "ok"
    assert out["nested"]["a"] == [1, 2, 1.5] and out["tup"] == [1, 2]
    assert out["nested"]["arr"][0].dtype == np.float32 and out["nested"]["arr"][0].shape == (2, 2)


def test_payload_round_trip():
    check_payload(decode_payload(encode_payload(payload())))
    with pytest.raises(TypeError, match="payload\\['bad'\\] is a set"):
        encode_payload({"bad": {1}})


def test_get_or_compute_round_trip_and_hit(tmp_path):
    cache = ResultCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return payload()

    check_payload(cache.get_or_compute("exp", Cfg(), compute))
    check_payload(cache.get_or_compute("exp", Cfg(), compute))
    assert len(calls) == 1 and cache.hits == 1 and cache.misses == 1
    path = cache.path_for("exp", Cfg())
    assert path.is_file() and path.parent == tmp_path / "exp"
    assert cache.entries() == [path] and cache.entries("exp") == [path]
    # a fresh cache object on the same directory finds the entry
    assert ResultCache(tmp_path).load("exp", Cfg())["n"] == 3
    assert cache.clear() == 1 and not path.exists()
    assert ResultCache(tmp_path).load("exp", Cfg()) is None


def test_key_changes_with_every_field_and_with_the_code(tmp_path):
    v = code_version(extra=["driver v1"])
    base = cache_key("exp", Cfg(), v)
    assert cache_key("exp", Cfg(), v) == base
    for change in [dict(p=8), dict(lr=0.25), dict(name="sgd"), dict(sizes=(1, 3)), dict(lr=1)]:
        assert cache_key("exp", dataclasses.replace(Cfg(), **change), v) != base, change
    assert cache_key("other", Cfg(), v) != base
    assert cache_key("exp", Cfg(), code_version(extra=["driver v2"])) != base
    # dict configs work and differ from the dataclass (whose class name is part of the key)
    assert cache_key("exp", {"p": 7}, v) != cache_key("exp", {"p": 8}, v)
    assert config_dict(Cfg())["__class__"] == "Cfg" and config_dict(Cfg())["sizes"] == [1, 2]


def test_code_version_follows_module_source(tmp_path):
    src = tmp_path / "driver.py"
    src.write_text("X = 1\n")
    v1 = code_version([src])
    assert code_version([str(src)]) == v1
    src.write_text("X = 2\n")
    assert code_version([src]) != v1
    import sgdnoise

    assert code_version([src]).startswith(sgdnoise.__version__ + "+")
    mod = types.ModuleType("no_source")
    with pytest.raises(ValueError, match="cannot read the source of module 'no_source'"):
        code_version([mod])
    # editing a module passed in invalidates the cached entry
    cache = ResultCache(tmp_path / "c")
    calls = []
    cache.get_or_compute("exp", Cfg(), lambda: calls.append(1) or {"v": 1}, modules=[src])
    src.write_text("X = 3\n")
    cache.get_or_compute("exp", Cfg(), lambda: calls.append(1) or {"v": 1}, modules=[src])
    assert len(calls) == 2


@pytest.mark.parametrize("damage", ["flip", "truncate", "header", "swap"])
def test_corrupt_entry_is_detected_deleted_and_recomputed(tmp_path, damage, caplog):
    cache = ResultCache(tmp_path)
    cache.get_or_compute("exp", Cfg(), payload)
    path = cache.path_for("exp", Cfg())
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[-40] ^= 0xFF
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "header":
        raw[5] ^= 0x01
    else:  # a valid entry of another configuration put in this one's place
        cache.get_or_compute("exp", Cfg(p=9), payload)
        raw = bytearray(cache.path_for("exp", Cfg(p=9)).read_bytes())
    path.write_bytes(bytes(raw))
    calls = []
    with caplog.at_level(logging.WARNING, logger="sgdnoise.experiments.cache"):
        out = cache.get_or_compute("exp", Cfg(), lambda: calls.append(1) or payload())
    check_payload(out)
    assert calls == [1]
    assert len(cache.recomputed) == 1 and cache.recomputed[0][0] == path
    assert "corrupt" in caplog.text
    # the rewritten entry is valid again
    assert ResultCache(tmp_path).get_or_compute("exp", Cfg(), lambda: pytest.fail("recomputed"))["n"] == 3


def test_nothing_written_when_compute_raises(tmp_path):
    cache = ResultCache(tmp_path)

    def boom():
        raise RuntimeError("compute failed")

    with pytest.raises(RuntimeError, match="compute failed"):
        cache.get_or_compute("exp", Cfg(), boom)
    assert not cache.path_for("exp", Cfg()).exists()
    assert not tmp_path.exists() or not any(tmp_path.rglob("*"))


def test_write_is_atomic_when_the_final_move_fails(tmp_path, monkeypatch):
    cache = ResultCache(tmp_path)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):  # an explicit store reports the failure by raising
        cache.store("exp", Cfg(), payload())
    assert list((tmp_path / "exp").iterdir()) == []  # the temporary file is gone, no entry exists
    # get_or_compute keeps the computed result: returned as a stored one would be, the failure recorded
    got = cache.get_or_compute("exp", Cfg(), payload)
    assert_same(got, cache_roundtrip(payload()))
    assert len(cache.store_failures) == 1 and "disk full" in cache.store_failures[0][1]
    assert list((tmp_path / "exp").iterdir()) == []


def cache_roundtrip(p):
    return decode_payload(encode_payload(p))


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("err", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_a_failed_store_never_loses_the_result(tmp_path, monkeypatch, err):
    """Read-only directory, full disk, no permission (simulated: the tests run as root, which
    ignores permission bits): the computed result comes back and the failure is recorded."""
    import sgdnoise.experiments.cache as cache_mod

    cache = ResultCache(tmp_path)

    def refuse(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(cache_mod.tempfile, "mkstemp", refuse)
    calls = []
    got = cache.get_or_compute("exp", Cfg(), lambda: calls.append(1) or payload())
    assert_same(got, cache_roundtrip(payload()))
    assert calls == [1] and cache.misses == 1 and len(cache.store_failures) == 1
    assert os.strerror(err) in cache.store_failures[0][1]


def test_unsupported_payload_is_returned_and_reported(tmp_path):
    cache = ResultCache(tmp_path)
    result = {"w": torch.ones(3, dtype=torch.bfloat16)}
    got = cache.get_or_compute("exp", Cfg(), lambda: result)
    assert got is result and len(cache.store_failures) == 1
    assert "cannot be stored" in cache.store_failures[0][1] and cache.entries("exp") == []


def test_corrupt_entry_on_a_read_only_file_system_is_recomputed(tmp_path, monkeypatch):
    import sgdnoise.experiments.cache as cache_mod

    cache = ResultCache(tmp_path)
    path = cache.store("exp", Cfg(), payload())
    path.write_bytes(path.read_bytes()[:-5])  # truncated

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(cache_mod.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    got = cache.get_or_compute("exp", Cfg(), payload)
    assert_same(got, cache_roundtrip(payload()))
    assert len(cache.recomputed) == 1 and len(cache.store_failures) == 1


def test_clear_between_a_writers_steps_fails_neither(tmp_path, monkeypatch):
    """clear() runs at the worst moments of a store: after the temporary file is written, and after the
    directory was emptied; the store completes, clear() raises nothing, and the entry is there after."""
    cache, other = ResultCache(tmp_path), ResultCache(tmp_path)
    real_replace = os.replace

    def replace_after_a_clear(src, dst):
        other.clear()  # the writer's young temporary file is kept, so the rename still works
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_after_a_clear)
    got = cache.get_or_compute("exp", Cfg(), payload)
    assert_same(got, cache_roundtrip(payload()))
    assert cache.store_failures == [] and len(cache.entries("exp")) == 1
    monkeypatch.setattr(os, "replace", real_replace)
    # the directory removed between mkdir and mkstemp: the writer makes it again
    import sgdnoise.experiments.cache as cache_mod

    real_mkstemp, removed = cache_mod.tempfile.mkstemp, []

    def mkstemp_after_rmdir(*args, **kwargs):
        if not removed:
            removed.append(other.clear("exp2"))
            (tmp_path / "exp2").rmdir()
        return real_mkstemp(*args, **kwargs)

    (tmp_path / "exp2").mkdir()
    monkeypatch.setattr(cache_mod.tempfile, "mkstemp", mkstemp_after_rmdir)
    cache.get_or_compute("exp2", Cfg(), payload)
    assert cache.store_failures == [] and len(cache.entries("exp2")) == 1


def test_clear_racing_writers_in_threads(tmp_path):
    import threading

    cache, errors = ResultCache(tmp_path), []

    def writer():
        try:
            for i in range(40):
                cache.get_or_compute("exp", Cfg(p=i), payload, recompute=True)
        except Exception as e:  # noqa: BLE001 -- collected and asserted empty below
            errors.append(e)

    def clearer():
        try:
            for _ in range(200):
                ResultCache(tmp_path).clear()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer), threading.Thread(target=clearer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and cache.store_failures == []


def test_clear_removes_old_temporary_files(tmp_path):
    cache = ResultCache(tmp_path)
    cache.store("exp", Cfg(), payload())
    old = tmp_path / "exp" / ".tmp-abandoned.sgdc"
    old.write_bytes(b"x")
    os.utime(old, (0, 0))
    young = tmp_path / "exp" / ".tmp-inflight.sgdc"
    young.write_bytes(b"x")
    assert cache.clear("exp") == 1
    assert not old.exists() and young.exists()


def test_cache_directory_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDNOISE_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert ResultCache().root == tmp_path / "env"
    monkeypatch.delenv("SGDNOISE_CACHE_DIR")
    d = default_cache_dir()
    assert d.parts[-2:] == (".cache", "experiments")
    assert ResultCache(tmp_path / "x").root == tmp_path / "x"


def test_bad_names_and_configs(tmp_path):
    cache = ResultCache(tmp_path)
    with pytest.raises(ValueError, match="experiment name '../up'"):
        cache.path_for("../up", Cfg())
    with pytest.raises(TypeError, match="config is a list"):
        cache.path_for("exp", [1, 2])
    with pytest.raises(TypeError, match="config.f is a builtin_function_or_method"):
        cache.path_for("exp", {"f": print})


def test_directory_removed_inside_mkdir_is_recreated(tmp_path, monkeypatch):
    """The race that failed CI under load: clear() removes the directory between Path.mkdir's "exists" check and
    its is_dir(), so mkdir(exist_ok=True) raises FileExistsError. The writer must create it again."""
    from pathlib import Path

    cache, real_mkdir, calls = ResultCache(tmp_path), Path.mkdir, []

    def racing_mkdir(self, *args, **kwargs):
        calls.append(self)
        if len(calls) == 1:
            raise FileExistsError(17, "File exists", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    out = cache.get_or_compute("exp", Cfg(p=1), payload)
    assert cache.store_failures == [] and len(calls) == 2
    monkeypatch.undo()
    assert cache.load("exp", Cfg(p=1)) is not None and out is not None
