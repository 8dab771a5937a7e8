"""Structures in and out of a campaign: extxyz (with labels) and CIF files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from alcsp.oracle.base import Label
from alcsp.vocab import Origin

if TYPE_CHECKING:
    from alcsp.store.campaign_store import CampaignStore


def import_extxyz(
    store: CampaignStore, path: str | os.PathLike, oracle: str = "import", iteration: int = 0
) -> list[int]:
    """Seed the campaign with labelled frames (energy and forces required, stress
    optional) from an extxyz file; one transaction (structures and labels together, or
    nothing). Returns the new structure ids."""
    from ase.io import read

    from alcsp.structures import validate_atoms

    frames: list[Atoms] = list(read(os.fspath(path), index=":"))
    labels: list[Label] = []
    for k, a in enumerate(frames):
        validate_atoms(a, k)
        res = a.calc.results if a.calc is not None else {}
        if "energy" not in res or "forces" not in res:
            raise ValueError(
                f"{path}: frame {k} has no energy/forces; an imported frame must carry "
                "energy= in its comment line and forces in its columns"
            )
        stress = res.get("stress")
        if stress is None:
            stress3 = np.full((3, 3), np.nan)
        else:
            from ase.stress import voigt_6_to_full_3x3_stress

            s = np.asarray(stress, dtype=float)
            stress3 = voigt_6_to_full_3x3_stress(s) if s.shape == (6,) else s.reshape(3, 3)
        # ASE's vocabulary: free_energy is F (force-consistent), energy is E0.
        free = float(res.get("free_energy", res["energy"]))
        labels.append(
            Label(
                free,
                np.asarray(res["forces"], dtype=float),
                stress3,
                oracle,
                0.0,
                energy_zero=float(res["energy"]),
            )
        )
    return store.add_labelled_structures(frames, labels, Origin.IMPORT, iteration)


def export_extxyz(
    store: CampaignStore,
    path: str | os.PathLike,
    structure_ids: Sequence[int] | None = None,
    oracle: str | None = None,
) -> int:
    """Write structures to extxyz. Without ids: the training set (with labels).
    With ids: those structures, with ``oracle``'s labels where there are some.
    Returns the number of frames written."""
    from ase.io import write

    if structure_ids is None:
        frames = store.training_set(oracle=oracle)
    else:
        frames = store.get_atoms(structure_ids)
        if oracle is not None:
            labels = store.get_labels(structure_ids, oracle)
            for a in frames:
                lab = labels.get(a.info["structure_id"])
                if isinstance(lab, Label):
                    a.calc = SinglePointCalculator(
                        a,
                        energy=lab.hull_energy,
                        free_energy=lab.energy,
                        forces=lab.forces,
                        stress=lab.stress,
                    )
    write(os.fspath(path), frames, format="extxyz")
    return len(frames)


def export_cif(
    store: CampaignStore,
    directory: str | os.PathLike,
    structure_ids: Sequence[int],
    symprec: float | None = 0.01,
) -> list[Path]:
    """Write one CIF per structure (``<id>_<formula>.cif``, symmetrised with ``symprec``
    Å when given) through pymatgen; return the paths."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifWriter

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for a in store.get_atoms(structure_ids):
        s = AseAtomsAdaptor.get_structure(a)
        p = d / f"{a.info['structure_id']}_{s.composition.reduced_formula}.cif"
        CifWriter(s, symprec=symprec).write_file(p)
        paths.append(p)
    return paths
