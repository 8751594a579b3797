"""The audit's report: verdicts with the evidence they rest on, and every number with its interval.

A :class:`Verdict` is one line: an assumption of the SDE picture (the notes' §2.3), its status here
(``"holds"``, ``"doubtful"``, ``"fails"`` or ``"not measured"``), the number it rests on with its 95% interval,
the rule that turned the number into the status, and the chapter that derives the quantity.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

from ._stats import Estimate

STATUSES = ("holds", "doubtful", "fails", "not measured")

#: Where the book derives each measured quantity (page paths of the built book, relative to its root).
CHAPTERS = {
    "noise": "chapters/01_gradient_noise",
    "limit": "chapters/02_continuous_limit",
    "current": "chapters/03_fokker_planck",
    "assumptions": "chapters/04_assumptions",
}


@dataclass(frozen=True)
class Verdict:
    """One assumption, its status, and why."""

    assumption: str
    status: str
    evidence: str
    rule: str
    chapter: str
    estimate: Estimate | None = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r}; valid statuses are {STATUSES}")

    def to_dict(self) -> dict:
        return {"assumption": self.assumption, "status": self.status, "evidence": self.evidence, "rule": self.rule,
                "chapter": self.chapter, "estimate": None if self.estimate is None else _plain(self.estimate.to_dict())}


def _plain(v):
    if isinstance(v, Estimate):
        return _plain(v.to_dict())
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


@dataclass
class AuditReport:
    """What :func:`sgdnoise.audit.audit` found. ``verdicts`` is the table; ``numbers`` holds every measured
    quantity under documented keys (see :func:`sgdnoise.audit.audit`); ``settings`` the audit's inputs.

    ``sigma_top_eigenvectors`` (``d × k``) and ``sigma_eigenvalues`` (the subsample's whole spectrum) are kept
    as tensors for plots and further analysis; ``to_dict`` leaves them out.
    """

    verdicts: list[Verdict]
    numbers: dict
    settings: dict
    sigma_top_eigenvectors: object = None
    sigma_eigenvalues: object = None
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, key):
        return self.numbers[key]

    def verdict(self, assumption: str) -> Verdict:
        """The verdict whose assumption starts with ``assumption`` (case-insensitive)."""
        hits = [v for v in self.verdicts if v.assumption.lower().startswith(assumption.lower())]
        if len(hits) != 1:
            names = ", ".join(repr(v.assumption) for v in self.verdicts)
            raise KeyError(f"assumption={assumption!r} matches {len(hits)} verdicts; the verdicts are {names}")
        return hits[0]

    def to_dict(self) -> dict:
        """Every number, its SE and 95% interval, the verdicts and the settings, as plain Python values
        (``inf`` as the string ``"inf"``, NaN as ``None``): ready for ``json.dump``."""
        return {"settings": _plain(self.settings), "numbers": _plain(self.numbers),
                "verdicts": [v.to_dict() for v in self.verdicts], "notes": list(self.notes)}

    def to_markdown(self) -> str:
        """The verdict table and the key numbers as Markdown."""
        s = self.settings
        lines = [f"**SGD noise audit**: {s['model']}, {s['d']:,} parameters, η = {s['lr']:g}, B = {s['batch_size']}, "
                 f"{s['scheme'].replace('_', ' ')}" + (f", momentum {s['momentum']:g}" if s["momentum"] else "")
                 + f"; {s['audited_samples']:,} of {s['dataset_size']:,} samples audited.", "",
                 "| assumption | verdict | evidence | rule | chapter |", "|---|---|---|---|---|"]
        for v in self.verdicts:
            lines.append(f"| {v.assumption} | **{v.status}** | {v.evidence} | {v.rule} | {v.chapter} |")
        lines += ["", "| quantity | estimate [95% interval] |", "|---|---|"]
        for key in ("trace_sigma", "grad_norm_sq", "noise_scale", "batch_over_noise_scale", "effective_rank",
                    "power_law_exponent", "sharpness"):
            if isinstance(self.numbers.get(key), Estimate):
                lines.append(f"| `{key}` | {self.numbers[key].text()} |")
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines)

    def to_html(self) -> str:
        """The verdict table as a self-contained HTML fragment (colour-coded statuses)."""
        colours = {"holds": "#1a7f37", "doubtful": "#9a6700", "fails": "#cf222e", "not measured": "#57606a"}
        e = html.escape
        s = self.settings
        rows = "".join(
            f"<tr><td>{e(v.assumption)}</td><td style='color:{colours[v.status]};font-weight:bold'>{e(v.status)}</td>"
            f"<td>{e(v.evidence)}</td><td>{e(v.rule)}</td><td>{e(v.chapter)}</td></tr>" for v in self.verdicts)
        head = (f"<p><b>SGD noise audit</b>: {e(s['model'])}, {s['d']:,} parameters, η = {s['lr']:g}, "
                f"B = {s['batch_size']}, {e(s['scheme'].replace('_', ' '))}; {s['audited_samples']:,} of "
                f"{s['dataset_size']:,} samples audited.</p>")
        return (head + "<table class='sgdnoise-audit'><thead><tr><th>assumption</th><th>verdict</th><th>evidence</th>"
                "<th>rule</th><th>chapter</th></tr></thead><tbody>" + rows + "</tbody></table>")

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        counts = {st: sum(v.status == st for v in self.verdicts) for st in STATUSES}
        return (f"AuditReport({self.settings['model']}, η={self.settings['lr']:g}, B={self.settings['batch_size']}: "
                + ", ".join(f"{c} {st}" for st, c in counts.items() if c) + ")")

    def plot(self, axes=None):
        """Three panels: the spectrum of ``Σ`` with its power-law fit; the tail index of the batch noise along
        each tested direction against its Gaussian null; ``η λ_max`` against the stability limit."""
        import matplotlib.pyplot as plt
        import numpy as np

        if axes is None:
            fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
        else:
            fig = axes[0].figure
        lam = np.asarray(self.sigma_eigenvalues)
        lam = lam[lam > lam[0] * 1e-12]  # numerical zeros (rank ≤ m - 1) left out
        ranks = np.arange(1, lam.size + 1)
        ax = axes[0]
        ax.loglog(ranks, lam, ".", ms=3, label="eigenvalues of $\\Sigma$")
        s = self.numbers["power_law_exponent"].value
        fit = min(self.settings["spectrum_fit_ranks"], lam.size)
        if math.isfinite(s):
            r = ranks[:fit]
            c = np.exp(np.mean(np.log(lam[:fit]) + s * np.log(r)))  # the least-squares intercept
            ax.loglog(r, c * r ** (-s), "-", lw=1.5, label=f"$\\propto i^{{-{s:.2f}}}$ (ranks 1–{fit})")
        ax.set_xlabel("rank $i$")
        ax.set_ylabel("$\\lambda_i(\\Sigma)$")
        ax.legend(fontsize=8)
        ax.set_title("noise covariance spectrum", fontsize=10)
        ax = axes[1]
        rows = [r for r in self.numbers["gaussianity"]["rows"] if not r["direction"].startswith("vector")]
        vec = [r for r in self.numbers["gaussianity"]["rows"] if r["direction"].startswith("vector")]
        y = np.arange(len(rows))
        ax.axvline(2.0, color="0.5", lw=1, ls=":")
        ax.axvline(self.numbers["gaussianity"]["null_q05"], color="C3", lw=1, ls="--",
                   label="5% quantile, Gaussian null")
        ax.scatter([r["tail_index"] for r in rows], y, c=["C3" if r["heavy_tailed"] else "C0" for r in rows], s=18)
        ax.set_yticks(y, [r["direction"] for r in rows], fontsize=7)
        ax.set_xlabel("tail index of the batch noise")
        ax.legend(fontsize=8)
        title = f"Gaussianity at $B$ = {self.settings['batch_size']}"
        if vec:
            g = self.numbers["gaussianity"]
            title += (f"\nnorm: Hill index {vec[0]['tail_index']:.1f} (Gaussian twin {g['vector_null_median']:.1f}), "
                      + ("heavier" if vec[0]["heavy_tailed"] else "not heavier"))
        ax.set_title(title, fontsize=9)
        ax = axes[2]
        sh = self.numbers["sharpness"]
        lr, beta = self.settings["lr"], self.settings["momentum"]
        val = lr * sh.value
        err = None if sh.low is None else [[val - lr * sh.low], [lr * sh.high - val]]
        ax.barh([0], [val], xerr=err, color="C0", height=0.5)
        ax.axvline(2 * (1 + beta), color="C3", ls="--", lw=1, label=f"stability limit {2 * (1 + beta):g}")
        ax.set_yticks([0], ["$\\eta\\,\\lambda_{\\max}$"])
        ax.set_xlabel("$\\eta\\,\\lambda_{\\max}(H)$")
        ax.set_xlim(0, max(2.2 * (1 + beta), 1.1 * val))
        ax.legend(fontsize=8)
        ax.set_title("step size against curvature", fontsize=10)
        fig.tight_layout()
        return fig
