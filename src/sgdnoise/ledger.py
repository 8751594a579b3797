"""The ledger: every claim of the research notes, registered once, with a verdict and a check.

A :class:`Claim` records where the claim sits in the notes (``"(6)–(7)"``, ``"Prop. 1 (item 3)"``,
``"§1.8.5"``), the claim in words, the verdict, the chapter that checks it, and a ``check`` that
returns :class:`Evidence`. The verdicts:

- ``"holds"``: true under the conditions the notes themselves state (a remark may follow);
- ``"holds only if"``: true only under conditions the notes leave out, which the statement gives;
- ``"wrong"``: false as written; the statement gives the corrected result;
- ``"notation slip"``: the result is right but a symbol in its derivation names the wrong object (the
  statement says which reading makes it right).

A claim that only rewrites definitions (the algebra of a sum, the name given to a difference) is registered
with ``illustration=True``: its check confirms the algebra, which could not have come out otherwise once
the definitions are granted, so it is evidence of nothing about SGD. The ledger shows it with the verdict
``"holds (identity)"`` and keeps it out of the verdict counts.

``Evidence.ok`` is true when the computation confirms the *verdict* (for ``"wrong"``: the notes' statement
fails and the corrected one holds; for ``"notation slip"``: the literal reading fails and the intended one
holds).

Every check can fail: each claim carries ``mutant`` keyword arguments that substitute a deliberately
wrong formula, and the test suite asserts that the check then returns ``ok=False``.

Claims are registered by the modules in ``sgdnoise.claims``, one per chapter.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["VERDICTS", "IDENTITY", "Evidence", "Claim", "register", "claims", "run_check", "ledger_table", "verdict_counts"]

VERDICTS = ("holds", "holds only if", "wrong", "notation slip")
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

    @property
    def shown_verdict(self) -> str:
        return IDENTITY if self.illustration else self.verdict


def register(*, key, location, section, chapter, claim, verdict, statement="", mutant=None, method="sympy",
             illustration=False):
    """Decorator: register ``check`` as the evidence for one claim of the notes."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict={verdict!r}; valid verdicts are {VERDICTS}")
    if not isinstance(illustration, bool):
        raise ValueError(f"claim {key}: illustration={illustration!r}; valid: True or False")
    if illustration and verdict != "holds":
        raise ValueError(f"claim {key}: an illustration rewrites definitions, so its verdict is 'holds', "
                         f"not {verdict!r}; a claim the notes get wrong is evidence")
    if verdict != "holds" and not statement:
        raise ValueError(f"claim {key}: verdict {verdict!r} needs its conditions or corrected statement")

    def deco(check):
        if key in _REGISTRY:
            raise ValueError(f"claim {key!r} registered twice")
        _REGISTRY[key] = Claim(key, location, section, chapter, claim, verdict, statement, check, dict(mutant or {}), method,
                               illustration)
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


def ledger_table(chapter: str | None = None, *, link: bool = False):
    """Run the checks and return a ``pandas.DataFrame`` with one row per claim.

    Columns: location, section, claim, verdict (``IDENTITY`` for an illustration), conditions / correction,
    evidence, method, chapter.
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
            }
        )
    return pd.DataFrame(rows)


def verdict_counts(chapter: str | None = None) -> dict[str, int]:
    """How many registered claims (of one chapter, or all) carry each verdict; the checks are not run.

    Illustrations are counted under ``IDENTITY``, apart from the verdicts.
    """
    counts = {v: 0 for v in VERDICTS} | {IDENTITY: 0}
    for c in claims(chapter):
        counts[c.shown_verdict] += 1
    return counts
