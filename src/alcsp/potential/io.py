"""Model files and labelled data.

A model file is one ``torch.save`` archive of plain containers and tensors: format tag,
version, hyperparameters (a dict of numbers, strings and lists) and the state dict. It is
read back with ``torch.load(weights_only=True)``, which refuses anything that could run code.
A file without the ``repulsion`` hyperparameter (written before the short-range prior
existed) loads with ``repulsion="none"``, as it was trained.
Labelled data are extended XYZ files (ASE) with energy, forces and (optionally) stress.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from alcsp.errors import UserError, one_line
from alcsp.potential.model import ACNN, ACNNConfig
from alcsp.structures import validate_atoms

FORMAT = "alcsp-acnn"
FORMAT_VERSION = 1


def save_model(model: ACNN, path: str | Path, metadata: dict | None = None) -> Path:
    """Write ``model`` (hyperparameters + weights, float32/64 as is) to one file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


class ModelFileError(UserError, ValueError):
    """A model file that is not one ``save_model`` wrote (damaged, truncated, another
    format, or a payload of the wrong shape)."""


_NOT_A_MODEL = (
    "{path} is not an alcsp model file ({why}); use a file written by `alcsp train` or by "
    "a campaign (DIR/models/acnn-NNN.pt)"
)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> ACNN:
    """Read a model file written by ``save_model`` (safe: ``weights_only=True``, so a
    file can hold tensors and plain data only, never code; torch's own advice to retry
    with ``weights_only=False`` is never passed on). ``ModelFileError`` for anything else."""
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"model file {path} is a folder; give the .pt file")
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.stat().st_size == 0:
        raise ModelFileError(_NOT_A_MODEL.format(path=path, why="the file is empty"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on old pickle protocols
            payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-torch files, code in it
        why = "damaged, truncated, another format, or holding code"
        raise ModelFileError(_NOT_A_MODEL.format(path=path, why=why)) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        why = "no alcsp format tag"
        raise ModelFileError(_NOT_A_MODEL.format(path=path, why=why))
    if payload.get("version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {payload.get('version')}; this alcsp reads "
            f"version {FORMAT_VERSION}"
        )
    raw, state = payload.get("config"), payload.get("state_dict")
    if not isinstance(raw, dict):
        raise ModelFileError(_NOT_A_MODEL.format(path=path, why="its config is missing"))
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
        or "energy_shift" not in state
    ):
        raise ModelFileError(_NOT_A_MODEL.format(path=path, why="its weights are missing"))
    config = dict(raw)
    # Files written before the repulsive prior existed have no "repulsion" field: their
    # networks were trained without it, so they load without it (bit-identical energies).
    config.setdefault("repulsion", "none")
    try:
        model = ACNN(ACNNConfig.from_dict(config))
        model = model.to(dtype=state["energy_shift"].dtype)
        model.load_state_dict(state)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        why = f"its config and weights do not fit: {one_line(exc, 200)}"
        raise ModelFileError(_NOT_A_MODEL.format(path=path, why=why)) from exc
    return model.to(device)


def model_metadata(path: str | Path) -> dict:
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    return dict(payload.get("metadata", {}))


@dataclass
class Labels:
    """Reference energy [eV], forces [n, 3] eV/Å and stress [3, 3] eV/Å³ (or None)."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None


def labels_of(atoms: Atoms, index: int | None = None) -> Labels:
    """The labels stored on ``atoms`` (its calculator results); a clear error if missing."""
    where = f"structure {index}" if index is not None else "structure"
    calc = atoms.calc
    results = getattr(calc, "results", {}) if calc is not None else {}
    if "energy" not in results:
        raise ValueError(f"{where} has no energy label; training data need energy and forces.")
    if "forces" not in results:
        raise ValueError(f"{where} has no forces label; training data need energy and forces.")
    forces = np.asarray(results["forces"], dtype=float).reshape(len(atoms), 3)
    stress = results.get("stress")
    if stress is not None:
        stress = np.asarray(stress, dtype=float)
        if stress.shape == (6,):
            from ase.stress import voigt_6_to_full_3x3_stress

            stress = voigt_6_to_full_3x3_stress(stress)
        stress = stress.reshape(3, 3)
    # The force-consistent free energy where the file has it (forces and stress are its
    # derivatives); ``energy`` may be extrapolated to zero smearing (ASE's convention).
    energy = float(results.get("free_energy", results["energy"]))
    if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
        raise ValueError(f"{where} has non-finite energy or forces labels.")
    return Labels(energy=energy, forces=forces, stress=stress)


def read_labelled(path: str | Path) -> list[Atoms]:
    """Read an extxyz file of labelled structures; validates geometry and labels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    try:
        structures = read(path, index=":", format="extxyz")
    except Exception as exc:
        raise ValueError(f"cannot read {path} as extended XYZ: {exc}") from exc
    if not isinstance(structures, list):  # one Atoms, in ASE's type; index=":" gives a list
        structures = [structures]
    if not structures:
        raise ValueError(f"{path} holds no structures")
    for k, atoms in enumerate(structures):
        validate_atoms(atoms, k)
        labels_of(atoms, k)
    return structures


def labelled(atoms: Atoms, energy: float, forces, stress=None) -> Atoms:
    """A copy of ``atoms`` carrying the given labels as single-point results."""
    out = atoms.copy()
    kw = {"energy": float(energy), "free_energy": float(energy), "forces": np.asarray(forces)}
    if stress is not None:
        from ase.stress import full_3x3_to_voigt_6_stress

        s = np.asarray(stress, dtype=float)
        kw["stress"] = full_3x3_to_voigt_6_stress(s) if s.shape == (3, 3) else s
    out.calc = SinglePointCalculator(out, **kw)
    return out


def write_labelled(path: str | Path, structures: list[Atoms]) -> None:
    write(Path(path), structures, format="extxyz")
