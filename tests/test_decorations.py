"""Lattice decorations (alcsp.decorations): the counts the theory gives and the known
ordered superstructures among them."""

from __future__ import annotations

import numpy as np
import pytest
import spglib
from ase.neighborlist import neighbor_list

from alcsp.compositions import composition_key
from alcsp.decorations import decoration_starts, lattice_decorations


def _sg(atoms) -> str:
    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    return spglib.get_spacegroup(cell, symprec=1e-3).split()[0]


def test_small_fcc_counts():
    """n = 1: the two elements; n = 2: the two 2-atom superlattices ([100] L1_0 and [111]
    L1_1), which are their own A<->B swaps; n = 3: three up to the swap, none self-swapped,
    so six (Hart & Forcade 2008 count 2, 2, 3 up to the swap)."""
    by_n: dict[int, int] = {}
    for a in lattice_decorations("fcc", ["Cu", "Au"], 3):
        by_n[len(a)] = by_n.get(len(a), 0) + 1
    assert by_n == {1: 2, 2: 2, 3: 6}


def test_known_superstructures_are_among_them():
    fcc = lattice_decorations("fcc", ["Cu", "Au"], 4)
    hcp = lattice_decorations("hcp", ["Cu", "Au"], 8)
    sgs = {(composition_key(a.get_chemical_formula()), _sg(a), len(a)) for a in fcc + hcp}
    assert ("Cu3Au", "Pm-3m", 4) in sgs  # L1_2
    assert ("CuAu", "P4/mmm", 2) in sgs  # L1_0 (primitive)
    assert ("CuAu", "R-3m", 2) in sgs  # L1_1
    assert ("Cu3Au", "P6_3/mmc", 8) in sgs  # D0_19
    assert ("CuAu", "Pmma", 4) in sgs  # B19


def test_decorations_are_distinct_and_on_their_lattice():
    deco = lattice_decorations("bcc", ["Cu", "Au"], 6)
    # every site keeps the parent's 8 nearest neighbours at 1 Å
    for a in deco:
        i, d = neighbor_list("id", a, 1.01)
        assert np.bincount(i, minlength=len(a)).tolist() == [8] * len(a)
        assert np.allclose(d, 1.0)
    # no two are the same crystal (compare their standardised cells)
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    structs = [AseAtomsAdaptor.get_structure(a) for a in deco]
    groups = StructureMatcher(
        ltol=0.05, stol=0.05, angle_tol=1, primitive_cell=True, scale=False
    ).group_structures(structs)
    assert len(groups) == len(deco)


def test_starts_keep_the_space_and_take_vegard_volumes():
    starts = decoration_starts(["fcc"], ["Cu3Au", "Cu"], ["Cu", "Au"], 4, {"Cu": 12.0, "Au": 17.0})
    keys = {composition_key(a.get_chemical_formula()) for a in starts}
    assert keys == {"Cu3Au", "Cu"}
    for a in starts:
        n_au = a.get_chemical_symbols().count("Au")
        want = (12.0 * (len(a) - n_au) + 17.0 * n_au) / len(a)
        assert a.get_volume() / len(a) == pytest.approx(want)
    with pytest.raises(ValueError, match="is not one of"):
        lattice_decorations("diamond", ["Cu"], 2)


def test_starts_have_reduced_cells():
    """HNF supercells can be very oblique; the starts are Niggli-reduced (the relaxer calls
    angles outside 20-160 degrees unphysical)."""
    starts = decoration_starts(
        ["fcc", "hcp", "bcc"], ["Cu3Au", "CuAu", "Cu2Au"], ["Cu", "Au"], 8, {"Cu": 12.0, "Au": 17.0}
    )
    angles = np.array([a.cell.angles() for a in starts])
    assert angles.min() >= 45 and angles.max() <= 135
