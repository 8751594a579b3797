"""Committed full-scale results: writing, loading, refusing stale files, and the live-agreement check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sgdnoise.experiments import fullscale


def _toy(*, n: int, seed: int, shift: float = 0.0, device: str = "cpu") -> dict:
    """The mean of n standard normals (plus ``shift``) with its standard error."""
    x = np.random.default_rng(seed).standard_normal(n) + shift
    return {"mean": [float(x.mean())], "se": [float(x.std(ddof=1) / n**0.5)], "label": "toy",
            "draws": np.arange(3)}


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.setattr(fullscale, "_REGISTRY", dict(fullscale._REGISTRY))
    monkeypatch.setenv(fullscale.ENV_VAR, str(tmp_path))
    return fullscale.register(fullscale.Experiment(
        name="toy_mean", compute=_toy, full={"n": 4000, "seed": 1}, reduced={"n": 400, "seed": 2},
        description="a toy mean"))


def test_save_load_and_provenance(toy, tmp_path):
    path = fullscale.save("toy_mean", device="cpu")
    assert path == tmp_path / "toy_mean.json"
    res = fullscale.load("toy_mean")
    assert res.config == {"n": 4000, "seed": 1}
    assert isinstance(res.result["mean"], np.ndarray) and res.result["label"] == "toy"
    np.testing.assert_array_equal(res.result["draws"], [0, 1, 2])
    text = res.provenance()
    assert "results/toy_mean.json" in text and res.meta["code_version"] in text and "torch" in text
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left behind


def test_live_reduced_run_agrees_and_a_wrong_file_does_not(toy):
    fullscale.save("toy_mean", device="cpu")
    full = fullscale.load("toy_mean").result
    live = fullscale.compute("toy_mean", "reduced")
    good = fullscale.agreement(full["mean"], full["se"], live["mean"], live["se"], labels=["mean"])
    assert good.ok, good
    # Failing variant: a committed result the code no longer reproduces (here shifted by 0.5 = 10 live SEs).
    wrong = fullscale.compute("toy_mean", "reduced")
    wrong_full = _toy(n=4000, seed=1, shift=0.5)
    bad = fullscale.agreement(wrong_full["mean"], wrong_full["se"], wrong["mean"], wrong["se"], labels=["mean"])
    assert not bad.ok and bad.max_abs_z > 5 and "DISAGREE" in str(bad)


def test_agreement_z_and_bonferroni_threshold():
    a = fullscale.agreement([1.0, 2.0], [0.3, 0.0], [1.5, 2.4], [0.4, 0.2], labels=["a", "b"], alpha=0.05)
    np.testing.assert_allclose(a.z, [0.5 / 0.5, 0.4 / 0.2])
    assert a.threshold == pytest.approx(2.241402727604947)  # Φ⁻¹(1 − 0.05/4)
    assert a.ok
    with pytest.raises(ValueError, match="one non-zero length"):
        fullscale.agreement([1.0], [0.1], [1.0, 2.0], [0.1, 0.1])
    t4 = fullscale.agreement([1.0], [0.1], [1.5], [0.1], df=4, alpha=0.01)  # z = 3.54: beyond Φ⁻¹, within t₄
    assert t4.threshold == pytest.approx(4.604094871349992)  # t₄ at 1 − 0.01/2
    assert t4.ok and not fullscale.agreement([1.0], [0.1], [1.5], [0.1], alpha=0.01).ok
    with pytest.raises(ValueError, match="df=0"):
        fullscale.agreement([1.0], [0.1], [1.5], [0.1], df=0)
    exact = fullscale.agreement([1.0, 2.0], [0.0, 0.0], [1.0, 3.0], [0.0, 0.0])  # zero SEs: exact or not at all
    assert exact.z[0] == 0 and exact.z[1] == np.inf and not exact.ok
    with pytest.raises(ValueError, match="negative standard error"):
        fullscale.agreement([1.0], [-0.1], [1.0], [0.1])
    with pytest.raises(ValueError, match="non-finite"):
        fullscale.agreement([np.nan], [0.1], [1.0], [0.1])
    with pytest.raises(ValueError, match="alpha"):
        fullscale.agreement([1.0], [0.1], [1.0], [0.1], alpha=1.5)


def test_stale_missing_and_malformed_files_are_refused(toy, tmp_path):
    with pytest.raises(fullscale.StaleResult, match="no full-scale result.*make experiments"):
        fullscale.load("toy_mean")
    path = fullscale.save("toy_mean", device="cpu")
    doc = json.loads(path.read_text())
    doc["config"]["n"] = 10  # computed for another configuration
    path.write_text(json.dumps(doc))
    with pytest.raises(fullscale.StaleResult, match="registered full configuration"):
        fullscale.load("toy_mean")
    path.write_text("{not json")
    with pytest.raises(fullscale.StaleResult, match="not a readable"):
        fullscale.load("toy_mean")
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(fullscale.StaleResult, match="missing"):
        fullscale.load("toy_mean")


def test_bad_input_is_named(toy):
    with pytest.raises(KeyError, match="no full-scale experiment named 'nope'"):
        fullscale.load("nope")
    with pytest.raises(ValueError, match="which='half'"):
        fullscale.compute("toy_mean", "half")
    with pytest.raises(ValueError, match="device='tpu'"):
        fullscale.compute("toy_mean", "reduced", device="tpu")
    with pytest.raises(ValueError, match="experiment name"):
        fullscale.Experiment(name="a b", compute=_toy, full={}, reduced={}, description="")
    with pytest.raises(TypeError, match="full configuration must be a dict"):
        fullscale.Experiment(name="x", compute=_toy, full=[1], reduced={}, description="")
    with pytest.raises(ValueError, match="already registered"):
        fullscale.register(fullscale.Experiment(name="toy_mean", compute=lambda **k: {}, full={}, reduced={},
                                                description=""))
    with pytest.raises(ValueError, match="censored"):
        fullscale._jsonable({"x": float("inf")})


def test_every_registered_experiment_has_its_committed_file(monkeypatch):
    """Each registered experiment's committed file loads: present, well formed, and for the registered
    full configuration (the chapters' agreement checks then test its numbers)."""
    monkeypatch.delenv(fullscale.ENV_VAR, raising=False)
    reg = fullscale.experiments()
    assert reg, "no full-scale experiment registered"
    for name in reg:
        res = fullscale.load(name)
        assert res.meta["wall_s"] >= 0 and res.meta["machine"]["torch"].startswith("2.13.0")


def test_cli_lists_the_experiments(capsys):
    assert fullscale.main(["--list"]) == 0
    assert "ch2_weak_mlp" in capsys.readouterr().out


def test_sample_agreement_on_skewed_samples():
    """The rank version: same-law lognormal samples agree; a 20% scale change is caught (the failing variant)."""
    rng = np.random.default_rng(0)
    full, live = rng.lognormal(0, 1.5, 256), rng.lognormal(0, 1.5, 32)
    ok = fullscale.sample_agreement([full], [live], labels=["loss"])
    assert ok.ok, ok
    bad = fullscale.sample_agreement([full], [rng.lognormal(0, 1.5, 256) * 3.0], labels=["loss"])
    assert not bad.ok, bad
    # calibration: over 400 same-law pairs about 1% exceed the 1% threshold (binomial 3-sigma band: 0 to 10)
    hits = sum(not fullscale.sample_agreement([rng.lognormal(0, 1.5, 256)], [rng.lognormal(0, 1.5, 32)]).ok
               for _ in range(400))
    assert hits <= 10, hits
    with pytest.raises(ValueError, match="one live sample per committed one"):
        fullscale.sample_agreement([full], [])
    with pytest.raises(ValueError, match="two finite values"):
        fullscale.sample_agreement([full], [[1.0]])


def test_chapter_drivers_name_bad_input_before_computing():
    from sgdnoise.experiments import chapter4, chapter5, chapter6

    with pytest.raises(ValueError, match=r"variants \['Adam'\] are not among"):
        chapter6.optimiser_runs(variants=["Adam"], seeds=[0])
    with pytest.raises(ValueError, match=r"variants \['Adam'\] are not among"):
        chapter6.standard_runs(variants=["Adam"], seeds=[0], weight_decays=[3e-6])
    with pytest.raises(ValueError, match=r"variants \['Adam'\] are not among"):
        chapter6.small_runs(variants=["Adam"], seeds=[0], activations=["relu"])
    with pytest.raises(ValueError, match=r"activation 'tanh'; valid: \['quadratic', 'relu'\]"):
        chapter6.small_runs(variants=["GD"], seeds=[0], activations=["tanh"])
    with pytest.raises(ValueError, match=r"n=1 must be an int >= 2"):
        chapter6.paired_power(1, 0.1, 0.1, 0.05)
    with pytest.raises(ValueError, match=r"models \['Lévy'\] are not among"):
        chapter4.network_sde_paths(paths=2, B=8, eta=0.1, steps=1, seed_sgd=0, seed_gauss=0, seed_stable=0,
                                   models=["Lévy"])
    with pytest.raises(ValueError, match=r"settings=\['adam'\]"):
        chapter5.tms_noise_sweep(sparsities=[0.0], seeds=[0], settings=["adam"])
