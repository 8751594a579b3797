"""After `jupyter-book build`: every page of _toc.yml was rendered, and no page shows a traceback.

Sphinx's -W catches warnings and nb_execution_raise_on_error catches failing cells; this is the
last line of defence against a page that silently rendered an error as output.
"""

import json
import os
import re
import sys
from pathlib import Path

import yaml


def toc_files(toc: dict) -> list[str]:
    files = [toc["root"]]
    for part in toc.get("parts", []):
        for ch in part.get("chapters", []):
            files.append(ch["file"])
            files += [s["file"] for s in ch.get("sections", [])]
    return files


BUDGET_S = 90  # per page on the CI machine (DESIGN.md); reported, not enforced: a slower machine must not fail


def report_times(directory: Path) -> None:
    """Print each page's recorded cell time, and the pages over the budget (information for the note)."""
    if not directory.is_dir():
        print(f"check_build: no per-cell times in {directory}")
        return
    totals = {}
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        totals[data["page"]] = sum(c["seconds"] for c in data["cells"])
    print("check_build: page times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in totals.items()))
    over = [k for k, v in totals.items() if v > BUDGET_S]
    print(f"check_build: over the {BUDGET_S} s budget: {', '.join(over) if over else 'none'}")


def check_students(html: Path, files: list[str]) -> list[str]:
    """The students' build: every exercise is there, and no solution (of either kind) is left."""
    problems, exercises = [], 0
    for f in files:
        page = html / (Path(f).with_suffix("").as_posix() + ".html")
        if not page.exists():
            continue
        text = page.read_text(encoding="utf-8")
        exercises += len(re.findall(r'class="[^"]*\bexercise\b', text))
        if re.search(r'class="[^"]*\bsolution\b', text):
            problems.append(f"{f}: a solution is still rendered in the students' build")
    sources = sum(len(re.findall(r"^`{3,}\{exercise\}", Path(f + ".md").read_text(encoding="utf-8"), re.M))
                  for f in files if Path(f + ".md").exists())
    if exercises < sources:
        problems.append(f"the students' build renders {exercises} exercises; the sources have {sources}")
    print(f"check_build: students' build: {exercises} exercises rendered, solutions checked")
    return problems


def main(build: str, students: bool = False) -> int:
    html = Path(build) / "html"
    toc = yaml.safe_load(Path("_toc.yml").read_text())
    problems = check_students(html, toc_files(toc)) if students else []
    for f in toc_files(toc):
        page = html / (Path(f).with_suffix("").as_posix() + ".html")
        if not page.exists():
            problems.append(f"{f}: no rendered page at {page}")
            continue
        text = page.read_text(encoding="utf-8")
        if "Traceback (most recent call last)" in text:
            problems.append(f"{f}: a cell output shows a traceback")
        # A warning printed by a cell (stderr) is a defect too; progress bars on stderr are not.
        for m in re.finditer(r'class="output stderr', text):
            block = text[m.start() : m.start() + 4000].split("</pre>")[0]
            if "Warning" in block:
                problems.append(f"{f}: a cell printed a warning: {re.sub('<[^>]+>', '', block)[:200]!r}")
        # A chapter's download link must reach its student notebook, with no MyST left in its text.
        for link in re.findall(r'href="(\.\./_static/notebooks/[^"]+\.ipynb)"', text):
            target = (page.parent / link).resolve()
            if not target.exists():
                problems.append(f"{f}: the download link {link} has no notebook behind it")
                continue
            cells = json.loads(target.read_text(encoding="utf-8"))["cells"]
            md = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
            left = re.search(r"\{[a-z]+(?::[a-z]+)?\}`|^(`{3,}|:{3,})\{", md, re.M)
            if left:
                problems.append(f"{f}: its student notebook still has MyST: {md[left.start():left.start() + 60]!r}")
    report_times(Path(os.environ.get("SGDNOISE_CELL_TIMES") or Path(build) / "cell_times"))
    for p in problems:
        print("check_build:", p, file=sys.stderr)
    print(f"check_build: {len(toc_files(toc))} pages checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--students"]
    sys.exit(main(args[0] if args else "_build", students="--students" in sys.argv[1:]))
