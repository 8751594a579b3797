"""Re-execute every notebook page of the book from scratch and compare with the build's execution.

The book build (``make book``) executes each page once and keeps the executed notebook in its
jupyter-cache. This script executes each page again, in a fresh kernel, and requires that every
glued value (every number quoted in the prose) and every ledger table comes out identical. Seeds are
fixed everywhere, so any difference is a defect: unseeded randomness, or an order-dependent result.

What must be identical is what a reader sees: each glued number as the page formats it
(``{glue:text}`name:.2f```) and each ledger table. Raw glued floats may differ in their last bits between
two runs (multithreaded BLAS reductions may add in a different order), so unformatted values are compared
to a relative 1e-12, far below any printed digit.

Usage: ``python scripts/determinism_check.py [_build]``; exits 1, naming the page and the value.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import jupytext
import nbclient
import yaml
from jupyter_cache import get_cache

GLUE_MIME = "application/papermill.record/text/plain"


def notebook_pages() -> list[Path]:
    toc = yaml.safe_load(Path("_toc.yml").read_text())
    files = [toc["root"]] + [ch["file"] for part in toc.get("parts", []) for ch in part.get("chapters", [])]
    pages = []
    for f in files:
        path = Path(f + ".md")
        if path.exists() and "kernelspec:" in path.read_text(encoding="utf-8")[:400]:
            pages.append(path)
    return pages


def facts(nb) -> dict[str, str]:
    """Glued values by name, plus the plain-text outputs of the cells that render ledger tables (in order).

    Glued run times (names ending in ``-runtime``) are measurements of the machine, not results, and are
    left out.
    """
    out = {}
    tables = 0
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            scrap = o.get("metadata", {}).get("scrapbook")
            if scrap and GLUE_MIME in o.get("data", {}):
                if not scrap["name"].endswith("-runtime"):
                    out[f"glue {scrap['name']}"] = o["data"][GLUE_MIME]
            elif cell.cell_type == "code" and ("ledger_table" in cell.source or "rows_with_links(" in cell.source):
                data = o.get("data", {})
                text = data.get("text/html") or data.get("text/plain")
                if text:
                    tables += 1
                    out[f"ledger table {tables}"] = text
    return out


def displayed_formats(page: Path) -> dict[str, set[str]]:
    """``{name: {format specs}}`` for every ``{glue:text}`name:spec``` role in the page's source."""
    out: dict[str, set[str]] = {}
    for name, spec in re.findall(r"\{glue:text\}`([^`:]+):?([^`]*)`", page.read_text(encoding="utf-8")):
        out.setdefault(f"glue {name}", set()).add(spec)
    return out


def same(key: str, a, b, formats: dict[str, set[str]]) -> bool:
    if a == b:
        return True
    if a is None or b is None or not key.startswith("glue "):
        return False
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    for spec in formats.get(key, ()):  # what the reader sees must match exactly
        if format(x, spec) != format(y, spec):
            return False
    return abs(x - y) <= 1e-12 * max(abs(x), abs(y))


def cell_timeout() -> int:
    """The book's own cell timeout (``execute.timeout`` in ``_config.yml``): one safety net for both runs."""
    return int(yaml.safe_load((Path(__file__).resolve().parents[1] / "_config.yml").read_text())["execute"]["timeout"])


def main(build: str = "_build") -> int:
    cache = get_cache(str(Path(build) / ".jupyter_cache"))
    records = cache.list_cache_records()
    failures = []
    for page in notebook_pages():
        uri = str(page.resolve())
        mine = [r for r in records if r.uri == uri]
        if not mine:
            failures.append(f"{page}: not in the build's execution cache (build the book first)")
            continue
        built = facts(cache.get_cache_bundle(max(mine, key=lambda r: r.created).pk).nb)
        nb = jupytext.read(page)
        nbclient.NotebookClient(nb, timeout=cell_timeout(), kernel_name="python3",
                                resources={"metadata": {"path": str(page.parent)}}).execute()
        again = facts(nb)
        formats = displayed_formats(page)
        diffs = [k for k in sorted(set(built) | set(again)) if not same(k, built.get(k), again.get(k), formats)]
        for k in diffs:
            failures.append(f"{page}: {k}: build {str(built.get(k))[:300]!r} != re-execution {str(again.get(k))[:300]!r}")
        print(f"determinism_check: {page}: {len(built)} glued values and ledger tables compared, {len(diffs)} differ")
    for f in failures:
        print("determinism_check: FAIL", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
