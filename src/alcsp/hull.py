"""Convex hull of formation enthalpies: E_hull of every entry, stable set, decompositions.

pymatgen's ``PhaseDiagram`` builds the hull, but only from the lowest-enthalpy entry of each
composition (the others cannot be on it); the hull energy of each composition is asked of
pymatgen once, and E_hull of every entry is then a NumPy broadcast
``h_entry - h_hull[composition]``. Building a ``PhaseDiagram`` from a million ``PDEntry``
objects would take minutes; this takes seconds (``benchmarks/hull_speed.py``).

Units: enthalpy per atom H = (E + PV)/N in eV/atom; ``e_hull`` in eV/atom
(``e_hull_mev`` in meV/atom). Reference phases (known structures supplied by the user) take
part in the hull and are flagged ``is_reference``: they never enter the training set.

Shape letters: M entries, C distinct compositions, K elements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from ase import Atoms
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Element

from alcsp.compositions import composition_key
from alcsp.units import GPA

__all__ = [
    "HullEntry",
    "HullResult",
    "build_hull",
    "build_hull_from_entries",
    "enthalpy_per_atom",
    "entries_from_atoms",
    "read_entries",
]

#: Entries with E_hull at or below this (eV/atom) count as on the hull.
STABLE_TOL = 1e-8


@dataclass(frozen=True)
class HullEntry:
    """One structure's composition and enthalpy per atom (eV/atom)."""

    id: str
    composition: str  # any formula pymatgen parses; the key is its reduced form
    enthalpy_per_atom: float
    is_reference: bool = False


def enthalpy_per_atom(atoms: Atoms, energy: float, pressure_gpa: float) -> float:
    """H/N = (E + P V)/N in eV/atom for total energy ``energy`` (eV) at ``pressure_gpa`` (GPa)."""
    return (float(energy) + pressure_gpa * GPA * atoms.get_volume()) / len(atoms)


@dataclass
class HullResult:
    """E_hull and formation enthalpy of every entry, and the hull itself.

    Arrays are aligned with the input entries ([M]); compositions are indexed [C].
    """

    elements: tuple[str, ...]
    ids: list[str]  # [M]
    keys: list[str]  # [C] composition keys
    comp_index: np.ndarray  # [M] int, index into keys
    enthalpy: np.ndarray  # [M] eV/atom
    e_hull: np.ndarray  # [M] eV/atom, >= 0 up to round-off
    formation: np.ndarray  # [M] formation enthalpy, eV/atom
    is_reference: np.ndarray  # [M] bool
    hull_energy: np.ndarray  # [C] hull enthalpy per atom at each composition, eV/atom
    best_index: np.ndarray  # [C] entry index of the lowest entry of each composition
    phase_diagram: PhaseDiagram

    @property
    def e_hull_mev(self) -> np.ndarray:
        """E_hull in meV/atom, [M]."""
        return self.e_hull * 1000.0

    @property
    def composition_e_hull(self) -> np.ndarray:
        """E_hull of the best entry of each composition, eV/atom, [C]."""
        return self.e_hull[self.best_index]

    @cached_property
    def stable_indices(self) -> np.ndarray:
        """Entry indices of the stable set: the best entry of each on-hull composition."""
        on = self.composition_e_hull <= STABLE_TOL
        return self.best_index[on]

    @property
    def stable_keys(self) -> list[str]:
        return [self.keys[self.comp_index[i]] for i in self.stable_indices]

    @property
    def training_mask(self) -> np.ndarray:
        """[M] bool: entries that may enter the training set (not reference phases)."""
        return ~self.is_reference

    def decomposition(self, composition: str | Composition) -> dict[str, float]:
        """Stable phases (keys) and their atom fractions that a composition decomposes into."""
        comp = Composition(composition) if isinstance(composition, str) else composition
        decomp = self.phase_diagram.get_decomposition(comp)
        out: dict[str, float] = {}
        for entry, frac in decomp.items():
            k = composition_key(entry.composition)
            out[k] = out.get(k, 0.0) + float(frac)
        return dict(sorted(out.items()))

    def table(self) -> list[dict]:
        """One row per entry (id, composition, H, formation, E_hull in meV/atom, reference)."""
        return [
            {
                "id": self.ids[i],
                "composition": self.keys[self.comp_index[i]],
                "enthalpy_per_atom": float(self.enthalpy[i]),
                "formation_per_atom": float(self.formation[i]),
                "e_hull_mev": float(self.e_hull[i] * 1000.0),
                "is_reference": bool(self.is_reference[i]),
            }
            for i in range(len(self.ids))
        ]


def _fractions(keys: Sequence[str], elements: Sequence[str]) -> np.ndarray:
    """Atom fractions [C, K]."""
    out = np.zeros((len(keys), len(elements)))
    col = {e: j for j, e in enumerate(elements)}
    for i, k in enumerate(keys):
        comp = Composition(k)
        for el, amt in comp.fractional_composition.items():
            out[i, col[el.symbol]] = amt
    return out


def build_hull(
    compositions: Sequence[str | Composition],
    enthalpy: Sequence[float] | np.ndarray,
    *,
    is_reference: Sequence[bool] | np.ndarray | None = None,
    ids: Sequence[str] | None = None,
    elements: Sequence[str] | None = None,
) -> HullResult:
    """Hull of M entries given their compositions and enthalpies per atom (eV/atom).

    ``compositions`` may repeat (many structures per composition); keys are computed once per
    distinct value. ``elements`` fixes the chemical system (default: all elements present);
    every element needs at least one pure entry (a structure or a reference phase).
    """
    h = np.asarray(enthalpy, dtype=float)  # [M]
    m = len(h)
    if m == 0:
        raise ValueError("hull: no entries; give at least one structure per element.")
    if len(compositions) != m:
        raise ValueError(f"hull: {len(compositions)} compositions but {m} enthalpies.")
    if not np.all(np.isfinite(h)):
        bad = np.where(~np.isfinite(h))[0][:10].tolist()
        raise ValueError(f"hull: non-finite enthalpy for entries {bad}; drop or fix them.")
    ref = np.zeros(m, bool) if is_reference is None else np.asarray(is_reference, bool)
    id_list = [str(i) for i in range(m)] if ids is None else [str(i) for i in ids]
    if len(ref) != m or len(id_list) != m:
        raise ValueError("hull: is_reference and ids must have one value per entry.")

    # distinct compositions: map each distinct input value to a key once
    key_of: dict = {}
    keys: list[str] = []
    key_index: dict[str, int] = {}
    comp_index = np.empty(m, dtype=np.int64)  # [M]
    for i, c in enumerate(compositions):
        ci = key_of.get(c)
        if ci is None:
            k = composition_key(c)
            ci = key_index.setdefault(k, len(keys))
            if ci == len(keys):
                keys.append(k)
            key_of[c] = ci
        comp_index[i] = ci

    present = sorted(
        {el.symbol for k in keys for el in Composition(k).elements}, key=lambda s: Element(s).X
    )
    if elements is None:
        els = tuple(present)
    else:
        els = tuple(elements)
        extra = sorted(set(present) - set(els))
        if extra:
            raise ValueError(f"hull: entries contain {extra}, outside the system {list(els)}.")
    missing = [e for e in els if e not in key_index]
    if missing:
        raise ValueError(
            f"hull: no entry for element(s) {missing}; the hull needs every terminal: add a "
            "structure or a reference phase of each pure element."
        )

    # lowest entry per composition: sort by (composition, enthalpy), take the first of each
    order = np.lexsort((h, comp_index))  # [M]
    first = np.ones(m, bool)
    first[1:] = comp_index[order][1:] != comp_index[order][:-1]
    best = order[first]  # [C], ordered by composition index
    n_comp = len(keys)
    assert len(best) == n_comp

    pd_entries = [
        PDEntry(Composition(keys[j]), h[best[j]] * Composition(keys[j]).num_atoms, name=keys[j])
        for j in range(n_comp)
    ]
    pd = PhaseDiagram(pd_entries, elements=[Element(e) for e in els])
    hull_e = np.array([pd.get_hull_energy_per_atom(Composition(k)) for k in keys])  # [C]
    # element chemical potentials: the lowest pure entry of each element
    mu = np.array([h[best[key_index[composition_key(e)]]] for e in els])  # [K]
    frac = _fractions(keys, els)  # [C, K]
    ref_energy = frac @ mu  # [C]
    e_hull = h - hull_e[comp_index]  # [M]
    formation = h - ref_energy[comp_index]  # [M]
    return HullResult(
        elements=els,
        ids=id_list,
        keys=keys,
        comp_index=comp_index,
        enthalpy=h,
        e_hull=e_hull,
        formation=formation,
        is_reference=ref,
        hull_energy=hull_e,
        best_index=best,
        phase_diagram=pd,
    )


def build_hull_from_entries(
    entries: Sequence[HullEntry], elements: Sequence[str] | None = None
) -> HullResult:
    """``build_hull`` for a list of ``HullEntry``."""
    return build_hull(
        [e.composition for e in entries],
        [e.enthalpy_per_atom for e in entries],
        is_reference=[e.is_reference for e in entries],
        ids=[e.id for e in entries],
        elements=elements,
    )


def entries_from_atoms(
    structures: Sequence[Atoms],
    pressure_gpa: float,
    *,
    is_reference: bool = False,
    id_prefix: str = "",
    enthalpy: float | None = None,
) -> list[HullEntry]:
    """Hull entries from structures carrying a total energy (eV).

    The energy comes from ``atoms.info['energy']`` or the attached (single-point) calculator;
    the enthalpy per atom is (E + PV)/N at ``pressure_gpa``. ``enthalpy`` (eV/atom at that
    pressure) is used instead for files without energies, e.g. a CIF of a known phase.
    """
    out = []
    for i, atoms in enumerate(structures):
        sid = str(atoms.info.get("id", f"{id_prefix}{i}"))
        if enthalpy is not None:
            out.append(HullEntry(sid, atoms.get_chemical_formula(), float(enthalpy), is_reference))
            continue
        energy = atoms.info.get("energy")
        if energy is None and atoms.calc is not None:
            try:
                energy = atoms.get_potential_energy()
            except Exception as exc:  # a calculator without a stored energy
                raise ValueError(f"structure {id_prefix}{i} has no stored energy ({exc}).") from exc
        if energy is None:
            raise ValueError(
                f"structure {id_prefix}{i} ({atoms.get_chemical_formula()}) has no energy; write "
                "files with energies (extxyz with energy=...) or give the enthalpy per atom."
            )
        out.append(
            HullEntry(
                sid,
                atoms.get_chemical_formula(),
                enthalpy_per_atom(atoms, energy, pressure_gpa),
                is_reference,
            )
        )
    return out


def read_entries(
    path: str | Path,
    pressure_gpa: float,
    *,
    is_reference: bool = False,
    enthalpy: float | None = None,
) -> list[HullEntry]:
    """Read every structure of an extxyz (or any ASE-readable file: CIF, POSCAR, ...).

    Energies come from the file; for files without them (CIF) pass ``enthalpy`` (eV/atom).
    """
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty; give a file with structures and energies.")
    try:
        frames = read(path, index=":")
    except Exception as exc:  # ASE raises many types for unreadable files
        raise ValueError(f"{path}: cannot read structures ({exc}).") from exc
    structures = [frames] if isinstance(frames, Atoms) else frames  # index=":": a list
    if not structures:
        raise ValueError(f"{path} holds no structures.")
    return entries_from_atoms(
        structures,
        pressure_gpa,
        is_reference=is_reference,
        id_prefix=f"{path.name}:",
        enthalpy=enthalpy,
    )
