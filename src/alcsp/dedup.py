"""Fingerprints of relaxed structures and incremental duplicate removal.

Fingerprint: per species-pair radial distribution, Gaussian-smeared on a fixed grid of
*reduced* distances r / (V/N)^(1/3) (so a structure and its slightly compressed twin agree),
summed over neighbour pairs and divided by the number of atoms (so a supercell gives the same
vector), unit-normalised. It is invariant to cell choice, origin, rotation, permutation and
supercell because it only uses interatomic distances (vesin neighbour lists). Two fingerprints
are compared by cosine distance ``1 - f1.f2``.

Clustering never compares all pairs: representatives are bucketed by (composition key,
enthalpy bin of width ``energy_tol``); a new structure is compared (one matrix-vector product)
with the representatives of its own bin and the two neighbouring bins. pymatgen's
``StructureMatcher`` can confirm a fingerprint match for the few structures that matter
(near the hull): pass ``confirm=True``.

Shape letters: E neighbour pairs, P species pairs, G grid points, F = P * G fingerprint length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import vesin
from ase import Atoms

from alcsp.compositions import composition_key

if TYPE_CHECKING:
    from pymatgen.analysis.structure_matcher import StructureMatcher

__all__ = [
    "DedupConfig",
    "Deduplicator",
    "FingerprintConfig",
    "deduplicate",
    "fingerprint",
    "fingerprint_distance",
]


@dataclass(frozen=True)
class FingerprintConfig:
    """Grid of the radial fingerprint, in reduced distance units of (V/N)^(1/3)."""

    r_max: float = 3.0  # last grid point (reduced units; ~3rd-4th neighbour shell)
    sigma: float = 0.05  # Gaussian width (reduced units)
    step: float = 0.05  # grid spacing (reduced units)

    def __post_init__(self) -> None:
        if not (self.r_max > 0 and self.sigma > 0 and self.step > 0):
            raise ValueError("FingerprintConfig: r_max, sigma and step must be > 0.")
        if self.step > self.r_max:
            raise ValueError("FingerprintConfig: step must be smaller than r_max.")

    @property
    def grid(self) -> np.ndarray:
        """Grid points, [G]."""
        n = int(round(self.r_max / self.step))
        return (np.arange(n) + 0.5) * self.step


@dataclass(frozen=True)
class DedupConfig:
    """When two structures of the same composition are duplicates."""

    energy_tol: float = 0.005  # eV/atom: enthalpies closer than this may be duplicates
    distance_tol: float = 0.01  # cosine distance of fingerprints below this: duplicates
    fingerprint: FingerprintConfig = field(default_factory=FingerprintConfig)
    # StructureMatcher tolerances used by confirm=True (pymatgen defaults)
    matcher_ltol: float = 0.2
    matcher_stol: float = 0.3
    matcher_angle_tol: float = 5.0

    def __post_init__(self) -> None:
        if not self.energy_tol > 0:
            raise ValueError(f"DedupConfig.energy_tol must be > 0 eV/atom, got {self.energy_tol}.")
        if not 0 < self.distance_tol < 1:
            raise ValueError(
                f"DedupConfig.distance_tol must be in (0, 1), got {self.distance_tol}."
            )


def fingerprint(atoms: Atoms, config: FingerprintConfig | None = None) -> np.ndarray:
    """Unit-norm radial fingerprint [F] (float32) of a periodic structure.

    Pair channels are ordered by atomic number of the species present, so fingerprints of the
    same composition are always aligned.
    """
    cfg = config or FingerprintConfig()
    n = len(atoms)
    if n == 0:
        raise ValueError("fingerprint: the structure has no atoms.")
    if not all(atoms.pbc):
        raise ValueError("fingerprint: the structure must be periodic in all three directions.")
    scale = (atoms.get_volume() / n) ** (1.0 / 3.0)  # Å, mean atomic spacing
    pos = atoms.positions / scale  # [N, 3] reduced
    cell = atoms.cell.array / scale  # [3, 3] reduced
    cutoff = cfg.r_max + 3.0 * cfg.sigma  # Gaussians fade out before the neighbour cutoff
    nl = vesin.NeighborList(cutoff=cutoff, full_list=False)
    i, j, d = nl.compute(pos, cell, True, quantities="ijd")  # [E], [E], [E]
    species = np.unique(atoms.numbers)
    ns = len(species)
    sidx = np.searchsorted(species, atoms.numbers)  # [N]
    a = np.minimum(sidx[i], sidx[j])
    b = np.maximum(sidx[i], sidx[j])
    pair = a * ns + b - a * (a + 1) // 2  # [E] upper-triangle pair index
    n_pair = ns * (ns + 1) // 2
    grid = cfg.grid  # [G]
    g = np.exp(-0.5 * ((d[:, None] - grid[None, :]) / cfg.sigma) ** 2)  # [E, G]
    out = np.zeros((n_pair, len(grid)))  # [P, G]
    for p in range(n_pair):
        out[p] = g[pair == p].sum(axis=0)
    out = out.ravel() / n  # per atom: a supercell gives the same vector
    norm = np.linalg.norm(out)
    if norm == 0:  # isolated atoms within r_max: nothing to compare, keep a defined vector
        out[:] = 1.0
        norm = np.linalg.norm(out)
    return (out / norm).astype(np.float32)


def fingerprint_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Cosine distance of two unit fingerprints (0 identical, 1 orthogonal)."""
    if f1.shape != f2.shape:
        raise ValueError(
            f"fingerprints differ in length ({f1.shape} vs {f2.shape}); "
            "compare structures of the same composition and FingerprintConfig."
        )
    return float(1.0 - np.dot(f1, f2))


class _Bucket:
    """Representatives of one (composition, enthalpy bin): growable arrays."""

    __slots__ = ("fps", "h", "ids", "n")

    def __init__(self, dim: int) -> None:
        self.fps = np.empty((4, dim), np.float32)  # [cap, F]
        self.h = np.empty(4)  # [cap]
        self.ids: list[str] = []
        self.n = 0

    def append(self, fp: np.ndarray, h: float, sid: str) -> None:
        if self.n == len(self.h):
            self.fps = np.concatenate([self.fps, np.empty_like(self.fps)])
            self.h = np.concatenate([self.h, np.empty_like(self.h)])
        self.fps[self.n] = fp
        self.h[self.n] = h
        self.ids.append(sid)
        self.n += 1


class Deduplicator:
    """Known representatives, checked and extended one structure at a time.

    ``check`` returns the id of the representative a structure duplicates (or ``None``);
    ``add`` does the same and, when it is new, stores it as a representative. Feed structures in
    ascending enthalpy (``deduplicate`` does) to keep the lowest member of each cluster.
    """

    def __init__(self, config: DedupConfig | None = None, *, keep_structures: bool = False) -> None:
        self.config = config or DedupConfig()
        self.keep_structures = keep_structures
        self._buckets: dict[tuple[str, int], _Bucket] = {}
        self._ids: set[str] = set()
        self._structures: dict[str, Atoms] = {}
        self._matcher: StructureMatcher | None = None  # built on first use

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, sid: str) -> bool:
        return sid in self._ids

    @property
    def ids(self) -> list[str]:
        """Ids of all representatives, in insertion order per bucket."""
        return [i for b in self._buckets.values() for i in b.ids[: b.n]]

    def _bin(self, h: float) -> int:
        return int(np.floor(h / self.config.energy_tol))

    def check(
        self,
        key: str,
        enthalpy: float,
        fp: np.ndarray,
        *,
        atoms: Atoms | None = None,
        confirm: bool = False,
    ) -> str | None:
        """Id of the representative that this structure duplicates, else ``None``.

        ``key`` is the composition key (``composition_key``), ``enthalpy`` in eV/atom, ``fp``
        from ``fingerprint``. With ``confirm=True`` a fingerprint match only counts if
        pymatgen's ``StructureMatcher`` also matches (needs ``atoms`` and ``keep_structures``).
        """
        if confirm and (atoms is None or not self.keep_structures):
            raise ValueError("confirm=True needs atoms= and a Deduplicator(keep_structures=True).")
        b0 = self._bin(enthalpy)
        tol_e, tol_d = self.config.energy_tol, self.config.distance_tol
        best: tuple[float, str] | None = None
        for b in (b0, b0 - 1, b0 + 1):
            bucket = self._buckets.get((key, b))
            if bucket is None or bucket.n == 0:
                continue
            if bucket.fps.shape[1] != fp.shape[0]:
                raise ValueError(
                    f"fingerprint length {fp.shape[0]} differs from the stored "
                    f"{bucket.fps.shape[1]} for {key}; use one FingerprintConfig per Deduplicator."
                )
            dist = 1.0 - bucket.fps[: bucket.n] @ fp  # [n]
            ok = (dist <= tol_d) & (np.abs(bucket.h[: bucket.n] - enthalpy) <= tol_e)
            for k in np.flatnonzero(ok)[np.argsort(dist[ok])]:
                sid = bucket.ids[k]
                if confirm and atoms is not None and not self._match(atoms, sid):
                    continue
                if best is None or dist[k] < best[0]:
                    best = (float(dist[k]), sid)
                break
        return None if best is None else best[1]

    def add(
        self,
        sid: str,
        key: str,
        enthalpy: float,
        fp: np.ndarray,
        *,
        atoms: Atoms | None = None,
        confirm: bool = False,
    ) -> str | None:
        """``check``, then store the structure as a representative if it is new.

        Returns the id of the representative it duplicates, or ``None`` if it was added.
        """
        if sid in self._ids:
            raise ValueError(f"id {sid!r} is already a representative; ids must be unique.")
        dup = self.check(key, enthalpy, fp, atoms=atoms, confirm=confirm)
        if dup is not None:
            return dup
        fp = np.asarray(fp, np.float32)
        bucket = self._buckets.get((key, self._bin(enthalpy)))
        if bucket is None:
            bucket = self._buckets[(key, self._bin(enthalpy))] = _Bucket(fp.shape[0])
        bucket.append(fp, enthalpy, sid)
        self._ids.add(sid)
        if self.keep_structures and atoms is not None:
            self._structures[sid] = atoms.copy()
        return None

    def add_atoms(
        self, sid: str, atoms: Atoms, enthalpy: float, *, confirm: bool = False
    ) -> str | None:
        """``add`` computing the composition key and the fingerprint from ``atoms``."""
        fp = fingerprint(atoms, self.config.fingerprint)
        key = composition_key(atoms.get_chemical_formula())
        return self.add(sid, key, enthalpy, fp, atoms=atoms, confirm=confirm)

    def check_atoms(self, atoms: Atoms, enthalpy: float, *, confirm: bool = False) -> str | None:
        """``check`` computing the composition key and the fingerprint from ``atoms``."""
        fp = fingerprint(atoms, self.config.fingerprint)
        key = composition_key(atoms.get_chemical_formula())
        return self.check(key, enthalpy, fp, atoms=atoms, confirm=confirm)

    def _match(self, atoms: Atoms, sid: str) -> bool:
        other = self._structures.get(sid)
        if other is None:
            return False  # cannot confirm against a representative stored without its structure
        from pymatgen.analysis.structure_matcher import StructureMatcher
        from pymatgen.io.ase import AseAtomsAdaptor

        if self._matcher is None:
            c = self.config
            self._matcher = StructureMatcher(
                ltol=c.matcher_ltol, stol=c.matcher_stol, angle_tol=c.matcher_angle_tol
            )
        conv = AseAtomsAdaptor.get_structure
        return bool(self._matcher.fit(conv(atoms), conv(other)))


def deduplicate(
    ids: Sequence[str],
    keys: Sequence[str],
    enthalpy: Sequence[float] | np.ndarray,
    fingerprints: Sequence[np.ndarray] | np.ndarray,
    config: DedupConfig | None = None,
    *,
    known: Deduplicator | None = None,
) -> list[str | None]:
    """Deduplicate a set, lowest enthalpy first. Returns, per input, ``None`` if it is a new
    representative or the id of the representative it duplicates.

    ``known`` (optional) is an existing ``Deduplicator`` (e.g. all earlier iterations): it is
    extended in place. Inputs: ids [M], composition keys [M], enthalpy [M] eV/atom,
    fingerprints [M, F] (or a list of [F_k] arrays; lengths differ between compositions).
    """
    h = np.asarray(enthalpy, dtype=float)
    if not (len(ids) == len(keys) == len(h) == len(fingerprints)):
        raise ValueError("deduplicate: ids, keys, enthalpy and fingerprints differ in length.")
    dd = known if known is not None else Deduplicator(config)
    out: list[str | None] = [None] * len(h)
    for i in np.argsort(h, kind="stable"):
        out[i] = dd.add(ids[i], keys[i], float(h[i]), fingerprints[i])
    return out
