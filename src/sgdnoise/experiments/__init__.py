"""Experiment drivers for the book's longer computations, and the result cache they share.

* :mod:`sgdnoise.experiments.cache`: :class:`~sgdnoise.experiments.cache.ResultCache`, results keyed
  by (experiment, configuration, code version) and stored atomically with a checksum.
* :mod:`sgdnoise.experiments.grokking`: modular addition ``a + b mod p`` with a two-layer network,
  trained by GD, SGD, or GD plus Gaussian / α-stable noise with SGD's covariance.
"""

from __future__ import annotations

from .cache import ResultCache, code_version, config_dict, default_cache_dir

__all__ = ["ResultCache", "code_version", "config_dict", "default_cache_dir"]
