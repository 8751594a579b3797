"""Audit your own model: the book's measurements as verdicts on the SDE picture of *your* SGD.

``sgdnoise.audit(model, loss_fn, (X, y), lr=..., batch_size=...)`` (the module is callable; the same as
``sgdnoise.audit.audit``) returns an :class:`AuditReport`: a table of verdicts, one per assumption of the
continuous-time limit, each with the number it rests on and its interval, and every number under
documented keys (``report.to_dict()``). It calls the book's modules (per-sample gradients, the Gram
route, tail estimators validated in chapter 4, Lanczos on Hessian-vector products); it copies none.
"""

from __future__ import annotations

import sys
import types

from ._audit import audit
from ._stats import Estimate
from .report import STATUSES, AuditReport, Verdict
from .tracker import NoiseTracker
from .ddp import DDPNoiseScale

__all__ = ["audit", "AuditReport", "Verdict", "Estimate", "STATUSES", "NoiseTracker", "DDPNoiseScale"]


class _CallableModule(types.ModuleType):
    """``sgdnoise.audit(...)`` calls :func:`audit`; ``sgdnoise.audit.AuditReport`` etc. stay attributes."""

    def __call__(self, *args, **kwargs) -> AuditReport:
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
