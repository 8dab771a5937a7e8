"""The ACNN committee (alcsp.committee) and the relaxer's trajectory frames."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from alcsp.committee import (
    Committee,
    CommitteeConfig,
    TrainJob,
    first_crossing,
    train_committee,
    train_models,
)
from alcsp.potential import ACNN, ACNNCalculator, ACNNConfig, TrainConfig, train
from alcsp.potential.io import labelled
from alcsp.relax import RelaxConfig, relax_structures
from alcsp.units import GPA
from relax_pair import TorchMorse

TINY = ACNNConfig(
    species=("Cu",),
    cutoff_radial=4.5,
    cutoff_angular=3.5,
    n_radial=4,
    n_angular=3,
    basis_radial=4,
    basis_angular=4,
    harmonic_degree=2,
    embedding=(8,),
    fitting=(16,),
)
TRAIN = TrainConfig(
    steps=400,
    batch_size=4,
    lr=5e-3,
    decay_every=100,
    lr_decay=0.8,
    eval_every=400,
    validation_fraction=0.0,
    dtype="float64",
)


def cu_cells(
    n: int,
    rng: np.random.Generator,
    a0: float = 3.61,
    strain: float = 0.01,
    rattle: float = 0.05,
    label: bool = True,
) -> list[Atoms]:
    """Strained and rattled 4-atom fcc Cu cells, EMT-labelled when ``label``."""
    out = []
    for _ in range(n):
        a = bulk("Cu", "fcc", a=a0, cubic=True)
        a.set_cell(a.cell.array @ (np.eye(3) + rng.normal(0, strain, (3, 3))), scale_atoms=True)
        a.positions += rng.normal(0, rattle, a.positions.shape)
        if label:
            a.calc = EMT()
            a = labelled(a, a.get_potential_energy(), a.get_forces(), a.get_stress())
        out.append(a)
    return out


@pytest.fixture(scope="module")
def trained() -> tuple[list[ACNN], np.random.Generator]:
    """A 3-member committee trained on 20 near-equilibrium EMT Cu cells (2 workers)."""
    rng = np.random.default_rng(12)
    members = train_committee(cu_cells(20, rng), [TINY] * 3, TRAIN, seeds=[1, 2, 3], workers=2)
    return [m for m, _ in members], rng


# -- CommitteeConfig and first_crossing ---------------------------------------------------


def test_committee_config_validates_and_builds_the_member_train_config():
    with pytest.raises(ValueError, match=r"CommitteeConfig\.size .* at least 2"):
        CommitteeConfig(size=1)
    with pytest.raises(ValueError, match=r"CommitteeConfig\.perturb"):
        CommitteeConfig(perturb=-0.1)
    with pytest.raises(ValueError, match=r"CommitteeConfig\.workers"):
        CommitteeConfig(workers=-1)
    with pytest.raises(ValueError, match=r"CommitteeConfig\.steps"):
        CommitteeConfig(steps=1.5)  # type: ignore[arg-type]
    assert 1 <= CommitteeConfig(size=3).n_workers() <= 3
    assert CommitteeConfig(workers=5).n_workers() == 5
    base = TrainConfig(steps=100)
    assert CommitteeConfig(steps=7, perturb=0.1).train_config(base) == replace(
        base, steps=7, perturb=0.1
    )
    assert CommitteeConfig().train_config(base).steps == 100


def test_first_crossing():
    d = np.array([0.01, 0.05, 0.2, 0.1, 0.3])
    assert first_crossing(d, 0.1) == 2
    assert first_crossing(d, 0.005) == 0
    assert first_crossing(d, 0.3) is None  # "exceeds" is strict
    assert first_crossing(np.zeros(0), 0.1) is None
    assert first_crossing(np.array([0.0, np.nan, 1.0]), 0.5) == 1  # a blown-up member counts
    with pytest.raises(ValueError, match="1-D"):
        first_crossing(np.zeros((2, 2)), 0.1)


# -- evaluation ---------------------------------------------------------------------------


def test_identical_members_have_exactly_zero_spread():
    model = ACNN(TINY)
    cells = cu_cells(5, np.random.default_rng(0), rattle=0.2, label=False)
    cells.append(bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1)))  # sizes differ within a batch
    ev = Committee([model, model, model]).evaluate(cells, pressure_gpa=3.0)
    assert ev.energy.shape == ev.energy_std.shape == ev.force_deviation.shape == (6,)
    assert ev.member_energy.shape == (3, 6)
    assert np.all(ev.energy_std == 0.0)
    assert np.all(ev.force_deviation == 0.0)
    assert np.all(ev.stress_std == 0.0)
    assert np.all(ev.energy == ev.member_energy[0])


def test_deviations_match_per_member_ase_calculators():
    models = [ACNN(replace(TINY, seed=s)) for s in (3, 4, 5)]
    cells = cu_cells(4, np.random.default_rng(1), rattle=0.2, label=False)
    cells.append(bulk("Cu", "fcc", a=3.5, orthorhombic=True).repeat((1, 1, 2)))
    p = 10.0
    # a small atoms budget splits the structures over several batches
    ev = Committee(models, atoms_budget=9).evaluate(cells, pressure_gpa=p)
    for s, atoms in enumerate(cells):
        e, f, st = [], [], []
        for m in models:
            a = atoms.copy()
            a.calc = ACNNCalculator(m, dtype=torch.float64)
            e.append(a.get_potential_energy() / len(a))
            f.append(a.get_forces())
            st.append(a.get_stress(voigt=False))
        e, f, st = np.array(e), np.array(f), np.array(st)  # [M], [M, n, 3], [M, 3, 3]
        dev = np.sqrt(((f - f.mean(0)) ** 2).sum(2).mean(0)).max()
        assert ev.force_deviation[s] == pytest.approx(dev, rel=1e-9, abs=1e-12)
        assert ev.energy[s] == pytest.approx(e.mean(), rel=1e-12)
        assert ev.energy_std[s] == pytest.approx(e.std(), rel=1e-9)
        assert ev.stress_std[s] == pytest.approx(st.std(0).max() / GPA, rel=1e-9)
        h = e.mean() + p * GPA * atoms.get_volume() / len(atoms)
        assert ev.enthalpy[s] == pytest.approx(h, rel=1e-12)
    assert np.all(ev.force_deviation > 0)


def test_committee_spread_grows_off_the_training_data(trained):
    models, rng = trained
    committee = Committee(models)
    held_out = committee.evaluate(cu_cells(10, rng))
    compressed = committee.evaluate(cu_cells(10, rng, a0=3.3))  # -9 % lattice constant
    rattled = committee.evaluate(cu_cells(10, rng, rattle=0.4))  # Å, trained on 0.05
    # (measured: medians 0.075 eV/Å and 1.0 meV/atom held out, 1.03 / 6.0 compressed,
    # 0.37 / 13.7 rattled; the members' force spread on held-out data is the fit's noise)
    for far in (compressed, rattled):
        assert np.median(far.force_deviation) > 2 * np.median(held_out.force_deviation)
        assert np.median(far.energy_std) > 3 * np.median(held_out.energy_std)


def test_members_mismatched_species_are_refused():
    with pytest.raises(ValueError, match="share species and cutoffs"):
        Committee([ACNN(TINY), ACNN(replace(TINY, species=("Cu", "Au")))])


# -- training -----------------------------------------------------------------------------


def test_train_committee_is_deterministic_across_worker_counts():
    data = cu_cells(8, np.random.default_rng(5))
    warm = ACNN(TINY).double()
    tc = replace(TRAIN, steps=12, perturb=0.05)
    starts = [TINY, warm]
    one = train_committee(data, starts, tc, seeds=[7, 8], workers=1)
    two = train_committee(data, starts, tc, seeds=[7, 8], workers=2)
    for (m1, r1), (m2, r2) in zip(one, two, strict=True):
        s1, s2 = m1.state_dict(), m2.state_dict()
        assert s1.keys() == s2.keys()
        assert all(torch.equal(s1[k], s2[k]) for k in s1)
        assert r1.train == r2.train and r1.steps == 12
    # the seeds give different members; the warm start is not modified
    w0, w1 = one[0][0].fit[0].weight, one[1][0].fit[0].weight
    assert w0.shape == w1.shape and not torch.equal(w0, w1)
    assert torch.equal(warm.fit[0].weight, ACNN(TINY).double().fit[0].weight)
    assert one[0][0].config.seed == 7  # a fresh member takes its seed as ACNNConfig.seed


def test_a_model_trained_in_a_worker_is_the_one_the_driver_would_train():
    """The campaign trains model n in a worker process beside the committee members: it
    must be bit for bit the model that ``train`` gives in this process (fresh and warm
    starts), and the progress the workers report climbs to the total steps."""
    torch.set_num_threads(1)
    data = cu_cells(8, np.random.default_rng(9))
    tc = replace(TRAIN, steps=12, seed=41)
    here, _ = train(data, TINY, tc)
    warm_tc = replace(tc, seed=42, perturb=0.05)
    warm_here, _ = train(data, here, warm_tc)
    seen: list[tuple[int, int]] = []
    got = train_models(
        data,
        [TrainJob(TINY, tc), TrainJob(here, warm_tc)],
        workers=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    for (model, _), ref in zip(got, [here, warm_here], strict=True):
        for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    assert seen and seen[-1] == (24, 24)
    assert all(t == 24 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_train_committee_names_the_member_that_failed():
    data = cu_cells(4, np.random.default_rng(6))
    gold = replace(TINY, species=("Au",))  # cannot train on Cu cells
    with pytest.raises(RuntimeError, match=r"committee member 1 \(seed 2\) failed"):
        train_committee(data, [TINY, gold], replace(TRAIN, steps=2), seeds=[1, 2], workers=1)
    with pytest.raises(ValueError, match="distinct"):
        train_committee(data, [TINY, TINY], TRAIN, seeds=[1, 1], workers=1)
    with pytest.raises(ValueError, match="one seed per member"):
        train_committee(data, [TINY, TINY], TRAIN, seeds=[1], workers=1)


# -- relaxation frames --------------------------------------------------------------------


def _morse_cells() -> list[Atoms]:
    rng = np.random.default_rng(3)
    out = []
    for k in range(6):
        a = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((1, 1, 1 + k % 3))
        a.set_cell(a.cell.array @ (np.eye(3) + rng.normal(0, 0.03, (3, 3))), scale_atoms=True)
        a.rattle(0.1, rng=rng)
        out.append(a)
    return out


@pytest.mark.parametrize("interval", [1, 4])
def test_relax_frames_start_every_kth_step_and_end(interval):
    cells = _morse_cells()
    pot = TorchMorse(r0={29: 2.55})
    # a small atoms budget makes structures join the batch at different steps
    base = RelaxConfig(max_steps=60, atoms_budget=12)
    plain = relax_structures(cells, pot, 2.0, base)
    framed = relax_structures(cells, pot, 2.0, replace(base, frame_interval=interval))
    for atoms, r0, r in zip(cells, plain, framed, strict=True):
        assert r0.frames == ()
        # frames never change the relaxation
        assert np.array_equal(r0.atoms.positions, r.atoms.positions)
        assert np.array_equal(r0.atoms.cell.array, r.atoms.cell.array)
        assert (r0.steps, r0.status, r0.energy) == (r.steps, r.status, r.energy)
        steps = [f.info["relax_step"] for f in r.frames]
        expect = list(range(0, r.steps + 1, interval))
        if expect[-1] != r.steps:
            expect.append(r.steps)
        assert steps == expect
        np.testing.assert_allclose(r.frames[0].positions, atoms.positions, atol=1e-12)
        np.testing.assert_allclose(r.frames[0].cell.array, atoms.cell.array, atol=1e-12)
        assert np.array_equal(r.frames[-1].positions, r.atoms.positions)
        assert np.array_equal(r.frames[-1].cell.array, r.atoms.cell.array)
        assert all(np.array_equal(f.numbers, atoms.numbers) for f in r.frames)
        assert all(f.calc is None for f in r.frames)
    assert any(r.steps > 2 * interval for r in framed)


def test_frame_interval_is_validated():
    with pytest.raises(ValueError, match="frame_interval"):
        RelaxConfig(frame_interval=-1)
    with pytest.raises(ValueError, match="frame_interval"):
        RelaxConfig(frame_interval=2.0)  # type: ignore[arg-type]
