"""Chapter 5's statistics, shared by its text and its ledger rows (issue 15: a verdict from one source)."""

import pytest

from sgdnoise.experiments import chapter5


def test_holm_steps_down_and_stops_at_the_first_acceptance():
    assert chapter5.holm([0.001, 0.02, 0.04]) == [True, True, True]  # 0.001 ≤ .05/3, 0.02 ≤ .05/2, 0.04 ≤ .05
    assert chapter5.holm([0.01, 0.04, 0.03]) == [True, False, False]  # 0.03 > .05/2 stops the procedure
    assert chapter5.holm([0.04, 0.04]) == [False, False]  # Bonferroni's first step fails
    assert chapter5.holm([]) == []


@pytest.mark.parametrize("bad", [[1.5], [-0.1], [float("nan")], [[0.1]]])
def test_holm_refuses_what_is_not_a_p_value(bad):
    with pytest.raises(ValueError, match="pvalues"):
        chapter5.holm(bad)


def _diagram(gd_labels, noisy_labels):
    """A one-sparsity phase diagram with the two settings' labels per seed."""
    K = len(gd_labels)
    cells = [{"sparsity": 0.0, "setting": name,
              "fractions": {lab: sum(x == lab for x in labels) / K for lab in set(labels)}}
             for name, labels in (("gd", gd_labels), ("noisy", noisy_labels))]
    return {"settings": ["gd", "noisy"], "sparsities": [0.0], "n_seeds": K, "cells": cells,
            "runs": {"gd": {"labels": gd_labels}, "noisy": {"labels": noisy_labels}}}


def test_noise_phase_tests_pairs_by_seed_and_corrects():
    """Eight seeds that all leave the target under noise: p = 2/2^8 is resolved; a noisy setting that
    matches gradient descent is not (the failing variant)."""
    target = ((0.0, "a"),)
    moved = chapter5.noise_phase_tests(_diagram(["a"] * 8, ["b"] * 8), noisy=("noisy",), targets=target)
    assert moved[0]["a_only"] == 8 and moved[0]["p"] == pytest.approx(2 / 2**8) and moved[0]["resolved"]
    same = chapter5.noise_phase_tests(_diagram(["a"] * 8, ["a"] * 8), noisy=("noisy",), targets=target)
    assert same[0]["p"] == 1.0 and not same[0]["resolved"]


def test_dln_ks_by_model_averages_and_names_a_missing_model():
    result = {"dists": [{"model": "G", "ks": 0.1}, {"model": "G", "ks": 0.3}, {"model": "S", "ks": 0.5}]}
    assert chapter5.dln_ks_by_model(result) == {"G": pytest.approx(0.2), "S": 0.5}
    with pytest.raises(ValueError, match="'T' is not in the result"):
        chapter5.dln_ks_by_model(result, models=("T",))
