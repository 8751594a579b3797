"""The chapters as notebooks for plain Jupyter (scripts/student_notebook.py): no MyST left in their text, the
build's numbers in place of the glue roles, and a notebook that runs top to bottom in a fresh kernel."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("student_notebook", ROOT / "scripts" / "student_notebook.py")
student = importlib.util.module_from_spec(spec)
sys.modules["student_notebook"] = student
spec.loader.exec_module(student)

NUMBERS = json.loads((ROOT / "results" / "book_numbers.json").read_text(encoding="utf-8"))
CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))
MYST = re.compile(r"\{[a-z]+(?::[a-z]+)?\}`|^(`{3,}|:{3,})\{|^\([\w:.-]+\)=", re.M)


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_exports_without_myst(md, tmp_path):
    nb = student.export(md, tmp_path / "out.ipynb", NUMBERS)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert not MYST.search(text), MYST.search(text)
    assert nb.cells[0].source.startswith("# How to run this notebook") and "make setup" in nb.cells[0].source
    # each glued number appears as the page formats it
    page = f"chapters/{md.name}"
    src = md.read_text(encoding="utf-8")
    name, fmt = re.search(r"\{glue:text\}`([^`:]+):([^`]+)`", src).groups()
    value = format(float(NUMBERS[page][f"glue {name}"]), fmt)
    assert value in text
    # the code is the page's code, cell for cell
    assert [c.source for c in nb.cells if c.cell_type == "code"] == [
        c.source for c in student.jupytext.read(md).cells if c.cell_type == "code"]


def test_unknown_myst_and_missing_values_are_errors_not_raw_text(tmp_path):
    ex = student.Exporter(NUMBERS, "chapters/01_gradient_noise.md")
    with pytest.raises(student.ExportError, match=r"unknown role \{term\}"):
        ex.markdown("see {term}`noise`")
    with pytest.raises(student.ExportError, match=r"unknown directive \{figure\}"):
        ex.markdown("```{figure} a.png\n:name: x\n\ncaption\n```\n")
    with pytest.raises(student.ExportError, match="glued value 'no-such-number' is not in"):
        ex.markdown("{glue:text}`no-such-number:.2f`")
    # the failing variant of the leftover check: a role the rewriting missed is caught
    assert MYST.search("{doc}`x`") and not MYST.search(ex.markdown("{doc}`02_continuous_limit`"))


def test_a_student_notebook_runs_top_to_bottom_in_a_fresh_kernel(tmp_path):
    """Chapter 3 (the fastest chapter) exported, then executed from a directory outside the repository, as a
    student who downloaded it would: every cell runs."""
    import nbclient

    path = tmp_path / "03_fokker_planck.ipynb"
    student.export(ROOT / "chapters" / "03_fokker_planck.md", path, NUMBERS)
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_solutions_can_be_left_out_and_only_they_are(tmp_path):
    md = ROOT / "chapters" / "01_gradient_noise.md"
    full = student.export(md, tmp_path / "a.ipynb", NUMBERS)
    bare = student.export(md, tmp_path / "b.ipynb", NUMBERS, solutions=False)
    text = lambda nb: "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")  # noqa: E731
    n_ex = md.read_text(encoding="utf-8").count("```{exercise}")
    assert text(full).count("**Solution.**") == n_ex and "**Solution.**" not in text(bare)
    assert text(bare).count("**Exercise:") == n_ex
    # the solutions' code cells go too, and nothing else: every code cell of the bare notebook is in the full one
    full_code = [c.source for c in full.cells if c.cell_type == "code"]
    bare_code = [c.source for c in bare.cells if c.cell_type == "code"]
    assert len(bare_code) < len(full_code) and all(c in full_code for c in bare_code)
    # the failing variant: an unterminated solution is an error, not a silently truncated notebook
    broken = [student.nbformat.v4.new_markdown_cell("```{solution-start} x\n:class: dropdown\n```\ntext")]
    with pytest.raises(student.ExportError, match="no solution-end"):
        student.drop_solutions(broken)
