"""Reference phases: built-in prototypes, structure files, [references] validation, warnings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import spglib
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.neighborlist import neighbor_list

from alcsp.references import (
    PROTOTYPES,
    Reference,
    ReferenceConfig,
    ReferenceError,
    load_references,
    prototype,
    wrong_terminal_warnings,
)

pytestmark = pytest.mark.filterwarnings("ignore:Set OLD_ERROR_HANDLING:DeprecationWarning")

# name -> (space group number, atoms in the primitive cell, nearest-neighbour count)
EXPECTED = {
    "fcc": (225, 1, 12),
    "hcp": (194, 2, 12),
    "bcc": (229, 1, 8),
    "dhcp": (194, 4, 12),
    "sc": (221, 1, 6),
    "diamond": (227, 2, 4),
}


def _space_group(atoms: Atoms) -> int:
    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    return int(spglib.get_symmetry_dataset(cell, symprec=1e-4).number)


def _coordination(atoms: Atoms) -> np.ndarray:
    """Neighbours of every atom within 2 % of the shortest distance."""
    i, d = neighbor_list("id", atoms, cutoff=2.0 * (atoms.get_volume() / len(atoms)) ** (1 / 3))
    return np.bincount(i[d < 1.02 * d.min()], minlength=len(atoms))


def test_the_required_prototypes_exist():
    assert set(EXPECTED) <= set(PROTOTYPES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("volume", [7.3, 16.0])
def test_prototype_volume_space_group_atoms_coordination(name: str, volume: float):
    number, natoms, cn = EXPECTED[name]
    atoms = prototype("Ca", name, volume)
    assert len(atoms) == natoms
    assert atoms.get_volume() / len(atoms) == pytest.approx(volume, rel=1e-10)
    assert all(atoms.pbc)
    assert set(atoms.get_chemical_symbols()) == {"Ca"}
    assert _space_group(atoms) == number
    assert _coordination(atoms).tolist() == [cn] * natoms
    assert atoms.calc is None and atoms.info == {}


def test_hcp_and_dhcp_have_ideal_c_over_a_and_dhcp_stacks_abac():
    ideal = np.sqrt(8 / 3)
    hcp = prototype("Mg", "hcp", 20.0).cell.cellpar()
    dhcp = prototype("La", "dhcp", 20.0)
    assert hcp[2] / hcp[0] == pytest.approx(ideal)
    par = dhcp.cell.cellpar()
    assert par[2] / par[0] == pytest.approx(2 * ideal)
    # the in-plane site of each of the four layers, sorted by height: A B A C
    frac = dhcp.get_scaled_positions()
    layers = [tuple(np.round(frac[k, :2] * 3).astype(int) % 3) for k in np.argsort(frac[:, 2])]
    assert layers == [(0, 0), (1, 2), (0, 0), (2, 1)]


def test_prototypes_of_one_element_are_all_distinct():
    cfg = ReferenceConfig.from_dict({"prototypes": {"Cu": sorted(PROTOTYPES)}})
    refs = load_references(cfg, ["Cu"], Path("."), {"Cu": 11.0})
    assert [r.name for r in refs] == [f"{n} Cu" for n in sorted(PROTOTYPES)]


def _emt_minimum(name: str) -> tuple[float, float]:
    """(energy eV/atom, volume Å³/atom) at the minimum of a volume scan of EMT Cu."""
    volumes = np.linspace(9.0, 16.0, 36)
    energies = []
    for v in volumes:
        atoms = prototype("Cu", name, float(v))
        atoms.calc = EMT()
        energies.append(atoms.get_potential_energy() / len(atoms))
    k = int(np.argmin(energies))
    assert 0 < k < len(volumes) - 1, f"{name}: minimum at the edge of the scan"
    return float(energies[k]), float(volumes[k])


def test_emt_copper_prefers_fcc_over_bcc_and_sc():
    # (EMT puts hcp Cu 0.9 meV/atom below fcc, so hcp is not compared)
    e = {n: _emt_minimum(n) for n in ("fcc", "bcc", "sc")}
    assert e["fcc"][0] < e["bcc"][0] - 0.02 and e["bcc"][0] < e["sc"][0]
    assert 11.0 < e["fcc"][1] < 12.6  # Cu: 11.8 Å³/atom


def test_prototype_errors():
    with pytest.raises(ReferenceError, match="'wurtzite'") as info:
        prototype("Cu", "wurtzite", 11.0)
    msg = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in msg
    assert all(n in msg for n in PROTOTYPES)
    with pytest.raises(ReferenceError, match="volumes.Cu"):
        prototype("Cu", "fcc", 0.0)
    with pytest.raises(ReferenceError, match="element"):
        prototype("Xx", "fcc", 11.0)


# ---------------------------------------------------------------- ReferenceConfig.from_dict


def test_from_dict_parses_and_is_empty():
    cfg = ReferenceConfig.from_dict(
        {
            "prototypes": {"Ca": ["fcc", "bcc", "sc"], "H": []},
            "files": ["h.cif"],
            "volumes": {"Ca": 8, "H": 5.5},
        }
    )
    assert cfg.prototypes == {"Ca": ("fcc", "bcc", "sc"), "H": ()}
    assert cfg.files == ("h.cif",)
    assert cfg.volumes == {"Ca": 8.0, "H": 5.5} and isinstance(cfg.volumes["Ca"], float)
    assert not cfg.is_empty
    assert ReferenceConfig.from_dict({}).is_empty
    assert ReferenceConfig().is_empty
    assert ReferenceConfig.from_dict({"prototypes": {"H": []}, "volumes": {"H": 5.0}}).is_empty
    assert not ReferenceConfig.from_dict({"files": ["a.cif"]}).is_empty
    assert not ReferenceConfig.from_dict({"prototypes": {"H": ["hcp"]}}).is_empty


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({"prototype": {"Ca": ["fcc"]}}, "prototype"),
        ({"prototypes": ["fcc"]}, "prototypes"),
        ({"prototypes": {"Ca": "fcc"}}, "prototypes.Ca"),
        ({"prototypes": {"Ca": [1]}}, "prototypes.Ca"),
        ({"prototypes": {"Ca": ["fcc", "wurtzite"]}}, "prototypes.Ca: unknown prototype"),
        ({"prototypes": {"Ca": ["fcc", "fcc"]}}, "prototypes.Ca"),
        ({"prototypes": {"Qq": ["fcc"]}}, "prototypes.Qq"),
        ({"files": "h.cif"}, "files"),
        ({"files": [3]}, "files"),
        ({"files": [""]}, "files"),
        ({"files": ["a.cif", "a.cif"]}, "files"),
        ({"volumes": 8.0}, "volumes"),
        ({"volumes": {"Ca": 0}}, "volumes.Ca"),
        ({"volumes": {"Ca": -3.0}}, "volumes.Ca"),
        ({"volumes": {"Ca": "8"}}, "volumes.Ca"),
        ({"volumes": {"Ca": True}}, "volumes.Ca"),
        ({"volumes": {"Ca": float("nan")}}, "volumes.Ca"),
        ({"volumes": {"Qq": 8.0}}, "volumes.Qq"),
    ],
)
def test_from_dict_rejects(table: dict, field: str):
    with pytest.raises(ReferenceError) as info:
        ReferenceConfig.from_dict(table)
    msg = str(info.value)
    assert msg.startswith("[references]") and field in msg and "\n" not in msg


def test_from_dict_unknown_prototype_lists_the_known_ones():
    with pytest.raises(ReferenceError) as info:
        ReferenceConfig.from_dict({"prototypes": {"Ca": ["wurtzite"]}})
    assert all(n in str(info.value) for n in PROTOTYPES)


# ------------------------------------------------------------------------- load_references


def _fcc_cu() -> Atoms:
    return bulk("Cu", "fcc", a=3.61, cubic=True)


def _l12() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True)
    atoms.numbers = [79, 29, 29, 29]
    return atoms


def _labelled(atoms: Atoms) -> Atoms:
    atoms = atoms.copy()
    atoms.info["structure_id"] = 7
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((len(atoms), 3)))
    return atoms


def _same(a: Atoms, b: Atoms) -> bool:
    return (
        a.get_chemical_symbols() == b.get_chemical_symbols()
        and np.allclose(a.cell.array, b.cell.array, atol=1e-5)
        and np.allclose(a.positions, b.positions, atol=1e-5)
    )


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [("cu.cif", "cif"), ("cu.extxyz", "extxyz"), ("POSCAR", "vasp"), ("cu.vasp", "vasp")],
)
def test_load_one_file_in_each_format(tmp_path: Path, filename: str, fmt: str):
    write(tmp_path / filename, _labelled(_fcc_cu()), format=fmt)
    [ref] = load_references(ReferenceConfig(files=(filename,)), ["Cu", "Au"], tmp_path, {})
    assert isinstance(ref, Reference)
    assert ref.name == f"{filename} #0"
    assert ref.source == str(tmp_path / filename)
    assert _same(ref.atoms, _fcc_cu()) or fmt == "cif"  # CIF may re-origin; compare below
    assert len(ref.atoms) == 4
    assert ref.atoms.get_volume() == pytest.approx(_fcc_cu().get_volume(), rel=1e-5)
    assert _space_group(ref.atoms) == 225
    assert ref.atoms.calc is None and all(ref.atoms.pbc)
    assert ref.atoms.info == {"reference": ref.name}


def test_load_every_frame_of_a_multi_frame_file_and_absolute_paths(tmp_path: Path):
    frames = [_labelled(_fcc_cu()), _labelled(_l12())]
    write(tmp_path / "two.extxyz", frames)
    sub = tmp_path / "other"
    sub.mkdir()
    cfg = ReferenceConfig(files=(str(tmp_path / "two.extxyz"),))
    refs = load_references(cfg, ["Au", "Cu"], sub, {})
    assert [r.name for r in refs] == [f"{tmp_path / 'two.extxyz'} #{k}" for k in (0, 1)]
    assert all(_same(r.atoms, f) for r, f in zip(refs, frames, strict=True))
    assert [r.atoms.get_chemical_formula() for r in refs] == ["Cu4", "AuCu3"]


def test_load_prototypes_and_files_together_with_volumes(tmp_path: Path):
    write(tmp_path / "l12.cif", _l12())
    cfg = ReferenceConfig.from_dict(
        {
            "prototypes": {"Cu": ["fcc", "bcc"], "Au": ["fcc"]},
            "files": ["l12.cif"],
            "volumes": {"Au": 17.0},
        }
    )
    calls: list[str] = []

    def default(el: str) -> float:
        calls.append(el)
        return 12.0

    refs = load_references(cfg, ["Cu", "Au"], tmp_path, default)
    assert [r.name for r in refs] == ["fcc Cu", "bcc Cu", "fcc Au", "l12.cif #0"]
    assert [r.source for r in refs][:3] == ["prototype"] * 3
    vols = [r.atoms.get_volume() / len(r.atoms) for r in refs[:3]]
    assert vols == pytest.approx([12.0, 12.0, 17.0])
    assert calls == ["Cu"]  # Au has its own volume
    assert all(r.atoms.info == {"reference": r.name} for r in refs)
    # the same volumes from a mapping
    refs = load_references(cfg, ["Cu", "Au"], tmp_path, {"Cu": 12.0, "Au": 1.0})
    assert [r.atoms.get_volume() / len(r.atoms) for r in refs[:3]] == pytest.approx(vols)


def _raises(cfg: ReferenceConfig, base: Path, *needles: str, elements=("Cu", "Au")) -> str:
    with pytest.raises(ReferenceError) as info:
        load_references(cfg, list(elements), base, {"Cu": 11.8, "Au": 17.0})
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("[references]")
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_missing_file(tmp_path: Path):
    _raises(ReferenceConfig(files=("nothere.cif",)), tmp_path, "files", "nothere.cif", "exist")


@pytest.mark.parametrize("filename", ["h2.cif", "h2.txt", "POSCAR", "h2.extxyz"])
def test_unparseable_file(tmp_path: Path, filename: str):
    (tmp_path / filename).write_text("this is\nnot a structure\n")
    _raises(
        ReferenceConfig(files=(filename,)),
        tmp_path,
        "files",
        filename,
        "cannot read",
        "CIF, extxyz or POSCAR",
    )


def test_element_outside_the_campaign(tmp_path: Path):
    write(tmp_path / "l12.cif", _l12())
    msg = _raises(ReferenceConfig(files=("l12.cif",)), tmp_path, "l12.cif", "Au", elements=["Cu"])
    assert "outside" in msg


def test_prototype_for_an_element_outside_the_campaign(tmp_path: Path):
    cfg = ReferenceConfig.from_dict({"prototypes": {"Ag": ["fcc"]}})
    _raises(cfg, tmp_path, "prototypes.Ag", "Cu, Au")
    # an element with no prototypes listed is no error
    cfg = ReferenceConfig.from_dict({"prototypes": {"Ag": []}})
    assert load_references(cfg, ["Cu"], tmp_path, {}) == []


def test_prototype_without_a_volume(tmp_path: Path):
    cfg = ReferenceConfig.from_dict({"prototypes": {"Cu": ["fcc"]}})
    with pytest.raises(ReferenceError, match="volumes.Cu"):
        load_references(cfg, ["Cu"], tmp_path, {})


def test_duplicates(tmp_path: Path):
    # the file holds fcc Cu in a conventional, rotated cell at the prototype's density
    cu = _fcc_cu()
    cu.rotate(30, "z", rotate_cell=True)
    write(tmp_path / "cu.extxyz", cu)
    v = cu.get_volume() / len(cu)
    cfg = ReferenceConfig(prototypes={"Cu": ("fcc",)}, files=("cu.extxyz",), volumes={"Cu": v})
    _raises(cfg, tmp_path, "fcc Cu", "cu.extxyz #0", "same structure")
    # the same file contents under two names
    write(tmp_path / "cu.cif", _fcc_cu())
    _raises(ReferenceConfig(files=("cu.extxyz", "cu.cif")), tmp_path, "cu.cif", "same structure")
    # two frames of one file
    write(tmp_path / "twice.extxyz", [_l12(), _l12()])
    _raises(ReferenceConfig(files=("twice.extxyz",)), tmp_path, "twice.extxyz #1", "same")
    # the same structure at another density is a different reference (StructureMatcher's
    # default ltol = 0.2 still matches lattices 20 % longer: 11.8 vs 9 Å³/atom would match)
    cfg = ReferenceConfig(prototypes={"Cu": ("fcc",)}, files=("cu.extxyz",), volumes={"Cu": 5.0})
    assert len(load_references(cfg, ["Cu"], tmp_path, {})) == 2


def test_not_periodic_or_zero_volume(tmp_path: Path):
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.2]])
    write(tmp_path / "mol.extxyz", molecule)
    _raises(ReferenceConfig(files=("mol.extxyz",)), tmp_path, "mol.extxyz", "3D-periodic")
    slab = _fcc_cu()
    slab.pbc = [True, True, False]
    write(tmp_path / "slab.extxyz", slab)
    _raises(ReferenceConfig(files=("slab.extxyz",)), tmp_path, "slab.extxyz", "3D-periodic")
    (tmp_path / "flat.extxyz").write_text(
        '1\nLattice="3 0 0 6 0 0 0 0 3" Properties=species:S:1:pos:R:3 pbc="T T T"\nCu 0 0 0\n'
    )
    _raises(ReferenceConfig(files=("flat.extxyz",)), tmp_path, "flat.extxyz", "volume")


# -------------------------------------------------------------------- wrong_terminal_warnings


def test_wrong_terminal_warnings():
    found = {
        "Ca": ("structure 42, I4/mmm", -1.9513),
        "H": ("structure 3, P1", -3.0),
        "Cu": ("structure 9, Fm-3m", -3.5),
        "Au": ("structure 5, P1", -3.0),
    }
    refs = {
        "Ca": ("fcc Ca", -2.0),
        "H": ("H2-Cmca.cif #0", -2.9),
        "Cu": ("fcc Cu", -3.501),
        "Li": ("bcc Li", -1.0),
    }
    out = wrong_terminal_warnings(found, refs, 0.005)
    assert len(out) == 2
    ca, h = out
    assert ca == (
        "Ca: the lowest Ca the search found (structure 42, I4/mmm) is 48.7 meV/atom above "
        "the reference fcc Ca; the hull uses the reference"
    )
    assert h.startswith("H: the reference H2-Cmca.cif #0 is 100.0 meV/atom above")
    assert "structure 3, P1" in h and "not the ground state" in h
    assert all("\n" not in w for w in out)
    # Cu within tolerance, Au and Li on one side only: no warnings; a wide tolerance: none
    assert wrong_terminal_warnings(found, refs, 0.2) == []
    assert wrong_terminal_warnings({}, refs, 0.0) == []
    assert len(wrong_terminal_warnings(found, refs, 0.0)) == 3  # Cu's 1 meV/atom now counts
