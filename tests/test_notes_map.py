"""The map of the notes: every section the book cites is on it, every claim's section too, and an unknown
section is an error (the build's link transform turns the same error into a failing warning)."""

import re
from pathlib import Path

import pytest

from sgdnoise import ledger, notes_map

ROOT = Path(__file__).resolve().parent.parent


def test_every_cited_section_is_on_the_map():
    pages = list(ROOT.glob("chapters/*.md")) + list(ROOT.glob("appendix/*.md")) + [ROOT / "intro.md"]
    cited = {m for p in pages for m in re.findall(r"§(\d+(?:\.\d+)*)", p.read_text(encoding="utf-8"))}
    assert cited and cited <= set(notes_map.numbers()), cited - set(notes_map.numbers())


def test_every_claim_sits_under_a_section_of_the_map():
    by = notes_map.section_claims()
    placed = {c.key for claims in by.values() for c in claims}
    assert placed == {c.key for c in ledger.claims()}


def test_anchors_and_the_unknown_section():
    assert notes_map.anchor("1.8.5") == "notes-1-8-5"
    assert len({notes_map.anchor(n) for n in notes_map.numbers()}) == len(notes_map.SECTIONS)
    with pytest.raises(ValueError, match=r"§9.9 is not a section of the notes"):
        notes_map.anchor("9.9")


def test_the_map_has_one_row_per_section_with_its_badges():
    html = notes_map.map_html().data
    assert html.count("<tr id=") == len(notes_map.SECTIONS)
    n_wrong = sum(1 for c in notes_map.section_claims()["2.1"] if c.shown_verdict == "wrong")
    assert f"wrong ×{n_wrong}" in html


def test_every_cited_equation_is_an_equation_of_the_notes():
    pages = list(ROOT.glob("chapters/*.md")) + list(ROOT.glob("appendix/*.md")) + [ROOT / "intro.md"]
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    cited = {int(n) for n in re.findall(r"(?:eqs?\.\s|notes'\s)\((\d{1,2})\)", text)}
    assert cited and cited <= set(notes_map.equation_numbers()), cited - set(notes_map.equation_numbers())
    with pytest.raises(ValueError, match=r"\(9\) is not an equation of the notes"):
        notes_map.equation_anchor(9)
    html = notes_map.equations_html().data
    assert html.count("<tr id=") == len(notes_map.equation_numbers()) == 58
