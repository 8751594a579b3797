"""The book's numbers, reproduced: compare every glued value and ledger table of a build with a reference.

The book build (``make book``) executes each page once and keeps the executed notebook in its
jupyter-cache. Every glued value (every number quoted in the prose) and every ledger table of that
execution must equal the committed reference, ``results/book_numbers.json``, which an earlier build
wrote. Seeds are fixed everywhere, so a difference is either a defect (unseeded randomness, an
order-dependent or machine-dependent result) or an intended change of a result, which is then
committed with a new reference (``make snapshot``) and shows up, number by number, in the diff.

This replaces re-executing every page a second time (which doubled CI's time) and is stricter: the
reference was computed by another build, in another directory, at another time.

What must be identical is what a reader sees: each glued number as the page formats it
(``{glue:text}`name:.2f```) and each ledger table. Raw glued floats may differ in their last bits
(multithreaded BLAS reductions may add in a different order), so unformatted values are compared to a
relative 1e-12, far below any printed digit.

That holds for one number of threads. The reference records the ``OMP_NUM_THREADS`` of the build that wrote it;
a build with another number of threads adds its sums in another order, and chaotic or ill-conditioned results
then differ beyond 1e-12 (chapter 4's tail indices, for example, in their fifth digit). For such a build only the
values as the pages display them are compared, and the check says so.

Usage:
  ``python scripts/determinism_check.py [_build]``            compare the build with the reference
  ``python scripts/determinism_check.py --update [_build]``   write the reference from the build
  ``python scripts/determinism_check.py --reexecute [_build]``  execute every page again and compare
Exits 1, naming the page and the value, on any difference.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
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


def forced(page: Path) -> bool:
    """Whether ``page`` asks MyST-NB to run on every build (``mystnb: execution_mode: force`` in its front
    matter): then the execution cache holds no current record of it."""
    head = page.read_text(encoding="utf-8").split("\n---", 1)[0]
    return bool(re.search(r"^mystnb:\s*\n(?:\s+#.*\n)*\s+execution_mode:\s*force\b", head, re.M))


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


THREADS_KEY = "_build_threads"


def build_threads() -> str:
    return os.environ.get("OMP_NUM_THREADS", "unset")


def same(key: str, a, b, formats: dict[str, set[str]], raw: bool = True) -> bool:
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
    return not raw or abs(x - y) <= 1e-12 * max(abs(x), abs(y))


def cell_timeout() -> int:
    """The book's own cell timeout (``execute.timeout`` in ``_config.yml``): one safety net for both runs."""
    return int(yaml.safe_load((Path(__file__).resolve().parents[1] / "_config.yml").read_text())["execute"]["timeout"])


REFERENCE = Path(__file__).resolve().parents[1] / "results" / "book_numbers.json"


def built_facts(build: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """``{page: facts}`` from the build's execution cache, and the pages missing from it."""
    cache = get_cache(str(Path(build) / ".jupyter_cache"))
    records = cache.list_cache_records()
    out, missing = {}, []
    for page in notebook_pages():
        if forced(page):  # executed on every build, outside the cache: its executed copy is in jupyter_execute
            executed = Path(build) / "jupyter_execute" / page.with_suffix(".ipynb")
            if not executed.exists():
                missing.append(f"{page}: no executed copy at {executed} (build the book first)")
                continue
            import nbformat

            found = facts(nbformat.read(str(executed), as_version=4))
            glued = executed.with_suffix(".glue.json")  # MyST-NB moves the glued outputs there
            if glued.exists():
                for name, o in json.loads(glued.read_text(encoding="utf-8")).items():
                    if not name.endswith("-runtime") and "text/plain" in o.get("data", {}):
                        found[f"glue {name}"] = o["data"]["text/plain"]
            out[str(page)] = found
            continue
        uri = str(page.resolve())
        mine = [r for r in records if r.uri == uri]
        if not mine:
            missing.append(f"{page}: not in the build's execution cache (build the book first)")
            continue
        out[str(page)] = facts(cache.get_cache_bundle(max(mine, key=lambda r: r.created).pk).nb)
    return out, missing


def compare(page: str, built: dict, other: dict, what: str, raw: bool = True) -> list[str]:
    formats = displayed_formats(Path(page))
    diffs = [k for k in sorted(set(built) | set(other)) if not same(k, built.get(k), other.get(k), formats, raw)]
    print(f"determinism_check: {page}: {len(built)} glued values and ledger tables compared with the {what}, "
          f"{len(diffs)} differ")
    return [f"{page}: {k}: build {str(built.get(k))[:300]!r} != {what} {str(other.get(k))[:300]!r}" for k in diffs]


def write_reference(pages: dict) -> None:
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".book_numbers.", suffix=".tmp", dir=REFERENCE.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({THREADS_KEY: build_threads()} | pages, fh, indent=1, sort_keys=True, ensure_ascii=False)
        fh.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp creates 0o600; the reference is committed
    os.replace(tmp, REFERENCE)


def main(*argv: str) -> int:
    mode = "compare"
    args = list(argv)
    for flag in ("--update", "--reexecute"):
        if flag in args:
            args.remove(flag)
            mode = flag[2:]
    build = args[0] if args else "_build"
    pages, failures = built_facts(build)
    if mode == "update":
        if failures:
            for f in failures:
                print("determinism_check: FAIL", f, file=sys.stderr)
            return 1
        write_reference(pages)
        print(f"determinism_check: wrote {REFERENCE} ({sum(len(v) for v in pages.values())} values, {len(pages)} pages)")
        return 0
    if mode == "reexecute":
        for page, built in pages.items():
            nb = jupytext.read(page)
            nbclient.NotebookClient(nb, timeout=cell_timeout(), kernel_name="python3",
                                    resources={"metadata": {"path": str(Path(page).parent)}}).execute()
            failures += compare(page, built, facts(nb), "re-execution")
    else:
        if not REFERENCE.exists():
            failures.append(f"no reference at {REFERENCE}: run `make snapshot` after a build and commit it")
            reference = {}
        else:
            reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
        ref_threads = reference.pop(THREADS_KEY, None)
        raw = ref_threads in (None, build_threads())
        if not raw:
            print(f"determinism_check: the reference was written by a build with OMP_NUM_THREADS={ref_threads} and this "
                  f"one ran with {build_threads()}; sums add in another order, so only the values as the pages display "
                  "them are compared (not their raw digits)")
        for page, built in pages.items():
            if page not in reference:
                failures.append(f"{page}: not in the reference {REFERENCE.name}; run `make snapshot` and commit it")
                continue
            failures += compare(page, built, reference[page], "reference", raw)
        for page in sorted(set(reference) - set(pages)):
            failures.append(f"{page}: in the reference but not a page of the book any more; run `make snapshot`")
    for f in failures:
        print("determinism_check: FAIL", f, file=sys.stderr)
    if failures and mode == "compare":
        print("determinism_check: if these changes are intended, run `make snapshot` and commit "
              "results/book_numbers.json with the change that caused them", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
