"""Ledger rows for chapter 7: the rigorous statement behind the SDE (notes §2.1, the remark after (23))."""

from __future__ import annotations

import sympy as sp

from ..ledger import Evidence, register
from ..symbolic import ou_second_moment, sgd_quadratic_second_moment

CH = "chapters/07_limit_itself"


@register(
    key="ch7:donsker",
    location="§2.1 (after (23))",
    section="2.1",
    chapter=CH,
    claim="A more rigorous derivation of the SDE would use the Lindeberg condition and Donsker's theorem.",
    heading="The theorem behind the SDE",
    verdict="holds only if",
    statement="read as a martingale functional CLT (with a Lindeberg condition), that route is rigorous but "
    r"proves another statement: the $\eta \to 0$ limit of the fluctuations around gradient flow, "
    r"rescaled by $\sqrt\eta$. That the SDE with diffusion $\sqrt{\eta\Sigma}$ tracks SGD at a given "
    r"small $\eta$ to an error $O(\eta)$ is a weak-approximation theorem (Li, Tai & E), proved by "
    "matching one step's moments and summing the local errors through the smooth solution of the "
    "backward Kolmogorov equation; it needs smooth coefficients of controlled growth, moments of "
    "every order, a fixed horizon and independent sampling. On a quadratic with constant noise its "
    r"leading error, $-T\eta h^2\theta_0^2 e^{-2hT}$, does not involve the noise at all: it is the "
    "drift's discretisation, which a limit theorem for the noise does not address",
    mutant={"sde_rate": lambda eta, h: h * (1 + eta * h / 2)},
)
def _donsker(sde_rate=lambda eta, h: h):
    """The exact weak error of E θ² on L = hθ²/2 with constant noise σ², SGD against the SDE whose drift rate is
    ``sde_rate``: its leading term must be of order η, nonzero, and independent of σ² (the check fails for the
    modified drift, whose error starts at η²)."""
    eta, h, s2, T, x0 = sp.symbols("eta h sigma2 T x0", positive=True)
    sgd = sgd_quadratic_second_moment(eta, h, s2, x0, T / eta)
    sde = ou_second_moment(sde_rate(eta, h), eta * s2, x0, T)
    lead = sp.simplify(sp.series(sgd - sde, eta, 0, 2).removeO())
    ok = lead != 0 and sp.diff(lead, s2) == 0 and sp.simplify(lead / eta).has(eta) is False
    return Evidence(bool(ok), f"leading weak error of E θ² at time T: {lead} (σ² absent: it is the drift's "
                              "discretisation, not the noise)")
