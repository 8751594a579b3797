"""Ledger rows for chapter 8: stationary laws under α-stable noise (notes §4)."""

from __future__ import annotations

import sympy as sp

from ..ledger import Evidence, register
from ..levy import cauchy_quartic_density
from ..symbolic import stationary_density_1d

CH = "chapters/08_heavy_stationary"


@register(
    key="ch8:levy-not-tempered",
    location="§4 (heavy-tailed noise)",
    section="4",
    chapter=CH,
    claim="With Lévy-flight (heavy-tailed) noise, the stationary law of SGD's continuous-time model differs from the "
          "tempered posterior and is closer to a non-equilibrium law.",
    heading="The notes' claim: Lévy noise and the tempered posterior",
    verdict="holds only if",
    statement=r"for the SDE driven by α-stable noise ($\alpha < 2$) in a well that is not quadratic, the "
    "stationary law is not $e^{-V/T}$ ($V$ the loss) for any $T$: with Cauchy noise in the quartic "
    r"well it is known exactly, bimodal with maxima at $\pm s/\sqrt2$ ($s = \gamma^{1/3}$) away from "
    r"the minimum, and has a power tail $s^3/(\pi x^4)$. With a quadratic loss it is an α-stable law, "
    "again not a tempered posterior. In two dimensions the Lévy-driven state carries a measured "
    "circulation where the Gaussian one is reversible. It concerns the α-stable model: whether SGD's "
    "own noise is α-stable is chapter 4's question",
    mutant={"alpha": 2},
)
def _levy_not_tempered(alpha=1):
    """The exact stationary density of ``dX = -X³ dt + σ dZ`` is a tempered posterior iff ``(log p)'/(-x³)`` is a
    constant ``1/T``. True for Gaussian noise (``alpha=2``: the Itô zero-current law of chapter 3), false for
    Cauchy noise (``alpha=1``: Chechkin et al.'s law, which has a local minimum at the loss's minimum)."""
    x = sp.Symbol("x", real=True)
    gamma = sp.Symbol("gamma", positive=True)
    if alpha == 1:
        p = cauchy_quartic_density(x, gamma)
    elif alpha == 2:
        p = stationary_density_1d(-x**3, 2 * gamma, x, "ito")
    else:
        raise ValueError(f"alpha={alpha!r}: the exact law is known for alpha = 1 (quartic, Cauchy) and alpha = 2")
    ratio = sp.simplify(sp.diff(sp.log(p), x) / (-x**3))
    tempered = sp.diff(ratio, x) == 0 or sp.simplify(sp.diff(ratio, x)) == 0
    curvature_at_min = sp.simplify(sp.diff(p, x, 2).subs(x, 0))
    ok = (not tempered) and bool(curvature_at_min > 0)
    return Evidence(ok, f"(log p)'/(-x³) = {ratio} ({'constant: a tempered posterior' if tempered else 'not constant'}); "
                        f"p''(0) = {curvature_at_min} ({'a local minimum at the loss minimum' if curvature_at_min.is_positive else 'not a local minimum'})")
