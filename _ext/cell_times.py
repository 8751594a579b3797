"""The ``cell-times`` directive: per-page and per-cell execution times on the execution-statistics page.

Each executed page calls ``sgdnoise.book.record_cell_times("<page>")`` in its first cell; with
``SGDNOISE_CELL_TIMES`` set (``make book`` sets it to ``_build/cell_times``) that writes one JSON file per
page. The pages execute while Sphinx reads them, and the execution-statistics page is read before the
chapters, so the directive leaves a placeholder that is filled in when the doctrees are resolved (after every
page has run): a table with, for each page, the number of cells, their total time, and its slowest cells.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

ENV = "SGDNOISE_CELL_TIMES"
SLOWEST = 3


class cell_times_node(nodes.General, nodes.Element):
    pass


class CellTimes(SphinxDirective):
    has_content = False

    def run(self):
        return [cell_times_node()]


def _load(directory: Path) -> list[dict]:
    pages = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
            raise ValueError(f"{path}: not a cell-times record (expected an object with a 'cells' list)")
        pages.append(data)
    return pages


def _table(pages: list[dict]) -> nodes.table:
    header = ("page", "cells", "total (s)", f"slowest {SLOWEST} cells (s, first line)", "recorded")
    table = nodes.table(classes=["cell-times"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in (14, 5, 7, 60, 14):
        group += nodes.colspec(colwidth=width)

    def row(values):
        r = nodes.row()
        for v in values:
            entry = nodes.entry()
            if isinstance(v, nodes.Node):
                entry += v
            else:
                entry += nodes.paragraph(text=str(v))
            r += entry
        return r

    thead = nodes.thead()
    thead += row(header)
    group += thead
    body = nodes.tbody()
    for page in pages:
        cells = page["cells"]
        slow = sorted(cells, key=lambda c: -c["seconds"])[:SLOWEST]
        items = nodes.bullet_list()
        for c in slow:
            item = nodes.list_item()
            para = nodes.paragraph()
            para += nodes.Text(f"{c['seconds']:.1f} s, cell {c['index']}: ")
            para += nodes.literal(text=c["first_line"])
            item += para
            items += item
        body += row((page["page"], len(cells), f"{sum(c['seconds'] for c in cells):.1f}", items,
                     page.get("recorded", "")))
    group += body
    return table


def _fill(app, doctree, docname):
    found = list(doctree.findall(cell_times_node))
    if not found:
        return
    directory = Path(os.environ.get(ENV) or Path(app.outdir).parent / "cell_times")
    pages = _load(directory) if directory.is_dir() else []
    for node in found:
        if pages:
            node.replace_self(_table(pages))
        else:
            node.replace_self(nodes.paragraph(text=(
                f"No per-cell times were recorded in this build: set {ENV} to a directory before building "
                f"(make book does).")))


def setup(app):
    app.add_node(cell_times_node)
    app.add_directive("cell-times", CellTimes)
    app.connect("doctree-resolved", _fill)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
