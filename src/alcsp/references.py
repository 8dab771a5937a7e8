"""Known reference phases: built-in element prototypes and structure files.

A random search finds what it finds: an EMT Cu-Au campaign took bcc Cu (+48.7 meV/atom
above hcp) as its Cu terminal and reported a wrong phase as stable. The ``[references]``
table puts known phases into the loop: they are labelled and relaxed by the oracle before
iteration 1, so they sit on every hull (the ACNN search relaxes them too) and in the
training set::

    [references]
    prototypes = { Ca = ["fcc", "bcc", "sc"], H = [] }   # built-in, see PROTOTYPES
    files = ["refs/H-Cmca-12.cif"]                         # CIF, extxyz, POSCAR, ...
    volumes = { Ca = 8.0 }                                 # Å³/atom of the prototypes

Prototypes are built with ``ase.build.bulk`` in their primitive cells and scaled to a
volume per atom (the campaign's start-volume estimate at its pressure unless ``volumes``
says otherwise); the oracle relaxation finds the volume at the pressure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms


class ReferenceError(ValueError):
    """A ``[references]`` entry cannot be used; the message names it and the fix."""


def _hcp(symbol: str) -> Atoms:
    from ase.build import bulk

    return bulk(symbol, "hcp", a=1.0, c=float(np.sqrt(8.0 / 3.0)))


def _dhcp(symbol: str) -> Atoms:
    """Double hcp (ABAC stacking, La/Pr/Nd type), ideal c/a = 2 × sqrt(8/3), 4 atoms."""
    a, c = 1.0, 2.0 * float(np.sqrt(8.0 / 3.0))
    cell = [[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, c]]
    frac = [[0, 0, 0], [1 / 3, 2 / 3, 0.25], [0, 0, 0.5], [2 / 3, 1 / 3, 0.75]]
    return Atoms(symbol * 4, scaled_positions=frac, cell=cell, pbc=True)


def _bulk(structure: str) -> Callable[[str], Atoms]:
    def build(symbol: str) -> Atoms:
        from ase.build import bulk

        return bulk(symbol, structure, a=1.0)

    return build


#: Built-in element prototypes: name -> builder of a unit-length primitive cell.
PROTOTYPES: dict[str, Callable[[str], Atoms]] = {
    "fcc": _bulk("fcc"),
    "hcp": _hcp,
    "bcc": _bulk("bcc"),
    "dhcp": _dhcp,
    "sc": _bulk("sc"),
    "diamond": _bulk("diamond"),
}


def prototype(element: str, name: str, volume_per_atom: float) -> Atoms:
    """The primitive cell of prototype ``name`` of ``element`` at ``volume_per_atom`` Å³."""
    if name not in PROTOTYPES:
        raise ReferenceError(
            f"[references] unknown prototype {name!r}; known: {sorted(PROTOTYPES)} "
            "(give other phases as structure files)"
        )
    if not volume_per_atom > 0:
        raise ReferenceError(f"[references] volume of {element} must be > 0 Å³/atom")
    atoms = PROTOTYPES[name](element)
    scale = (volume_per_atom * len(atoms) / atoms.get_volume()) ** (1.0 / 3.0)
    atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
    atoms.pbc = True
    return atoms


@dataclass(frozen=True)
class ReferenceConfig:
    """The ``[references]`` table (see the module docstring)."""

    prototypes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    volumes: Mapping[str, float] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not self.files and not any(self.prototypes.values())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceConfig:
        known = {"prototypes", "files", "volumes"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ReferenceError(f"[references] has unknown fields {unknown}; known: "
                                 f"{sorted(known)}")  # fmt: skip
        protos = d.get("prototypes", {})
        if not isinstance(protos, Mapping):
            raise ReferenceError("[references] prototypes must be a table, e.g. "
                                 '{ Ca = ["fcc", "bcc"] }')  # fmt: skip
        out: dict[str, tuple[str, ...]] = {}
        for el, names in protos.items():
            if isinstance(names, str) or not isinstance(names, Sequence):
                raise ReferenceError(f"[references] prototypes.{el} must be a list of names, "
                                     f"e.g. [\"fcc\", \"hcp\"]; got {names!r}")  # fmt: skip
            for n in names:
                if n not in PROTOTYPES:
                    raise ReferenceError(
                        f"[references] prototypes.{el}: unknown prototype {n!r}; known: "
                        f"{sorted(PROTOTYPES)} (give other phases as structure files)"
                    )
            if len(set(names)) != len(names):
                raise ReferenceError(f"[references] prototypes.{el} lists a prototype twice")
            out[str(el)] = tuple(str(n) for n in names)
        files = d.get("files", ())
        if (
            isinstance(files, str)
            or not isinstance(files, Sequence)
            or not all(isinstance(f, str) and f for f in files)
        ):
            raise ReferenceError('[references] files must be a list of paths, e.g. ["H2.cif"]')
        vols = d.get("volumes", {})
        if not isinstance(vols, Mapping):
            raise ReferenceError("[references] volumes must be a table, e.g. { Ca = 8.0 }")
        for el, v in vols.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1e4:
                raise ReferenceError(f"[references] volumes.{el} must be a volume per atom in "
                                     f"Å³ (> 0), got {v!r}")  # fmt: skip
        return cls(out, tuple(files), {str(k): float(v) for k, v in vols.items()})


@dataclass(frozen=True)
class Reference:
    """One reference phase: its name (e.g. "fcc Ca", "H2.cif #0") and structure."""

    name: str
    atoms: Atoms
    source: str  # "prototype" or the file's path


def _read_file(path: Path) -> list[Atoms]:
    from ase.io import read

    if not path.is_file():
        raise ReferenceError(
            f"[references] files: {path} does not exist; give a path "
            "relative to the config file's folder, or an absolute one"
        )
    try:
        frames = read(path, index=":")
    except Exception as exc:  # any parser error: the file is not a structure
        raise ReferenceError(
            f"[references] files: cannot read {path} as a structure "
            f"({type(exc).__name__}: {str(exc)[:120]}); give a CIF, extxyz or POSCAR file"
        ) from exc
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise ReferenceError(f"[references] files: {path} holds no structure")
    return frames


def load_references(
    config: ReferenceConfig,
    elements: Sequence[str],
    base_dir: Path,
    default_volume: Mapping[str, float],
) -> list[Reference]:
    """Build the prototypes and read the files of ``config``; validate them against the
    campaign's ``elements``. Relative file paths are relative to ``base_dir``."""
    refs: list[Reference] = []
    allowed = set(elements)
    for el, names in config.prototypes.items():
        if el not in allowed:
            raise ReferenceError(
                f"[references] prototypes.{el}: {el} is not one of the campaign's elements "
                f"{list(elements)}; remove it or add it to [compositions] elements"
            )
        v = config.volumes.get(el, default_volume.get(el, 0.0))
        refs += [Reference(f"{n} {el}", prototype(el, n, v), "prototype") for n in names]
    for f in config.files:
        path = Path(f) if Path(f).is_absolute() else Path(base_dir) / f
        frames = _read_file(path)
        for k, a in enumerate(frames):
            where = f"{f} #{k}" if len(frames) > 1 else f
            outside = sorted(set(a.get_chemical_symbols()) - allowed)
            if outside:
                raise ReferenceError(
                    f"[references] files: {where} holds {outside}, outside the campaign's "
                    f"elements {list(elements)}; remove the file or add the elements"
                )
            if not all(a.pbc) or a.cell.rank < 3 or abs(a.get_volume()) < 1e-3 * len(a):
                raise ReferenceError(f"[references] files: {where} is not a 3D-periodic "
                                     "crystal (pbc and a cell of non-zero volume)")  # fmt: skip
            clean = Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=True)
            refs.append(Reference(where, clean, str(path)))
    _reject_duplicates(refs)
    for r in refs:
        r.atoms.info["reference"] = r.name
    return refs


def _reject_duplicates(refs: list[Reference]) -> None:
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    matcher = StructureMatcher(scale=False)
    structs = [AseAtomsAdaptor.get_structure(r.atoms) for r in refs]
    for i in range(len(refs)):
        for j in range(i):
            if structs[i].composition.reduced_formula == structs[
                j
            ].composition.reduced_formula and matcher.fit(structs[i], structs[j]):
                raise ReferenceError(f"[references] {refs[i].name} and {refs[j].name} are the "
                                     "same structure; keep one of them")  # fmt: skip


def wrong_terminal_warnings(
    best_found: Mapping[str, tuple[str, float]],
    best_reference: Mapping[str, tuple[str, float]],
    tolerance: float,
) -> list[str]:
    """One line per element whose best search-found terminal and best reference phase
    ((description, enthalpy eV/atom) each) differ by more than ``tolerance`` eV/atom."""
    out = []
    for el in sorted(set(best_found) & set(best_reference)):
        (found, h_f), (ref, h_r) = best_found[el], best_reference[el]
        if h_f - h_r > tolerance:
            out.append(
                f"{el}: the lowest {el} the search found ({found}) is "
                f"{(h_f - h_r) * 1000:.1f} meV/atom above the reference {ref}; the "
                "search missed the element's phase and the hull uses the reference"
            )
        elif h_r - h_f > tolerance:
            out.append(
                f"{el}: the reference {ref} is {(h_r - h_f) * 1000:.1f} meV/atom above "
                f"a {el} structure the search found ({found}); the reference is not "
                "the ground state at this pressure"
            )
    return out
