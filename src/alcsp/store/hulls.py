"""Hulls of what a campaign has stored: the read model that reports and commands use
without importing the campaign (its model, torch or its oracle).

``labelled_hull`` is the hull of every successful oracle label (enthalpies H = E0 + PV per
atom at the campaign pressure, ``ENERGY_DEFINITION``); ``HullSnapshot`` is what an
iteration stores of it; ``terminal_warnings`` compares the search's terminals with the
reference phases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from alcsp.config import CampaignConfig
from alcsp.hull import HullResult, build_hull
from alcsp.store.campaign_store import CampaignStore
from alcsp.units import GPA
from alcsp.vocab import Origin, composition_key

__all__ = [
    "ENERGY_DEFINITION",
    "HullSnapshot",
    "LabelledHull",
    "hull_of",
    "labelled_hull",
    "reference_names",
    "space_group",
    "terminal_warnings",
]


@dataclass
class HullSnapshot:
    """The oracle-level hull after an iteration: stable compositions and their formation
    enthalpies (eV/atom), and the best label of each stable composition."""

    stable: dict[str, float]
    structure_ids: dict[str, int]
    n_entries: int

    def to_json(self) -> dict:
        return {
            "stable": self.stable,
            "structure_ids": self.structure_ids,
            "n_entries": self.n_entries,
        }

    @classmethod
    def from_json(cls, d: dict | None) -> HullSnapshot | None:
        if not d:
            return None
        return cls(
            dict(d["stable"]),
            {k: int(v) for k, v in d["structure_ids"].items()},
            int(d["n_entries"]),
        )

    def same_as(self, other: HullSnapshot | None, tol: float) -> bool:
        if other is None or set(self.stable) != set(other.stable):
            return False
        return all(abs(self.stable[k] - other.stable[k]) <= tol for k in self.stable)


@dataclass
class LabelledHull:
    """The hull of a campaign's oracle labels: ``hull`` entries are ``structures[kept[i]]``."""

    hull: HullResult
    structures: list[Atoms]  # every successful label, with info["structure_id"]
    kept: np.ndarray  # [M] index into structures of each hull entry

    def structure_id(self, entry: int) -> int:
        return int(self.structures[self.kept[entry]].info["structure_id"])


def space_group(atoms: Atoms) -> str:
    import spglib

    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    return spglib.get_spacegroup(cell, symprec=0.1) or "P1"


def hull_of(keys: np.ndarray, enthalpy: np.ndarray, elements: tuple[str, ...]):
    """Hull of the entries whose elements all have a pure entry: (HullResult, kept indices),
    or None when no entry qualifies. Entries of compositions with a missing terminal are
    left out (their E_hull is undefined), never guessed."""
    if len(keys) == 0:
        return None
    from pymatgen.core import Composition

    have = {str(Composition(k).elements[0]) for k in set(keys) if len(Composition(k)) == 1}
    keep = np.array([{str(e) for e in Composition(k).elements} <= have for k in keys])
    if not keep.any():
        return None
    idx = np.nonzero(keep)[0]
    present = tuple(e for e in elements if e in have)
    return build_hull(list(keys[idx]), np.asarray(enthalpy)[idx], elements=present), idx


def _labels_hull(data: list[Atoms], pressure_gpa: float, elements: tuple[str, ...]):
    """``hull_of`` the labels ``data``, enthalpies E0 + PV per atom at ``pressure_gpa``:
    E0 is the zero-smearing energy (``get_potential_energy()`` of a stored label; training
    uses the force-consistent free energy instead). ENERGY_DEFINITION says so to users."""
    p = pressure_gpa * GPA
    keys = np.array([composition_key(a.get_chemical_formula()) for a in data], dtype=object)
    h = np.array([(a.get_potential_energy() + p * a.get_volume()) / len(a) for a in data])
    return hull_of(keys, h, elements)


def labels_e_hull(data: list[Atoms], pressure_gpa: float, elements: tuple[str, ...]) -> np.ndarray:
    """Each label's E_hull [S] eV/atom on the hull of ``data`` itself (NaN where its
    composition has no terminal among them), enthalpies as every hull of a campaign."""
    e_hull = np.full(len(data), np.nan)
    built = _labels_hull(data, pressure_gpa, elements) if data else None
    if built is not None:
        e_hull[built[1]] = built[0].e_hull
    return e_hull


def labelled_hull(
    store: CampaignStore, oracle: str, pressure_gpa: float, elements: tuple[str, ...]
) -> LabelledHull | None:
    """Hull of every successful label of ``oracle``, enthalpies at ``pressure_gpa``."""
    data = store.training_set(oracle)
    if not data:
        return None
    built = _labels_hull(data, pressure_gpa, elements)
    return None if built is None else LabelledHull(built[0], data, built[1])


#: What every hull of a campaign is built from, in the words status and reports use.
ENERGY_DEFINITION = (
    "enthalpy H = E0 + PV per atom, E0 the oracle's energy extrapolated to zero smearing "
    "(training uses the force-consistent free energy F)"
)


def reference_names(store: CampaignStore) -> dict[int, str]:
    """Stored reference phases: structure id -> name (e.g. "fcc Ca")."""
    raw = store.meta("references")
    return {int(k): str(v) for k, v in json.loads(raw).items()} if raw else {}


def terminal_warnings(store: CampaignStore, config: CampaignConfig) -> list[str]:
    """Per element: a warning when the search's best terminal and the best reference phase
    (each after any oracle relaxation) differ by more than the hull tolerance."""
    from alcsp.references import wrong_terminal_warnings

    names = reference_names(store)
    if not names:
        return []
    lh = labelled_hull(store, config.oracle.name, config.campaign.pressure, config.elements)
    if lh is None:
        return []
    parents = {
        r.structure_id: r.parent_id
        for r in store.oracle_relaxations()
        if r.structure_id is not None
    }
    found: dict[str, tuple[str, float]] = {}
    ref: dict[str, tuple[str, float]] = {}
    for i in range(len(lh.kept)):
        key = lh.hull.keys[lh.hull.comp_index[i]]
        if key not in config.elements:
            continue
        sid = lh.structure_id(i)
        root = parents.get(sid, sid)
        a = lh.structures[lh.kept[i]]
        h = float(lh.hull.enthalpy[i])
        if root in names or a.info["origin"] == Origin.REFERENCE_PHASE:
            target, what = ref, names.get(root, f"reference structure {sid}")
        else:
            target, what = found, f"structure {sid}, {space_group(a)}"
        if key not in target or h < target[key][1]:
            target[key] = (what, h)
    return wrong_terminal_warnings(found, ref, config.campaign.hull_tolerance)
