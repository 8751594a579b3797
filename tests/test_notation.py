"""The book's notation (issue 22, item 2): letters the book renamed to give each symbol one meaning do not come
back. Every chapter and appendix page (their Markdown, not their code) and every ledger claim is scanned for the
retired forms; the notation page itself names the notes' letters on purpose and is left out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sgdnoise import ledger

ROOT = Path(__file__).resolve().parents[1]

#: (pattern, what the book writes instead)
RETIRED = [
    (r"\\kappa(?!_\{?[0-9r])", r"$\kappa$ is kept for the cumulants $\kappa_r$; the estimator's bias factor is "
     r"$\zeta$, the bulk-matching factor of α-stable noise $\omega_\alpha$"),
    (r"(?<![\\\w])c_(i|l|\{I)", r"centred per-sample gradients are $\tilde g_i$"),
    (r"(?<![\\\w])G_c\b", r"the centred gradient matrix is $\tilde G$"),
    # (named as the notes' symbol it may be: "the notes' $\nu_{\mathrm{batch}}$")
    (r"(?<!the notes' \$)\\nu_\{?\\mathrm\{batch\}|ν_batch", r"the notes' $\nu_{\mathrm{batch}}$ is $-\xi$"),
    (r"(?<![\\\w])L_N\b", r"the empirical risk is $L_n$"),
    (r"(?<![\\\w])C\(\\tau\)", r"the lag covariance is $R(\tau)$; $C$ is the stationary covariance"),
    (r"\$[nm] = [0-9]+\$ (features|dimensions)|\$N = [0-9]+\$ samples",
     r"the toy model has $n_{\mathrm{feat}}$ features in $d_{\mathrm{hid}}$ dimensions; samples are $n$"),
    (r"\$m = n/B\$|\{4m\}", r"the batches of one epoch are $n_{\mathrm{batch}} = n/B$"),
    (r"(?<!\\mathcal )(?<![\\\w{])N\((0|\\eta)", r"a normal law is $\mathcal N(\cdot,\cdot)$"),
]


def retired_uses(text: str) -> list[str]:
    """The retired forms in a Markdown source (code cells and fenced code removed)."""
    prose = re.sub(r"^(`{3,})[^\n]*\n.*?^\1[ \t]*$", "", text, flags=re.S | re.M)
    prose = re.sub(r"^(`{3,})\{(code-cell|code-block)\}.*?^\1", "", prose, flags=re.S | re.M)
    return [f"{m.group(0)!r}: {hint}" for pattern, hint in RETIRED for m in re.finditer(pattern, prose)]


PAGES = sorted(p for p in [*ROOT.glob("chapters/*.md"), *ROOT.glob("appendix/*.md"), ROOT / "intro.md"]
               if p.name != "notation.md")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_no_retired_notation_on_the_pages(page):
    assert not retired_uses(page.read_text(encoding="utf-8")), retired_uses(page.read_text(encoding="utf-8"))


def test_no_retired_notation_in_the_ledger():
    for c in ledger.claims():
        assert not retired_uses(c.claim + "\n" + c.statement), (c.key, retired_uses(c.claim + c.statement))


@pytest.mark.parametrize("old", [
    r"where $\mathbb E[\hat\Sigma] = \kappa\,\Sigma_{\mathrm{emp}}$",  # chapter 1's bias factor, before
    r"Write $c_i = g_i - g_n$ for the centred per-sample gradients",
    r"$\frac1n G_c^\top G_c$",
    r"E[ν_batch | D_n] = 0",
    r"p ∝ exp(-(2B/η) L_N(θ))",
    r"with $C(\tau) = \mathbb E[\theta_{t+\tau}\theta_t^\top]$",
    r"compress $n = 5$ features into $m = 2$ dimensions",
    r"$n = 5$ features, $m = 2$ dimensions, $N = 2048$ samples",
    r"with $m = n/B$ batches per epoch",
    r"each step draws fresh $a_i \sim N(0, 1)$",
])
def test_the_scan_catches_the_old_notation(old):
    """The failing variant: the sentences as the book wrote them before the renaming."""
    assert retired_uses(old)


def test_the_scan_leaves_the_kept_notation_alone():
    kept = (r"cumulants $\kappa_r/B^{r-1}$ and $\kappa_4/(\kappa_2^2 B)$; $\tilde g_i$, $\tilde G$, $n = 64$ samples, "
            r"$C = R(0)$, $\mathcal N(0, 1)$, $n_{\mathrm{batch}} = n/B$, $d_{\mathrm{hid}} = 2$ dimensions")
    assert retired_uses(kept) == []
    assert retired_uses("```{code-cell} ipython3\nkappa = r'\\kappa'\n```\n") == []  # code is not prose
