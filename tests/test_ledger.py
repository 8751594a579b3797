"""Every ledger check confirms its verdict, and rejects its deliberately wrong variant."""

import pytest

from sgdnoise import ledger

CLAIMS = ledger.claims()


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.key for c in CLAIMS])
def test_check_confirms_verdict(claim):
    ev = ledger.run_check(claim.key)
    assert ev.ok, ev.details


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.key for c in CLAIMS])
def test_check_rejects_mutant(claim):
    assert claim.mutant, f"{claim.key} has no deliberately wrong variant"
    assert not ledger.run_check(claim.key, **claim.mutant).ok


def test_registry_is_well_formed():
    keys = [c.key for c in CLAIMS]
    assert len(keys) == len(set(keys))
    for c in CLAIMS:
        assert c.verdict in ledger.VERDICTS
        assert c.verdict == "holds" or c.statement


def test_bad_registrations():
    with pytest.raises(ValueError, match="verdict='maybe'"):
        ledger.register(key="x", location="x", section="x", chapter="x", claim="x", verdict="maybe", heading="h")
    with pytest.raises(ValueError, match="needs its conditions"):
        ledger.register(key="x", location="x", section="x", chapter="x", claim="x", verdict="wrong", heading="h")
    with pytest.raises(ValueError, match="illustration rewrites definitions"):
        ledger.register(key="x", location="x", section="x", chapter="x", claim="x", verdict="wrong",
                        statement="s", illustration=True, heading="h")
    with pytest.raises(ValueError, match="illustration='yes'"):
        ledger.register(key="x", location="x", section="x", chapter="x", claim="x", verdict="holds",
                        illustration="yes", heading="h")
    with pytest.raises(ValueError, match="heading=''"):
        ledger.register(key="x", location="x", section="x", chapter="x", claim="x", verdict="holds", heading="")
    with pytest.raises(ValueError, match="no math or markup"):
        ledger.register(key="x", location="x", section="x", chapter="x", claim="x", verdict="holds", heading="$x$")
    with pytest.raises(ValueError, match="unpaired"):
        ledger.register(key="x", location="x", section="x", chapter="x", claim="a $x", verdict="holds", heading="h")
    with pytest.raises(KeyError, match="no claim"):
        ledger.run_check("nope")


def test_table_and_counts(monkeypatch):
    """The table's shape and its refusal of an unconfirmed row; the checks themselves run above, so here a
    stub answers for them (running chapter 1's checks again cost 30 s)."""
    monkeypatch.setattr(ledger, "run_check", lambda key, **kw: ledger.Evidence(True, f"stub {key}"))
    df = ledger.ledger_table("chapters/01_gradient_noise")
    assert len(df) == len(ledger.claims("chapters/01_gradient_noise")) > 0
    assert list(df.columns) == ["location", "section", "claim", "verdict", "conditions / correction", "evidence",
                                "method", "chapter", "treated in", "anchor"]
    assert set(df.verdict) <= set(ledger.VERDICTS) | {ledger.IDENTITY}
    monkeypatch.setattr(ledger, "run_check", lambda key, **kw: ledger.Evidence(key != "ch1:diagonal", "stub"))
    with pytest.raises(AssertionError, match="ch1:diagonal"):
        ledger.ledger_table("chapters/01_gradient_noise")
    counts = ledger.verdict_counts()
    assert sum(counts.values()) == len(CLAIMS)


def test_identities_are_shown_apart_from_the_verdicts():
    """The rows that only rewrite definitions (issue 16) are marked in the table and left out of the counts."""
    illustrations = {c.key for c in CLAIMS if c.illustration}
    assert illustrations == {"ch1:expansion", "ch2:update"}
    assert {c.key for c in CLAIMS if c.shown_verdict == ledger.IDENTITY} == illustrations  # what the table shows
    counts = ledger.verdict_counts("chapters/02_continuous_limit")
    assert counts[ledger.IDENTITY] == 1
    assert counts["holds"] == sum(1 for c in ledger.claims("chapters/02_continuous_limit")
                                  if c.verdict == "holds" and not c.illustration)


def test_finite_variance_row_needs_an_infinite_variance_population():
    """ch4:finite-variance's second failing variant (issue 17, item 2): with Student-t(3) residuals the one-pass
    population has finite variance, the sample variance of fresh gradients settles, and the check must fail."""
    assert not ledger.run_check("ch4:finite-variance", population_df=3.0).ok


def test_verdict_sentence_counts_and_grammar(monkeypatch):
    """The verdict sentence each chapter glues (issue 15: "Of the 2 hypotheses, 0 hold", "1 hold only"):
    numbers from the registry, singular and plural verbs, empty verdicts left out but "none holds"."""
    for chapter in {c.chapter for c in CLAIMS}:
        counts = ledger.verdict_counts(chapter)
        text = ledger.verdict_sentence(chapter)
        assert text.startswith(f"Of the {sum(counts[v] for v in ledger.VERDICTS)} claim")
        assert " 1 hold " not in text and " 1 are " not in text and " 0 " not in text, text
    fake = {ledger.VERDICTS[0]: 0, "holds only if": 1, "wrong": 1, "notation slip": 0, "not supported here": 0,
            ledger.IDENTITY: 0}
    monkeypatch.setattr(ledger, "verdict_counts", lambda chapter=None: dict(fake))
    assert ledger.verdict_sentence(noun="hypothesis") == (
        "Of the 2 hypotheses, none holds as stated, 1 holds only under conditions the notes do not state, "
        "and 1 is wrong as written.")
    fake.update({"not supported here": 2})
    assert ledger.verdict_sentence(noun="hypothesis") == (
        "Of the 4 hypotheses, none holds as stated, 1 holds only under conditions the notes do not state, "
        "1 is wrong as written, and 2 are not supported by the book's experiments.")
    fake.update({"holds": 3, "wrong": 0, "holds only if": 0, "not supported here": 0, ledger.IDENTITY: 2})
    assert ledger.verdict_sentence() == ("Of the 3 claims, 3 hold as stated. Not counted: 2 further rows marked "
                                         "\"holds (identity)\", which only rewrite definitions.")
    with pytest.raises(ValueError, match="phrases"):
        ledger.verdict_sentence(phrases={"maybe": ("a", "b")})


def test_ledger_html_has_badges_no_index_math_and_section_links():
    import pandas as pd

    from sgdnoise import ledger

    table = pd.DataFrame([{"location": "§1 <a>", "section": "1", "claim": r"x < y and $\Sigma_{\mathrm{emp}}/B$",
                           "verdict": "wrong", "conditions / correction": "c", "evidence": "e_1", "method": "sympy",
                           "chapter": "01_x", "treated in": "The setting", "anchor": "the-setting"}])
    html = ledger.ledger_html(table, links={"01_x": "../chapters/01_x.html"}).data
    assert 'data-verdict="wrong"' in html and ledger.VERDICT_COLOURS["wrong"] in html
    assert "&lt;a&gt;" in html and "x &lt; y" in html  # escaped
    assert r'<span class="math notranslate nohighlight">\(\Sigma_{\mathrm{emp}}/B\)</span>' in html  # typeset
    assert "$" not in html and "e_1" in html  # the evidence is plain text
    assert "<th></th>" not in html and html.count("<th>") == 6  # six columns, no index column
    assert '<span class="ledger-method">sympy</span>' in html  # the method, under the verdict
    assert '<a href="../chapters/01_x.html#the-setting">The setting</a>' in html  # the row's section
    assert 'href="#the-setting"' in ledger.ledger_html(table).data  # a chapter's own table: the same page
    with pytest.raises(ValueError, match="no URL for chapter '01_x'"):
        ledger.ledger_html(table, links={})
    with pytest.raises(ValueError, match="verdict 'maybe' has no colour"):
        ledger.ledger_html(table.assign(verdict="maybe"))


def test_math_html():
    assert ledger.math_html("a $x_1 < 2$ b & c") == (
        'a <span class="math notranslate nohighlight">\\(x_1 &lt; 2\\)</span> b &amp; c')
    with pytest.raises(ValueError, match="unpaired"):
        ledger.math_html("cost $5")


def _tex_left(text: str) -> list[str]:
    """Mathematics written outside ``$…$`` in a claim or statement: subscripts, superscripts, TeX commands and
    the operators that only appear in formulas."""
    import re

    outside = re.sub(r"\$[^$]*\$", " ", text)
    return re.findall(r"\S*[_^\\]\S*|[Σ∇∂≪≫≥≤≠√∈⁻¹²³₀₁₂ᵀ∝]", outside)


def test_claims_store_their_mathematics_as_tex():
    """Issue 22, item 3: claims and statements write formulas as TeX between dollars, so the tables typeset them;
    the check catches the Unicode formulas the ledger used to store."""
    for c in CLAIMS:
        for text in (c.claim, c.statement):
            assert not _tex_left(text), (c.key, _tex_left(text))
    assert _tex_left("Cov_B[ξ | D_n] = Σ_emp(θ)/B") and _tex_left("η → dt ≪ 1")  # the old forms fail


def test_every_claim_links_to_one_section_of_its_chapter():
    """Each row's link target: a level-2 or level-3 heading that occurs exactly once in the chapter's source,
    whose Sphinx id is the anchor (the browser test follows the links in the built book)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for c in CLAIMS:
        lines = (root / f"{c.chapter}.md").read_text(encoding="utf-8").splitlines()
        headings = [l.lstrip("#").strip() for l in lines if re.match(r"#{2,3} ", l)]
        assert headings.count(c.heading) == 1, (c.key, c.heading)
    assert ledger.section_anchor("Which Fokker–Planck equation?") == "which-fokkerplanck-equation"
    assert ledger.section_anchor("Where there is a barrier: SGD's own escapes") == \
        "where-there-is-a-barrier-sgd-s-own-escapes"
    with pytest.raises(ValueError, match="empty anchor"):
        ledger.section_anchor("§")


def test_at_a_glance_lists_exactly_the_claims_that_do_not_simply_hold():
    from sgdnoise import ledger

    html = ledger.at_a_glance().data
    expected = [c for c in ledger.claims() if c.shown_verdict not in ("holds", ledger.IDENTITY)]
    assert html.count("<li>") == len(expected) > 0
