"""Every ledger check confirms its verdict, and rejects its deliberately wrong variant."""

import pytest

from sgdnoise import ledger

CLAIMS = ledger.claims()


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.key for c in CLAIMS])
def test_check_confirms_verdict(claim):
    ev = ledger.run_check(claim.key)
    assert ev.ok, ev.details


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.key for c in CLAIMS])
def test_check_rejects_mutant(claim):
    assert claim.mutant, f"{claim.key} has no deliberately wrong variant"
    assert not ledger.run_check(claim.key, **claim.mutant).ok


def test_registry_is_well_formed():
    keys = [c.key for c in CLAIMS]
    assert len(keys) == len(set(keys))
    for c in CLAIMS:
        assert c.verdict in ledger.VERDICTS
        assert c.verdict == "holds" or c.statement


def test_bad_registrations():
    with pytest.raises(ValueError, match="verdict='maybe'"):
        ledger.register(key="x", location="x", section="x", chapter="x", claim="x", verdict="maybe")
    with pytest.raises(ValueError, match="needs its conditions"):
        ledger.register(key="x", location="x", section="x", chapter="x", claim="x", verdict="wrong")
    with pytest.raises(KeyError, match="no claim"):
        ledger.run_check("nope")


def test_table_and_counts():
    df = ledger.ledger_table("chapters/01_gradient_noise")
    assert len(df) == len(ledger.claims("chapters/01_gradient_noise")) > 0
    counts = ledger.verdict_counts()
    assert sum(counts.values()) == len(CLAIMS)
