"""Minibatch index samplers, driven by an explicit seeded ``torch.Generator``.

Three schemes, named as everywhere in the package:

``"with_replacement"``
    each of the ``B`` indices of a batch is uniform on ``{0, …, n-1}``, independently of the others
    and of every other batch;
``"without_replacement"``
    each batch is a uniformly random subset of ``B`` distinct indices, batches independent;
``"reshuffling"``
    random reshuffling: each epoch draws a fresh permutation and cuts it into ``⌊n/B⌋`` disjoint
    batches that are used in order. When ``B`` does not divide ``n`` the last ``n mod B`` indices
    of each permutation are dropped (PyTorch's ``drop_last=True``), so every index appears at most
    once per epoch and exactly once when ``B`` divides ``n``. A single reshuffled batch has the same
    law as a without-replacement batch; consecutive batches of one epoch are not independent.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._args import ArgumentTypeError, as_int, is_one_of, show

SCHEMES = ("with_replacement", "without_replacement", "reshuffling")

__all__ = ["SCHEMES", "check_generator", "check_scheme", "check_batch_size", "sample_batches", "batches_per_epoch"]


def check_generator(generator, name: str = "generator") -> torch.Generator:
    """``generator`` if it is a ``torch.Generator``; else a ``TypeError``: the global RNG is never used."""
    if not isinstance(name, str):
        raise TypeError(f"name={name!r} must be a string: the argument's name, for the error message")
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"{name} must be a seeded torch.Generator; got {type(generator).__name__}. Pass one, e.g. "
            "torch.Generator().manual_seed(0): the global random state is never used, so every result can be reproduced"
        )
    return generator


def check_scheme(scheme: str) -> str:
    """``scheme`` if it names a sampling scheme (one of ``SCHEMES``); else a ``ValueError`` listing them."""
    if not is_one_of(scheme, SCHEMES):
        raise ValueError(f"scheme={show(scheme)}; valid schemes are {', '.join(map(repr, SCHEMES))}")
    return scheme


def check_batch_size(B: int, n: int, scheme: str, *, name: str = "B") -> int:
    """Validate a batch size for ``n`` samples under ``scheme`` and return it as an ``int``.

    ``name`` is the argument's name in the caller (``"B_small"``, ``"batch_sizes[2]"``), for the messages.
    """
    check_scheme(scheme)
    B_int, n_int = as_int(B), as_int(n)
    if B_int is None:
        raise ArgumentTypeError(f"batch size {name}={show(B)} must be an int")
    if n_int is None:
        raise ArgumentTypeError(f"number of samples n={show(n)} must be a positive int")
    if n_int < 1:
        raise ValueError(f"number of samples n={n!r} must be a positive int")
    B, n = B_int, n_int
    if B < 1:
        raise ValueError(f"batch size {name}={B} must be at least 1")
    if scheme != "with_replacement" and B > n:
        raise ValueError(f"batch size {name}={B} exceeds n={n} for sampling {scheme.replace('_', ' ')}; "
                         f"valid: 1 <= {name} <= {n}")
    return B


def batches_per_epoch(n: int, B: int) -> int:
    """Number of disjoint batches random reshuffling draws from one permutation (0 when ``B > n``)."""
    B = check_batch_size(B, n, "with_replacement")  # an int B >= 1; B > n is allowed and gives 0
    return int(n) // B


def sample_batches(n: int, B: int, num_batches: int, scheme: str, generator: torch.Generator) -> Tensor:
    """Draw ``num_batches`` minibatches of ``B`` indices from ``{0, …, n-1}``.

    Returns a ``LongTensor`` of shape ``(num_batches, B)``; row ``k`` is the batch used at step
    ``k``. For ``"reshuffling"`` rows ``k·m … k·m + m - 1`` (``m = ⌊n/B⌋``) form epoch ``k``.
    """
    check_batch_size(B, n, scheme)
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 0:
        raise ValueError(f"num_batches={num_batches!r} must be a non-negative int")
    check_generator(generator)
    if scheme == "with_replacement":
        return torch.randint(n, (num_batches, B), generator=generator)
    if scheme == "without_replacement":
        if num_batches == 0:
            return torch.empty((0, B), dtype=torch.long)
        # Random keys, keep the B smallest: a uniform B-subset in uniformly random order.
        out = []
        rows_per_chunk = max(1, 2**22 // n)
        for start in range(0, num_batches, rows_per_chunk):
            m = min(rows_per_chunk, num_batches - start)
            keys = torch.rand((m, n), generator=generator)
            out.append(keys.topk(B, dim=1, largest=False, sorted=False).indices)
        return torch.cat(out)
    per_epoch = batches_per_epoch(n, B)
    epochs = -(-num_batches // per_epoch)
    perms = [torch.randperm(n, generator=generator)[: per_epoch * B].view(per_epoch, B) for _ in range(epochs)]
    if not perms:
        return torch.empty((0, B), dtype=torch.long)
    return torch.cat(perms)[:num_batches]
