"""Known reference phases: built-in element prototypes and structure files.

A random search finds what it finds: an EMT Cu-Au campaign took bcc Cu (+48.7 meV/atom
above the close-packed phase) as its Cu terminal and reported a wrong phase as stable. The
``[references]`` table puts known phases into the loop: they are labelled and relaxed by the
oracle before iteration 1, so the convex hull's terminals are known phases rather than
whatever the random search found (and the phases are in the training set)::

    [references]
    prototypes = { Ca = ["fcc", "bcc", "sc"], H = [] }   # built-in, see PROTOTYPES
    files = ["refs/H2-Cmca.cif"]                          # CIF, extxyz, POSCAR, ...
    volumes = { Ca = 8.0 }                                # Å³/atom of the prototypes

Prototypes are built with ``ase.build.bulk`` (dhcp, which ASE does not build, by hand) in
their primitive cells and scaled to a volume per atom: ``volumes`` or, for the elements
without one, the campaign's start-volume estimate at its pressure; the oracle relaxation
then finds the volume at the pressure. Files are read with ``ase.io.read`` (every frame).

After the search, :func:`wrong_terminal_warnings` says where the search's own best element
structure and the best reference disagree by more than a tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.data import chemical_symbols

__all__ = [
    "PROTOTYPES",
    "Reference",
    "ReferenceConfig",
    "ReferenceError",
    "load_references",
    "prototype",
    "wrong_terminal_warnings",
]

_IDEAL_C_OVER_A = math.sqrt(8.0 / 3.0)  # close packing of spheres


class ReferenceError(ValueError):
    """A ``[references]`` entry cannot be used; the one-line message names it and the fix."""


def _bulk(structure: str) -> Callable[[str], Atoms]:
    def build(symbol: str) -> Atoms:
        from ase.build import bulk

        if structure == "hcp":
            return bulk(symbol, "hcp", a=1.0, c=_IDEAL_C_OVER_A)
        return bulk(symbol, structure, a=1.0)

    return build


def _dhcp(symbol: str) -> Atoms:
    """Double hcp (ABAC stacking, La/Pr/Nd type), ideal c/a = 2 sqrt(8/3), 4 atoms."""
    a, c = 1.0, 2.0 * _IDEAL_C_OVER_A
    cell = [[a, 0.0, 0.0], [-a / 2, a * math.sqrt(3.0) / 2, 0.0], [0.0, 0.0, c]]
    frac = [[0, 0, 0], [1 / 3, 2 / 3, 1 / 4], [0, 0, 1 / 2], [2 / 3, 1 / 3, 3 / 4]]
    return Atoms(symbol * 4, scaled_positions=frac, cell=cell, pbc=True)


#: Built-in element prototypes: name -> builder of the primitive cell at unit length.
PROTOTYPES: dict[str, Callable[[str], Atoms]] = {
    "fcc": _bulk("fcc"),  # Fm-3m, 1 atom
    "hcp": _bulk("hcp"),  # P6_3/mmc, 2 atoms, ideal c/a
    "bcc": _bulk("bcc"),  # Im-3m, 1 atom
    "dhcp": _dhcp,  # P6_3/mmc, 4 atoms, ideal c/a
    "sc": _bulk("sc"),  # Pm-3m, 1 atom
    "diamond": _bulk("diamond"),  # Fd-3m, 2 atoms
}


def _known() -> str:
    return ", ".join(PROTOTYPES)


def prototype(element: str, name: str, volume_per_atom: float) -> Atoms:
    """The primitive cell of prototype ``name`` of ``element`` at ``volume_per_atom`` Å³."""
    if name not in PROTOTYPES:
        raise ReferenceError(
            f"[references] unknown prototype {name!r}; known: {_known()} "
            "(give other phases as structure files)"
        )
    if element not in chemical_symbols[1:]:
        raise ReferenceError(f"[references] {element!r} is not an element symbol")
    if not (math.isfinite(volume_per_atom) and volume_per_atom > 0):
        raise ReferenceError(
            f"[references] volume of {name} {element} must be > 0 Å³/atom, "
            f"got {volume_per_atom!r}; set [references] volumes.{element}"
        )
    atoms = PROTOTYPES[name](element)
    scale = (volume_per_atom * len(atoms) / atoms.get_volume()) ** (1.0 / 3.0)
    atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)


def _is_list(x: Any) -> bool:
    return isinstance(x, Sequence) and not isinstance(x, str | bytes)


def _check_element(field_: str, el: Any) -> str:
    if not isinstance(el, str) or el not in chemical_symbols[1:]:
        raise ReferenceError(
            f"[references] {field_}: {el!r} is not an element symbol; use e.g. Ca or H"
        )
    return el


@dataclass(frozen=True)
class ReferenceConfig:
    """The ``[references]`` table (see the module docstring)."""

    prototypes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    volumes: Mapping[str, float] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        """No file and no prototype (elements with an empty list do not count)."""
        return not self.files and not any(self.prototypes.values())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceConfig:
        """Validate a parsed ``[references]`` TOML table."""
        known = ("prototypes", "files", "volumes")
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ReferenceError(
                f"[references] unknown field(s) {', '.join(map(str, unknown))}; "
                f"known: {', '.join(known)}"
            )

        protos = d.get("prototypes", {})
        if not isinstance(protos, Mapping):
            raise ReferenceError(
                '[references] prototypes must be a table, e.g. { Ca = ["fcc", "bcc"] }, '
                f"got {protos!r}"
            )
        prototypes: dict[str, tuple[str, ...]] = {}
        for el, names in protos.items():
            _check_element(f"prototypes.{el}", el)
            if not _is_list(names) or not all(isinstance(n, str) for n in names):
                raise ReferenceError(
                    f"[references] prototypes.{el} must be a list of prototype names, "
                    f'e.g. ["fcc", "hcp"]; got {names!r}'
                )
            for n in names:
                if n not in PROTOTYPES:
                    raise ReferenceError(
                        f"[references] prototypes.{el}: unknown prototype {n!r}; known: "
                        f"{_known()} (give other phases as structure files)"
                    )
            if len(set(names)) != len(names):
                raise ReferenceError(
                    f"[references] prototypes.{el} lists a prototype twice; list each once"
                )
            prototypes[el] = tuple(names)

        files = d.get("files", [])
        if not _is_list(files) or not all(isinstance(f, str) and f.strip() for f in files):
            raise ReferenceError(
                f'[references] files must be a list of paths, e.g. ["H2.cif"]; got {files!r}'
            )
        if len(set(files)) != len(files):
            raise ReferenceError("[references] files lists a file twice; list each once")

        vols = d.get("volumes", {})
        if not isinstance(vols, Mapping):
            raise ReferenceError(
                f"[references] volumes must be a table, e.g. {{ Ca = 8.0 }}; got {vols!r}"
            )
        volumes: dict[str, float] = {}
        for el, v in vols.items():
            _check_element(f"volumes.{el}", el)
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not (math.isfinite(v) and v > 0)
            ):
                raise ReferenceError(
                    f"[references] volumes.{el} must be a volume per atom in Å³ (a number "
                    f"> 0), got {v!r}"
                )
            volumes[el] = float(v)
        return cls(prototypes, tuple(files), volumes)


@dataclass(frozen=True)
class Reference:
    """One reference phase: its name (e.g. "fcc Ca", "H2-Cmca.cif #0") and structure."""

    name: str
    atoms: Atoms
    source: str  # "prototype" or the file's path


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or "no detail"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_file(given: str, path: Path) -> list[Atoms]:
    from ase.io import read

    if not path.is_file():
        raise ReferenceError(
            f"[references] files: {given} does not exist (looked for {path}); give a path "
            "relative to the config file's folder, or an absolute one"
        )
    try:
        frames = read(path, index=":")
    except Exception as exc:  # any parser error: the file is not a structure
        raise ReferenceError(
            f"[references] files: cannot read {given} as a structure "
            f"({type(exc).__name__}: {_one_line(exc)}); give a CIF, extxyz or POSCAR file"
        ) from exc
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise ReferenceError(
            f"[references] files: {given} holds no structure; give a CIF, extxyz or POSCAR file"
        )
    return frames


def _volume_of(el: str, config: ReferenceConfig, default_volume: Any) -> float:
    if el in config.volumes:
        return config.volumes[el]
    if callable(default_volume):
        return float(default_volume(el))
    if el in default_volume:
        return float(default_volume[el])
    raise ReferenceError(
        f"[references] prototypes.{el}: no volume per atom for {el}; set [references] volumes.{el}"
    )


def load_references(
    config: ReferenceConfig,
    elements: Sequence[str],
    base_dir: Path,
    default_volume: Callable[[str], float] | Mapping[str, float],
) -> list[Reference]:
    """Build the prototypes and read every frame of the files of ``config``.

    Relative file paths are relative to ``base_dir``. Prototypes of an element are scaled to
    ``config.volumes[element]``, else to ``default_volume`` (a function of the element or a
    mapping). Raises :class:`ReferenceError` for a missing or unreadable file, a structure
    or prototype with an element outside ``elements``, a structure that is not 3D-periodic
    or has zero volume, and for two references that are the same structure at the same
    density (pymatgen's ``StructureMatcher``, ``scale=False``). The returned atoms carry no
    calculator, ``pbc=True`` and ``info == {"reference": name}``.
    """
    allowed = list(elements)
    refs: list[Reference] = []
    for el, names in config.prototypes.items():
        if not names:
            continue
        if el not in allowed:
            raise ReferenceError(
                f"[references] prototypes.{el}: {el} is not one of the campaign's elements "
                f"{', '.join(allowed)}; remove it or add it to [compositions] elements"
            )
        volume = _volume_of(el, config, default_volume)
        refs += [Reference(f"{n} {el}", prototype(el, n, volume), "prototype") for n in names]

    for given in config.files:
        path = Path(given) if Path(given).is_absolute() else Path(base_dir) / given
        for k, a in enumerate(_read_file(given, path)):
            name = f"{given} #{k}"
            outside = sorted(set(a.get_chemical_symbols()) - set(allowed))
            if outside:
                raise ReferenceError(
                    f"[references] files: {name} holds {', '.join(outside)}, outside the "
                    f"campaign's elements {', '.join(allowed)}; remove the file or add the "
                    "elements to [compositions] elements"
                )
            if (
                len(a) == 0
                or not all(a.pbc)
                or a.cell.rank < 3
                or abs(a.cell.volume) < 1e-3 * len(a)
            ):
                raise ReferenceError(
                    f"[references] files: {name} is not a 3D-periodic crystal (it needs "
                    "atoms, pbc in all three directions and a cell of non-zero volume); "
                    "give a bulk crystal structure"
                )
            clean = Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=True)
            refs.append(Reference(name, clean, str(path)))

    _reject_duplicates(refs)
    for r in refs:
        r.atoms.info.clear()
        r.atoms.info["reference"] = r.name
    return refs


def _reject_duplicates(refs: Sequence[Reference]) -> None:
    """Same structure at the same density: StructureMatcher without volume scaling and
    with tight lattice tolerances (its default ltol of 0.2 matched fcc Cu at 9.0 and at
    11.8 Å³/atom)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    matcher = StructureMatcher(ltol=0.03, stol=0.1, angle_tol=1.0, scale=False)
    structs = [AseAtomsAdaptor.get_structure(r.atoms) for r in refs]
    for i, si in enumerate(structs):
        for j in range(i):
            sj = structs[j]
            same_formula = si.composition.reduced_formula == sj.composition.reduced_formula
            if same_formula and matcher.fit(si, sj):
                raise ReferenceError(
                    f"[references] {refs[j].name} and {refs[i].name} are the same structure "
                    "at the same density; keep one of them"
                )


def wrong_terminal_warnings(
    best_found: Mapping[str, tuple[str, float]],
    best_reference: Mapping[str, tuple[str, float]],
    tolerance: float,
) -> list[str]:
    """One warning line per element whose terminals disagree by more than ``tolerance``.

    ``best_found[el]`` and ``best_reference[el]`` are (description, enthalpy eV/atom) of the
    lowest structure the search found and of the lowest reference phase. Warns when the
    search's best is more than ``tolerance`` above the reference (the search missed the
    phase; the hull uses the reference) and when the reference is more than ``tolerance``
    above the search's best (the reference is not the ground state at this pressure).
    Elements missing from either mapping get no warning.
    """
    out: list[str] = []
    for el in sorted(set(best_found) & set(best_reference)):
        (found, h_found), (ref, h_ref) = best_found[el], best_reference[el]
        diff_mev = abs(h_found - h_ref) * 1000.0
        if h_found - h_ref > tolerance:
            out.append(
                f"{el}: the lowest {el} the search found ({found}) is {diff_mev:.1f} "
                f"meV/atom above the reference {ref}; the hull uses the reference"
            )
        elif h_ref - h_found > tolerance:
            out.append(
                f"{el}: the reference {ref} is {diff_mev:.1f} meV/atom above the lowest {el} "
                f"the search found ({found}); the reference is not the ground state at this "
                "pressure"
            )
    return out
