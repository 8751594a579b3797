import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sgdnoise.sampling import SCHEMES, batches_per_epoch, sample_batches

sizes = st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n)))


@settings(max_examples=60, deadline=None)
@given(nb=sizes, m=st.integers(1, 30), seed=st.integers(0, 2**31 - 1))
def test_without_replacement_has_no_repeats(nb, m, seed):
    n, B = nb
    batches = sample_batches(n, B, m, "without_replacement", torch.Generator().manual_seed(seed))
    assert batches.shape == (m, B)
    assert all(len(set(row.tolist())) == B for row in batches)
    assert batches.min() >= 0 and batches.max() < n


@settings(max_examples=60, deadline=None)
@given(nb=sizes, epochs=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_reshuffling_covers_each_index_once_per_epoch(nb, epochs, seed):
    n, B = nb
    per = batches_per_epoch(n, B)
    batches = sample_batches(n, B, per * epochs, "reshuffling", torch.Generator().manual_seed(seed))
    for e in range(epochs):
        idx = batches[e * per : (e + 1) * per].reshape(-1).tolist()
        assert len(idx) == len(set(idx)) == per * B  # disjoint batches
        if n % B == 0:
            assert sorted(idx) == list(range(n))  # every index exactly once


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 30), B=st.integers(1, 60), seed=st.integers(0, 2**31 - 1))
def test_with_replacement_range(n, B, seed):
    b = sample_batches(n, B, 5, "with_replacement", torch.Generator().manual_seed(seed))
    assert b.shape == (5, B) and b.min() >= 0 and b.max() < n


@pytest.mark.parametrize("scheme", SCHEMES)
def test_seeded_and_reproducible(scheme):
    a = sample_batches(20, 4, 10, scheme, torch.Generator().manual_seed(3))
    b = sample_batches(20, 4, 10, scheme, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_marginal_frequencies_are_uniform():
    """Each index appears with probability B/n per without-replacement batch: 5-SE band, fixed seed."""
    n, B, m = 10, 3, 20000
    b = sample_batches(n, B, m, "without_replacement", torch.Generator().manual_seed(0))
    counts = torch.bincount(b.reshape(-1), minlength=n).double()
    p = B / n
    se = (m * p * (1 - p)) ** 0.5
    assert ((counts - m * p).abs() < 5 * se).all()


@pytest.mark.parametrize(
    "B, scheme, msg",
    [
        (0, "with_replacement", r"B=0 must be at least 1"),
        (-2, "reshuffling", r"B=-2 must be at least 1"),
        (11, "without_replacement", r"B=11 exceeds n=10 for sampling without replacement; valid: 1 <= B <= 10"),
        (11, "reshuffling", r"B=11 exceeds n=10"),
    ],
)
def test_bad_batch_sizes(B, scheme, msg):
    with pytest.raises(ValueError, match=msg):
        sample_batches(10, B, 1, scheme, torch.Generator())


def test_bad_scheme_and_generator():
    with pytest.raises(ValueError, match="scheme='shuffle'"):
        sample_batches(10, 2, 1, "shuffle", torch.Generator())
    with pytest.raises(TypeError, match="torch.Generator"):
        sample_batches(10, 2, 1, "with_replacement", 0)
    with pytest.raises(TypeError, match="must be an int"):
        sample_batches(10, 2.0, 1, "with_replacement", torch.Generator())
