"""Hydrogen clathrate cages: the closed H polyhedron around each non-hydrogen atom.

The screen of the paper (after the automated topological strategy of Jiang et al.): a
near-hull hydride is a *clathrate* when its metal atoms sit in closed cages of hydrogen,
polyhedra whose edges are H–H bonds, classified by their number of H vertices, their face
signature (the sodalite cage of Im-3m CaH6 is H24 4^6 6^8) and their point group.

Algorithm, per structure (``analyse_cages``):

1. **Bond cutoff.** H–H bonds are the H–H pairs (periodic images included) closer than
   ``CageSettings.cutoff_for(atoms)``: a fixed ``bond_cutoff`` when given, otherwise
   ``min(bond_scale × d_nn, max_bond)`` with d_nn the median over the H atoms of each H's
   nearest H–H distance. The rule follows the structure's own compression (the pressure
   is in its distances): clathrate edges of 1.1–1.3 Å at 100–300 GPa give 1.4–1.6 Å and
   keep every cage edge, while a molecular phase (d_nn 0.7–0.8 Å) gets ~1 Å, which bonds
   the H2 molecules only and never the 1.2–1.6 Å contacts between them. The ceiling
   ``max_bond`` (1.6 Å) keeps lone H⁻ (rock-salt CaH, H–H ≥ 2.5 Å) unbonded.
2. **Candidate shell.** Around each non-H atom M, the H images within ``shell_ratio`` × its
   nearest M–H distance, in order of distance from M.
3. **Closed polyhedron.** For each prefix of that list (the nearest k H, k = 4, 5, …), drop
   the H with fewer than three bonds inside the prefix (repeatedly: a polyhedron vertex has
   at least three edges), and test each connected remainder: project it radially onto a
   sphere around M, order each vertex's bonds by angle around its radial direction (the
   rotation system of the projected graph) and trace the faces. It is a cage when every
   face is a simple cycle of at most ``max_face_size`` bonds, every edge borders two
   different faces, V − E + F = 2 (a sphere) and the signed solid angles of the faces seen
   from M are all positive and add up to 4π (the surface winds once around M: it encloses
   the atom, and its faces do not overlap). The first prefix that passes is M's cage.
4. **Classification.** The number of vertices and the face signature make the cage's
   ``CagePrototype`` ("H24 4^6 6^8"). The point group is pymatgen's ``PointGroupAnalyzer``
   (tolerance 0.01 Å) on the H vertices after the structure has been symmetrized in its
   space group (spglib, ``symmetry_tolerance`` Å, as the space groups of the reports): a
   relaxed structure's noise of a few hundredths of an Å then neither lowers the cage's
   symmetry nor, with a looser tolerance, raises it to an idealised shape (the type-I
   clathrate's dodecahedron is Th, not Ih).

The result is independent of the cell choice (supercells, rotations, translations):
everything is computed from interatomic vectors.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import vesin
from ase import Atoms

#: Bumped whenever a change of the algorithm can change a result (part of the cache key).
ALGORITHM_VERSION = 1

_HYDROGEN = 1
#: M–H search radius before the cluster radius is known, Å (grown when too small).
_FIRST_RADIUS = 3.0
_LAST_RADIUS = 4 * _FIRST_RADIUS
#: PointGroupAnalyzer tolerance on symmetrized positions, Å.
_POINT_GROUP_TOLERANCE = 0.01
#: Relative tolerance on the total solid angle 4π of a closed surface around the atom.
_SOLID_ANGLE_TOL = 1e-6


@dataclass(frozen=True)
class CageSettings:
    """How cages are found. ``bond_cutoff`` None: the scaled rule (module docstring)."""

    bond_cutoff: float | None = None  # Å, fixed H–H bond cutoff
    bond_scale: float = 1.3  # scaled rule: cutoff = bond_scale × d_nn ...
    max_bond: float = 1.6  # ... at most this, Å
    shell_ratio: float = 1.75  # candidate H within this × the nearest M–H distance
    max_face_size: int = 6  # faces with more bonds are windows, not faces
    symmetry_tolerance: float = 0.1  # Å, spglib symprec of the symmetrization
    clathrate_fraction: float = 0.5  # clathrate: at least this fraction of non-H atoms caged

    def __post_init__(self) -> None:
        if self.bond_cutoff is not None and not self.bond_cutoff > 0:
            raise ValueError(
                f"the H–H bond cutoff must be > 0 Å, got {self.bond_cutoff}; "
                "omit it for the scaled default"
            )
        positive = {
            "bond_scale": self.bond_scale,
            "max_bond": self.max_bond,
            "symmetry_tolerance": self.symmetry_tolerance,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"cage setting {name} must be > 0, got {value}")
        if not self.shell_ratio > 1:
            raise ValueError(f"cage setting shell_ratio must be > 1, got {self.shell_ratio}")
        if self.max_face_size < 3:
            raise ValueError(f"cage setting max_face_size must be >= 3, got {self.max_face_size}")
        if not 0 < self.clathrate_fraction <= 1:
            raise ValueError(
                f"cage setting clathrate_fraction must be in (0, 1], got {self.clathrate_fraction}"
            )

    def key(self) -> str:
        """A stable text naming these settings and the algorithm version (cache key)."""
        bond = (
            f"bond={self.bond_cutoff:g}"
            if self.bond_cutoff is not None
            else f"bond=min({self.bond_scale:g}*dnn,{self.max_bond:g})"
        )
        return (
            f"cages-v{ALGORITHM_VERSION};{bond};shell={self.shell_ratio:g};"
            f"face<={self.max_face_size};symprec={self.symmetry_tolerance:g};"
            f"clathrate>={self.clathrate_fraction:g}"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CageSettings:
        return cls(**d)

    def cutoff_for(self, atoms: Atoms) -> float:
        """The H–H bond cutoff for ``atoms``, Å (the rule of the module docstring)."""
        if self.bond_cutoff is not None:
            return float(self.bond_cutoff)
        d_nn = nearest_hh_distance(atoms, self.max_bond)
        return float(min(self.bond_scale * d_nn, self.max_bond))


@dataclass(frozen=True)
class CagePrototype:
    """The topology of a cage: its number of H vertices and its faces, e.g. H24 4^6 6^8."""

    n_vertices: int
    faces: tuple[tuple[int, int], ...]  # (face size, count), by size

    @classmethod
    def of(cls, n_vertices: int, face_sizes: Iterable[int]) -> CagePrototype:
        return cls(n_vertices, tuple(sorted(Counter(face_sizes).items())))

    @classmethod
    def parse(cls, label: str) -> CagePrototype:
        """The inverse of ``label``: ``"H24 4^6 6^8"``."""
        head, *faces = label.split()
        if not head.startswith("H"):
            raise ValueError(f"cage prototype {label!r} must start with H<vertices>")
        pairs = [tuple(int(x) for x in f.split("^")) for f in faces]
        return cls(int(head[1:]), tuple(sorted((s, c) for s, c in pairs)))

    @property
    def signature(self) -> str:
        """Face sizes with their counts as exponents, e.g. ``"4^6 6^8"``."""
        return " ".join(f"{size}^{count}" for size, count in self.faces)

    @property
    def label(self) -> str:
        return f"H{self.n_vertices} {self.signature}"

    @property
    def n_faces(self) -> int:
        return sum(c for _, c in self.faces)

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class Cage:
    """The H polyhedron around atom ``center``: vertex ``k`` is H atom ``vertices[k]`` in
    the periodic image ``shifts[k]`` (cell vectors), faces list vertex numbers in order."""

    center: int
    symbol: str
    vertices: tuple[int, ...]
    shifts: tuple[tuple[int, int, int], ...]
    faces: tuple[tuple[int, ...], ...]
    prototype: CagePrototype
    point_group: str  # Schoenflies symbol, e.g. "Oh"

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)

    @property
    def n_edges(self) -> int:
        return sum(len(f) for f in self.faces) // 2

    @property
    def description(self) -> str:
        """e.g. ``"H24 4^6 6^8 (Oh)"``."""
        return f"{self.prototype.label} ({self.point_group})"

    def to_json(self) -> dict[str, Any]:
        return {
            "center": self.center,
            "symbol": self.symbol,
            "prototype": self.prototype.label,
            "point_group": self.point_group,
            "vertices": list(self.vertices),
            "shifts": [list(s) for s in self.shifts],
            "faces": [list(f) for f in self.faces],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Cage:
        return cls(
            center=int(d["center"]),
            symbol=str(d["symbol"]),
            vertices=tuple(int(v) for v in d["vertices"]),
            shifts=tuple((int(a), int(b), int(c)) for a, b, c in d["shifts"]),
            faces=tuple(tuple(int(v) for v in f) for f in d["faces"]),
            prototype=CagePrototype.parse(d["prototype"]),
            point_group=str(d["point_group"]),
        )


@dataclass(frozen=True)
class CageAnalysis:
    """The cages of one structure: ``cages[k]`` is the cage of non-H atom ``hosts[k]``
    (None: not caged)."""

    formula: str
    bond_cutoff: float  # Å, the H–H bond cutoff used
    hosts: tuple[int, ...]  # indices of the non-hydrogen atoms
    cages: tuple[Cage | None, ...]
    clathrate_fraction: float  # the settings' threshold for ``is_clathrate``

    @property
    def caged_fraction(self) -> float:
        """Fraction of the non-hydrogen (metal) atoms enclosed in a cage (0 with none)."""
        return sum(c is not None for c in self.cages) / len(self.hosts) if self.hosts else 0.0

    @property
    def is_clathrate(self) -> bool:
        return bool(self.hosts) and self.caged_fraction >= self.clathrate_fraction - 1e-12

    @property
    def prototypes(self) -> tuple[CagePrototype, ...]:
        """The distinct cage topologies present, smallest first."""
        found = {c.prototype for c in self.cages if c is not None}
        return tuple(sorted(found, key=lambda p: (p.n_vertices, p.faces)))

    @property
    def descriptions(self) -> tuple[str, ...]:
        """The distinct cages as "H24 4^6 6^8 (Oh)", each with its count and host symbol
        when more than one kind is present: e.g. ("2 Eu: H20 5^12 (Th)", ...)."""
        counts = Counter(
            (c.prototype.n_vertices, c.prototype.faces, c.description, c.symbol)
            for c in self.cages
            if c is not None
        )
        return tuple(f"{n} {sym}: {desc}" for (_, _, desc, sym), n in sorted(counts.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "formula": self.formula,
            "bond_cutoff": self.bond_cutoff,
            "hosts": list(self.hosts),
            "cages": [None if c is None else c.to_json() for c in self.cages],
            "clathrate_fraction": self.clathrate_fraction,
            # derived, for readers of the file
            "prototypes": [p.label for p in self.prototypes],
            "caged_fraction": self.caged_fraction,
            "is_clathrate": self.is_clathrate,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CageAnalysis:
        return cls(
            formula=str(d["formula"]),
            bond_cutoff=float(d["bond_cutoff"]),
            hosts=tuple(int(h) for h in d["hosts"]),
            cages=tuple(None if c is None else Cage.from_json(c) for c in d["cages"]),
            clathrate_fraction=float(d["clathrate_fraction"]),
        )


# ---------------------------------------------------------------------------- analysis


def _neighbours(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, ...]:
    """Full periodic neighbour list: i, j, shifts [E, 3], vectors r_j + S·cell − r_i, d."""
    if not all(atoms.pbc):
        raise ValueError("cage analysis needs a structure periodic in all three directions")
    nl = vesin.NeighborList(cutoff=cutoff, full_list=True)
    i, j, s, vec, d = nl.compute(atoms.positions, atoms.cell.array, True, quantities="ijSDd")
    return i, j, s, vec, d


def nearest_hh_distance(atoms: Atoms, limit: float) -> float:
    """Median over the H atoms of each one's nearest H–H distance (images included), Å;
    an H with no other H within ``limit`` counts as infinitely far. inf without H."""
    is_h = atoms.numbers == _HYDROGEN
    if not is_h.any():
        return math.inf
    i, j, _, _, d = _neighbours(atoms, limit)
    hh = is_h[i] & is_h[j]
    nearest = np.full(len(atoms), np.inf)
    np.minimum.at(nearest, i[hh], d[hh])
    return float(np.median(nearest[is_h]))


def _shift3(shift: np.ndarray) -> tuple[int, int, int]:
    """A cell shift [3] as a tuple of ints."""
    a, b, c = (int(x) for x in shift)
    return a, b, c


def analyse_cages(atoms: Atoms, settings: CageSettings | None = None) -> CageAnalysis:
    """The cage of every non-hydrogen atom of ``atoms`` (see the module docstring)."""
    settings = settings or CageSettings()
    cutoff = settings.cutoff_for(atoms)
    numbers = atoms.numbers
    hosts = tuple(int(k) for k in np.nonzero(numbers != _HYDROGEN)[0])
    formula = atoms.get_chemical_formula()
    if not hosts or not (numbers == _HYDROGEN).any():
        return CageAnalysis(
            formula, cutoff, hosts, (None,) * len(hosts), settings.clathrate_fraction
        )
    nearest, radius = _nearest_hydrogen(atoms, hosts)
    finite = [nearest[m] for m in hosts if math.isfinite(nearest[m])]
    radius = max([radius, *(settings.shell_ratio * r for r in finite)])
    i, j, s, vec, d = _neighbours(atoms, radius)
    mh = (numbers[i] != _HYDROGEN) & (numbers[j] == _HYDROGEN)
    ideal = symmetrized_positions(atoms, settings.symmetry_tolerance)
    cages: list[Cage | None] = []
    for m in hosts:
        if not math.isfinite(nearest[m]):
            cages.append(None)
            continue
        sel = np.nonzero(mh & (i == m) & (d <= settings.shell_ratio * nearest[m]))[0]
        sel = sel[np.argsort(d[sel], kind="stable")]
        found = _cage_in_shell(vec[sel], cutoff, settings.max_face_size)
        if found is None:
            cages.append(None)
            continue
        members, faces = found
        # the same vertices in the symmetrized structure (shifts kept: it moves atoms
        # by less than symprec, without wrapping them)
        pos = np.array([ideal[j[sel][k]] + s[sel][k] @ atoms.cell.array for k in members])
        cages.append(
            Cage(
                center=m,
                symbol=atoms[m].symbol,
                vertices=tuple(int(j[sel][k]) for k in members),
                shifts=tuple(_shift3(s[sel][k]) for k in members),
                faces=faces,
                prototype=CagePrototype.of(len(members), (len(f) for f in faces)),
                point_group=point_group(pos - ideal[m], _POINT_GROUP_TOLERANCE),
            )
        )
    return CageAnalysis(formula, cutoff, hosts, tuple(cages), settings.clathrate_fraction)


def _nearest_hydrogen(atoms: Atoms, hosts: Sequence[int]) -> tuple[np.ndarray, float]:
    """Each atom's nearest M–H distance ([N], inf when none within the last radius tried)
    and that radius: grown from 3 Å until every host has an H or the radius is 12 Å."""
    radius = _FIRST_RADIUS
    while True:
        i, j, _, _, d = _neighbours(atoms, radius)
        mh = atoms.numbers[j] == _HYDROGEN
        nearest = np.full(len(atoms), np.inf)
        np.minimum.at(nearest, i[mh], d[mh])
        if np.isfinite(nearest[list(hosts)]).all() or radius >= _LAST_RADIUS:
            return nearest, radius
        radius *= 2


def symmetrized_positions(atoms: Atoms, symprec: float) -> np.ndarray:
    """Cartesian positions [N, 3] made exactly symmetric under the space group spglib
    finds at ``symprec`` (each atom the average of its images under the operations; no
    wrapping, so each moves by less than symprec). The positions as given when spglib
    finds nothing or an operation does not map the atoms onto themselves."""
    import spglib

    frac = atoms.get_scaled_positions(wrap=False)  # [N, 3]
    cell = atoms.cell.array
    data = spglib.get_symmetry_dataset((cell, frac, atoms.numbers), symprec=symprec)
    if data is None or len(data.rotations) == 1:
        return atoms.positions.copy()
    from scipy.spatial import cKDTree

    wrapped = frac - np.floor(frac)
    tree = cKDTree(wrapped % 1.0, boxsize=1.0)  # periodic in fractional coordinates
    total = np.zeros_like(frac)
    for rot, trans in zip(data.rotations, data.translations, strict=True):
        image = (frac @ rot.T + trans) % 1.0  # [N, 3] g(x_i)
        _, target = tree.query(image)  # g maps atom i onto atom target[i]
        diff = image - wrapped[target]
        diff -= np.round(diff)  # g(x_i) - x_target - L
        far = np.linalg.norm(diff @ cell, axis=1).max() > 2 * symprec
        if (
            far
            or len(set(target.tolist())) != len(frac)
            or (atoms.numbers[target] != atoms.numbers).any()
        ):
            return atoms.positions.copy()
        total[target] += frac[target] + diff
    return (total / len(data.rotations)) @ cell


def point_group(positions: np.ndarray, tolerance: float) -> str:
    """Schoenflies symbol of the point group of H atoms at ``positions`` [n, 3]."""
    from pymatgen.core import Molecule
    from pymatgen.symmetry.analyzer import PointGroupAnalyzer

    mol = Molecule(["H"] * len(positions), positions)
    return str(PointGroupAnalyzer(mol, tolerance=tolerance).sch_symbol)


def _cage_in_shell(
    pos: np.ndarray, cutoff: float, max_face: int
) -> tuple[list[int], tuple[tuple[int, ...], ...]] | None:
    """The first prefix of ``pos`` ([K, 3], H positions relative to the atom, nearest
    first) holding a closed polyhedron around the origin: (its rows, its faces as
    sequences of indices into those rows), or None."""
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)  # [K, K]
    adj = (dist < cutoff) & ~np.eye(len(pos), dtype=bool)
    tried: set[frozenset[int]] = set()
    for n in range(4, len(pos) + 1):
        members = _prune(adj, list(range(n)))
        for comp in _components(adj, members):
            key = frozenset(comp)
            if len(comp) < 4 or key in tried:
                continue
            tried.add(key)
            faces = _closed_surface(pos[comp], adj[np.ix_(comp, comp)], max_face)
            if faces is not None:
                return comp, faces
    return None


def _prune(adj: np.ndarray, members: list[int]) -> list[int]:
    """Drop, repeatedly, the members with fewer than three bonds to other members."""
    keep = np.array(members)
    while len(keep):
        deg = adj[np.ix_(keep, keep)].sum(axis=1)
        if (deg >= 3).all():
            break
        keep = keep[deg >= 3]
    return [int(k) for k in keep]


def _components(adj: np.ndarray, members: list[int]) -> list[list[int]]:
    """Connected components of the bond graph restricted to ``members`` (sorted lists)."""
    left = set(members)
    out = []
    while left:
        stack = [min(left)]
        comp = {stack[0]}
        while stack:
            v = stack.pop()
            for u_raw in np.nonzero(adj[v])[0]:
                u = int(u_raw)
                if u in left and u not in comp:
                    comp.add(u)
                    stack.append(u)
        left -= comp
        out.append(sorted(comp))
    return out


def _closed_surface(
    pos: np.ndarray, adj: np.ndarray, max_face: int
) -> tuple[tuple[int, ...], ...] | None:
    """Faces of the bond graph (``adj`` [n, n]) of the points ``pos`` [n, 3] projected
    radially onto a sphere around the origin, when they form a closed polyhedral surface
    winding once around the origin; None otherwise."""
    n = len(pos)
    radial = pos / np.linalg.norm(pos, axis=1, keepdims=True)  # [n, 3]
    rotation: list[list[int]] = []  # neighbours of each vertex, counter-clockwise from outside
    for v in range(n):
        nbrs = np.nonzero(adj[v])[0]
        r = radial[v]
        e1 = np.cross(r, [1.0, 0.0, 0.0] if abs(r[0]) < 0.9 else [0.0, 1.0, 0.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(r, e1)  # (e1, e2, r) right-handed
        w = pos[nbrs] - pos[v]
        angle = np.arctan2(w @ e2, w @ e1)
        rotation.append([int(u) for u in nbrs[np.argsort(angle)]])
    position = [{u: k for k, u in enumerate(rot)} for rot in rotation]
    face_of: dict[tuple[int, int], int] = {}
    faces: list[tuple[int, ...]] = []
    for start in ((v, u) for v in range(n) for u in rotation[v]):
        if start in face_of:
            continue
        face: list[int] = []
        dart = start
        while dart not in face_of:
            face_of[dart] = len(faces)
            face.append(dart[0])
            if len(face) > max_face:
                return None
            u, v = dart
            rot = rotation[v]
            dart = (v, rot[(position[v][u] - 1) % len(rot)])  # next edge clockwise at v
        if dart != start or len(set(face)) != len(face):
            return None
        faces.append(tuple(face))
    n_edges = len(face_of) // 2
    if any(face_of[(u, v)] == face_of[(v, u)] for u, v in face_of):
        return None  # an edge with the same face on both sides
    if n - n_edges + len(faces) != 2:
        return None
    angles = np.array([_solid_angle(radial[list(f)]) for f in faces])
    if not (angles > 0).all() or abs(angles.sum() - 4 * math.pi) > _SOLID_ANGLE_TOL * 4 * math.pi:
        return None
    return tuple(faces)


def _solid_angle(corners: np.ndarray) -> float:
    """Signed solid angle of the spherical polygon with unit-vector ``corners`` [k, 3]
    (fan from the first corner; Van Oosterom–Strackee per triangle)."""
    a = corners[0]
    total = 0.0
    for b, c in zip(corners[1:-1], corners[2:], strict=True):
        num = float(np.dot(a, np.cross(b, c)))
        den = 1.0 + float(a @ b + b @ c + c @ a)
        total += 2.0 * math.atan2(num, den)
    return total


# ---------------------------------------------------------------------------- grouping


def group_by_prototype(analyses: Mapping[int, CageAnalysis]) -> dict[CagePrototype, list[int]]:
    """Structure ids holding each cage prototype (a structure with two kinds of cage is
    listed under both), prototypes smallest first, ids in increasing order."""
    groups: dict[CagePrototype, set[int]] = defaultdict(set)
    for sid, analysis in analyses.items():
        for p in analysis.prototypes:
            groups[p].add(sid)
    order = sorted(groups, key=lambda p: (p.n_vertices, p.faces))
    return {p: sorted(groups[p]) for p in order}
