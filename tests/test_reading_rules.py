"""The reading rules of DESIGN.md, on the chapters' source (issue 15): no bookkeeping in the main text.

A code cell a reader sees (no hide/remove tag) teaches: it ends in its figure or table. The lines that glue a
number into the prose or assert a verdict belong in a hidden cell (``hide-input`` for asserts, ``remove-cell``
for glue), exercise solutions included: their self-check is one click away like every other.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))
CELL = re.compile(r"```\{code-cell\} ipython3\n(.*?)```\n", re.S)
HIDDEN = ("remove-cell", "hide-input", "remove-input", "hide-cell")
BOOKKEEPING = re.compile(r"^\s*(glue\w*\(|assert\b)|#.*\b(verdicts? below|checked against the data)", re.I)


def code_cells(text: str):
    """(line number of the cell's fence, its body, its options: the YAML block or the ``:key:`` lines) for
    every code cell of a chapter's source."""
    for m in CELL.finditer(text):
        body = m.group(1)
        head = body.split("\n---\n", 1)[0] if body.startswith("---\n") else "\n".join(
            line for line in body.split("\n") if line.startswith(":"))
        yield text[: m.start()].count("\n") + 1, body, head


def visible_bookkeeping(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every glue/assert line in a code cell a reader sees."""
    found = []
    for fence, body, head in code_cells(text):
        if any(tag in head for tag in HIDDEN):
            continue
        found += [(fence + 1 + i, line) for i, line in enumerate(body.split("\n")) if BOOKKEEPING.search(line)]
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_no_glue_or_assert_in_visible_cells(path):
    found = visible_bookkeeping(path.read_text(encoding="utf-8"))
    assert not found, "\n".join(f"{path.name}:{n}: {line.strip()}" for n, line in found)


def test_the_rule_catches_a_visible_glue_or_assert_and_spares_hidden_cells():
    visible = "```{code-cell} ipython3\nx = 1\nglue('x', x)\n```\n"
    hidden = "```{code-cell} ipython3\n:tags: [remove-cell]\n\nassert x == 1\n```\n"
    yaml_hidden = "```{code-cell} ipython3\n---\ntags: [hide-input]\n---\nassert x\n```\n"
    solution = "```{solution-start} ex\n```\n" + visible.replace("glue('x', x)", "assert x == 1") + "```{solution-end}\n```\n"
    assert [n for n, _ in visible_bookkeeping("text\n" + visible)] == [4]
    assert visible_bookkeeping(hidden + yaml_hidden) == []
    assert visible_bookkeeping(solution)  # a solution's visible assert is caught too
    assert visible_bookkeeping("```{code-cell} ipython3\ny = 2\n# The verdicts below: ...\n```\n")


FIGURE = re.compile(r"plt\.(subplots|figure)\(")


def uncaptioned_figures(text: str) -> list[tuple[int, str]]:
    """(line number, first line) of every code cell that draws a figure without a numbered caption and a
    hidden input (issue 15: figures in chapters 4–6 had neither)."""
    found = []
    for fence, body, head in code_cells(text):
        if not FIGURE.search(body):
            continue
        ok = "hide-input" in head and re.search(r"figure:\n\s+caption:", head) and re.search(r"\n\s+name: fig-", head)
        if not ok:
            found.append((fence, next((ln for ln in body.split("\n") if FIGURE.search(ln)), "")))
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_figure_is_numbered_captioned_and_its_code_hidden(path):
    found = uncaptioned_figures(path.read_text(encoding="utf-8"))
    assert not found, "\n".join(f"{path.name}:{n}: {line.strip()}" for n, line in found)


def test_the_figure_rule_catches_a_bare_figure():
    bare = "```{code-cell} ipython3\nfig, ax = plt.subplots()\n```\n"
    good = ("```{code-cell} ipython3\n---\ntags: [hide-input]\nmystnb:\n  figure:\n    caption: |\n      A.\n"
            "    name: fig-x\n---\nfig, ax = plt.subplots()\n```\n")
    assert uncaptioned_figures(bare) and not uncaptioned_figures(good)
    assert uncaptioned_figures(good.replace("tags: [hide-input]\n", ""))  # caption but visible plotting code


AXIS_TEXT = re.compile(r"""(?:xlabel|ylabel|title|label)\s*=\s*r?f?(["'])(.*?)\1""")


def raw_subscripts(text: str) -> list[tuple[int, str]]:
    """Axis labels, titles and legend labels with an underscore outside $...$ (issue 15: "E[tr Σ_emp]" or
    "η λ_max" printed raw instead of as mathematics)."""
    found = []
    for fence, body, _ in code_cells(text):
        for i, line in enumerate(body.split("\n")):
            for lab in AXIS_TEXT.finditer(line):
                outside = re.sub(r"\$[^$]*\$", "", lab.group(2))
                outside = re.sub(r"\{[^{}]*\}", "", outside)  # f-string fields are code, not text
                if re.search(r"[A-Za-zΣλη]_", outside):
                    found.append((fence + 1 + i, lab.group(2)))
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_figure_labels_render_subscripts_as_mathematics(path):
    found = raw_subscripts(path.read_text(encoding="utf-8"))
    assert not found, "\n".join(f"{path.name}:{n}: {lab}" for n, lab in found)


def test_the_label_rule_catches_a_raw_subscript():
    assert raw_subscripts('```{code-cell} ipython3\nax.set(ylabel="E[tr Σ_emp]")\n```\n')
    assert not raw_subscripts('```{code-cell} ipython3\nax.set(ylabel=r"$\\Sigma_{\\rm emp}$", title=f"{a_b}")\n```\n')
