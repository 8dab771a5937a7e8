"""Derivative structures: every symmetry-distinct decoration of the fcc, hcp and bcc lattices
in supercells of up to N atoms, as search starts.

Random symmetric cells rarely hit some ordered superstructures of close-packed alloys (with
10 random cells per composition, a brute force over Cu–Au cells of up to 8 atoms never
produced D0_19 Cu3Au, the EMT ground state; the enumeration does). These starts are cheap to
relax with ACNN, so a campaign with ``[campaign] decorations = ["fcc", "hcp", "bcc"]``
relaxes every decoration of its compositions in each iteration beside the random cells, and
the iteration's model ranks them like any other minimum.

The enumeration is the classic one (Hart & Forcade, Phys. Rev. B 77, 224115 (2008)): the
supercells are the Hermite normal forms of index n up to the parent rotations, the
colourings of their sites are kept once per orbit under the operations that keep the
supercell (rotations times lattice translations), and superperiodic colourings (which
belong to a smaller n) are dropped. No enumlib is installed here, hence this small version;
it is fast enough up to ~12 atoms per cell for binaries.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping

import numpy as np
import spglib
from ase import Atoms
from ase.build.tools import niggli_reduce

from alcsp.compositions import composition_key

__all__ = ["LATTICES", "lattice_decorations", "decoration_starts"]

#: Parent lattices with their decorations.
LATTICES = ("fcc", "hcp", "bcc")


def parent_lattice(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Primitive cell (rows, nearest-neighbour distance 1 Å) and fractional basis [d, 3]."""
    if name == "fcc":
        a = math.sqrt(2.0)
        return 0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], float), np.zeros((1, 3))
    if name == "bcc":
        a = 2.0 / math.sqrt(3.0)
        return 0.5 * a * np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]], float), np.zeros((1, 3))
    if name == "hcp":
        c = math.sqrt(8.0 / 3.0)
        cell = np.array([[1.0, 0, 0], [-0.5, math.sqrt(3) / 2, 0], [0, 0, c]])
        return cell, np.array([[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    raise ValueError(name)


def hnf_matrices(n: int) -> list[np.ndarray]:
    """Every lower-triangular Hermite normal form of determinant n whose rows are the
    supercell vectors (in parent lattice coordinates): (a,0,0), (b,c,0), (d,e,f) with
    a c f = n, 0 <= b, d < a, 0 <= e < c: one matrix per sublattice of index n."""
    out = []
    for a in range(1, n + 1):
        if n % a:
            continue
        for c in range(1, n // a + 1):
            if (n // a) % c:
                continue
            f = n // (a * c)
            for b in range(a):
                for d in range(a):
                    for e in range(c):
                        out.append(np.array([[a, 0, 0], [b, c, 0], [d, e, f]], dtype=np.int64))
    return out


def _is_integer(m: np.ndarray, tol: float = 1e-8) -> bool:
    return bool(np.all(np.abs(m - np.round(m)) < tol))


def parent_symmetry(cell: np.ndarray, basis: np.ndarray):
    """Parent space-group operations (R acting on fractional row vectors as x R^T, t)."""
    # spglib annotates its cell as Sequences; it takes (and converts) arrays at runtime
    sym = spglib.get_symmetry((cell, basis, [1] * len(basis)), symprec=1e-5)  # type: ignore[arg-type]
    if sym is None:
        raise RuntimeError("spglib found no symmetry for the parent structure")
    return [
        (np.array(r, dtype=np.int64), np.array(t, float))
        for r, t in zip(sym["rotations"], sym["translations"], strict=True)
    ]


def distinct_supercells(n: int, ops) -> list[np.ndarray]:
    """HNFs of index n, one per class of supercells equivalent under the parent rotations."""
    rots = {tuple(r.ravel()): r for r, _ in ops}.values()
    reps: list[np.ndarray] = []
    for h in hnf_matrices(n):
        hinv = [np.linalg.inv(r_.astype(float)) for r_ in reps]
        seen = False
        for r in rots:
            hr = h @ r.T
            if any(_is_integer(hr @ inv) for inv in hinv):
                seen = True
                break
        if not seen:
            reps.append(h)
    return reps


def site_permutations(h: np.ndarray, basis: np.ndarray, ops):
    """Sites of supercell ``h`` (parent-fractional positions [N, 3]) and the permutations
    [P, N] of the operations that keep it: stabilising parent operations times the parent
    lattice translations inside it. Also the permutations of the non-trivial pure
    translations (for the superperiodicity test)."""
    a, c, f = int(h[0, 0]), int(h[1, 1]), int(h[2, 2])
    g = np.array(list(itertools.product(range(a), range(c), range(f))), float)  # [n, 3]
    x = (g[:, None, :] + basis[None, :, :]).reshape(-1, 3)  # [N, 3] parent fractional
    hinv = np.linalg.inv(h.astype(float))

    def index(xs: np.ndarray) -> np.ndarray:
        s = xs @ hinv  # supercell fractional
        s0 = x @ hinv
        d = s[:, None, :] - s0[None, :, :]
        d -= np.round(d)
        hit = np.all(np.abs(d) < 1e-6, axis=2)
        assert np.all(hit.sum(axis=1) == 1), "site mapping failed"
        return np.argmax(hit, axis=1)

    perms, translations = [], []
    for r, t in ops:
        if not _is_integer(h @ r.T @ hinv):
            continue
        y = x @ r.T + t
        for gk in g:
            perms.append(index(y + gk))
    for gk in g[1:]:
        translations.append(index(x + gk))
    return x, np.unique(np.array(perms), axis=0), np.array(translations, dtype=np.int64)


def decorations(
    k: int, n_sites: int, perms: np.ndarray, translations: np.ndarray, min_species: int = 1
) -> np.ndarray:
    """Symmetry-distinct, non-superperiodic colourings [M, N] of N sites with k species
    using at least ``min_species`` of them."""
    cols = np.array(list(itertools.product(range(k), repeat=n_sites)), dtype=np.int64)
    used = np.array([len(set(c)) for c in cols])
    cols = cols[used >= min_species]
    if len(cols) == 0:
        return cols
    w = k ** np.arange(n_sites)[::-1]
    # a permutation p maps site i to p[i]: the colouring c becomes c' with c'[p[i]] = c[i]
    inv = np.argsort(perms, axis=1)
    codes = np.stack([cols[:, q] @ w for q in inv], axis=1)  # [M, P]
    canon = codes.min(axis=1)
    superperiodic = np.zeros(len(cols), bool)
    for t in translations:
        superperiodic |= np.all(cols[:, np.argsort(t)] == cols, axis=1)
    own = cols @ w
    keep = (~superperiodic) & (own == canon)  # one representative: the minimal code
    return cols[keep]


def enumerate_lattice(
    name: str, elements: list[str], max_atoms: int, max_atoms_all: int
) -> tuple[list[Atoms], dict]:
    """Decorations of lattice ``name`` (nearest-neighbour distance 1 Å); those using every
    element only up to ``max_atoms_all`` atoms."""
    cell, basis = parent_lattice(name)
    ops = parent_symmetry(cell, basis)
    d = len(basis)
    out: list[Atoms] = []
    counts: dict[int, int] = {}
    k = len(elements)
    for n in range(1, max_atoms // d + 1):
        n_sites = n * d
        for h in distinct_supercells(n, ops):
            x, perms, trans = site_permutations(h, basis, ops)
            cols = decorations(k, n_sites, perms, trans)
            if n_sites > max_atoms_all and k > 2:
                cols = cols[np.array([len(set(c)) < k for c in cols], bool)]
            for col in cols:
                atoms = Atoms(
                    [elements[i] for i in col], positions=x @ cell, cell=h @ cell, pbc=True
                )
                hnf = "".join(str(v) for v in h[np.tril_indices(3)])
                atoms.info["origin"] = f"{name} n={n_sites} hnf={hnf}"
                out.append(atoms)
            counts[n_sites] = counts.get(n_sites, 0) + len(cols)
    return out, counts


def lattice_decorations(lattice: str, elements: Iterable[str], max_atoms: int) -> list[Atoms]:
    """Every distinct decoration of ``lattice`` by ``elements`` with at most ``max_atoms``
    atoms (nearest-neighbour distance 1 Å; ``info["origin"]`` names lattice, size, HNF)."""
    if lattice not in LATTICES:
        raise ValueError(f"lattice {lattice!r} is not one of {list(LATTICES)}")
    els = list(elements)
    return enumerate_lattice(lattice, els, max_atoms, max_atoms)[0]


def decoration_starts(
    lattices: Iterable[str],
    compositions: Iterable[str],
    elements: Iterable[str],
    max_atoms: int,
    volume_per_atom: Mapping[str, float],
) -> list[Atoms]:
    """The decorations of ``lattices`` whose composition key is one of ``compositions``,
    scaled to the mean of their elements' volumes per atom (Vegard), in a fixed order."""
    wanted = set(compositions)
    out = []
    for lattice in lattices:
        for atoms in lattice_decorations(lattice, elements, max_atoms):
            key = composition_key(atoms.get_chemical_formula())
            if key not in wanted:
                continue
            v = float(np.mean([volume_per_atom[s] for s in atoms.get_chemical_symbols()]))
            scaled = atoms.copy()
            # HNF supercells can be very oblique (angles < 20 degrees), which the relaxer
            # rightly calls unphysical: start from the Niggli-reduced cell of the same crystal
            niggli_reduce(scaled)
            scaled.set_cell(
                scaled.cell.array * (v * len(atoms) / atoms.get_volume()) ** (1 / 3),
                scale_atoms=True,
            )
            scaled.info["origin"] = atoms.info["origin"]
            out.append(scaled)
    return out
