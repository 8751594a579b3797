import numpy as np
import pytest
import torch

from sgdnoise.book import as_python_scalar


@pytest.mark.parametrize(
    "value, expected, typ",
    [(np.float64(1.5), 1.5, float), (np.int64(3), 3, int), (torch.tensor(2.5), 2.5, float), (torch.tensor(4), 4, int), (np.bool_(True), True, bool), ("x", "x", str)],
)
def test_as_python_scalar(value, expected, typ):
    out = as_python_scalar(value)
    assert out == expected and type(out) is typ


def test_rejects_non_scalars_and_non_finite():
    with pytest.raises(TypeError):
        as_python_scalar(np.arange(3))
    with pytest.raises(ValueError, match="non-finite"):
        as_python_scalar(float("nan"))


# ------------------------------------------------------------------ per-cell execution times (issue 15)
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from sgdnoise import book  # noqa: E402


class FakeShell:
    """The two IPython events the recorder uses, fired by hand."""

    def __init__(self):
        self.events = SimpleNamespace(register=self._register)
        self.hooks = {}

    def _register(self, name, fn):
        self.hooks.setdefault(name, []).append(fn)

    def run_cell(self, source, seconds=0.0, ok=True):
        for fn in self.hooks.get("pre_run_cell", []):
            fn(SimpleNamespace(raw_cell=source))
        time.sleep(seconds)
        for fn in self.hooks.get("post_run_cell", []):
            fn(SimpleNamespace(success=ok))


def test_record_cell_times_writes_every_cell_with_its_time(tmp_path):
    shell = FakeShell()
    path = book.record_cell_times("01_x", tmp_path, shell=shell)
    assert path == tmp_path / "01_x.json" and json.loads(path.read_text())["cells"] == []
    shell.run_cell("# a comment\n\nx = slow()\n", seconds=0.05)
    shell.run_cell("# only a comment", ok=False)
    cells = json.loads(path.read_text())["cells"]
    assert [c["index"] for c in cells] == [0, 1]
    assert cells[0]["first_line"] == "x = slow()" and cells[0]["seconds"] >= 0.05 and cells[0]["ok"]
    assert cells[1]["first_line"] == "(comments only)" and not cells[1]["ok"]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_record_cell_times_is_off_without_a_directory_and_refuses_bad_pages(tmp_path, monkeypatch):
    monkeypatch.delenv(book.CELL_TIMES_ENV, raising=False)
    assert book.record_cell_times("01_x", shell=FakeShell()) is None
    monkeypatch.setenv(book.CELL_TIMES_ENV, str(tmp_path))
    assert book.record_cell_times("01_x", shell=FakeShell()) == tmp_path / "01_x.json"
    for bad in ("", "chapters/01_x", ".hidden"):
        with pytest.raises(ValueError, match="page="):
            book.record_cell_times(bad, tmp_path, shell=FakeShell())
    with pytest.raises(TypeError, match="page=3"):
        book.record_cell_times(3, tmp_path, shell=FakeShell())


def test_the_cell_times_table_lists_pages_and_their_slowest_cells(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_ext"))
    try:
        import cell_times
    finally:
        sys.path.pop(0)
    shell = FakeShell()
    book.record_cell_times("02_y", tmp_path, shell=shell)
    for k, s in enumerate((0.0, 0.03, 0.01, 0.02)):
        shell.run_cell(f"step{k}()", seconds=s)
    pages = cell_times._load(tmp_path)
    text = cell_times._table(pages).astext()
    assert "02_y" in text and "step1()" in text and "step3()" in text and "step0()" not in text
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a cell-times record"):
        cell_times._load(tmp_path)


def test_set_threads_follows_omp_num_threads(monkeypatch):
    import torch

    from sgdnoise.book import set_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_threads(default=2) == 2 and torch.get_num_threads() == 2
        for bad in ("two", "0"):
            monkeypatch.setenv("OMP_NUM_THREADS", bad)
            with pytest.raises(ValueError, match="OMP_NUM_THREADS"):
                set_threads()
    finally:
        torch.set_num_threads(before)
