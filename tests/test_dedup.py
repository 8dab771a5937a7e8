import numpy as np
import pytest
from ase.build import bulk, make_supercell
from ase.spacegroup import crystal

from alcsp.dedup import (
    DedupConfig,
    Deduplicator,
    deduplicate,
    fingerprint,
    fingerprint_distance,
)


def _rutile():
    return crystal(
        ["Ti", "O"],
        basis=[(0, 0, 0), (0.305, 0.305, 0)],
        spacegroup=136,
        cellpar=[4.59, 4.59, 2.96, 90, 90, 90],
    )


def _anatase():
    return crystal(
        ["Ti", "O"],
        basis=[(0, 0, 0), (0, 0, 0.208)],
        spacegroup=141,
        cellpar=[3.78, 3.78, 9.51, 90, 90, 90],
    )


def _variants(atoms, rng):
    """Symmetry-equivalent copies: rotated, translated, permuted, re-chosen cell, supercell,
    rattled by 0.01 Å."""
    rot = atoms.copy()
    rot.rotate(37, (1, 2, 3), rotate_cell=True)
    tr = atoms.copy()
    tr.translate([0.3, -1.1, 0.7])
    tr.wrap()
    perm = atoms[rng.permutation(len(atoms))]
    recell = make_supercell(atoms, [[1, 0, 0], [1, 1, 0], [1, 0, 1]])  # det 1: another basis
    recell.wrap()
    sc = atoms.repeat((2, 1, 1))
    rat = atoms.repeat((2, 2, 2))
    rat.rattle(0.01, rng=rng)
    return {
        "rotated": rot,
        "translated": tr,
        "permuted": perm,
        "recell": recell,
        "supercell": sc,
        "rattled": rat,
    }


@pytest.mark.parametrize(
    "make", [lambda: bulk("Cu", "fcc", a=3.6), _rutile, _anatase, lambda: bulk("Cu", "hcp", a=2.55)]
)
def test_equivalent_copies_are_duplicates(make):
    rng = np.random.default_rng(1)
    base = make()
    dd = Deduplicator()
    assert dd.add_atoms("base", base, -1.0) is None
    for name, v in _variants(base, rng).items():
        assert abs(v.get_volume() / len(v) - base.get_volume() / len(base)) < 1e-6
        assert dd.check_atoms(v, -1.0 + 1e-4) == "base", name
        assert fingerprint_distance(fingerprint(base), fingerprint(v)) < 1e-3, name


def test_polymorphs_kept_apart():
    a = 3.6
    fcc = bulk("Cu", "fcc", a=a)
    v = fcc.get_volume()
    hcp = bulk("Cu", "hcp", a=a / np.sqrt(2))  # ideal c/a, same volume per atom as fcc
    bcc = bulk("Cu", "bcc", a=(2 * v) ** (1 / 3))
    dd = Deduplicator()
    for name, s in {
        "fcc": fcc,
        "hcp": hcp,
        "bcc": bcc,
        "rutile": _rutile(),
        "anatase": _anatase(),
    }.items():
        assert dd.add_atoms(name, s, -1.0) is None, (
            name
        )  # same enthalpy: only the fingerprint decides
    assert len(dd) == 5
    d = fingerprint_distance(fingerprint(fcc), fingerprint(hcp))
    assert d > 10 * DedupConfig().distance_tol


def test_energy_window_separates_and_neighbouring_bins_match():
    fcc = bulk("Cu", "fcc", a=3.6)
    cfg = DedupConfig(energy_tol=0.005)
    dd = Deduplicator(cfg)
    dd.add_atoms("a", fcc, 0.0049)  # bin 0
    assert dd.check_atoms(fcc, 0.0051) == "a"  # bin 1: found through the neighbouring bin
    assert dd.check_atoms(fcc, 0.02) is None  # same structure, far in enthalpy: kept
    assert dd.check_atoms(bulk("Au", "fcc", a=3.6), 0.0049) is None  # other composition


def test_batch_deduplicate_keeps_lowest():
    rng = np.random.default_rng(2)
    fcc = bulk("Cu", "fcc", a=3.6)
    structs = [fcc, fcc.repeat((2, 1, 1)), bulk("Cu", "hcp", a=3.6 / np.sqrt(2)), fcc.copy()]
    structs[3].rattle(0.01, rng=rng)
    h = [0.001, 0.0, 0.0005, 0.002]
    fps = [fingerprint(s) for s in structs]
    out = deduplicate(["a", "b", "c", "d"], ["Cu"] * 4, h, fps)
    assert out == ["b", None, None, "b"]


def test_structure_matcher_confirmation():
    fcc = bulk("Cu", "fcc", a=3.6)
    dd = Deduplicator(keep_structures=True)
    dd.add_atoms("fcc", fcc, -1.0, confirm=True)
    rot = fcc.repeat((2, 1, 1))
    rot.rotate(20, "z", rotate_cell=True)
    assert dd.check_atoms(rot, -1.0, confirm=True) == "fcc"
    with pytest.raises(ValueError, match="keep_structures"):
        Deduplicator().check_atoms(fcc, -1.0, confirm=True)


def test_bad_input():
    with pytest.raises(ValueError, match="distance_tol"):
        DedupConfig(distance_tol=0)
    dd = Deduplicator()
    dd.add_atoms("x", bulk("Cu", "fcc", a=3.6), 0.0)
    with pytest.raises(ValueError, match="already"):
        dd.add_atoms("x", bulk("Cu", "fcc", a=3.6), 0.0)
