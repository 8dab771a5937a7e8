"""Hull-weighted training: the weights, their normalisation, and that they move the fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alcsp.config import ConfigError, parse_config
from alcsp.potential import ACNNConfig, TrainConfig, evaluate, train
from alcsp.potential.train import hull_weights

SMALL = dict(
    cutoff_radial=5.0,
    cutoff_angular=4.0,
    n_radial=6,
    n_angular=4,
    basis_radial=6,
    basis_angular=6,
    embedding=(16, 16),
    fitting=(32, 32),
)


def test_hull_weights_values():
    e = np.array([0.0, 0.01, 0.05, 1.0, np.nan, -1e-9])
    w = hull_weights(e, scale=0.01, floor=0.1)
    assert w[0] == 1.0 and w[-1] == 1.0  # on the hull (round-off below it too)
    assert w[1] == pytest.approx(np.exp(-1.0))
    assert w[2] == 0.1 and w[3] == 0.1  # floored
    assert w[4] == 1.0  # no hull for that composition yet: unweighted
    assert (hull_weights(e, scale=0.0, floor=0.1) == 1.0).all()


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_uniform_weights_are_the_unweighted_training(cuau_data):
    """Weights are normalised to a mean of 1: any constant weight is the paper's loss."""
    data = cuau_data[0][:24]
    cfg = ACNNConfig(species=("Cu", "Au"), **SMALL)
    tcfg = TrainConfig(steps=12, batch_size=4, eval_every=12, seed=3, dtype="float64")
    plain, _ = train(data, cfg, tcfg)
    for w in (np.ones(len(data)), np.full(len(data), 7.5)):
        weighted, _ = train(data, cfg, tcfg, weights=w)
        for a, b in zip(_params(plain), _params(weighted), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_weights_move_the_fit_towards_the_weighted_structures(cuau_data):
    """Two halves of the data: the half that weighs 20x more is fitted better than when the
    other half weighs more (same seed, steps, split)."""
    data = cuau_data[0][:40]
    half = np.arange(len(data)) < 20
    cfg = ACNNConfig(species=("Cu", "Au"), **SMALL)
    tcfg = TrainConfig(
        steps=300, batch_size=8, lr=3e-3, eval_every=300, seed=1, dtype="float64",
        validation_fraction=0.0,
    )  # fmt: skip
    first = [a for a, h in zip(data, half, strict=True) if h]
    errors = []
    for w in (np.where(half, 20.0, 1.0), np.where(half, 1.0, 20.0)):
        model, _ = train(data, cfg, tcfg, weights=w)
        errors.append(evaluate(model, first).energy_mev_per_atom)
    assert errors[0] < errors[1], errors


def test_bad_weights_and_settings_are_refused(cuau_data):
    data = cuau_data[0][:4]
    cfg = ACNNConfig(species=("Cu", "Au"), **SMALL)
    for w in ([1.0, 1.0], [1.0, 0.0, 1.0, 1.0], [1.0, np.nan, 1.0, 1.0]):
        with pytest.raises(ValueError, match="weights must be 4 finite positive"):
            train(data, cfg, TrainConfig(steps=1), weights=w)
    with pytest.raises(ValueError, match="hull_weight_scale must be >= 0"):
        TrainConfig(hull_weight_scale=-0.01)
    with pytest.raises(ValueError, match=r"hull_weight_floor must be in \(0, 1\]"):
        TrainConfig(hull_weight_floor=0.0)


def test_config_reads_the_hull_weighting(tmp_path):
    text = (
        '[campaign]\nname = "w"\n[compositions]\nelements = ["Cu", "Au"]\nmax_formula_atoms = 4\n'
        '[oracle]\nname = "emt"\n[train]\nhull_weight_scale = 0.02\n'
    )
    assert parse_config(text).train.hull_weight_scale == 0.02
    with pytest.raises(ConfigError, match="hull_weight_scale"):
        parse_config(text.replace("0.02", "-1.0"))


def test_labels_e_hull_is_the_distance_above_the_labels_own_hull():
    """What the campaign weights by: E0 + PV per atom on the hull of the labels themselves."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    from alcsp.store.hulls import labels_e_hull

    def label(atoms, e_per_atom):
        atoms.calc = SinglePointCalculator(atoms, energy=e_per_atom * len(atoms))
        return atoms

    cu, au = bulk("Cu", "fcc", a=3.6), bulk("Au", "fcc", a=4.08)
    low = label(bulk("CuAu", "rocksalt", a=5.0), -0.5)  # per atom; terminals at 0 and -1
    high = label(bulk("CuAu", "rocksalt", a=5.0), -0.4)
    data = [label(cu, 0.0), label(au, -1.0), low, high]
    np.testing.assert_allclose(labels_e_hull(data, 0.0, ("Cu", "Au")), [0, 0, 0, 0.1], atol=1e-12)
    # at 10 GPa the PV term enters: the denser terminal is favoured, still on its own hull
    at_p = labels_e_hull(data, 10.0, ("Cu", "Au"))
    assert at_p[0] == 0 and at_p[1] == 0 and at_p[3] == pytest.approx(at_p[2] + 0.1)
    # without a Au terminal there is no hull for CuAu: NaN, weight 1
    only = labels_e_hull([data[0], low], 0.0, ("Cu", "Au"))
    assert only[0] == 0 and np.isnan(only[1])
