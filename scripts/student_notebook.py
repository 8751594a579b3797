"""A chapter as a notebook a student can open in plain Jupyter: no MyST syntax left in its text.

The book's pages are MyST Markdown. Classic Jupyter and JupyterLab show MyST's roles and directives as raw
text, so the downloadable notebook of each chapter is exported with them rewritten as plain Markdown:

* glued numbers (``{glue:text}`name:fmt```, ``{glue:md}`name```) become the values of the build: after
  ``make book`` they are read from the build's executed pages (``--from-build``); without a build, from the
  committed reference ``results/book_numbers.json``, which the determinism check keeps equal to what a build
  computes. Glued run times (``-runtime``) are measurements of the machine and become a placeholder;
* cross-references become words: ``{doc}`` the page's title, ``{ref}``/``{numref}``/``{prf:ref}`` the
  target's name, ``{cite:t}``/``{cite:p}`` "Author (year)" from ``references.bib``;
* directives (exercises, solutions, propositions, proofs, admonitions) become bold headings and block quotes;
  label lines ``(name)=`` are dropped;
* a first cell says how to install ``sgdnoise`` and run the notebook.

A role or directive the exporter does not know raises an error naming it and the cell, so nothing is
silently left as raw MyST.

Usage: ``python scripts/student_notebook.py chapters/01_gradient_noise.md OUT.ipynb`` (values from the
reference), or ``python scripts/student_notebook.py --from-build _build [--no-solutions]``: every chapter, with the
values of that build, into ``_build/html/_static/notebooks/`` (where each chapter's download link points),
without the exercises' solutions if asked (the students' build).
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
NUMBERS = ROOT / "results" / "book_numbers.json"

FIRST_CELL = """\
# How to run this notebook

This is *{title}*, one chapter of **SGD noise, executed**, exported for plain Jupyter: the book's
cross-references are written out in words, and the numbers quoted in the text are those of the published build.
The code cells recompute them.

The cells need the book's package, `sgdnoise`, and its pinned dependencies (Python 3.11). From a copy of the
book's repository run

    make setup

which creates the virtual environment `.venv` with everything installed, then start Jupyter from it,

    .venv/bin/jupyter lab

and open this notebook (or choose `.venv/bin/python` as the kernel in your editor). Run the cells from the top:
later cells use what earlier ones computed. The rendered book explains every result in more detail.
"""

ROLE = re.compile(r"\{([a-z]+(?::[a-z]+)?)\}`([^`]*)`")
FENCE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<arg>[^\n]*)\n"
                   r"(?P<opts>(?:[ \t]*:[\w-]+:[^\n]*\n)*)(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
LABEL_LINE = re.compile(r"^\([\w:.-]+\)=[ \t]*\n", re.M)
PRF_NAMES = {"proposition": "Proposition", "definition": "Definition", "remark": "Remark", "theorem": "Theorem",
             "lemma": "Lemma", "corollary": "Corollary", "example": "Example"}


class ExportError(ValueError):
    """MyST the exporter cannot rewrite, or a glued value missing from the reference."""


def _bib_names(bib: str) -> dict[str, str]:
    """``{key: "Author et al. (year)"}`` from a BibTeX file (first author's surname, year)."""
    out = {}
    for m in re.finditer(r"@\w+\{([^,\s]+),(.*?)\n\}", bib, re.S):
        key, body = m.group(1), m.group(2)
        author = re.search(r"author\s*=\s*[{\"](.*?)[}\"],?\s*\n", body, re.S)
        year = re.search(r"year\s*=\s*[{\"]?(\d{4})", body)
        names = [a.strip() for a in re.sub(r"\s+", " ", author.group(1)).split(" and ")] if author else ["?"]
        surname = names[0].split(",")[0].strip() if "," in names[0] else names[0].split(" ")[-1]
        surname = surname.strip("{}")
        who = surname if len(names) == 1 else (f"{surname} and {names[1].split(',')[0].strip('{} ')}"
                                               if len(names) == 2 and "," in names[1] else f"{surname} et al.")
        out[key] = f"{who} ({year.group(1) if year else 'n.d.'})"
    return out


def _titles() -> dict[str, str]:
    """Page paths (without ``.md``, relative to the root) to their first heading."""
    out = {}
    for path in list(ROOT.glob("chapters/*.md")) + list(ROOT.glob("appendix/*.md")) + [ROOT / "intro.md"]:
        m = re.search(r"^# (.+)$", path.read_text(encoding="utf-8"), re.M)
        if m:
            out[str(path.relative_to(ROOT).with_suffix(""))] = m.group(1).strip()
    return out


def _labels() -> dict[str, str]:
    """Section labels ``(name)=`` to the heading that follows them, and exercise/figure labels to a name."""
    out = {}
    for path in list(ROOT.glob("chapters/*.md")) + list(ROOT.glob("appendix/*.md")):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"^\(([\w:.-]+)\)=[ \t]*\n#+ (.+)$", text, re.M):
            out[m.group(1)] = f"“{m.group(2).strip()}”"
        for m in re.finditer(r"^`{3,}\{exercise\}[ \t]*(.*)\n:label: ([\w-]+)", text, re.M):
            out[m.group(2)] = f"the exercise “{m.group(1).strip()}”"
        for m in re.finditer(r"^:{3,}\{prf:(\w+)\}[ \t]*(.*)\n:label: ([\w-]+)", text, re.M):
            out[m.group(3)] = f"{PRF_NAMES.get(m.group(1), m.group(1).title())} “{m.group(2).strip()}”"
    return out


class Exporter:
    def __init__(self, numbers: dict, page: str):
        self.numbers = numbers.get(page, {})
        self.page = page
        self.cites = _bib_names((ROOT / "references.bib").read_text(encoding="utf-8"))
        self.titles = _titles()
        self.labels = _labels()

    # ---------------------------------------------------------------- roles
    def _glue(self, name: str, fmt: str | None, md: bool) -> str:
        key = f"glue {name}-plain" if md else f"glue {name}"
        if name.endswith("-runtime"):  # a measurement of the machine, not a result: not in the reference
            return "[the time your run takes]"
        if key not in self.numbers:
            raise ExportError(f"{self.page}: glued value {name!r} is not in {NUMBERS.name}; build the book and run "
                              "`make snapshot`")
        raw = self.numbers[key]
        try:
            value = ast.literal_eval(raw) if isinstance(raw, str) else raw
        except (ValueError, SyntaxError):
            value = raw
        if fmt:
            try:
                return format(value, fmt)
            except (TypeError, ValueError) as err:
                raise ExportError(f"{self.page}: cannot format glued {name!r} = {value!r} with {fmt!r}") from err
        return str(value)

    def _role(self, m: re.Match) -> str:
        role, content = m.group(1), m.group(2)
        text, target = content, content
        explicit = re.fullmatch(r"(.*?)\s*<([^>]+)>", content, re.S)
        if explicit:
            text, target = explicit.group(1), explicit.group(2)
        if role in ("glue:text", "glue:md", "glue"):
            name, _, fmt = content.partition(":")
            return self._glue(name, fmt or None, role == "glue:md")
        if role == "doc":
            path = str((Path(self.page).parent / target).as_posix()) if not target.startswith("/") else target[1:]
            path = re.sub(r"\.md$", "", path.replace("chapters/../", ""))
            return text if explicit else f"“{self.titles.get(path, self.titles.get('chapters/' + target, target))}”"
        if role in ("ref", "numref", "prf:ref"):
            if explicit:
                return text
            if target.startswith("fig-"):
                return "the figure"
            return self.labels.get(target, f"“{target}”")
        if role in ("cite:t", "cite:p"):
            names = [self.cites.get(k.strip(), k.strip()) for k in target.split(",")]
            if role == "cite:t":
                return "; ".join(names)
            return "(" + "; ".join(n.replace(" (", ", ").rstrip(")") for n in names) + ")"
        raise ExportError(f"{self.page}: unknown role {{{role}}} in {m.group(0)!r}")

    # ---------------------------------------------------------------- directives
    def _directive(self, m: re.Match) -> str:
        name, arg, opts, body = m.group("name"), m.group("arg").strip(), m.group("opts"), m.group("body").strip("\n")
        if name == "exercise":
            return f"**Exercise: {arg}**\n\n{body}\n"
        if name == "solution-start":
            return "**Solution.**\n"
        if name == "solution-end":
            return ""
        if name.startswith("prf:"):
            kind = name[4:]
            if kind == "proof":
                return f"*Proof.* {body} ∎\n"
            head = PRF_NAMES.get(kind, kind.title())
            return f"**{head}{' (' + arg + ')' if arg else ''}.** {body}\n"
        if name in ("admonition", "note", "tip", "warning", "important"):
            title = arg or name.title()
            quoted = "\n".join("> " + line if line else ">" for line in body.split("\n"))
            return f"> **{title}**\n>\n{quoted}\n"
        raise ExportError(f"{self.page}: unknown directive {{{name}}} (first line {m.group(0).splitlines()[0]!r})")

    def markdown(self, text: str) -> str:
        text = LABEL_LINE.sub("", text)
        for _ in range(3):  # directives may nest (a proof in an admonition): rewrite from the inside out
            new = FENCE.sub(self._directive, text)
            if new == text:
                break
            text = new
        text = ROLE.sub(self._role, text)
        left = re.search(r"\{[a-z]+(?::[a-z]+)?\}`|^(`{3,}|:{3,})\{", text, re.M)
        if left:
            raise ExportError(f"{self.page}: MyST left after export near {text[max(0, left.start() - 40):left.end() + 40]!r}")
        return text


SOLUTION_FENCE = re.compile(r"^(`{3,}|:{3,})\{solution-(start|end)\}[^\n]*\n(?:[ \t]*:[\w-]+:[^\n]*\n)*\1[ \t]*$", re.M)


def drop_solutions(cells: list) -> list:
    """The cells without the exercises' solutions: everything from a ``solution-start`` directive to its
    ``solution-end``, across cells (code cells included), is removed."""
    out, inside = [], False
    for cell in cells:
        if cell.cell_type != "markdown":
            if not inside:
                out.append(cell)
            continue
        kept, pos = [], 0
        for m in SOLUTION_FENCE.finditer(cell.source):
            if not inside:
                kept.append(cell.source[pos:m.start()])
            inside = m.group(2) == "start"
            pos = m.end()
        if not inside:
            kept.append(cell.source[pos:])
        text = "".join(kept)
        if text.strip():
            cell.source = text
            out.append(cell)
    if inside:
        raise ExportError("a solution-start directive has no solution-end")
    return out


def export(md_path: str | Path, out_path: str | Path, numbers: dict | None = None, *,
           solutions: bool = True) -> nbformat.NotebookNode:
    """Write the student notebook of the page ``md_path`` (relative to the repository root) to ``out_path``;
    ``solutions=False`` leaves the exercises' solutions out."""
    md_path = Path(md_path)
    page = str(md_path.resolve().relative_to(ROOT).as_posix())
    if numbers is None:
        numbers = json.loads(NUMBERS.read_text(encoding="utf-8"))
    nb = jupytext.read(md_path)
    if not solutions:
        nb.cells = drop_solutions(nb.cells)
    ex = Exporter(numbers, page)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = ex.markdown(cell.source)
    nb.cells = [c for c in nb.cells if c.cell_type != "markdown" or c.source.strip()]
    title = re.search(r"^# (.+)$", md_path.read_text(encoding="utf-8"), re.M)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(FIRST_CELL.format(title=title.group(1) if title else page)))
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_path)
    return nb


def numbers_from_build(build: str | Path, page: str) -> dict:
    """The glued values of ``page`` (e.g. ``chapters/01_gradient_noise.md``) as the build computed them, in the
    reference's form ``{page: {"glue <name>": text}}``."""
    path = Path(build) / "jupyter_execute" / Path(page).with_suffix(".glue.json")
    if not path.exists():
        raise ExportError(f"{path} is missing: build the book first (make book)")
    glued = json.loads(path.read_text(encoding="utf-8"))
    return {page: {f"glue {name}": out["data"]["text/plain"] for name, out in glued.items()
                   if "text/plain" in out.get("data", {})}}


def export_build(build: str | Path, *, solutions: bool = True) -> list[Path]:
    """Every chapter's student notebook, with the values of ``build``, into ``<build>/html/_static/notebooks``."""
    out = []
    for md in sorted((ROOT / "chapters").glob("*.md")):
        page = f"chapters/{md.name}"
        target = Path(build) / "html" / "_static" / "notebooks" / f"{md.stem}.ipynb"
        export(md, target, numbers_from_build(build, page), solutions=solutions)
        out.append(target)
    return out


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--from-build":
        for path in export_build(sys.argv[2], solutions="--no-solutions" not in sys.argv[3:]):
            print(f"student notebook: {path}")
    elif len(sys.argv) == 3:
        export(sys.argv[1], sys.argv[2])
    else:
        sys.exit("usage: python scripts/student_notebook.py chapters/<page>.md OUT.ipynb | --from-build _build")
