"""The stored best-known hulls (benchmarks/best_known.py) are what they claim to be.

Each stored file loads, its stable set forms a hull with alcsp.hull, every stored stable
structure's EMT energy recomputed now matches its stored formation energy within
0.1 meV/atom, and every one is a local minimum (EMT forces below 0.01 eV/Å). Fast: a few
single points of cells of at most 8 atoms.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.io import read

from alcsp.hull import build_hull, read_entries

DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "best-known"
SYSTEMS = sorted(p.stem for p in DATA.glob("*.json"))


def _load(system: str):
    data = json.loads((DATA / f"{system}.json").read_text())
    structures = read(DATA / f"{system}.extxyz", index=":")
    return data, structures


def test_cu_au_is_stored():
    assert "Cu-Au" in SYSTEMS


@pytest.mark.parametrize("system", SYSTEMS)
def test_stable_set_forms_the_hull(system):
    data, structures = _load(system)
    entries = read_entries(DATA / f"{system}.extxyz", 0.0)
    hull = build_hull(
        [e.composition for e in entries],
        [e.enthalpy_per_atom for e in entries],
        elements=data["elements"],
    )
    assert sorted(hull.stable_keys) == sorted(data["stable_set"])
    # every stored structure is the one the file says, at the E_hull it says
    for a, e_hull, form in zip(structures, hull.e_hull, hull.formation, strict=True):
        assert a.info["e_hull_mev"] == pytest.approx(e_hull * 1000, abs=1e-3)
        assert a.info["formation_energy_mev"] == pytest.approx(form * 1000, abs=1e-3)
        assert a.info["source"] in ("enumeration", "prototype", "random")
    stable = {a.info["composition"]: a for a in structures if a.info["stable"]}
    assert sorted(stable) == sorted(data["stable_set"])
    for row in data["stable"]:
        assert stable[row["composition"]].info["formation_energy_mev"] == pytest.approx(
            row["formation_energy_mev"], abs=1e-3
        )


@pytest.mark.parametrize("system", SYSTEMS)
def test_stable_structures_recomputed_with_emt(system):
    data, structures = _load(system)
    stable = [a for a in structures if a.info["stable"]]
    energy = {}
    fmax = {}
    for a in stable:
        b = a.copy()
        b.calc = EMT()
        energy[a.info["composition"]] = b.get_potential_energy() / len(b)
        fmax[a.info["composition"]] = float(np.abs(b.get_forces()).max())
        # the stored energy is EMT's at the stored geometry
        assert energy[a.info["composition"]] == pytest.approx(
            a.get_potential_energy() / len(a), abs=1e-7
        )
    mu = {el: energy[el] for el in data["elements"]}
    for a in stable:
        key = a.info["composition"]
        counts = a.symbols.formula.count()
        ref = sum(n * mu[el] for el, n in counts.items()) / len(a)
        formation_mev = (energy[key] - ref) * 1000
        assert formation_mev == pytest.approx(a.info["formation_energy_mev"], abs=0.1), key
        assert fmax[key] < 0.01, f"{key}: EMT max force {fmax[key]:.4f} eV/Å"


def test_cu_au_stable_set_reported_in_issue_12():
    """Issue 12's Cu-Au hull: hcp Cu, D0_19 Cu3Au, B19 CuAu, fcc Au (as verified by the
    stored file; the test fails if a re-established hull changes it)."""
    data, _ = _load("Cu-Au")
    rows = {r["composition"]: r for r in data["stable"]}
    assert set(rows) >= {"Cu", "Au", "Cu3Au", "CuAu"}
    assert rows["Cu"]["space_group"] == "P6_3/mmc"
    assert rows["Au"]["space_group"] == "Fm-3m"
