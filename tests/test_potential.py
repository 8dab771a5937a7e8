"""ACNN physics and interface tests: descriptor maths, derivatives, invariances, smoothness,
batching, both kernel backends, save/load, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from alcsp.potential import (
    ACNN,
    ACNNCalculator,
    ACNNConfig,
    ACNNPotential,
    energy_forces_stress,
    graph_for,
    load_model,
    save_model,
)
from alcsp.potential import fused as fused_mod
from alcsp.potential.descriptors import (
    RadialBasis,
    chebyshev_basis,
    monomial_to_ylm,
    monomials,
    spherical_harmonics,
)
from alcsp.structures import StructureBatch, StructureError

BACKENDS = ["torch", "fused"]


def small_config(species, attention=0, **kw) -> ACNNConfig:
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
        attention_layers=attention,
        attention_heads=2,
        seed=3,
    )
    base.update(kw)
    return ACNNConfig(**base)


def random_triclinic(symbols, rng, vol_per_atom=14.0) -> Atoms:
    n = len(symbols)
    length = (vol_per_atom * n) ** (1 / 3)
    cell = np.eye(3) * length + rng.normal(0, 0.25 * length, (3, 3))
    cell *= (vol_per_atom * n / abs(np.linalg.det(cell))) ** (1 / 3)
    while True:
        frac = rng.random((n, 3))
        atoms = Atoms(symbols=symbols, scaled_positions=frac, cell=cell, pbc=True)
        d = atoms.get_all_distances(mic=True) + np.eye(n) * 10
        if d.min() > 1.6:
            return atoms


def efs(model, atoms_list, backend="torch"):
    batch = StructureBatch.from_atoms(atoms_list, dtype=torch.float64)
    return energy_forces_stress(model, batch, backend=backend)


# ----------------------------------------------------------------------------- descriptor maths


def test_spherical_harmonics_addition_theorem():
    gen = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(50, 3, generator=gen, dtype=torch.float64), dim=1)
    b = torch.nn.functional.normalize(torch.randn(50, 3, generator=gen, dtype=torch.float64), dim=1)
    ya, yb = spherical_harmonics(a, 4), spherical_harmonics(b, 4)
    cos = (a * b).sum(1)
    legendre = [
        torch.ones_like(cos),
        cos,
        0.5 * (3 * cos**2 - 1),
        0.5 * (5 * cos**3 - 3 * cos),
        (35 * cos**4 - 30 * cos**2 + 3) / 8,
    ]
    for l in range(5):
        lhs = (ya[:, l * l : (l + 1) ** 2] * yb[:, l * l : (l + 1) ** 2]).sum(1)
        rhs = (2 * l + 1) / (4 * math.pi) * legendre[l]
        torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=0)


def test_monomial_map_reproduces_ylm():
    gen = torch.Generator().manual_seed(1)
    u = torch.nn.functional.normalize(
        torch.randn(100, 3, generator=gen, dtype=torch.float64), dim=1
    )
    torch.testing.assert_close(monomials(u) @ monomial_to_ylm(4), spherical_harmonics(u, 4))


def test_radial_basis_matches_recurrence_and_its_derivative():
    r = torch.linspace(0.5, 6.0, 301, dtype=torch.float64).requires_grad_(True)
    f = RadialBasis.apply(r, 5.0, 9)
    ref = chebyshev_basis(r, 5.0, 9)
    torch.testing.assert_close(f, ref, atol=1e-12, rtol=0)
    assert torch.all(f[r.detach() >= 5.0] == 0)
    w = torch.randn(301, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (g,) = torch.autograd.grad((f * w).sum(), r)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), r)
    torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_power_spectrum_equals_eq9_triple_sum(backend):
    """Φ²_nl from the power spectrum equals (2l+1)/4π Σ_jk g_n g_n P_l(cos θ_jk) (eq. 9)."""
    rng = np.random.default_rng(4)
    cfg = small_config(["Cu", "Au", "Ni"])
    model = ACNN(cfg).double()
    atoms = random_triclinic(["Cu", "Au", "Ni", "Cu", "Au"], rng)
    batch = StructureBatch.from_atoms([atoms], dtype=torch.float64)
    graph = graph_for(model, batch)
    with torch.no_grad():
        _, phi2 = model.descriptor(
            graph.radial.vector, graph.angular.vector, graph, fused=backend == "fused"
        )
    d = model.descriptor
    t, ka = d.n_species, d.basis_angular
    mix = d.mix_angular.detach().view(t, d.n_angular, t, ka)  # [T_i, n, T_j, K]
    for i in range(len(atoms)):
        used = graph.angular.used[i]
        vec = graph.angular.vector[i][used]  # [J, 3]
        sp_j = graph.angular.species[i][used]
        ti = int(graph.species[i])
        r = vec.norm(dim=1)
        f = chebyshev_basis(r, cfg.cutoff_angular, ka)  # [J, K]
        g = torch.einsum("jk,njk->jn", f, mix[ti][:, sp_j, :])  # [J, n]
        u = vec / r.unsqueeze(1)
        cos = (u @ u.T).clamp(-1, 1)
        legendre = [
            torch.ones_like(cos),
            cos,
            0.5 * (3 * cos**2 - 1),
            0.5 * (5 * cos**3 - 3 * cos),
            (35 * cos**4 - 30 * cos**2 + 3) / 8,
        ]
        ref = torch.stack(
            [
                (2 * l + 1) / (4 * math.pi) * torch.einsum("jn,kn,jk->n", g, g, legendre[l])
                for l in range(cfg.harmonic_degree + 1)
            ],
            dim=1,
        )  # [n, l]
        torch.testing.assert_close(phi2[i].view(d.n_angular, -1), ref, atol=1e-9, rtol=1e-9)


# ----------------------------------------------------------------------------- derivatives


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "species,attention",
    [(["Cu", "Au"], 0), (["Be", "P", "N", "O"], 0), (["Be", "P", "N", "O"], 1)],
)
def test_forces_and_stress_match_finite_differences(species, attention, backend):
    rng = np.random.default_rng(len(species) + attention)
    model = ACNN(small_config(species, attention)).double()
    symbols = [species[k % len(species)] for k in range(7)]
    atoms = random_triclinic(symbols, rng)
    out = efs(model, [atoms], backend)

    def energy(a):
        return float(efs(model, [a], backend).energy[0])

    h = 1e-5
    for atom, comp in [(0, 0), (3, 1), (6, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[atom, comp] += h
        minus.positions[atom, comp] -= h
        fd = -(energy(plus) - energy(minus)) / (2 * h)
        assert abs(fd - float(out.forces[atom, comp])) < 1e-7
    vol = atoms.get_volume()
    for a, b in [(0, 0), (1, 2), (0, 1), (2, 2)]:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h / 2 if a != b else h
        values = []
        for sign in (1, -1):
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
            values.append(energy(strained))
        # symmetric strain: d/dh of E equals V·σ_ab both on and off the diagonal
        fd = (values[0] - values[1]) / (2 * h) / vol
        assert abs(fd - float(out.stress[0, a, b])) < 1e-7


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_neighbour_slots_equal_the_numpy_reference(monkeypatch, dtype):
    """acnn_fill_slots places the same neighbours in the same slots as the NumPy path, from
    fresh lists and from lists built with a skin at another geometry (the relaxer's reuse)."""
    from alcsp.potential.neighbours import build_graph, pair_list

    if not fused_mod.available():
        pytest.fail("the fused kernels did not build; see alcsp.potential.fused.library()")
    rng = np.random.default_rng(11)
    atoms = [
        random_triclinic(["Be", "P", "N", "O", "O", "N", "Be"][: 2 + 2 * k], rng, 9.0)
        for k in range(3)
    ]
    species = torch.tensor([{4: 0, 15: 1, 7: 2, 8: 3}[z] for a in atoms for z in a.numbers])
    skin_lists = [pair_list(a.positions, a.cell.array, 4.5 + 0.6) for a in atoms]
    for a in atoms:  # move within the skin: the old lists still hold every pair
        a.set_cell(a.cell.array @ (np.eye(3) + rng.normal(0, 0.003, (3, 3))), scale_atoms=True)
        a.positions += rng.normal(0, 0.05, a.positions.shape)
    batch = StructureBatch.from_atoms(atoms, dtype=dtype)
    for pairs in (None, skin_lists):
        fused_graph = build_graph(batch, species, 4.5, 3.5, pairs)
        with monkeypatch.context() as m:
            m.setattr(fused_mod, "available", lambda: False)
            numpy_graph = build_graph(batch, species, 4.5, 3.5, pairs)
        for name in ("radial", "angular"):
            got, want = getattr(fused_graph, name), getattr(numpy_graph, name)
            assert got.vector.dtype == dtype and got.shift.dtype == dtype
            assert got.used.any() and not got.used.all()  # padding present and used
            for field in ("neighbour", "species", "used", "shift"):
                assert torch.equal(getattr(got, field), getattr(want, field)), (name, field)
            torch.testing.assert_close(
                got.vector, want.vector, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-5
            )
        fresh = build_graph(batch, species, 4.5, 3.5)  # same pairs in the same count
        assert int(fresh.radial.used.sum()) == int(fused_graph.radial.used.sum())


def test_fused_and_torch_backends_agree_including_training_gradients():
    if not fused_mod.available():
        pytest.fail("the fused kernels did not build; see alcsp.potential.fused.library()")
    rng = np.random.default_rng(7)
    model = ACNN(small_config(["Be", "P", "N", "O"], attention=1)).double()
    atoms = [random_triclinic(["Be", "P", "N", "O", "O"][: 3 + k], rng) for k in range(3)]
    batch = StructureBatch.from_atoms(atoms, dtype=torch.float64)
    grads = {}
    for backend in BACKENDS:
        model.zero_grad()
        out = energy_forces_stress(model, batch, training=True, backend=backend)
        loss = out.energy.square().sum() + out.forces.square().sum() + out.stress.square().sum()
        loss.backward()
        grads[backend] = (out, torch.cat([p.grad.flatten() for p in model.parameters()]))
    (o1, g1), (o2, g2) = grads["torch"], grads["fused"]
    torch.testing.assert_close(o1.energy, o2.energy)
    torch.testing.assert_close(o1.forces, o2.forces)
    torch.testing.assert_close(o1.stress, o2.stress)
    torch.testing.assert_close(g1, g2, atol=1e-9, rtol=1e-9)


# ----------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotation_translation_permutation_invariance(backend):
    rng = np.random.default_rng(11)
    model = ACNN(small_config(["Cu", "Au", "Ni"], attention=1)).double()
    atoms = random_triclinic(["Cu", "Au", "Ni", "Cu", "Ni", "Au"], rng)
    ref = efs(model, [atoms], backend)

    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ q.T, scale_atoms=False)
    rotated.positions = atoms.positions @ q.T
    rot = efs(model, [rotated], backend)
    assert abs(float(rot.energy[0] - ref.energy[0])) < 1e-10
    np.testing.assert_allclose(rot.forces.numpy(), ref.forces.numpy() @ q.T, atol=1e-10)
    np.testing.assert_allclose(rot.stress[0].numpy(), q @ ref.stress[0].numpy() @ q.T, atol=1e-10)

    moved = atoms.copy()
    moved.positions += np.array([0.37, -1.2, 5.1])
    mov = efs(model, [moved], backend)
    assert abs(float(mov.energy[0] - ref.energy[0])) < 1e-10
    np.testing.assert_allclose(mov.forces.numpy(), ref.forces.numpy(), atol=1e-10)

    perm = rng.permutation(len(atoms))
    permuted = atoms[perm]
    per = efs(model, [permuted], backend)
    assert abs(float(per.energy[0] - ref.energy[0])) < 1e-10
    np.testing.assert_allclose(per.forces.numpy(), ref.forces.numpy()[perm], atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_energy_is_extensive_over_supercells_of_small_cells(backend):
    """A primitive fcc cell is far smaller than the cutoff: many periodic images."""
    model = ACNN(small_config(["Cu", "Au"])).double()
    prim = bulk("CuAu", "rocksalt", a=5.2)  # 2 atoms, cell edges ~3.7 Å < r_c = 4.5 Å
    prim.rattle(0.05, seed=1)
    sup = prim.repeat((2, 1, 3))
    e1 = efs(model, [prim], backend)
    e2 = efs(model, [sup], backend)
    assert abs(float(e2.energy[0]) - 6 * float(e1.energy[0])) < 1e-9
    np.testing.assert_allclose(e2.stress[0].numpy(), e1.stress[0].numpy(), atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_energy_smooth_as_a_neighbour_crosses_each_cutoff(backend):
    model = ACNN(small_config(["Cu", "Au"])).double()
    cfg = model.config

    def dimer(d):
        return Atoms("CuAu", positions=[[0, 0, 0], [d, 0, 0]], cell=[30, 30, 30], pbc=True)

    for rc in (cfg.cutoff_angular, cfg.cutoff_radial):
        ds = np.linspace(rc - 0.02, rc + 0.02, 41)
        out = [efs(model, [dimer(d)], backend) for d in ds]
        e = np.array([float(o.energy[0]) for o in out])
        f = np.array([float(o.forces[1, 0]) for o in out])
        # Continuous, with a continuous first derivative: no jumps between neighbouring points
        # beyond what the slope allows, and the force goes to its far-side value smoothly.
        assert np.max(np.abs(np.diff(e))) < 1e-4
        assert np.max(np.abs(np.diff(f))) < 5e-3
        np.testing.assert_allclose(-np.gradient(e, ds)[5:-5], f[5:-5], atol=1e-4)
    # Beyond the radial cutoff the atoms do not interact at all.
    far = efs(model, [dimer(cfg.cutoff_radial + 0.1)], backend)
    assert torch.all(far.forces == 0)


# ----------------------------------------------------------------------------- batching, files


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_equals_one_at_a_time(backend):
    rng = np.random.default_rng(5)
    model = ACNN(small_config(["Cu", "Au", "Ni"])).double()
    structures = [
        bulk("Cu", "fcc", a=3.6),
        random_triclinic(["Au", "Ni", "Cu", "Cu", "Ni", "Au", "Au", "Cu", "Ni"], rng),
        random_triclinic(["Ni", "Ni", "Au"], rng),
    ]
    together = efs(model, structures, backend)
    start = 0
    for k, atoms in enumerate(structures):
        alone = efs(model, [atoms], backend)
        n = len(atoms)
        assert abs(float(together.energy[k] - alone.energy[0])) < 1e-10
        np.testing.assert_allclose(
            together.forces[start : start + n].numpy(), alone.forces.numpy(), atol=1e-10
        )
        np.testing.assert_allclose(together.stress[k].numpy(), alone.stress[0].numpy(), atol=1e-10)
        start += n


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    rng = np.random.default_rng(6)
    model = ACNN(small_config(["Cu", "Au"], attention=1))
    with torch.no_grad():
        model.energy_shift.copy_(torch.tensor([-3.5, -2.1]))
        model.phi1_std.mul_(1.7)
    path = save_model(model, tmp_path / "m.pt", metadata={"note": "test"})
    loaded = load_model(path)
    atoms = [random_triclinic(["Cu", "Au", "Au", "Cu"], rng)]
    batch = StructureBatch.from_atoms(atoms, dtype=torch.float32)
    a, b = energy_forces_stress(model, batch), energy_forces_stress(loaded, batch)
    assert torch.equal(a.energy, b.energy)
    assert torch.equal(a.forces, b.forces)
    assert torch.equal(a.stress, b.stress)
    assert loaded.config == model.config


def test_model_file_that_is_not_a_model_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not an alcsp model file .damaged") as info:
        load_model(bad)
    assert "weights_only" not in str(info.value)
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an alcsp model file .no alcsp format tag"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")


def test_ase_calculator_matches_batched_call():
    rng = np.random.default_rng(8)
    model = ACNN(small_config(["Cu", "Au"])).double()
    atoms = random_triclinic(["Cu", "Au", "Au"], rng)
    ref = ACNNPotential(model).compute(StructureBatch.from_atoms([atoms]))
    atoms.calc = ACNNCalculator(model)
    assert abs(atoms.get_potential_energy() - float(ref.energy[0])) < 1e-12
    assert atoms.get_potential_energy() == atoms.get_potential_energy(force_consistent=True)
    np.testing.assert_allclose(atoms.get_forces(), ref.forces.numpy(), atol=1e-12)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), ref.stress[0].numpy(), atol=1e-12)


def test_potential_does_not_modify_the_callers_model():
    model = ACNN(small_config(["Cu"]))
    ACNNPotential(model, dtype=torch.float64)
    p = next(model.parameters())
    assert p.dtype == torch.float32 and p.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(9)
    model = ACNN(small_config(["Cu", "Au"], attention=1)).double()
    atoms = [random_triclinic(["Cu", "Au", "Au", "Cu"], rng)]
    cpu = ACNNPotential(model, backend="torch").compute(StructureBatch.from_atoms(atoms))
    gpu = ACNNPotential(model, device="cuda").compute(StructureBatch.from_atoms(atoms))
    torch.testing.assert_close(gpu.forces.cpu(), cpu.forces)
    torch.testing.assert_close(gpu.energy.cpu(), cpu.energy)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_gets_clear_errors():
    model = ACNN(small_config(["Cu", "Au"]))
    pot = ACNNPotential(model)
    with pytest.raises(ValueError, match=r"\['Ni'\] are not species of this model"):
        pot.compute(StructureBatch.from_atoms([bulk("Ni", "fcc", a=3.5)]))
    with pytest.raises(StructureError, match="empty"):
        StructureBatch.from_atoms([Atoms(cell=[3, 3, 3], pbc=True)])
    nan = bulk("Cu", "fcc", a=3.6)
    nan.positions[0, 1] = np.nan
    with pytest.raises(StructureError, match="non-finite"):
        StructureBatch.from_atoms([nan])
    flat = Atoms(
        "Cu2", positions=[[0, 0, 0], [1, 1, 0]], cell=[[3, 0, 0], [0, 3, 0], [3, 3, 0]], pbc=True
    )
    with pytest.raises(StructureError, match="zero volume"):
        StructureBatch.from_atoms([flat])
    with pytest.raises(StructureError, match="no structures"):
        StructureBatch.from_atoms([])
    with pytest.raises(ValueError, match="unknown elements"):
        ACNNConfig(species=("Cu", "Xx"))
    with pytest.raises(ValueError, match="cutoff_angular <= cutoff_radial"):
        ACNNConfig(species=("Cu",), cutoff_radial=4.0, cutoff_angular=5.0)
    with pytest.raises(ValueError, match="backend must be"):
        ACNNPotential(model, backend="gpu")
