"""The T_c estimate of Belli et al. (2021) (alcsp.analysis.tc) and the ELF percolation it
stands on (alcsp.analysis.elf).

Percolation on synthetic periodic grids, where the answer is known: islands (0), rods (1),
slabs (2, must not count as percolating), a 3D network of rods (3), a rod along a cell
diagonal (1, although it touches all six faces), and the field (cos 2πx + cos 2πy +
cos 2πz)/3 whose 3D network opens at exactly 1/3 (the saddle halfway along each axis).

One GPAW calculation: φ of Im-3m H3S at a = 2.984 Å (~200 GPa in PBE) with cheap settings
(350 eV, k-spacing 2π × 0.06 Å⁻¹): 0.673. The k-mesh does not move φ (0.672 with 0.03);
the grid, set by the cutoff, does a little: 0.679 at 500 eV, 0.678 at the oracle's 600 eV /
0.03, 0.679 at 800 eV (ELF grid refined twice, docs/tc-belli.md).
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.spacegroup import crystal

from alcsp.analysis.elf import (
    hydrogen_points,
    is_percolating,
    networking_value,
    percolation_rank,
)
from alcsp.analysis.tc import (
    DISCLAIMER,
    TcEstimate,
    TcSettings,
    belli_tc,
    hydrogen_fraction,
    networking_value_of,
    refine_grid,
)

N = 24


def empty() -> np.ndarray:
    return np.zeros((N, N, N), dtype=bool)


def test_islands_rods_slabs_and_networks():
    island = empty()
    island[3:8, 3:8, 3:8] = True
    assert percolation_rank(island) == 0
    rod = empty()
    rod[:, 5, 5] = True
    assert percolation_rank(rod) == 1
    slab = empty()
    slab[:, :, 4:9] = True  # percolates along x and y only
    assert percolation_rank(slab) == 2
    assert not is_percolating(slab.astype(float), 0.5)
    network = empty()
    network[:, 5, 5] = network[5, :, 5] = network[5, 5, :] = True
    assert percolation_rank(network) == 3
    assert is_percolating(network.astype(float), 0.5)
    assert percolation_rank(np.ones((N, N, N), dtype=bool)) == 3
    assert percolation_rank(empty()) == 0


def test_rank_is_the_lattice_dimension_not_the_faces_touched():
    # a rod along the (1, 1, 1) diagonal, face-connected by staircase steps: it touches
    # all six faces but repeats along one lattice direction only
    diagonal = empty()
    for i in range(N):
        diagonal[i, i, i] = diagonal[(i + 1) % N, i, i] = diagonal[(i + 1) % N, (i + 1) % N, i] = (
            True
        )
    assert percolation_rank(diagonal) == 1
    # two parallel slabs joined by a pillar are still a slab
    slabs = empty()
    slabs[:, :, 2:4] = slabs[:, :, 12:14] = True
    slabs[5, 5, 2:14] = True
    assert percolation_rank(slabs) == 2
    # a one-point-thick sheet is still a slab
    sheet = empty()
    sheet[:, :, 2] = True
    assert percolation_rank(sheet) == 2
    # edge contact only (no shared face) does not connect
    edge = empty()
    edge[:, 0, 0] = True
    edge[:, 1, 1] = True
    assert percolation_rank(edge) == 1


def test_networking_value_of_an_analytic_field():
    x = np.arange(N) / N
    gx, gy, gz = np.meshgrid(x, x, x, indexing="ij")
    field = (np.cos(2 * np.pi * gx) + np.cos(2 * np.pi * gy) + np.cos(2 * np.pi * gz)) / 3
    phi = networking_value(field, tol=1e-4)
    assert phi == pytest.approx(1 / 3, abs=2e-4)
    assert is_percolating(field, phi) and not is_percolating(field, phi + 1e-3)
    # the same field on a finer spline-refined grid: the same saddle
    assert networking_value(refine_grid(field, 2), tol=1e-4) == pytest.approx(1 / 3, abs=2e-4)


def test_required_points_exclude_networks_that_miss_hydrogen():
    # a high 3D network of rods, and a lower one through the "hydrogen" at the centre
    field = np.zeros((N, N, N))
    field[:, 0, 0] = field[0, :, 0] = field[0, 0, :] = 0.9
    c = N // 2
    field[:, c, c] = field[c, :, c] = field[c, c, :] = 0.6
    cell = np.eye(3) * 6.0
    required = hydrogen_points(field.shape, cell, np.array([[3.0, 3.0, 3.0]]), 0.3)
    assert networking_value(field, tol=1e-4) == pytest.approx(0.9, abs=1e-3)
    assert networking_value(field, tol=1e-4, required=required) == pytest.approx(0.6, abs=1e-3)
    # no network through the required point at all: 0
    lone = np.zeros((N, N, N))
    lone[:, 0, 0] = lone[0, :, 0] = lone[0, 0, :] = 0.9
    lone[c, c, c] = 1.0
    assert networking_value(lone, required=required) == 0.0


def test_refine_grid_keeps_the_samples():
    rng = np.random.default_rng(0)
    field = rng.random((6, 7, 8))
    fine = refine_grid(field, 3)
    assert fine.shape == (18, 21, 24)
    np.testing.assert_allclose(fine[::3, ::3, ::3], field, atol=1e-12)


def test_belli_formula_and_its_inputs():
    # Φ_DOS = 0.7 × 0.75 × 0.5^(1/3) = 0.41669; T_c = 750 × 0.41669 − 85 = 227.52 K
    assert belli_tc(0.7, 0.75, 0.5) == pytest.approx(750 * 0.7 * 0.75 * 0.5 ** (1 / 3) - 85)
    assert belli_tc(0.7, 0.75, 0.5) == pytest.approx(227.52, abs=0.01)
    assert belli_tc(0.0, 0.75, 0.5) == -85.0  # no network: the fit says no T_c
    with pytest.raises(ValueError, match="h_dos must be in"):
        belli_tc(0.5, 0.5, 1.5)
    est = TcEstimate("H3S", 0.7, 0.75, 0.5, (32, 32, 32))
    assert est.tc == pytest.approx(227.52, abs=0.01) and est.sigma == 60.0
    d = est.to_json()
    assert d["note"] == DISCLAIMER and "not an Eliashberg calculation" in DISCLAIMER
    assert TcEstimate.from_json(d) == est
    with pytest.raises(ValueError, match="refine"):
        TcSettings(refine=0)


@pytest.mark.parametrize(
    ("phi", "h_f", "h_dos", "slope", "intercept", "printed"),
    [
        # H3S, TcESTIME's first example (commit d9c4fca, example/netval.out): 169.49 K
        (0.71, 0.750, 0.48732, 429.3, -10.4, 169.49),
        # the same with the H_DOS it printed later (f2758a2, example/leastsq.out): 169.70 K
        (0.71, 0.750, 0.489, 429.3, -10.4, 169.70),
    ],
)
def test_phi_dos_is_the_authors_descriptor(phi, h_f, h_dos, slope, intercept, printed):
    """Φ_DOS as TcESTIME forms it: its printed T_c of a linear fit in Φ_DOS, recomputed from
    its printed φ, H_f and H_DOS with alcsp's Φ_DOS, to the printed 0.01 K."""
    est = TcEstimate("H3S", phi, h_f, h_dos, (45, 45, 45))
    assert slope * est.phi_dos + intercept == pytest.approx(printed, abs=0.01)


def h3s(a: float = 2.984):
    return crystal(
        ["S", "H"],
        [(0, 0, 0), (0, 0.5, 0.5)],
        spacegroup=229,
        cellpar=[a, a, a, 90, 90, 90],
        primitive_cell=True,
    )


def test_networking_value_of_h3s(tmp_path):
    """Im-3m H3S at ~200 GPa: φ = 0.679 converged (0.673 with these settings)."""
    pytest.importorskip("gpaw")
    from alcsp.analysis.electronic import run_scf
    from alcsp.analysis.elf import elf_grid
    from alcsp.oracle.gpaw import GPAWParams

    atoms, calc = run_scf(h3s(), GPAWParams(ecut=350.0, kspacing=0.06), tmp_path)
    elf = elf_grid(calc)
    assert elf.min() >= 0.0 and elf.max() <= 1.0
    phi, grid = networking_value_of(elf, atoms, TcSettings())
    assert grid == tuple(2 * s for s in elf.shape)
    assert phi == pytest.approx(0.679, abs=0.015)
    assert hydrogen_fraction(atoms) == 0.75
    # the networking value is a property of the crystal, not of the cell's origin
    shifted = atoms.copy()
    shifted.translate([0.37, 0.11, -0.23])
    shifted.wrap()
    atoms2, calc2 = run_scf(shifted, GPAWParams(ecut=350.0, kspacing=0.06), tmp_path / "b")
    phi2, _ = networking_value_of(elf_grid(calc2), atoms2, TcSettings())
    assert phi2 == pytest.approx(phi, abs=0.01)
