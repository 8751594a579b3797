"""The ledger: every claim of the research notes, registered once, with a verdict and a check.

A :class:`Claim` records where the claim sits in the notes (``"(6)–(7)"``, ``"Prop. 1 (item 3)"``,
``"§1.8.5"``), the claim in words, the verdict, the chapter that checks it and the heading of the section
that treats it there, and a ``check`` that returns :class:`Evidence`. The claim and its statement store
their mathematics as TeX between single dollars (``"$\\Sigma_{\\mathrm{emp}}/B$"``): the tables show it typeset
(:func:`ledger_html`), and :func:`ledger_table` keeps the source. The verdicts:

- ``"holds"``: true under the conditions the notes themselves state (a remark may follow);
- ``"holds only if"``: true only under conditions the notes leave out, which the statement gives;
- ``"wrong"``: false as written; the statement gives the corrected result;
- ``"notation slip"``: the result is right but a symbol in its derivation names the wrong object (the
  statement says which reading makes it right);
- ``"not supported here"``: a hypothesis that the book's experiment tested and did not support. It is not
  shown false in general: the statement says what was tested, and on what.

A claim that only rewrites definitions (the algebra of a sum, the name given to a difference) is registered
with ``illustration=True``: its check confirms the algebra, which could not have come out otherwise once
the definitions are granted, so it is evidence of nothing about SGD. The ledger shows it with the verdict
``"holds (identity)"`` and keeps it out of the verdict counts.

``Evidence.ok`` is true when the computation confirms the *verdict* (for ``"wrong"``: the notes' statement
fails and the corrected one holds; for ``"notation slip"``: the literal reading fails and the intended one
holds; for ``"not supported here"``: the hypothesis' prediction fails in the book's experiment).

Every check can fail: each claim carries ``mutant`` keyword arguments that substitute a deliberately
wrong formula, and the test suite asserts that the check then returns ``ok=False``.

Claims are registered by the modules in ``sgdnoise.claims``, one per chapter.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["VERDICTS", "IDENTITY", "Evidence", "Claim", "register", "claims", "run_check", "ledger_table", "verdict_counts",
           "verdict_sentence", "section_anchor", "math_html", "VERDICT_COLOURS", "ledger_html", "verdict_filter_html",
           "at_a_glance"]

VERDICTS = ("holds", "holds only if", "wrong", "notation slip", "not supported here")
IDENTITY = "holds (identity)"  # how the ledger shows an illustration: not counted among the verdicts

_REGISTRY: dict[str, "Claim"] = {}


@dataclass(frozen=True)
class Evidence:
    ok: bool
    details: str


@dataclass(frozen=True)
class Claim:
    key: str
    location: str
    section: str
    chapter: str  # docname of the chapter that checks it, e.g. "chapters/01_gradient_noise"
    claim: str
    verdict: str
    statement: str  # "holds only if": the conditions; "wrong": the corrected statement; "notation slip": the reading
    check: Callable[..., Evidence]
    mutant: dict = field(default_factory=dict)
    method: str = "sympy"  # "sympy" (exact) or "simulation" (seeded Monte Carlo)
    illustration: bool = False  # the claim only rewrites definitions: shown, not counted
    heading: str = ""  # the title of the section of ``chapter`` that treats the claim

    @property
    def shown_verdict(self) -> str:
        return IDENTITY if self.illustration else self.verdict


def register(*, key, location, section, chapter, claim, verdict, heading, statement="", mutant=None, method="sympy",
             illustration=False):
    """Decorator: register ``check`` as the evidence for one claim of the notes.

    ``heading`` is the exact title of the section of ``chapter`` that treats the claim (a level-2 or level-3
    heading with no markup); the ledger links each row there (:func:`section_anchor`). ``claim`` and
    ``statement`` write mathematics as TeX between single dollars.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict={verdict!r}; valid verdicts are {VERDICTS}")
    if not isinstance(illustration, bool):
        raise ValueError(f"claim {key}: illustration={illustration!r}; valid: True or False")
    if illustration and verdict != "holds":
        raise ValueError(f"claim {key}: an illustration rewrites definitions, so its verdict is 'holds', "
                         f"not {verdict!r}; a claim the notes get wrong is evidence")
    if verdict != "holds" and not statement:
        raise ValueError(f"claim {key}: verdict {verdict!r} needs its conditions or corrected statement")
    if not isinstance(heading, str) or not heading.strip() or any(ch in heading for ch in "$`*[]{}"):
        raise ValueError(f"claim {key}: heading={heading!r}; expected the plain title of the section of {chapter} "
                         "that treats the claim (no math or markup)")
    for name, text in (("claim", claim), ("statement", statement)):
        if text.count("$") % 2:
            raise ValueError(f"claim {key}: its {name} has an unpaired '$' (TeX goes between single dollars): "
                             f"{text!r}")

    def deco(check):
        if key in _REGISTRY:
            raise ValueError(f"claim {key!r} registered twice")
        _REGISTRY[key] = Claim(key, location, section, chapter, claim, verdict, statement, check, dict(mutant or {}), method,
                               illustration, heading)
        return check

    return deco


def _load_all() -> None:
    from . import claims as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{info.name}")


def claims(chapter: str | None = None) -> list[Claim]:
    """Registered claims, in registration order, optionally only those checked by ``chapter``."""
    _load_all()
    return [c for c in _REGISTRY.values() if chapter is None or c.chapter == chapter]


def run_check(key: str, **overrides) -> Evidence:
    """Run one claim's check (``overrides`` replace its formulas, e.g. with the mutant)."""
    _load_all()
    if key not in _REGISTRY:
        raise KeyError(f"no claim {key!r}; known: {', '.join(_REGISTRY)}")
    ev = _REGISTRY[key].check(**overrides)
    if not isinstance(ev, Evidence):
        raise TypeError(f"check of {key!r} returned {type(ev).__name__}, not Evidence")
    return ev


def section_anchor(heading: str) -> str:
    """The HTML id that Sphinx gives a section titled ``heading`` (docutils' ``make_id``: ASCII, lower case,
    runs of other characters turned into one hyphen), e.g. ``"Why Itô?"`` → ``"why-ito"``."""
    from docutils.nodes import make_id

    anchor = make_id(heading)
    if not anchor:
        raise ValueError(f"heading={heading!r} gives an empty anchor; use a title with letters or digits")
    return anchor


_MATH = re.compile(r"\$([^$]+)\$")


def math_html(text: str) -> str:
    """``text`` escaped for HTML, with each ``$…$`` turned into an inline equation that the book's MathJax
    typesets (the markup Sphinx gives inline math)."""
    import html

    if text.count("$") % 2:
        raise ValueError(f"text has an unpaired '$' (TeX goes between single dollars): {text!r}")
    out, last = [], 0
    for m in _MATH.finditer(text):
        out.append(html.escape(text[last:m.start()]))
        out.append(f'<span class="math notranslate nohighlight">\\({html.escape(m.group(1))}\\)</span>')
        last = m.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def ledger_table(chapter: str | None = None, *, link: bool = False):
    """Run the checks and return a ``pandas.DataFrame`` with one row per claim.

    Columns: location, section, claim, verdict (``IDENTITY`` for an illustration), conditions / correction,
    evidence, method, chapter, and the section that treats the claim (its title and its anchor). Claims and
    conditions keep their TeX source.
    A check that does not confirm its verdict raises: the book never shows an unconfirmed row.
    """
    import pandas as pd

    rows = []
    for c in claims(chapter):
        ev = run_check(c.key)
        if not ev.ok:
            raise AssertionError(f"ledger check {c.key!r} ({c.location}) does not confirm its verdict: {ev.details}")
        where = f"[{c.chapter.split('/')[-1]}](/{c.chapter}.md)" if link else c.chapter.split("/")[-1]
        rows.append(
            {
                "location": c.location,
                "section": c.section,
                "claim": c.claim,
                "verdict": c.shown_verdict,
                "conditions / correction": c.statement,
                "evidence": ev.details,
                "method": c.method,
                "chapter": where,
                "treated in": c.heading,
                "anchor": section_anchor(c.heading),
            }
        )
    return pd.DataFrame(rows)


#: The badge colour of each verdict, shown with white text (green, amber, red, purple, grey).
VERDICT_COLOURS = {"holds": "#1a7f37", "holds only if": "#9a6700", "wrong": "#cf222e", "notation slip": "#8250df",
                   "not supported here": "#57606a", IDENTITY: "#6e7781"}
# The check's method (sympy, simulation) is shown under the verdict's badge: a column of its own is too narrow
# on the page for its words.
_COLUMNS = (("location", "11%"), ("claim", "24%"), ("verdict", "12%"), ("conditions / correction", "23%"),
            ("evidence", "19%"), ("treated in", "11%"))
# The theme sets ``.bd-content div.output table {table-layout: auto}``, which outranks a plain ``table.ledger-table``
# rule: the fixed layout needs the more specific selector (and the browser test checks that the tables fit).
_STYLE = (
    "<style>table.ledger-table,.bd-content div.output table.ledger-table{table-layout:fixed;width:100%;"
    "border-collapse:collapse;font-size:0.85em}"
    "table.ledger-table th,table.ledger-table td{vertical-align:top;text-align:left;padding:4px 6px;"
    "border-bottom:1px solid #d0d7de;overflow-wrap:anywhere}table.ledger-table th{overflow-wrap:normal}"
    "span.ledger-badge{display:inline-block;color:#fff;border-radius:4px;padding:1px 6px;font-weight:600;"
    "overflow-wrap:normal}span.ledger-method{display:block;color:#57606a;font-size:0.9em;margin-top:2px}</style>")


def ledger_html(table, *, links: dict | None = None):
    """The rows of :func:`ledger_table` as an HTML table for a page: no index column, fixed column widths, the
    verdict as a coloured badge (:data:`VERDICT_COLOURS`) with the check's method under it, the claim and its
    conditions with their TeX typeset (:func:`math_html`), every other cell escaped. Each row carries its verdict in ``data-verdict`` (for
    :func:`verdict_filter_html`). The last column links each row to the section that treats its claim: on the
    same page (a chapter's own table), or, where ``links`` maps the row's chapter (the table's ``chapter``
    column) to the chapter's URL, on that page."""
    import html

    from IPython.display import HTML

    head = "".join(f'<col style="width:{w}">' for _, w in _COLUMNS)
    out = [_STYLE, f'<table class="ledger-table"><colgroup>{head}</colgroup><thead><tr>']
    out += [f"<th>{html.escape(name)}</th>" for name, _ in _COLUMNS] + ["</tr></thead><tbody>"]
    for _, row in table.iterrows():
        verdict = str(row["verdict"])
        if verdict not in VERDICT_COLOURS:
            raise ValueError(f"verdict {verdict!r} has no colour; valid verdicts are {tuple(VERDICT_COLOURS)}")
        cells = []
        for name, _ in _COLUMNS:
            if name == "verdict":
                cells.append(f'<span class="ledger-badge" style="background:{VERDICT_COLOURS[verdict]}">'
                             f'{html.escape(verdict)}</span><span class="ledger-method">{html.escape(str(row["method"]))}'
                             "</span>")
            elif name == "treated in":
                chap = str(row["chapter"])
                page = ""
                if links is not None:
                    if chap not in links:
                        raise ValueError(f"links has no URL for chapter {chap!r}; it maps {sorted(links)}")
                    page = links[chap]
                cells.append(f'<a href="{html.escape(page)}#{html.escape(str(row["anchor"]))}">'
                             f'{html.escape(str(row["treated in"]))}</a>')
            elif name in ("claim", "conditions / correction"):
                cells.append(math_html(str(row[name])))
            else:
                cells.append(html.escape(str(row[name])))
        out.append(f'<tr data-verdict="{html.escape(verdict)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return HTML("".join(out))


def verdict_filter_html():
    """A menu that shows only the ledger rows (of every :func:`ledger_html` table on the page) with one verdict."""
    from IPython.display import HTML

    options = "".join(f'<option value="{v}">{v}</option>' for v in (*VERDICTS, IDENTITY))
    script = ("<script>function ledgerFilter(v){document.querySelectorAll('table.ledger-table tbody tr')"
              ".forEach(function(r){r.style.display=(!v||r.dataset.verdict===v)?'':'none';});}</script>")
    return HTML(f'<label>Show only the rows whose verdict is <select onchange="ledgerFilter(this.value)">'
                f'<option value="">(any verdict)</option>{options}</select></label>{script}')


def at_a_glance():
    """One line per claim that does not simply hold: where it sits, its verdict as a badge, and the first
    sentence of what the book found (the checks are not run); an HTML list for a page."""
    import html

    from IPython.display import HTML

    items = []
    for c in claims():
        verdict = c.shown_verdict
        if verdict in ("holds", IDENTITY):
            continue
        first = re.split(r"(?<=[a-z0-9)\]$])\. (?=[A-Z])", c.statement.strip(), maxsplit=1)[0].rstrip(".")
        items.append(f'<li><b>{html.escape(c.location)}</b> <span class="ledger-badge" style="background:'
                     f'{VERDICT_COLOURS[verdict]}">{html.escape(verdict)}</span> {math_html(first)}.</li>')
    return HTML(_STYLE + '<ul class="ledger-glance">' + "".join(items) + "</ul>")


def verdict_counts(chapter: str | None = None) -> dict[str, int]:
    """How many registered claims (of one chapter, or all) carry each verdict; the checks are not run.

    Illustrations are counted under ``IDENTITY``, apart from the verdicts.
    """
    counts = {v: 0 for v in VERDICTS} | {IDENTITY: 0}
    for c in claims(chapter):
        counts[c.shown_verdict] += 1
    return counts


# How a count of each verdict reads in a sentence: (singular, plural).
_PHRASES = {
    "holds": ("holds as stated", "hold as stated"),
    "holds only if": ("holds only under conditions the notes do not state",
                      "hold only under conditions the notes do not state"),
    "wrong": ("is wrong as written", "are wrong as written"),
    "notation slip": ("is a notation slip", "are notation slips"),
    "not supported here": ("is not supported by the book's experiments", "are not supported by the book's experiments"),
}


def verdict_sentence(chapter: str | None = None, *, noun: str = "claim", phrases: dict | None = None) -> str:
    """The chapter's verdict counts as one grammatical sentence, e.g. "Of the 9 claims, 1 holds as stated,
    3 hold only under conditions the notes do not state, and 5 are wrong as written."

    Verdicts with no claim are left out, except "holds", which reads "none holds as stated" when zero.
    Illustrations are not counted; when there are any, a second sentence says so. ``phrases`` replaces
    the (singular, plural) wording of a verdict, e.g. for hypotheses rather than claims.
    """
    if not isinstance(noun, str) or not noun:
        raise ValueError(f"noun={noun!r}; expected a non-empty word such as 'claim' or 'hypothesis'")
    wording = dict(_PHRASES)
    for key, value in (phrases or {}).items():
        if key not in VERDICTS or not (isinstance(value, tuple) and len(value) == 2):
            raise ValueError(f"phrases[{key!r}]={value!r}; keys must be among {VERDICTS} and values "
                             "(singular, plural) tuples of str")
        wording[key] = value
    counts = verdict_counts(chapter)
    total = sum(counts[v] for v in VERDICTS)
    plural = noun + ("es" if noun.endswith(("s", "sh", "ch", "x")) else "s")
    plural = {"hypothesis": "hypotheses"}.get(noun, plural)
    parts = []
    for v in VERDICTS:
        k = counts[v]
        if k == 0 and v != "holds":
            continue
        single, many = wording[v]
        parts.append(f"none {single}" if k == 0 else f"{k} {single if k == 1 else many}")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + (", and " if len(parts) > 2 else " and ") + parts[-1]
    text = f"Of the {total} {noun if total == 1 else plural}, {listed}."
    n_id = counts[IDENTITY]
    if n_id:
        rows = "row" if n_id == 1 else "rows"
        text += (f" Not counted: {n_id} further {rows} marked \"{IDENTITY}\", which only "
                 f"{'rewrites' if n_id == 1 else 'rewrite'} definitions.")
    return text
