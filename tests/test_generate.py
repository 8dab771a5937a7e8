import time

import numpy as np
import pytest
from ase.data import covalent_radii
from ase.neighborlist import neighbor_list
from pymatgen.core import Composition

from alcsp.generate import (
    GenerateConfig,
    StructureGenerator,
    compatible_space_groups,
    start_volume_per_atom,
    volume_factor,
)


def _min_distance_ok(atoms, factor_scale):
    """Every pair (periodic images included) at least factor * (r_i + r_j) apart."""
    r = covalent_radii[atoms.numbers]
    cutoff = 2 * factor_scale * r.max() + 0.01
    i, j, d = neighbor_list("ijd", atoms, cutoff, self_interaction=False)
    need = factor_scale * (r[i] + r[j])
    return bool(np.all(d >= need - 1e-9)), float((d - need).min()) if len(d) else np.inf


@pytest.mark.parametrize("engine", ["fast", "pyxtal"])
def test_composition_and_min_distance(engine):
    # generous budget: a loaded CI machine must not turn a slow PyXtal attempt into a failure
    cfg = GenerateConfig(
        pressure_gpa=50.0, distance_factor=0.8, engine=engine, attempt_timeout_s=120.0
    )
    gen = StructureGenerator(cfg)
    comp = "Mg2Ca2H12"
    res = gen.generate(comp, 4, np.random.default_rng(3))
    assert len(res.structures) == 4 and not res.failures
    v_p, v_0 = start_volume_per_atom(comp, cfg)
    scale = (v_p / v_0) ** (1 / 3)
    for a in res.structures:
        assert Composition(a.get_chemical_formula()) == Composition(comp)
        assert all(a.pbc)
        assert Composition(a.info["composition"]) == Composition(comp)
        assert 1 <= a.info["space_group"] <= 230
        ok, margin = _min_distance_ok(a, cfg.distance_factor * scale)
        assert ok, margin
        # start volume within the jitter of the model
        assert abs(a.get_volume() / len(a) / v_p - 1) <= cfg.volume_jitter + 1e-9


def test_requested_space_group_is_real():
    spglib = pytest.importorskip("spglib")
    gen = StructureGenerator(GenerateConfig(space_groups=(225,), distance_factor=0.6))
    res = gen.generate("Cu4", 3, np.random.default_rng(0))
    assert len(res.structures) == 3
    for a in res.structures:
        cell = (a.cell.array, a.get_scaled_positions(), a.numbers)
        assert spglib.get_symmetry_dataset(cell, symprec=1e-3).number == 225


def test_seed_reproduces_a_set():
    cfg = GenerateConfig(pressure_gpa=300.0)
    a = StructureGenerator(cfg).generate("MgCa2H10", 5, np.random.default_rng(11))
    gen = StructureGenerator(cfg)
    gen.generate("CaH6", 2, np.random.default_rng(5))  # warm caches must not change the stream
    b = gen.generate("MgCa2H10", 5, np.random.default_rng(11))
    assert [s.info["space_group"] for s in a.structures] == [
        s.info["space_group"] for s in b.structures
    ]
    for x, y in zip(a.structures, b.structures, strict=True):
        np.testing.assert_array_equal(x.numbers, y.numbers)
        np.testing.assert_allclose(x.positions, y.positions)
        np.testing.assert_allclose(x.cell.array, y.cell.array)
    c = StructureGenerator(cfg).generate("MgCa2H10", 5, np.random.default_rng(12))
    assert not np.allclose(c.structures[0].cell.array, a.structures[0].cell.array)


def test_pressure_shrinks_volume():
    assert volume_factor(0.0, 30.0) == 1.0
    assert volume_factor(300.0, 30.0) < volume_factor(10.0, 30.0) < 1.0
    vols = []
    for p in (0.0, 100.0, 300.0):
        res = StructureGenerator(GenerateConfig(pressure_gpa=p)).generate(
            "MgH2", 6, np.random.default_rng(0)
        )
        vols.append(np.mean([s.get_volume() / len(s) for s in res.structures]))
    assert vols[0] > vols[1] > vols[2]


def test_volume_hints():
    cfg = GenerateConfig(element_volumes={"H": 1.5, "Mg": 8.0}, volume_jitter=0.0)
    v_p, _ = start_volume_per_atom("MgH2", cfg)
    assert v_p == pytest.approx((8.0 + 2 * 1.5) / 3)
    res = StructureGenerator(cfg).generate("MgH2", 2, np.random.default_rng(0), volume_per_atom=4.0)
    for s in res.structures:
        assert s.get_volume() / len(s) == pytest.approx(4.0)


def test_impossible_composition_reported_not_hung():
    gen = StructureGenerator(GenerateConfig(space_groups=(225,)))
    res = gen.generate("Cu3", 2, np.random.default_rng(0))  # Fm-3m has no 3-fold orbit
    assert not res.structures and len(res.failures) == 2
    assert "no allowed space group" in res.failures[0].reason
    # atoms that cannot fit: huge minimum distances in a small volume
    cfg = GenerateConfig(distance_factor=3.0, attempt_timeout_s=2.0)
    t0 = time.perf_counter()
    res = StructureGenerator(cfg).generate("Ca8", 2, np.random.default_rng(0), volume_per_atom=5.0)
    assert time.perf_counter() - t0 < 60.0  # a hang check, not a benchmark
    assert not res.structures and len(res.failures) == 2
    assert "space group" in res.failures[0].reason


def test_time_budget_is_enforced():
    cfg = GenerateConfig(
        attempt_timeout_s=0.05, engine="pyxtal", attempts=1000, distance_factor=2.5
    )
    gen = StructureGenerator(cfg)
    gen.compatible_groups(
        (40, 3, 3)
    )  # H, Mg, Ca (by Z): warm the space-group tables (not time-boxed, load-bound)
    # a hang check in CPU time (robust to a loaded machine): without the budget the 1000 tries
    # would take minutes of CPU; with it each structure stops after 0.05 s of wall time
    c0 = time.process_time()
    res = gen.generate("Ca3Mg3H40", 2, np.random.default_rng(0), volume_per_atom=1.0)
    assert time.process_time() - c0 < 20.0
    assert len(res.failures) == 2
    assert "time budget" in res.failures[0].reason


def test_compatible_space_groups_matches_pyxtal():
    from pyxtal.symmetry import Group

    for comp in ("MgCa2H10", "Cu3", "Mg2Ca6H46"):
        ours = set(compatible_space_groups(comp, range(150, 231)))
        c = Composition(comp)
        counts = [int(c[e]) for e in sorted(c.elements, key=lambda e: e.Z)]
        theirs = {g for g in range(150, 231) if Group(g).check_compatible(counts)[0]}
        assert ours == theirs, comp


def test_bad_input():
    with pytest.raises(ValueError, match="engine"):
        GenerateConfig(engine="airss")
    with pytest.raises(ValueError, match="space_groups"):
        GenerateConfig(space_groups=(0,))
    with pytest.raises(ValueError, match="unknown element"):
        StructureGenerator().generate("Xx2", 1, np.random.default_rng(0))
