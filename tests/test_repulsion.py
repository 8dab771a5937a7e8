"""The ZBL short-range prior inside ACNN (repulsion.py): the pair energy against an independent
NumPy ZBL, smoothness of the switch, derivatives of the full model, invariances, padding,
both backends, old model files, the energy-shift fit and config validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols, covalent_radii

from alcsp.config import ConfigError, parse_config
from alcsp.potential import ACNN, ACNNConfig, energy_forces_stress, load_model, save_model
from alcsp.potential import fused as fused_mod
from alcsp.potential.io import labelled
from alcsp.potential.neighbours import Slots
from alcsp.potential.repulsion import ZBLRepulsion
from alcsp.potential.train import fit_statistics, prior_labels
from alcsp.structures import StructureBatch

BACKENDS = ["torch", "fused"]
SPECIES = ("H", "Mg")


def small_config(species=SPECIES, **kw) -> ACNNConfig:
    base = dict(
        species=tuple(species),
        cutoff_radial=4.5,
        cutoff_angular=3.5,
        n_radial=6,
        n_angular=4,
        basis_radial=6,
        basis_angular=5,
        embedding=(16, 16),
        fitting=(24, 24),
        attention_layers=0,
        attention_heads=2,
        seed=3,
    )
    base.update(kw)
    return ACNNConfig(**base)


def covalent_sum(a: str, b: str) -> float:
    return float(covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]])


# Independent reference: ZBL written out from Ziegler, Biersack & Littmark (1985), the
# constants typed in again here on purpose (not imported from the module under test).
def numpy_zbl(r: np.ndarray, zi: int, zj: int) -> np.ndarray:
    a = 0.8854 * 0.529177210903 / (zi**0.23 + zj**0.23)
    x = r / a
    phi = (
        0.18175 * np.exp(-3.19980 * x)
        + 0.50986 * np.exp(-0.94229 * x)
        + 0.28022 * np.exp(-0.40290 * x)
        + 0.02817 * np.exp(-0.20162 * x)
    )
    return zi * zj * 14.399645 / r * phi


def numpy_switched(r: np.ndarray, a: str, b: str, inner=0.35, outer=0.75) -> np.ndarray:
    rs = covalent_sum(a, b)
    t = np.clip((r - inner * rs) / ((outer - inner) * rs), 0.0, 1.0)
    s = 1.0 - (6 * t**5 - 15 * t**4 + 10 * t**3)
    return numpy_zbl(r, atomic_numbers[a], atomic_numbers[b]) * s


def efs(model, atoms_list, backend="torch"):
    batch = StructureBatch.from_atoms(atoms_list, dtype=torch.float64)
    return energy_forces_stress(model, batch, backend=backend)


def crowded_cell(rng: np.random.Generator) -> Atoms:
    """A skewed Mg2H5 cell with an H–H pair below r_in (pure ZBL), one H–H and one Mg–H pair
    inside the switching region, everything else farther than r_out."""
    cell = np.eye(3) * 4.2 + rng.normal(0, 0.3, (3, 3))
    pos = np.array(
        [[0.3, 0.2, 0.1], [2.4, 2.3, 2.2], [0.3, 2.4, 0.2], [2.4, 0.2, 2.3], [1.3, 1.2, 3.4]]
    ) @ (cell / 4.2)
    u = rng.normal(size=(3, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    extra = [pos[2] + 0.15 * u[0], pos[3] + 0.36 * u[1], pos[0] + 1.0 * u[2]]
    return Atoms(
        symbols=["H", "H", "H", "H", "H", "Mg", "Mg"],
        positions=np.vstack([pos[2], pos[3], extra[0], extra[1], extra[2], pos[0], pos[1]]),
        cell=cell,
        pbc=True,
    )


def dimer(a: str, b: str, d: float, box: float = 12.0) -> Atoms:
    return Atoms(a + b, positions=[[1, 1, 1], [1 + d, 1, 1]], cell=[box] * 3, pbc=True)


# ----------------------------------------------------------------------------- the pair energy


def test_pair_energy_matches_an_independent_numpy_zbl():
    rep = ZBLRepulsion(("H", "Mg", "Ca", "O"), 0.35, 0.75).double()
    idx = {"H": 0, "Mg": 1, "Ca": 2, "O": 3}
    for a, b in [("H", "H"), ("Mg", "H"), ("Ca", "H"), ("Mg", "Mg"), ("O", "Ca")]:
        rs = covalent_sum(a, b)
        r = np.array([0.02, 0.1, 0.3, 0.35, 0.5, 0.6, 0.74, 0.75, 0.9]) * rs
        got = rep.pair_energy(
            torch.tensor(r), torch.full((len(r),), idx[a]), torch.full((len(r),), idx[b])
        ).numpy()
        # the reference's 1 − polynomial loses ~1e-11 relative near r_out to cancellation
        np.testing.assert_allclose(got, numpy_switched(r, a, b), rtol=1e-10, atol=1e-14)
        assert got[-2] == 0.0 and got[-1] == 0.0  # at and beyond r_out: exactly zero


def test_full_model_adds_the_pair_energy_once_per_pair():
    """E(zbl) − E(none) of a dimer (each atom holds half of the pair) is the NumPy ZBL."""
    with_prior = ACNN(small_config()).double()
    without = ACNN(small_config(repulsion="none")).double()
    for a, b, d in [("H", "H", 0.12), ("H", "H", 0.4), ("Mg", "H", 0.9), ("Mg", "Mg", 1.9)]:
        e = float(efs(with_prior, [dimer(a, b, d)]).energy[0])
        e0 = float(efs(without, [dimer(a, b, d)]).energy[0])
        assert e - e0 == pytest.approx(float(numpy_switched(np.array([d]), a, b)[0]), rel=1e-10)


def _derivatives(rep: ZBLRepulsion, r: float, i: int, j: int) -> np.ndarray:
    """(E, dE/dr, d²E/dr²) of the switched pair energy at r, by autograd."""
    x = torch.tensor([r], dtype=torch.float64, requires_grad=True)
    e = rep.pair_energy(x, torch.tensor([i]), torch.tensor([j])).sum()
    (d1,) = torch.autograd.grad(e, x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x)
    return np.array([float(e.detach()), float(d1.detach()), float(d2)])


@pytest.mark.parametrize("pair", [(0, 0), (0, 1), (1, 1)])
def test_energy_force_and_second_derivative_are_continuous_at_r_in_and_r_out(pair):
    rep = ZBLRepulsion(SPECIES, 0.35, 0.75).double()
    i, j = pair
    for radius in (float(rep.r_in[i, j]), float(rep.r_out[i, j])):

        def jump(delta: float, r: float = radius) -> np.ndarray:
            return np.abs(_derivatives(rep, r + delta, i, j) - _derivatives(rep, r - delta, i, j))

        big, small = jump(1e-3), jump(1e-5)
        # A continuous quantity's jump across the point shrinks with the gap (at least
        # linearly); a discontinuous one's would stay.
        assert np.all(small <= 0.02 * big + 1e-9), (radius, big, small)
    r_out = float(rep.r_out[i, j])
    for r in (r_out, r_out + 1e-9, r_out + 0.3):
        assert np.all(_derivatives(rep, r, i, j) == 0.0)


def test_forces_are_repulsive_and_decrease_monotonically_for_every_element_pair():
    """From 0.02 × the covalent sum to r_out, for all pairs Z ≤ 94 at the default fractions:
    −dE/dr ≥ 0 and non-increasing in r (no bump from the switch)."""
    symbols = tuple(chemical_symbols[1:95])
    rep = ZBLRepulsion(symbols, 0.35, 0.75).double()
    i, j = torch.triu_indices(len(symbols), len(symbols))  # [M]
    u = torch.linspace(0.02, 1.0, 400, dtype=torch.float64)  # fraction of r_out
    r = (rep.r_out[i, j].unsqueeze(1) * u).requires_grad_(True)  # [M, 400]
    e = rep.pair_energy(r.flatten(), i.repeat_interleave(len(u)), j.repeat_interleave(len(u)))
    (grad,) = torch.autograd.grad(e.sum(), r)
    force = -grad  # [M, 400]
    assert bool((force >= 0).all())
    scale = force.amax(dim=1, keepdim=True)
    assert bool((force.diff(dim=1) <= 1e-12 * scale).all())


# ----------------------------------------------------------------------------- the full model


@pytest.mark.parametrize("backend", BACKENDS)
def test_forces_and_stress_match_finite_differences_with_the_prior(backend):
    rng = np.random.default_rng(4)
    model = ACNN(small_config()).double()
    atoms = crowded_cell(rng)
    out = efs(model, [atoms], backend)
    prior = float(out.energy[0]) - float(
        efs(ACNN(small_config(repulsion="none")).double(), [atoms], backend).energy[0]
    )
    assert prior > 10.0  # the close pairs are really in the prior's range

    def energy(a):
        return float(efs(model, [a], backend).energy[0])

    h = 1e-5
    for atom in range(len(atoms)):
        for comp in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[atom, comp] += h
            minus.positions[atom, comp] -= h
            fd = -(energy(plus) - energy(minus)) / (2 * h)
            f = float(out.forces[atom, comp])
            assert abs(fd - f) < 1e-6 * max(1.0, abs(f)), (atom, comp, fd, f)
    vol = atoms.get_volume()
    for a, b in [(0, 0), (1, 2), (0, 1), (2, 2)]:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h / 2 if a != b else h
        values = []
        for sign in (1, -1):
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
            values.append(energy(strained))
        fd = (values[0] - values[1]) / (2 * h) / vol
        s = float(out.stress[0, a, b])
        assert abs(fd - s) < 1e-6 * max(1.0, abs(s)), (a, b, fd, s)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotation_and_translation_invariance_with_close_contacts(backend):
    rng = np.random.default_rng(5)
    model = ACNN(small_config()).double()
    atoms = crowded_cell(rng)
    ref = efs(model, [atoms], backend)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ q.T, scale_atoms=False)
    rotated.positions = atoms.positions @ q.T
    rot = efs(model, [rotated], backend)
    assert float(rot.energy[0]) == pytest.approx(float(ref.energy[0]), rel=1e-12)
    np.testing.assert_allclose(rot.forces.numpy(), ref.forces.numpy() @ q.T, atol=1e-8)
    np.testing.assert_allclose(rot.stress[0].numpy(), q @ ref.stress[0].numpy() @ q.T, atol=1e-9)
    moved = atoms.copy()
    moved.positions += np.array([0.37, -1.2, 5.1])
    mov = efs(model, [moved], backend)
    assert float(mov.energy[0]) == pytest.approx(float(ref.energy[0]), rel=1e-12)
    np.testing.assert_allclose(mov.forces.numpy(), ref.forces.numpy(), atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_beyond_r_out_the_prior_changes_nothing(backend):
    rng = np.random.default_rng(6)
    cell = np.eye(3) * 5.0 + rng.normal(0, 0.2, (3, 3))
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5], [0.25, 0.25, 0.25]])
    atoms = Atoms(
        "MgMgHHH", scaled_positions=frac + rng.normal(0, 0.01, frac.shape), cell=cell, pbc=True
    )
    d = atoms.get_all_distances(mic=True) + 10 * np.eye(len(atoms))
    assert d.min() > 0.75 * covalent_sum("Mg", "Mg")  # beyond every pair's r_out
    a = efs(ACNN(small_config()).double(), [atoms], backend)
    b = efs(ACNN(small_config(repulsion="none")).double(), [atoms], backend)
    assert torch.equal(a.energy, b.energy)
    assert torch.equal(a.forces, b.forces)
    assert torch.equal(a.stress, b.stress)


def test_a_collapsing_pair_is_pushed_apart_even_by_an_untrained_model():
    model = ACNN(small_config()).double()
    bare = ACNN(small_config(repulsion="none")).double()
    energies = []
    for d in (0.4, 0.3, 0.2, 0.1, 0.05):
        atoms = Atoms(
            "HHMg", positions=[[1, 1, 1], [1 + d, 1, 1], [4, 4, 4]], cell=[9] * 3, pbc=True
        )
        out = efs(model, [atoms])
        energies.append(float(out.energy[0]))
        assert float(out.forces[1, 0]) > 0 > float(out.forces[0, 0])  # pushed apart
    assert np.all(np.diff(energies) > 0)  # closer is always higher
    assert float(out.forces[1, 0]) > 1000.0  # eV/Å at 0.05 Å
    assert abs(float(efs(bare, [atoms]).forces[1, 0])) < 100.0  # the network alone: nothing


def test_padded_slots_contribute_nothing_and_zero_vectors_give_no_nan():
    """Direct call on hand-made slots: a padded slot (used False) holding a short vector adds
    nothing, and a used slot of length 0 (coincident atoms) stays finite with a finite grad."""
    rep = ZBLRepulsion(SPECIES, 0.35, 0.75).double()
    vec = torch.tensor(
        [
            [[0.3, 0.0, 0.0], [0.0, 0.1, 0.0], [6.0, 0.0, 0.0]],
            [[-0.3, 0.0, 0.0], [0.0, 0.0, 0.0], [6.0, 0.0, 0.0]],
        ],
        dtype=torch.float64,
    ).requires_grad_(True)  # [N=2, R=3, 3]
    used = torch.tensor([[True, False, False], [True, True, False]])
    nbr = torch.tensor([[1, 0, 0], [0, 1, 1]])
    slots = Slots(
        neighbour=nbr,
        shift=torch.zeros(2, 3, 3, dtype=torch.float64),
        vector=vec,
        species=torch.zeros(2, 3, dtype=torch.long),
        used=used,
    )
    e = rep(vec, slots, torch.zeros(2, dtype=torch.long))  # [2]
    (grad,) = torch.autograd.grad(e.sum(), vec)
    assert torch.isfinite(e).all() and torch.isfinite(grad).all()
    assert torch.all(grad[~used] == 0)
    half = 0.5 * float(numpy_switched(np.array([0.3]), "H", "H")[0])
    e = e.detach()
    assert float(e[0]) == pytest.approx(half, rel=1e-12)  # the padded 0.1 Å slot is ignored
    assert float(e[1]) > float(e[0])  # the used zero-length slot adds its (finite) energy


def test_torch_and_fused_backends_agree_including_training_gradients():
    if not fused_mod.available():
        pytest.fail("the fused kernels did not build; see alcsp.potential.fused.library()")
    rng = np.random.default_rng(7)
    model = ACNN(small_config(attention_layers=1)).double()
    batch = StructureBatch.from_atoms([crowded_cell(rng) for _ in range(2)], dtype=torch.float64)
    results = {}
    for backend in BACKENDS:
        model.zero_grad()
        out = energy_forces_stress(model, batch, training=True, backend=backend)
        loss = out.energy.square().sum() + out.forces.square().sum() + out.stress.square().sum()
        loss.backward()
        results[backend] = (out, torch.cat([p.grad.flatten() for p in model.parameters()]))
    (o1, g1), (o2, g2) = results["torch"], results["fused"]
    torch.testing.assert_close(o1.energy, o2.energy)
    torch.testing.assert_close(o1.forces, o2.forces)
    torch.testing.assert_close(o1.stress, o2.stress)
    torch.testing.assert_close(g1, g2, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_training_graph_gives_the_same_forces(dtype):
    """With a graph of the forces kept (training), the prior's gradient is re-evaluated in
    differentiable ops instead of taken from the forward pass: the same numbers."""
    rng = np.random.default_rng(10)
    model = ACNN(small_config()).to(dtype)
    batch = StructureBatch.from_atoms([crowded_cell(rng) for _ in range(2)], dtype=dtype)
    fast = energy_forces_stress(model, batch, backend="torch")
    kept = energy_forces_stress(model, batch, training=True, backend="torch")
    tol = dict(rtol=1e-12, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-5, atol=2e-3)
    torch.testing.assert_close(kept.energy.detach(), fast.energy, **tol)
    torch.testing.assert_close(kept.forces.detach(), fast.forces, **tol)
    torch.testing.assert_close(kept.stress.detach(), fast.stress, **tol)


# ------------------------------------------------------------------ files, fitting, config


def test_model_files_without_the_field_load_without_the_prior(tmp_path):
    """A file written before the prior existed has no repulsion fields: it loads as "none" and
    gives bit-identical outputs to the model it was saved from."""
    rng = np.random.default_rng(8)
    old = ACNN(small_config(repulsion="none"))
    with torch.no_grad():
        old.energy_shift.copy_(torch.tensor([-1.1, -1.6]))
    path = save_model(old, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    for key in ("repulsion", "repulsion_inner", "repulsion_outer"):
        del payload["config"][key]
    torch.save(payload, path)
    loaded = load_model(path)
    assert loaded.config.repulsion == "none" and loaded.repulsion is None
    batch = StructureBatch.from_atoms([crowded_cell(rng)], dtype=torch.float32)
    a, b = energy_forces_stress(old, batch), energy_forces_stress(loaded, batch)
    assert torch.equal(a.energy, b.energy) and torch.equal(a.forces, b.forces)
    assert torch.equal(a.stress, b.stress)
    # a new file keeps its prior
    new = load_model(save_model(ACNN(small_config()), tmp_path / "n.pt"))
    assert new.config.repulsion == "zbl" and new.repulsion is not None


def test_energy_shift_is_fitted_to_the_labels_minus_the_prior():
    """Labels = prior + Σ n_Z μ_Z exactly: the fit recovers μ_Z whatever the close contacts."""
    rng = np.random.default_rng(9)
    model = ACNN(small_config()).double()
    structures = [crowded_cell(rng) for _ in range(3)]
    structures += [dimer("H", "Mg", 2.5), dimer("H", "H", 0.2), dimer("Mg", "Mg", 1.2)]
    prior_e, prior_f = prior_labels(model, structures)
    assert prior_e.max() > 50.0  # close contacts carry tens of eV
    mu = {"H": -3.3, "Mg": -1.2}
    data = [
        labelled(a, pe + sum(mu[s] for s in a.get_chemical_symbols()), pf)
        for a, pe, pf in zip(structures, prior_e, prior_f, strict=True)
    ]
    fit_statistics(model, data)
    np.testing.assert_allclose(model.energy_shift.numpy(), [mu["H"], mu["Mg"]], atol=1e-6)
    assert float(model.energy_scale) == pytest.approx(1e-3)  # nothing left to learn
    # and the prior's forces are those of the model's own autograd pass
    bare = efs(ACNN(small_config(repulsion="none")).double(), structures[:1])
    full = efs(ACNN(small_config()).double(), structures[:1])
    np.testing.assert_allclose(prior_f[0], (full.forces - bare.forces).numpy(), atol=1e-9)


def test_config_validation_names_the_field_and_the_allowed_values():
    with pytest.raises(ValueError, match=r"repulsion must be one of \['zbl', 'none'\], got 'lj'"):
        small_config(repulsion="lj")
    with pytest.raises(ValueError, match=r"repulsion must be one of"):
        small_config(repulsion=None)
    with pytest.raises(ValueError, match="0 <= repulsion_inner < repulsion_outer"):
        small_config(repulsion_inner=0.8, repulsion_outer=0.5)
    with pytest.raises(ValueError, match="must be numbers"):
        small_config(repulsion_outer="0.7")
    with pytest.raises(ValueError, match="exceeds cutoff_angular"):
        small_config(species=("Cs",), cutoff_radial=3.0, cutoff_angular=3.0)
    assert (
        small_config(
            species=("Cs",), cutoff_radial=3.0, cutoff_angular=3.0, repulsion="none"
        ).repulsion
        == "none"
    )
    toml = '[campaign]\nname = "t"\n[compositions]\nelements = ["Cu", "Au"]\n'
    toml += 'max_formula_atoms = 2\n[oracle]\nname = "emt"\n[model]\n'
    assert parse_config(toml).model.repulsion == "zbl"
    assert parse_config(toml + 'repulsion = "none"\n').model.repulsion == "none"
    for bad, words in [
        ('repulsion = "lj"', "'zbl', 'none'"),
        ("repulsion_outer = 9.0", "<= 1.5"),
        ("repulsion_inner = true", "finite number"),
        ("repulsion_width = 1", "unknown"),
    ]:
        with pytest.raises(ConfigError) as err:
            parse_config(toml + bad + "\n")
        message = str(err.value)
        assert "\n" not in message and message.startswith("[model]") and words in message
