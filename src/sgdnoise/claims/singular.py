"""Ledger rows for chapter 10: degenerate minima (notes §2.2, the remark after (29))."""

from __future__ import annotations

import numpy as np

from ..ledger import Evidence, register
from ..slt import dln_learning_coefficient, hessian_eigenvalues, singular_factors

CH = "chapters/10_singular"


@register(
    key="ch10:degenerate-bayes",
    location="§2.2 (after (29))",
    section="2.2",
    chapter=CH,
    claim="Up to the temperature, SGD's stationary law is the tempered posterior, so SGD behaves like Bayesian "
          "inference; the catch is that deep networks are degenerate, so the noise covariance is singular "
          "(here: at a degenerate minimum of a deep linear network with label noise).",
    heading="What SGD's spread measures",
    verdict="holds only if",
    statement="the noise is isotropic (Langevin dynamics, the sampler of the learning-coefficient estimator). "
    "At a degenerate minimum SGD's noise is not, and the two laws concentrate by different measures. "
    r"With label noise at a realizable minimum, SGD's noise covariance is $\sigma^2 H/B$, shaped like "
    "the Hessian and zero in its null space, and its stationary excess loss is about "
    r"$\frac{\eta\sigma^2}{4B}\operatorname{tr} H$: set by the curvature at the point SGD sits at. "
    r"The tempered posterior's is $\lambda/(n\beta)$, with $\lambda$ the learning coefficient, a "
    "volume exponent that does not depend on the teacher's scale. On a deep linear network a teacher "
    r"three times larger leaves $\lambda$ unchanged and multiplies SGD's spread about as "
    r"$\operatorname{tr} H$ does (measured in chapter 10)",
    mutant={"noise": "isotropic"},
    method="exact (Hessian spectra, Aoyagi's formula)",
)
def _degenerate_bayes(noise="label"):
    """For the network 7–6–7 with a rank-2 teacher (singular values 1, 2, then ×3): the linearised stationary excess
    loss under label noise, Σ_i ησ²h_i/(2B(2 − ηh_i)) over the Hessian's eigenvalues, against the tempered posterior's
    λ/(nβ) from Aoyagi's formula. The claim fails when the two respond differently to the teacher's scale. With
    isotropic noise of variance T per coordinate (``noise="isotropic"``) the linearised excess is T rank(H)/2, and it
    ignores the scale, as λ does (the full Gibbs law's excess is λT; its linearisation sees only the quadratic
    directions, T rank(H)/2, and both are scale-free)."""
    widths, rank, eta, B, sigma = (7, 6, 7), 2, 0.01, 4, 1.0
    spread, lam = {}, {}
    for mult in (1.0, 3.0):
        factors, _ = singular_factors(widths, rank, singular_values=mult * np.array([1.0, 2.0]), seed=13)
        h = hessian_eigenvalues(factors)
        h = h[h > 1e-9 * h.max()]
        if noise == "label":
            spread[mult] = float(np.sum(eta * sigma**2 * h / (2 * B * (2 - eta * h))))
        elif noise == "isotropic":
            spread[mult] = eta * sigma**2 / (2 * B) * len(h) / 2  # T = ησ²/(2B) per direction, ½ h·(T/h) each
        else:
            raise ValueError(f"noise={noise!r}; valid: 'label', 'isotropic'")
        lam[mult] = dln_learning_coefficient(widths, rank)
    r_spread, r_lam = spread[3.0] / spread[1.0], float(lam[3.0] / lam[1.0])
    ok = abs(r_spread - r_lam) > 0.5
    return Evidence(ok, f"teacher ×3 on 7–6–7, rank 2: λ {float(lam[1.0]):g} → {float(lam[3.0]):g} (ratio {r_lam:g}); "
                        f"{noise} noise's linearised excess loss at η = {eta}, B = {B}: {spread[1.0]:.4g} → "
                        f"{spread[3.0]:.4g} (ratio {r_spread:.2f})")
