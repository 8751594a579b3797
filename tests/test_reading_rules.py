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


def visible_bookkeeping(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every glue/assert line in a code cell a reader sees."""
    found = []
    for m in CELL.finditer(text):
        body = m.group(1)
        head = body.split("\n---\n", 1)[0] if body.startswith("---\n") else "\n".join(
            line for line in body.split("\n") if line.startswith(":"))
        if any(tag in head for tag in HIDDEN):
            continue
        first = text[: m.start()].count("\n") + 2
        found += [(first + i, line) for i, line in enumerate(body.split("\n")) if BOOKKEEPING.search(line)]
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
