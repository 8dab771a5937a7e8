"""Training ACNN on EMT labels, the training config, and the ``alcsp train`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alcsp.cli import main
from alcsp.potential import ACNNConfig, TrainConfig, evaluate, load_model, train, write_labelled

SMALL = dict(
    cutoff_radial=5.0,
    cutoff_angular=4.0,
    n_radial=8,
    n_angular=6,
    basis_radial=8,
    basis_angular=8,
    embedding=(32, 32),
    fitting=(64, 64),
)


@pytest.mark.slow
def test_training_on_emt_cuau_beats_the_mean_predictor_tenfold(cuau_data):
    train_set, test_set = cuau_data
    cfg = ACNNConfig(species=("Cu", "Au"), **SMALL)
    tcfg = TrainConfig(
        steps=2000,
        batch_size=8,
        lr=3e-3,
        decay_every=300,
        lr_decay=0.8,
        eval_every=1000,
        dtype="float64",
        seed=1,
    )
    model, report = train(train_set, cfg, tcfg)
    # Baseline: the training mean energy per atom, and zero forces (the mean force).
    e_train = np.array([a.get_potential_energy() / len(a) for a in train_set])
    e_test = np.array([a.get_potential_energy() / len(a) for a in test_set])
    f_test = np.concatenate([a.get_forces().ravel() for a in test_set])
    base_e = 1000 * np.sqrt(np.mean((e_test - e_train.mean()) ** 2))
    base_f = 1000 * np.sqrt(np.mean(f_test**2))
    held_out = evaluate(model, test_set)
    assert held_out.energy_mev_per_atom < base_e / 10, (held_out, base_e)
    assert held_out.force_mev_per_a < base_f / 10, (held_out, base_f)
    assert report.validation is not None and report.validation.n_structures == 30


def test_warm_start_continues_and_does_not_modify_the_input(cuau_data):
    train_set, _ = cuau_data
    cfg = ACNNConfig(species=("Cu", "Au"), **SMALL)
    tcfg = TrainConfig(steps=30, batch_size=4, eval_every=30, seed=0)
    first, _ = train(train_set[:40], cfg, tcfg)
    before = {k: v.clone() for k, v in first.state_dict().items()}
    second, _ = train(train_set[:40], first, TrainConfig(steps=10, batch_size=4, seed=1))
    for k, v in first.state_dict().items():
        assert torch.equal(v, before[k])
    assert any(
        not torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True)
    )
    # statistics (energy shifts, descriptor scaling) are kept on warm start
    assert torch.equal(first.energy_shift, second.energy_shift)


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="validation_fraction"):
        TrainConfig(validation_fraction=1.0)
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainConfig.from_dict({"stepz": 3})


def test_cli_train_writes_a_loadable_model(tmp_path, cuau_data, capsys):
    train_set, _ = cuau_data
    data = tmp_path / "data.extxyz"
    write_labelled(data, train_set[:30])
    cfg = tmp_path / "acnn.toml"
    cfg.write_text(
        "[model]\ncutoff_radial = 4.5\ncutoff_angular = 3.5\nembedding = [8, 8]\n"
        "fitting = [16]\nn_radial = 4\nn_angular = 3\n[train]\nbatch_size = 4\n"
    )
    out = tmp_path / "model.pt"
    code = main(
        ["train", str(data), "--out", str(out), "--config", str(cfg), "--steps", "5", "--quiet"]
    )
    assert code == 0
    model = load_model(out)
    assert model.config.species == ("Cu", "Au") and model.config.embedding == (8, 8)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["validation"]["n_structures"] == 3


def test_cli_train_reports_bad_input(tmp_path, capsys):
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    assert main(["train", str(empty), "--out", str(tmp_path / "m.pt")]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.extxyz"), "--out", "m.pt"]) == 2
    assert "does not exist" in capsys.readouterr().err
