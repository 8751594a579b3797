"""sgdnoise: the gradient noise of SGD and its continuous-time limit, measured.

The package behind the book *SGD noise, executed*. Loss convention: ``loss_fn(output, target)``
returns one loss per sample and the empirical risk is their mean.
"""

from .gradients import full_gradient, gram_matrix, per_sample_grads
from .noise import (
    batch_noise,
    effective_rank,
    empirical_noise_covariance,
    estimate_noise_covariance,
    noise_covariance_factor,
    noise_spectrum,
    sigma_spectrum,
)
from .sampling import SCHEMES, sample_batches
from . import audit  # noqa: E402  (a callable module: sgdnoise.audit(model, loss_fn, data, lr=..., batch_size=...))

__version__ = "0.1.0"

__all__ = [
    "per_sample_grads",
    "full_gradient",
    "gram_matrix",
    "sample_batches",
    "SCHEMES",
    "batch_noise",
    "empirical_noise_covariance",
    "estimate_noise_covariance",
    "noise_covariance_factor",
    "noise_spectrum",
    "sigma_spectrum",
    "effective_rank",
    "audit",
]
