"""The research notes, section by section: what each section is about (in the book's words), which of its
claims the ledger checks with which verdict, and where the book treats it.

The notes themselves are not part of the book; the book cites them as "§x.y". :data:`SECTIONS` lists every
section of the notes, in their order. The book's appendix page "The notes, section by section" renders
:func:`map_html`, and a Sphinx transform (``_ext/notes_links.py``) turns every "§x.y" in the book's text into
a link to that section's row, so a reader can always find out what a cited section says and how it fared.
"""

from __future__ import annotations

import html

__all__ = ["SECTIONS", "EQUATIONS", "numbers", "equation_numbers", "anchor", "equation_anchor", "section_claims",
           "equation_claims", "map_html", "equations_html"]

#: (number, what the section is about, pages of the book that treat it), in the notes' order.
SECTIONS = (
    ("1", "SGD: the setting, the algorithm and its noise", ("chapters/01_gradient_noise",)),
    ("1.1", "the learning problem: data drawn from a population, a parametric model", ("chapters/01_gradient_noise",)),
    ("1.2", "the per-sample loss, the empirical risk and the population risk", ("chapters/01_gradient_noise",)),
    ("1.3", "per-sample, empirical, minibatch and population gradients", ("chapters/01_gradient_noise",)),
    ("1.4", "the SGD update", ("chapters/01_gradient_noise",)),
    ("1.5", "drawing minibatches with and without replacement", ("chapters/01_gradient_noise",)),
    ("1.6", "the update split into a drift and a zero-mean noise", ("chapters/01_gradient_noise",
                                                                     "chapters/02_continuous_limit")),
    ("1.7", "special cases: full batch, single sample, constant and decaying steps", ("chapters/01_gradient_noise",)),
    ("1.8", "properties of the gradient noise", ("chapters/01_gradient_noise",)),
    ("1.8.1", "two sources of noise: the sample against the population, the batch against the sample",
     ("chapters/01_gradient_noise",)),
    ("1.8.2", "the total noise of a minibatch gradient against the population gradient",
     ("chapters/01_gradient_noise",)),
    ("1.8.3", "Proposition 1: the noise is unbiased, its covariance and its expected covariance",
     ("chapters/01_gradient_noise",)),
    ("1.8.4", "observations: scaling with B, dependence on θ, the finite-sample factor, no replacement",
     ("chapters/01_gradient_noise",)),
    ("1.8.5", "estimating the noise covariance from several minibatch gradients", ("chapters/01_gradient_noise",)),
    ("2", "the continuous-time limit of SGD", ("chapters/02_continuous_limit",)),
    ("2.1", "a heuristic derivation of the SDE from the SGD update", ("chapters/02_continuous_limit",
                                                                    "chapters/07_limit_itself")),
    ("2.2", "why the limit matters: a stationary law like a tempered posterior", ("chapters/03_fokker_planck",
                                                                                "chapters/10_singular")),
    ("2.3", "the assumptions the limit rests on", ("chapters/04_assumptions", "chapters/03_fokker_planck",
                                                   "chapters/07_limit_itself")),
    ("2.4", "which assumptions matter most", ("chapters/04_assumptions",)),
    ("3", "the notes' list of things to do", ("intro", "chapters/07_limit_itself", "chapters/10_singular")),
    ("4", "questions to investigate: heavy tails, degenerate minima, superposition, grokking",
     ("chapters/05_experiments", "chapters/06_grokking", "chapters/08_heavy_stationary",
      "chapters/09_parity")),
    ("4.1", "experiments on deep linear networks", ("chapters/05_experiments",)),
    ("5", "appendix", ("chapters/01_gradient_noise",)),
    ("5.0.1", "a detailed derivation of the covariance of the batch noise", ("chapters/01_gradient_noise",)),
    ("5.1", "the Helmholtz decomposition of the probability current", ("chapters/03_fokker_planck",)),
    ("6", "when the central limit theorem applies to the noise: conditions on n and B",
     ("chapters/04_assumptions", "chapters/01_gradient_noise")),
)


#: The numbered equations of the notes in each section, as (first, last); the notes' numbering skips (8)–(11).
EQUATIONS = {"1.8.1": (1, 7), "2.1": (12, 23), "2.2": (24, 29), "5.0.1": (30, 54), "5.1": (55, 60), "6": (61, 62)}


def equation_numbers() -> tuple[int, ...]:
    """The numbers of the notes' equations, in order."""
    return tuple(n for first, last in EQUATIONS.values() for n in range(first, last + 1))


def equation_anchor(number: int) -> str:
    """The HTML id of equation ``number``'s row on the map page: ``14`` → ``"notes-eq-14"``."""
    if number not in equation_numbers():
        raise ValueError(f"({number}) is not an equation of the notes; they number (1)–(7) and (12)–(62)")
    return f"notes-eq-{number}"


def equation_claims() -> dict[int, list]:
    """``{number: [Claim, …]}``: the ledger's claims whose location cites equation ``number``, alone or in a range
    such as "(16)–(17)"."""
    import re

    from . import ledger

    out: dict[int, list] = {n: [] for n in equation_numbers()}
    for c in ledger.claims():
        location = re.sub(r"§[\d.]+\s*\(\d+\)", "", c.location)  # "§1.8.4 (1)" is an item of a list, not (1)
        for a, b in re.findall(r"\((\d{1,2})\)(?:\s*[–-]\s*\((\d{1,2})\))?", location):
            for n in range(int(a), int(b or a) + 1):
                if n in out and c not in out[n]:
                    out[n].append(c)
    return out


def numbers() -> tuple[str, ...]:
    """The section numbers of the notes, in order."""
    return tuple(n for n, _, _ in SECTIONS)


def anchor(number: str) -> str:
    """The HTML id of section ``number``'s row on the map page: ``"1.8.5"`` → ``"notes-1-8-5"``."""
    if number not in numbers():
        raise ValueError(f"§{number} is not a section of the notes; their sections are {', '.join(numbers())}")
    return "notes-" + number.replace(".", "-")


def section_claims() -> dict[str, list]:
    """``{number: [Claim, …]}``: the ledger's claims registered under each section (a claim may sit under several)."""
    from . import ledger

    out: dict[str, list] = {n: [] for n in numbers()}
    for c in ledger.claims():
        for part in str(c.section).split(","):
            part = part.strip()
            if part in out:
                out[part].append(c)
    return out


def map_html(*, page: str = "appendix/notes_map"):
    """The map as an HTML table for the page ``page`` (links are relative to it): each section with an anchor,
    what it is about, the verdicts of its claims in the ledger (as badges, with their number), and the pages of
    the book that treat it."""
    from IPython.display import HTML

    from .ledger import _STYLE, VERDICT_COLOURS

    depth = page.count("/")
    up = "../" * depth
    by = section_claims()
    rows = []
    for number, subject, pages in SECTIONS:
        counts: dict[str, int] = {}
        for c in by[number]:
            counts[c.shown_verdict] = counts.get(c.shown_verdict, 0) + 1
        badges = " ".join(f'<span class="ledger-badge" style="background:{VERDICT_COLOURS[v]}">{html.escape(v)}'
                          f"{f' ×{k}' if k > 1 else ''}</span>" for v, k in counts.items()) or "—"
        links = ", ".join(f'<a href="{up}{p}.html">{html.escape(p.split("/")[-1].replace("_", " "))}</a>'
                          for p in pages)
        eqs = EQUATIONS.get(number)
        eq_links = (f'<a href="#{equation_anchor(eqs[0])}">({eqs[0]})–({eqs[1]})</a>' if eqs else "—")
        rows.append(f'<tr id="{anchor(number)}"><td>§{number}</td><td>{html.escape(subject)}</td><td>{eq_links}</td>'
                    f"<td>{badges}</td><td>{links}</td></tr>")
    head = ('<table class="ledger-table"><colgroup><col style="width:10%"><col style="width:34%">'
            '<col style="width:12%"><col style="width:26%"><col style="width:18%"></colgroup><thead><tr>'
            "<th>section</th><th>what it is about</th><th>equations</th><th>its claims in the ledger</th>"
            "<th>treated in</th></tr></thead><tbody>")
    return HTML(_STYLE + head + "".join(rows) + "</tbody></table>")


def equations_html(*, page: str = "appendix/notes_map"):
    """Every numbered equation of the notes: its section, and the ledger's claims that cite it (location and
    verdict), for the page ``page``."""
    from IPython.display import HTML

    from .ledger import _STYLE, VERDICT_COLOURS

    up = "../" * page.count("/")
    section_of = {n: sec for sec, (a, b) in EQUATIONS.items() for n in range(a, b + 1)}
    by = equation_claims()
    rows = []
    for n in equation_numbers():
        claims = "; ".join(f'{html.escape(c.location)} <span class="ledger-badge" style="background:'
                           f'{VERDICT_COLOURS[c.shown_verdict]}">{html.escape(c.shown_verdict)}</span> '
                           f'(<a href="{up}{c.chapter}.html">{html.escape(c.chapter.split("/")[-1].replace("_", " "))}</a>)'
                           for c in by[n]) or "—"
        sec = section_of[n]
        rows.append(f'<tr id="{equation_anchor(n)}"><td>({n})</td><td><a href="#{anchor(sec)}">§{sec}</a></td>'
                    f"<td>{claims}</td></tr>")
    head = ('<table class="ledger-table"><colgroup><col style="width:11%"><col style="width:10%"><col style="width:79%">'
            "</colgroup><thead><tr><th>equation</th><th>section</th><th>claims of the ledger that cite it</th></tr>"
            "</thead><tbody>")
    return HTML(_STYLE + head + "".join(rows) + "</tbody></table>")
