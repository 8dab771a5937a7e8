"""Hydrogen clathrate cages (alcsp.analysis.cages) and ``alcsp analyse``.

Every structure is built here from its Wyckoff positions (ase.spacegroup.crystal):

- Im-3m CaH6 (Wang et al. 2012): Ca 2a, H 12d (1/4, 0, 1/2), a = 3.5 Å (~150 GPa).
  Sodalite cages H24 4^6 6^8, Oh.
- Fm-3m LaH10 (Liu et al. 2017): La 4b (1/2, 1/2, 1/2), H 8c (1/4, 1/4, 1/4) and 32f
  (x, x, x), x = 0.12, a = 5.1 Å (~200 GPa). With La at 4b the 32f atoms form the small H8
  cubes around the empty 4a sites whose faces are the cage squares (the same crystal as La
  at 4a with x = 0.38). H32 4^6 6^12, Oh.
- Pm-3n type-I clathrate M8H46 (the "A15" hydrides of Eu/Y/Lu: the metals on the A15
  sublattice 2a + 6d). Framework positions of Na8Si46 (Reny et al. 1998): 6c (1/4, 0, 1/2),
  16i x = 0.1847, 24k (0, 0.3088, 0.1173); guests 2a (0, 0, 0) and 6d (1/4, 1/2, 0); scaled
  to a = 5.9 Å (H–H 1.34–1.38 Å). 2a: H20 5^12 (Th); 6d: H24 5^12 6^2 (D2d).
- No cage: rock-salt CaH (a = 4.2 Å, H–H 2.97 Å) and a molecular phase, the CaH6 cell with
  its H paired into H2 molecules of 0.78 Å (intermolecular H–H 1.40–1.50 Å).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import spglib
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list
from ase.spacegroup import crystal

from alcsp.analysis import AnalysisKind
from alcsp.analysis.cages import (
    CageAnalysis,
    CagePrototype,
    CageSettings,
    analyse_cages,
    group_by_prototype,
    point_group,
)
from alcsp.analysis.report_sections import cage_section
from alcsp.analysis.results import cages_path, load_stored
from alcsp.cli import main
from alcsp.oracle.base import Label
from alcsp.report import space_group
from alcsp.store import CampaignStore


def cubic(a: float) -> list[float]:
    return [a, a, a, 90.0, 90.0, 90.0]


def cah6(a: float = 3.5) -> Atoms:
    return crystal(["Ca", "H"], [(0, 0, 0), (0.25, 0, 0.5)], spacegroup=229, cellpar=cubic(a))


def lah10(a: float = 5.1, x: float = 0.12) -> Atoms:
    return crystal(
        ["La", "H", "H"],
        [(0.5, 0.5, 0.5), (0.25, 0.25, 0.25), (x, x, x)],
        spacegroup=225,
        cellpar=cubic(a),
    )


def type_one_clathrate(a: float = 5.9) -> Atoms:
    return crystal(
        ["Eu", "Eu", "H", "H", "H"],
        [(0, 0, 0), (0.25, 0.5, 0), (0.25, 0, 0.5), (0.1847,) * 3, (0, 0.3088, 0.1173)],
        spacegroup=223,
        cellpar=cubic(a),
    )


def rock_salt_cah(a: float = 4.2) -> Atoms:
    return crystal(["Ca", "H"], [(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=225, cellpar=cubic(a))


def space_group_number(atoms: Atoms) -> int:
    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    dataset = spglib.get_symmetry_dataset(cell, symprec=1e-3)
    assert dataset is not None
    return int(dataset.number)


def molecular_cah6(bond: float = 0.78) -> Atoms:
    """CaH6 with each H paired to a sodalite neighbour and moved into an H2 molecule. Of the
    80 pairings, the most symmetric (R-3c, the first in index order), so that the structure
    does not depend on the order of ASE's neighbour list."""
    atoms = cah6()
    i, j, vec = neighbor_list("ijD", atoms, 1.3)
    bonds: dict[int, list[tuple[int, np.ndarray]]] = {}
    for a, b, v in zip(i, j, vec, strict=True):
        if atoms.numbers[a] == atoms.numbers[b] == 1:
            bonds.setdefault(int(a), []).append((int(b), v))

    def matchings(partner: dict[int, np.ndarray]) -> Iterator[dict[int, np.ndarray]]:
        """Every perfect matching of the H-H bonds."""
        free = sorted(set(bonds) - set(partner))
        if not free:
            yield partner
            return
        a = free[0]
        for b, v in sorted(bonds[a], key=lambda bv: bv[0]):
            if b not in partner:
                yield from matchings({**partner, a: v, b: -v})

    def paired(partner: dict[int, np.ndarray]) -> Atoms:
        out = atoms.copy()
        pos = out.positions.copy()
        for a, v in partner.items():
            pos[a] += v * (1 - bond / np.linalg.norm(v)) / 2
        out.positions = pos
        return out

    candidates = [paired(p) for p in matchings({})]
    assert len(candidates) == 80 and all(len(c) == 14 for c in candidates)
    groups = [space_group_number(c) for c in candidates]
    best = candidates[groups.index(max(groups))]
    assert max(groups) == 167  # R-3c
    return best


def summary(analysis: CageAnalysis) -> dict[str, int]:
    """What is invariant under cell choice, per host atom: counts of each cage kind."""
    out: dict[str, int] = {}
    for cage in analysis.cages:
        key = "none" if cage is None else f"{cage.symbol} {cage.description}"
        out[key] = out.get(key, 0) + 1
    return out


# ------------------------------------------------------------------------ the cages


def test_cah6_sodalite_cage():
    a = analyse_cages(cah6())
    assert summary(a) == {"Ca H24 4^6 6^8 (Oh)": 2}
    cage = a.cages[0]
    assert cage.n_vertices == 24 and cage.n_edges == 36 and len(cage.faces) == 14
    assert a.prototypes == (CagePrototype.parse("H24 4^6 6^8"),)
    assert a.caged_fraction == 1.0 and a.is_clathrate
    assert a.bond_cutoff == pytest.approx(1.6)  # 1.3 × 1.237 Å, capped at 1.6 Å
    # the vertices are H atoms of the cell, in the images that surround the Ca
    atoms = cah6()
    pos = atoms.positions[list(cage.vertices)] + np.array(cage.shifts) @ atoms.cell.array
    assert np.linalg.norm(pos - atoms.positions[cage.center], axis=1) == pytest.approx(
        np.full(24, 3.5 * np.sqrt(5) / 4)
    )


def test_lah10_cage():
    a = analyse_cages(lah10())
    assert summary(a) == {"La H32 4^6 6^12 (Oh)": 4}
    assert a.cages[0].n_edges == 48
    # every H's nearest H is at the 8c–32f distance √3 (1/4 − x) a = 1.148 Å (cube: 1.224)
    assert a.bond_cutoff == pytest.approx(1.3 * np.sqrt(3) * 0.13 * 5.1)


def test_type_one_clathrate_two_cages():
    a = analyse_cages(type_one_clathrate())
    assert summary(a) == {"Eu H20 5^12 (Th)": 2, "Eu H24 5^12 6^2 (D2d)": 6}
    assert [p.label for p in a.prototypes] == ["H20 5^12", "H24 5^12 6^2"]
    assert a.descriptions == ("2 Eu: H20 5^12 (Th)", "6 Eu: H24 5^12 6^2 (D2d)")
    # pymatgen's default 0.3 Å on the raw vertices sees idealised shapes instead: the
    # regular dodecahedron and the D6d tetrakaidecahedron
    atoms = type_one_clathrate()
    loose = set()
    for cage in a.cages:
        pos = atoms.positions[list(cage.vertices)] + np.array(cage.shifts) @ atoms.cell.array
        loose.add(point_group(pos - atoms.positions[cage.center], 0.3))
    assert loose == {"Ih", "D6d"}


@pytest.mark.parametrize("build", [cah6, lah10, type_one_clathrate])
def test_relaxation_noise(build):
    """Noise within the space group's tolerance keeps the point groups (the structure is
    symmetrized first); larger noise (the report's space group turns P1) keeps the
    prototypes and lowers the point groups to C1."""
    ref = summary(analyse_cages(build()))
    small = build()
    small.rattle(0.005, seed=3)
    assert summary(analyse_cages(small)) == ref
    large = build()
    large.rattle(0.05, seed=3)
    assert space_group(large) == "P1 (1)"
    assert summary(analyse_cages(large)) == {
        k.replace(k[k.index("(") :], "(C1)"): v for k, v in ref.items()
    }


@pytest.mark.parametrize("build", [rock_salt_cah, molecular_cah6])
def test_no_cage(build):
    a = analyse_cages(build())
    assert a.cages == (None,) * len(a.hosts) and a.hosts
    assert a.prototypes == () and a.caged_fraction == 0.0 and not a.is_clathrate


def test_bond_cutoff_rule_follows_the_structure():
    """The molecular phase's own H2 length sets its cutoff (1.3 × 0.78 Å): its 1.4–1.5 Å
    intermolecular contacts are not bonds. A fixed 1.6 Å would cage its Ca."""
    mol = molecular_cah6()
    assert CageSettings().cutoff_for(mol) == pytest.approx(1.3 * 0.78)
    fixed = analyse_cages(mol, CageSettings(bond_cutoff=1.6))
    assert all(c is not None and c.prototype.label == "H24 4^6 6^8" for c in fixed.cages)
    # too short a cutoff leaves the sodalite unbonded
    assert analyse_cages(cah6(), CageSettings(bond_cutoff=1.0)).caged_fraction == 0.0
    assert CageSettings().cutoff_for(rock_salt_cah()) == pytest.approx(1.6)


def test_structures_without_hosts_or_hydrogen():
    pure_h = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[3, 3, 3], pbc=True)
    a = analyse_cages(pure_h)
    assert a.hosts == () and a.caged_fraction == 0.0 and not a.is_clathrate
    b = analyse_cages(bulk("Ca", "fcc", a=4.0))
    assert b.cages == (None,) and not b.is_clathrate


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("build", [cah6, lah10, type_one_clathrate])
def test_rotation_translation_supercell_invariance(build):
    rng = np.random.default_rng(14)
    ref = analyse_cages(build())
    rotated = build()
    rot = _rotation(rng)
    rotated.set_cell(rotated.cell.array @ rot.T, scale_atoms=True)
    shifted = build()
    shifted.positions += rng.normal(size=3) * 2.0
    shifted.wrap()
    shuffled = build()
    shuffled = shuffled[rng.permutation(len(shuffled))]
    for variant in (rotated, shifted, shuffled):
        got = analyse_cages(variant)
        assert summary(got) == summary(ref)
        assert got.bond_cutoff == pytest.approx(ref.bond_cutoff)
    sup = analyse_cages(build().repeat((2, 1, 2)))
    assert {k: v // 4 for k, v in summary(sup).items()} == summary(ref)
    assert sup.prototypes == ref.prototypes and sup.caged_fraction == ref.caged_fraction


def test_json_round_trip_and_grouping():
    analyses = {
        1: analyse_cages(cah6()),
        2: analyse_cages(type_one_clathrate()),
        3: analyse_cages(rock_salt_cah()),
        4: analyse_cages(lah10()),
    }
    for a in analyses.values():
        assert CageAnalysis.from_json(json.loads(json.dumps(a.to_json()))) == a
    groups = {p.label: ids for p, ids in group_by_prototype(analyses).items()}
    assert groups == {"H20 5^12": [2], "H24 4^6 6^8": [1], "H24 5^12 6^2": [2], "H32 4^6 6^12": [4]}


def test_settings_are_checked_and_keyed():
    with pytest.raises(ValueError, match="bond cutoff must be > 0"):
        CageSettings(bond_cutoff=-0.5)
    with pytest.raises(ValueError, match="shell_ratio"):
        CageSettings(shell_ratio=0.9)
    assert CageSettings().key() != CageSettings(bond_cutoff=1.4).key()
    assert CageSettings.from_json(CageSettings(bond_cutoff=1.4).to_json()).key() == (
        CageSettings(bond_cutoff=1.4).key()
    )
    assert AnalysisKind.TC.implemented and AnalysisKind.CAGES.implemented


# ------------------------------------------------------------------------ alcsp analyse

CONFIG = """
[campaign]
name = "{name}"
pressure = 0.0

[compositions]
elements = {elements}
max_formula_atoms = 8

[oracle]
name = "emt"
"""


def _label(atoms: Atoms, energy_per_atom: float) -> Label:
    n = len(atoms)
    return Label(energy_per_atom * n, np.zeros((n, 3)), np.zeros((3, 3)), "emt", 0.0)


def hydride_campaign(directory: Path, shift: float = 0.0) -> dict[str, int]:
    """A Ca–H store built by hand (pressure 0, so H = E/N): Ca and H2 terminals, Im-3m
    CaH6 (on the hull at -3.2 eV/atom), rock-salt CaH (50 meV/atom above) and molecular
    CaH6 (200 meV/atom above); ``shift`` eV/atom is added to the three hydrides. Returns
    the structure ids by name."""
    h2 = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[2.2, 2.2, 2.2], pbc=True)
    structures = {
        "Ca": (bulk("Ca", "fcc", a=4.0), -2.0),
        "H": (h2, -3.0),
        "CaH6": (cah6(), -3.2 + shift),
        "CaH": (rock_salt_cah(), -2.65 + shift),
        "CaH6-molecular": (molecular_cah6(), -3.0 + shift),
    }
    store = CampaignStore.create(directory, CONFIG.format(name="cah", elements='["Ca", "H"]'))
    with store:
        ids = store.add_structures([s for s, _ in structures.values()], "import", 0)
        store.add_labels(
            [(sid, _label(s, e)) for sid, (s, e) in zip(ids, structures.values(), strict=True)], 0
        )
    return dict(zip(structures, ids, strict=True))


def cuau_campaign(directory: Path) -> None:
    """A Cu–Au store with real EMT labels: no hydrogen."""
    store = CampaignStore.create(directory, CONFIG.format(name="cuau", elements='["Cu", "Au"]'))
    with store:
        cells = [
            bulk("Cu", "fcc", a=3.6),
            bulk("Au", "fcc", a=4.08),
            bulk("Cu", "fcc", a=3.85, cubic=True),
        ]
        cells[2].numbers = [29, 79, 79, 29]
        ids = store.add_structures(cells, "import", 0)
        labels = []
        for sid, a in zip(ids, cells, strict=True):
            a.calc = EMT()
            labels.append(
                (
                    sid,
                    Label(
                        a.get_potential_energy(),
                        a.get_forces(),
                        a.get_stress(voigt=False),
                        "emt",
                        0.0,
                    ),
                )
            )
        store.add_labels(labels, 0)


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``directory`` with its size and modification time, but SQLite's
    -wal and -shm sidecars, which any reader of the database makes (status, export too)."""
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def test_analyse_command_stores_and_reuses(tmp_path, capsys, monkeypatch):
    d = tmp_path / "cah"
    ids = hydride_campaign(d)
    out_json = tmp_path / "cages-table.json"
    assert main(["analyse", str(d), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "2 Ca: H24 4^6 6^8 (Oh)" in out and "Im-3m (229)" in out
    assert "1 of 2 structures are clathrates" in out  # CaH6 and CaH (the terminals: no hydride)
    table = json.loads(out_json.read_text())
    assert [r["structure_id"] for r in table["rows"]] == [ids["CaH6"], ids["CaH"]]
    assert table["rows"][1]["e_hull_mev"] == pytest.approx(50.0)
    assert table["groups"] == {"H24 4^6 6^8": [ids["CaH6"]]}
    results, last = load_stored(d)
    (stored,) = results.values()
    assert set(stored) == {ids["CaH6"], ids["CaH"]}
    assert last is not None and [sid for sid, _ in last.rows] == [ids["CaH6"], ids["CaH"]]

    # a second call reads the stored results: nothing is analysed again
    def refuse(*args, **kwargs):
        raise AssertionError("analysed again")

    monkeypatch.setattr("alcsp.analysis.cages.analyse_cages", refuse)
    assert main(["analyse", str(d)]) == 0
    assert capsys.readouterr().out.splitlines()[1:3] == out.splitlines()[1:3]
    # other settings are other results, the first ones are kept
    monkeypatch.undo()
    assert main(["analyse", str(d), "--ehull", "0.3", "--bond-cutoff", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "0 of 3 structures are clathrates" in out
    results, _ = load_stored(d)
    assert sorted(len(r) for r in results.values()) == [2, 3]

    html = cage_section(d)
    assert "Hydrogen cages" in html and "H24 4^6 6^8" not in html  # the last run: 1.0 Å
    assert cage_section(tmp_path / "nowhere") == ""


def test_analyse_killed_keeps_finished_structures(tmp_path, capsys, monkeypatch):
    d = tmp_path / "cah"
    ids = hydride_campaign(d)
    import alcsp.analysis.cages as cages

    real = cages.analyse_cages
    calls = []

    def dies_on_second(atoms, settings=None):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill between two structures
        return real(atoms, settings)

    monkeypatch.setattr(cages, "analyse_cages", dies_on_second)
    assert main(["analyse", str(d)]) == 130  # Ctrl-C: one line, exit 130
    results, last = load_stored(d)
    assert [set(r) for r in results.values()] == [{ids["CaH6"]}] and last is None
    assert not [p for p in cages_path(d).parent.iterdir() if p.suffix == ".tmp"]
    calls.clear()
    monkeypatch.setattr(cages, "analyse_cages", real)
    assert main(["analyse", str(d)]) == 0
    results, last = load_stored(d)
    assert [set(r) for r in results.values()] == [{ids["CaH6"], ids["CaH"]}]
    assert "Hydrogen cages" in cage_section(d) and "H24 4^6 6^8" in cage_section(d)


@pytest.mark.parametrize(
    ("campaign", "args", "message"),
    [
        ("cuau", [], "include no hydrogen"),
        ("cah", ["--what", "electronic,tc"], "needs the GPAW oracle"),
        ("cah", ["--what", "cages,tc"], "needs the GPAW oracle"),
        ("cah", ["--what", "phonons"], "'phonons' is not an analysis"),
        ("cah", ["--ehull", "-0.1"], "--ehull must be >= 0"),
        ("cah", ["--bond-cutoff", "-1"], "bond cutoff must be > 0"),
        ("cah", ["--bond-cutoff", "0"], "bond cutoff must be > 0"),
        (
            "cah-above",
            ["--ehull", "0.01"],
            "no hydride within E_hull <= 0.01 eV/atom (the "
            "lowest is 257.1 meV/atom); widen --ehull",
        ),
        ("missing", [], "holds no campaign"),
    ],
)
def test_analyse_bad_input(tmp_path, capsys, campaign, args, message):
    d = tmp_path / campaign
    if campaign == "cuau":
        cuau_campaign(d)
    elif campaign == "cah":
        hydride_campaign(d)
    elif campaign == "cah-above":
        hydride_campaign(d, shift=0.6)  # every hydride >= 257 meV/atom above the hull
    before = snapshot(d) if d.exists() else None
    assert main(["analyse", str(d), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert (snapshot(d) if d.exists() else None) == before
    assert not cages_path(d).parent.exists()


def test_cli_registers_analyse():
    assert os.path.exists(Path(__file__).parents[1] / "docs" / "analysis.md")
    with pytest.raises(SystemExit) as exc:
        main(["analyse", "--help"])
    assert exc.value.code == 0
