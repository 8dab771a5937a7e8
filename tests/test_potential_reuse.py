"""ACNNPotential neighbour-list reuse with a skin: same numbers as a fresh list every call,
rebuilt exactly when the geometry has moved too far, bounded cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from alcsp.potential import ACNN, ACNNConfig, ACNNPotential
from alcsp.potential.forces import pair_list_valid
from alcsp.potential.io import load_model, save_model
from alcsp.potential.neighbours import pair_list
from alcsp.relax import RelaxConfig, relax_structures
from alcsp.structures import PotentialOutput, StructureBatch

CUTOFF = 4.5
SKIN = 0.5


@pytest.fixture(scope="module")
def model() -> ACNN:
    cfg = ACNNConfig(
        species=("Cu", "Au"),
        cutoff_radial=CUTOFF,
        cutoff_angular=3.5,
        n_radial=6,
        n_angular=4,
        basis_radial=6,
        basis_angular=5,
        harmonic_degree=2,
        embedding=(16, 16),
        fitting=(24, 24),
        seed=5,
    )
    return ACNN(cfg).double()


def cuau_cells(n: int, rng: np.random.Generator) -> list[Atoms]:
    out = []
    for _ in range(n):
        a = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((int(rng.integers(1, 3)), 1, 1))
        a.numbers = rng.choice([29, 79], size=len(a))
        a.set_cell(a.cell.array @ (np.eye(3) + rng.normal(0, 0.04, (3, 3))), scale_atoms=True)
        a.rattle(0.15, rng=rng)
        out.append(a)
    return out


def batch_of(atoms: list[Atoms], ids: list[int] | None) -> StructureBatch:
    b = StructureBatch.from_atoms(atoms, dtype=torch.float64)
    if ids is not None:
        b.ids = torch.tensor(ids)
    return b


def assert_same(a: PotentialOutput, b: PotentialOutput) -> None:
    torch.testing.assert_close(a.energy, b.energy, rtol=0, atol=1e-12)
    torch.testing.assert_close(a.forces, b.forces, rtol=0, atol=1e-12)
    torch.testing.assert_close(a.stress, b.stress, rtol=0, atol=1e-12)


class Recording:
    """The reuse potential, keeping every batch it was called with (a real relaxation)."""

    def __init__(self, inner: ACNNPotential):
        self.inner, self.dtype, self.device = inner, inner.dtype, inner.device
        self.batches: list[StructureBatch] = []
        self.outputs: list[PotentialOutput] = []

    def compute(self, batch: StructureBatch) -> PotentialOutput:
        out = self.inner.compute(batch)
        self.batches.append(batch)
        self.outputs.append(out)
        return out


def test_reuse_equals_fresh_lists_along_a_relaxation(model):
    rng = np.random.default_rng(0)
    cells = cuau_cells(6, rng)
    pot = Recording(ACNNPotential(model, skin=SKIN))
    # a small atoms budget: structures leave and join the batch (ids change between calls)
    cfg = RelaxConfig(max_steps=40, atoms_budget=24)
    relax_structures(cells, pot, 0.0, cfg)
    assert len(pot.batches) > 40
    assert pot.inner.pair_lists_reused > 0
    assert pot.inner.pair_lists_built > len(cells)  # some lists were rebuilt mid-run
    fresh = ACNNPotential(model, skin=0.0)
    for batch, out in zip(pot.batches, pot.outputs, strict=True):
        assert batch.ids is not None
        assert_same(out, fresh.compute(batch))


def test_no_ids_or_zero_skin_builds_every_call(model):
    cells = cuau_cells(3, np.random.default_rng(1))
    pot = ACNNPotential(model, skin=SKIN)
    for _ in range(2):
        pot.compute(batch_of(cells, None))
    assert (pot.pair_lists_built, pot.pair_lists_reused, pot.cached_ids) == (0, 0, [])
    off = ACNNPotential(model, skin=0.0)
    for _ in range(2):
        off.compute(batch_of(cells, [0, 1, 2]))
    assert (off.pair_lists_built, off.pair_lists_reused, off.cached_ids) == (0, 0, [])


def pair_at(distance: float) -> Atoms:
    """Two Cu atoms ``distance`` Å apart along x in a cell too wide for other pairs."""
    return Atoms(
        "Cu2", positions=[[1, 5, 5], [1 + distance, 5, 5]], cell=np.diag([30.0] * 3), pbc=True
    )


@pytest.mark.parametrize("move, rebuilt", [(0.999 * SKIN / 2, False), (1.001 * SKIN / 2, True)])
def test_displacement_threshold(model, move, rebuilt):
    """Pair just outside the list (r_c + skin + 1e-4); each atom moves ``move`` towards the other:
    beyond skin/2 the pair enters the cutoff, so the list must be rebuilt."""
    pot = ACNNPotential(model, skin=SKIN)
    start = pair_at(CUTOFF + SKIN + 1e-4)
    pot.compute(batch_of([start], [7]))
    moved = start.copy()
    moved.positions[0, 0] += move
    moved.positions[1, 0] -= move
    out = pot.compute(batch_of([moved], [7]))
    assert (pot.pair_lists_built, pot.pair_lists_reused) == ((2, 0) if rebuilt else (1, 1))
    assert_same(out, ACNNPotential(model, skin=0.0).compute(batch_of([moved], [7])))
    inside = moved.get_distance(0, 1) < CUTOFF
    assert inside == rebuilt  # the test geometry really probes the boundary


@pytest.mark.parametrize("factor, rebuilt", [(0.999, False), (1.001, True)])
def test_strain_threshold(model, factor, rebuilt):
    """Isotropic compression by ε: the pair at r_c + skin reaches r_c at ε = skin/(r_c + skin),
    where the bound is exact; just below it the list is reused, just above rebuilt."""
    pot = ACNNPotential(model, skin=SKIN)
    start = pair_at(CUTOFF + SKIN + 1e-6)
    pot.compute(batch_of([start], [3]))
    eps = factor * SKIN / (CUTOFF + SKIN)
    squeezed = start.copy()
    squeezed.set_cell(start.cell.array * (1 - eps), scale_atoms=True)
    out = pot.compute(batch_of([squeezed], [3]))
    assert (pot.pair_lists_built, pot.pair_lists_reused) == ((2, 0) if rebuilt else (1, 1))
    assert_same(out, ACNNPotential(model, skin=0.0).compute(batch_of([squeezed], [3])))


def test_random_moves_and_strains_near_the_threshold(model):
    """Random displacements and cell strains straddling the bound: every call equals a fresh
    list, both branches are taken, and whenever the bound says "valid" the kept list really
    holds every pair within r_c (checked against vesin)."""
    rng = np.random.default_rng(4)
    base = cuau_cells(4, rng)
    pot = ACNNPotential(model, skin=SKIN)
    fresh = ACNNPotential(model, skin=0.0)
    ids = [10, 11, 12, 13]
    pot.compute(batch_of(base, ids))
    refs = [a.copy() for a in base]
    for trial in range(30):
        cur = []
        for a in refs:
            b = a.copy()
            scale = rng.uniform(0.5, 1.3)  # around the threshold
            u = rng.normal(size=(len(b), 3))
            u *= scale * (SKIN / 2) * 0.7 / np.linalg.norm(u, axis=1).max()
            strain = rng.normal(0, 1, (3, 3))
            strain *= scale * 0.3 * SKIN / (CUTOFF + SKIN) / np.linalg.norm(strain, 2)
            b.set_cell(b.cell.array @ (np.eye(3) + strain), scale_atoms=True)
            b.positions += u
            cur.append(b)
        before = dict(zip(ids, [pot._cache[k] for k in ids], strict=True))
        out = pot.compute(batch_of(cur, ids))
        assert_same(out, fresh.compute(batch_of(cur, ids)))
        for k, b in zip(ids, cur, strict=True):
            e = before[k]
            if pair_list_valid(e.positions, e.cell_inv, b.positions, b.cell.array, CUTOFF, SKIN):
                kept = {
                    (i, j, tuple(s))
                    for i, j, s in zip(e.pairs.i, e.pairs.j, e.pairs.shift.tolist(), strict=True)
                }
                need = pair_list(b.positions, b.cell.array, CUTOFF)
                assert {
                    (i, j, tuple(s))
                    for i, j, s in zip(need.i, need.j, need.shift.tolist(), strict=True)
                } <= kept
        if trial % 3 == 2:  # now and then move the references on (as a relaxation does)
            refs = cur
    assert pot.pair_lists_reused > 10 and pot.pair_lists_built > 10


def test_cache_is_bounded_by_the_last_batch(model):
    rng = np.random.default_rng(2)
    cells = cuau_cells(5, rng)
    pot = ACNNPotential(model, skin=SKIN)
    pot.compute(batch_of(cells, [0, 1, 2, 3, 4]))
    assert pot.cached_ids == [0, 1, 2, 3, 4]
    pot.compute(batch_of(cells[:2], [3, 9]))
    assert pot.cached_ids == [3, 9]
    assert pot.pair_lists_reused == 0  # id 3 now names a different-size structure: rebuilt
    for step in range(20):
        pot.compute(batch_of(cells[:3], [100 + 3 * step, 101 + 3 * step, 102 + 3 * step]))
        assert len(pot.cached_ids) == 3


def test_same_id_for_a_different_structure_stays_correct(model):
    """Ids reused for another structure (two relaxations sharing a potential): the geometric
    test decides, never the id alone."""
    rng = np.random.default_rng(3)
    a, b = cuau_cells(2, rng)
    while len(b) != len(a):
        b = cuau_cells(1, rng)[0]
    pot = ACNNPotential(model, skin=SKIN)
    pot.compute(batch_of([a], [0]))
    out = pot.compute(batch_of([b], [0]))
    assert pot.pair_lists_built == 2
    assert_same(out, ACNNPotential(model, skin=0.0).compute(batch_of([b], None)))


def test_ase_calculator_reuses_its_list_along_an_ase_relaxation(model):
    """ACNNCalculator (skin 0.5 Å) inside ASE BFGS + FrechetCellFilter: every call equals a
    fresh-list calculator on the same geometry, and most calls reuse the list."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    from alcsp.potential import ACNNCalculator

    atoms = cuau_cells(1, np.random.default_rng(8))[0]
    atoms.calc = ACNNCalculator(model, skin=SKIN)
    fresh = ACNNCalculator(model, skin=0.0)
    checked = 0

    def compare() -> None:
        nonlocal checked
        ref = atoms.copy()
        ref.calc = fresh
        assert abs(ref.get_potential_energy() - atoms.get_potential_energy()) < 1e-12
        np.testing.assert_allclose(ref.get_forces(), atoms.get_forces(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(ref.get_stress(), atoms.get_stress(), rtol=0, atol=1e-12)
        checked += 1

    opt = BFGS(FrechetCellFilter(atoms), logfile=None)
    opt.attach(compare)
    opt.run(fmax=1e-3, steps=40)
    pot = atoms.calc.potential
    assert checked >= 10 and pot.pair_lists_reused > pot.pair_lists_built
    assert fresh.potential.pair_lists_reused == 0


def test_bad_skin_and_ids_are_rejected(model):
    with pytest.raises(ValueError, match="skin"):
        ACNNPotential(model, skin=-0.1)
    with pytest.raises(ValueError, match="skin"):
        ACNNPotential(model, skin=float("nan"))
    cells = cuau_cells(2, np.random.default_rng(5))
    with pytest.raises(ValueError, match="unique"):
        ACNNPotential(model).compute(batch_of(cells, [1, 1]))
    with pytest.raises(ValueError, match="one id per structure"):
        ACNNPotential(model).compute(batch_of(cells, [1, 2, 3]))


def test_batch_select_and_to_carry_ids():
    cells = cuau_cells(3, np.random.default_rng(6))
    b = batch_of(cells, [7, 8, 9])
    assert b.select([2, 0]).ids.tolist() == [9, 7]
    assert b.to(dtype=torch.float32).ids.tolist() == [7, 8, 9]
    assert StructureBatch.from_atoms(cells).ids is None
    assert StructureBatch.from_atoms(cells).select([1]).ids is None


def test_model_file_of_an_older_alcsp_with_l_max_loads_bit_identically(model, tmp_path):
    """Model files written before ``l_max`` became ``harmonic_degree`` store the old name
    in their config: they load as written (same config, same weights, same numbers)."""
    path = save_model(model, tmp_path / "new.pt")
    payload = torch.load(path, weights_only=True)
    config = payload["config"]
    config["l_max"] = config.pop("harmonic_degree")  # as alcsp before the rename wrote it
    torch.save(payload, tmp_path / "old.pt")
    assert "harmonic_degree" not in torch.load(tmp_path / "old.pt", weights_only=True)["config"]
    old = load_model(tmp_path / "old.pt")
    assert old.config == model.config and old.config.harmonic_degree == 2
    for (k, a), (k2, b) in zip(model.state_dict().items(), old.state_dict().items(), strict=True):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b)
    atoms = cuau_cells(2, np.random.default_rng(4))
    fresh, loaded = ACNNPotential(model), ACNNPotential(old)
    a, b = fresh.compute(batch_of(atoms, None)), loaded.compute(batch_of(atoms, None))
    for x, y in ((a.energy, b.energy), (a.forces, b.forces), (a.stress, b.stress)):
        assert torch.equal(x, y)


def test_old_name_l_max_still_works_in_python_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="harmonic_degree"):
        cfg = ACNNConfig(species=("Cu",), l_max=3)
    assert cfg.harmonic_degree == 3 and "l_max" not in cfg.to_dict()
    with pytest.warns(DeprecationWarning, match="harmonic_degree"):
        assert cfg.l_max == 3
    with pytest.raises(ValueError, match="both l_max and harmonic_degree"):
        ACNNConfig.from_dict({"species": ["Cu"], "l_max": 2, "harmonic_degree": 2})
