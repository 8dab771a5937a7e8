"""Random symmetric crystals: compatible space group, Wyckoff positions, minimum distances
from scaled covalent radii, and a start volume that follows the pressure.

Two engines share the space-group choice, volume and distance rules:

* ``"fast"`` (default): PyXtal's space groups, Wyckoff positions (their symmetry operations)
  and random lattices; the Wyckoff assignment and the atom placement are done here in NumPy
  (a site's orbit is one batched affine map, the distance check one broadcast over the 27
  nearest lattice shifts). PyXtal's own placement (``random_crystal``) takes 1-3 s for a
  50-atom Mg-Ca-H cell, 40% of it rebuilding a full ``Tol_matrix`` inside every
  ``check_images`` call; this engine makes ~25 such cells per second
  (``benchmarks/generate_speed.py``).
* ``"pyxtal"``: ``pyxtal.from_random`` with our lattice (volume) and ``Tol_matrix``.

Start volume per atom of element e at pressure P (GPa)::

    v_e(P) = v0_e * (1 + B' P / B0_e) ** (-1 / B')        (Murnaghan)

with v0_e the mean of the covalent-sphere and van der Waals-sphere volumes (the estimate
PyXtal itself uses), B0_e the element's bulk modulus from pymatgen
(``default_bulk_modulus_gpa`` where pymatgen has none, e.g. H, N, O) and B' = 4. A cell's
volume is the sum over its atoms, times a random factor in ``1 +- volume_jitter``. Hints
override it: ``element_volumes`` (Å³/atom at the target pressure, e.g. from relaxed
structures) per element, or ``volume_per_atom`` per call.

Minimum distance between species i and j: ``distance_factor * (r_i + r_j) * s`` with
covalent radii r and the length scale ``s = (v(P) / v(0)) ** (1/3)`` of the composition.

Never hangs, never silently skips: each structure gets ``attempts`` tries (a fresh space
group each) within a wall-clock budget ``attempt_timeout_s``, checked between tries and (in
the main thread on POSIX) enforced by a timer that interrupts a try mid-way; elsewhere (worker
threads) only the between-tries check applies. A structure that cannot be made comes back as a
``GenerationFailure`` with the reasons. A seed reproduces a set unless the budget cuts a try.

PyXtal's ``Group.check_compatible`` enumerates every Wyckoff combination and takes seconds
for large cells (4.6 s for Mg3Ca3H70 in group 183); ``_compatible`` answers the same question
with a coin-change reachability table and a small search over the fixed (zero-freedom)
positions, in milliseconds, and the PyXtal engine uses it for its internal checks too.
"""

from __future__ import annotations

import math
import re
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, lru_cache
from itertools import product

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii
from pymatgen.core import Composition, Element

__all__ = [
    "GenerateConfig",
    "GenerationFailure",
    "GenerationResult",
    "StructureGenerator",
    "compatible_space_groups",
    "start_volume_per_atom",
    "volume_factor",
]

#: Murnaghan pressure derivative of the bulk modulus used for every element.
B_PRIME = 4.0


@dataclass(frozen=True)
class GenerateConfig:
    """How random structures are made (Å, Å³, GPa, s)."""

    pressure_gpa: float = 0.0
    distance_factor: float = 0.7  # min distance = factor * (r_cov_i + r_cov_j) * length scale
    volume_jitter: float = 0.15  # start volume times uniform(1 - j, 1 + j)
    element_volumes: Mapping[str, float] = field(default_factory=dict)  # Å³/atom at pressure
    default_bulk_modulus_gpa: float = 30.0  # for elements without pymatgen data
    space_groups: tuple[int, ...] | None = None  # allowed groups (default 1..230)
    attempts: int = 10  # tries per structure, each with a fresh space group and lattice
    attempt_timeout_s: float = 5.0  # wall-clock budget per structure
    engine: str = "fast"  # "fast" (PyXtal groups/lattices, NumPy placement) or "pyxtal"
    site_tries: int = 20  # "fast": random points tried per Wyckoff site before a new lattice
    lattice_tries: int = 4  # "fast": lattices tried per space group

    def __post_init__(self) -> None:
        if not (math.isfinite(self.pressure_gpa) and self.pressure_gpa > -1.0):
            raise ValueError(
                f"GenerateConfig.pressure_gpa must be finite and > -1 GPa, got {self.pressure_gpa}."
            )
        if not 0 < self.distance_factor <= 3:
            raise ValueError(
                f"GenerateConfig.distance_factor must be in (0, 3], got {self.distance_factor}."
            )
        if not 0 <= self.volume_jitter < 1:
            raise ValueError(
                f"GenerateConfig.volume_jitter must be in [0, 1), got {self.volume_jitter}."
            )
        for e, v in self.element_volumes.items():
            if not Element.is_valid_symbol(e):
                raise ValueError(f"GenerateConfig.element_volumes: unknown element {e!r}.")
            if not v > 0:
                raise ValueError(f"GenerateConfig.element_volumes[{e}] must be > 0 Å³/atom.")
        if not self.default_bulk_modulus_gpa > 0:
            raise ValueError("GenerateConfig.default_bulk_modulus_gpa must be > 0.")
        if self.space_groups is not None:
            sg = tuple(int(g) for g in self.space_groups)
            if not sg or any(g < 1 or g > 230 for g in sg):
                raise ValueError("GenerateConfig.space_groups must be numbers in 1..230.")
            object.__setattr__(self, "space_groups", sg)
        if self.engine not in ("fast", "pyxtal"):
            raise ValueError(
                f"GenerateConfig.engine must be 'fast' or 'pyxtal', got {self.engine!r}."
            )
        if self.site_tries < 1 or self.lattice_tries < 1:
            raise ValueError("GenerateConfig: site_tries and lattice_tries must be >= 1.")
        if self.attempts < 1 or not self.attempt_timeout_s > 0:
            raise ValueError("GenerateConfig: attempts must be >= 1 and attempt_timeout_s > 0.")


def volume_factor(pressure_gpa: float, bulk_modulus_gpa: float, b_prime: float = B_PRIME) -> float:
    """V(P)/V(0) of the Murnaghan equation of state."""
    return (1.0 + b_prime * pressure_gpa / bulk_modulus_gpa) ** (-1.0 / b_prime)


def _ambient_volume(symbol: str) -> float:
    """Mean of the covalent- and vdW-sphere volumes of an element, Å³ (PyXtal's estimate)."""
    el = Element(symbol)
    r_cov = float(covalent_radii[atomic_numbers[symbol]])
    r_vdw = float(el.van_der_waals_radius) if el.van_der_waals_radius else 1.5 * r_cov
    return 0.5 * (4.0 / 3.0) * math.pi * (r_cov**3 + r_vdw**3)


def _bulk_modulus(symbol: str, default: float) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns for elements without data
        b = Element(symbol).bulk_modulus
    return float(b) if b is not None else default


def start_volume_per_atom(
    composition: Composition | str, config: GenerateConfig
) -> tuple[float, float]:
    """Mean start volume per atom at the config's pressure and at 0 GPa (Å³/atom)."""
    comp = Composition(composition)
    n = comp.num_atoms
    v_p = v_0 = 0.0
    for el, amt in comp.items():
        s = el.symbol
        v0 = _ambient_volume(s)
        if s in config.element_volumes:
            vp = config.element_volumes[s]
        else:
            vp = v0 * volume_factor(
                config.pressure_gpa, _bulk_modulus(s, config.default_bulk_modulus_gpa)
            )
        v_p += amt * vp
        v_0 += amt * v0
    return v_p / n, v_0 / n


def _fast_group_class():
    from pyxtal.symmetry import Group

    class _FastGroup(Group):
        """PyXtal Group whose ``check_compatible`` is fast and memoised (same answers)."""

        def check_compatible(self, numIons, verbose=False):  # noqa: N803 (PyXtal's name)
            key = tuple(int(n) for n in numIons)
            cache = self.__dict__.setdefault("_alcsp_compat", {})
            if key not in cache:
                cache[key] = _compatible(self, key)
            return cache[key]

    return _FastGroup


@cache
def _cached_group(number: int):
    """PyXtal Group objects are immutable symmetry tables and cost ~7 ms each to build: memoised
    per process (read-only data, not state)."""
    return _fast_group_class()(number)


@cache
def _cached_group_data(number: int) -> _GroupData:
    return _GroupData(_cached_group(number))


def _compatible(group, counts: tuple[int, ...]) -> tuple[bool, bool]:
    """(compatible, has_freedom) for atom counts per species in a space group.

    Wyckoff multiplicities with free parameters can be used any number of times; fixed ones
    (no free parameter) at most ``upper_bound`` times in total over all species.
    """
    if "_alcsp_bub" not in group.__dict__:
        group._alcsp_bub = group._get_base_and_upper_bounds()
    base, ub = group._alcsp_bub
    free = [m for m, u in zip(base, ub, strict=True) if u is None]
    fixed = [(m, u) for m, u in zip(base, ub, strict=True) if u is not None]
    nmax = max(counts) if counts else 0
    reach = np.zeros(nmax + 1, bool)  # [nmax+1] sums reachable with free positions
    reach[0] = True
    for m in free:
        for s in range(m, nmax + 1):
            if reach[s - m]:
                reach[s] = True
    options = []
    for n in counts:
        opts = []
        for c in product(*(range(u + 1) for _, u in fixed)):
            s = sum(ci * m for ci, (m, _) in zip(c, fixed, strict=True))
            if s <= n and reach[n - s]:
                opts.append((c, n - s > 0))
        if not opts:
            return False, False
        options.append(opts)
    bounds = [u for _, u in fixed]
    found = [False, False]

    def search(k: int, used: tuple[int, ...], uses_free: bool) -> bool:
        if k == len(options):
            found[0] = True
            found[1] = found[1] or uses_free
            return found[1]
        for c, f in options[k]:
            nu = tuple(a + b for a, b in zip(used, c, strict=True))
            if all(a <= b for a, b in zip(nu, bounds, strict=True)):
                if search(k + 1, nu, uses_free or f):
                    return True
        return False

    search(0, tuple(0 for _ in fixed), False)
    return found[0], found[1]


class _AttemptFailed(Exception):
    """One attempt (space group + lattice) could not place the atoms; the message says why."""


#: The 27 lattice translations {-1, 0, 1}^3, [27, 3]; the zero shift is row 13.
_SHIFTS = np.array(list(product((-1, 0, 1), repeat=3)), dtype=float)
_NONZERO = np.array([i for i in range(27) if i != 13])


class _GroupData:
    """Wyckoff positions of one space group as NumPy affine maps, for fast placement.

    PyXtal's own placement (``random_crystal``) takes 1-3 s for a 50-atom Mg-Ca-H cell: 40% of
    it rebuilding a full Tol_matrix inside every ``check_images`` call, most of the rest in
    per-point Python merging. Here a site's orbit is one batched affine map and the distance
    check one NumPy broadcast, ~1000x less Python per atom.
    """

    def __init__(self, group) -> None:
        self.number = int(group.number)
        self.lattice_type = group.lattice_type
        wps = list(group.Wyckoff_positions)
        self.mult = np.array([int(w.multiplicity) for w in wps])  # [W]
        self.free = np.array([int(w.get_dof()) > 0 for w in wps])  # [W]
        self.labels = [f"{w.multiplicity}{w.letter}" for w in wps]
        # affine maps [m, 4, 4] per Wyckoff position: orbit = rot @ x + trans
        self.ops = [np.array([op.affine_matrix for op in w.ops]) for w in wps]
        base, ub = group._get_base_and_upper_bounds()
        self.free_mults = sorted({int(m) for m, u in zip(base, ub, strict=True) if u is None})
        self.fixed_classes = [
            (int(m), int(u)) for m, u in zip(base, ub, strict=True) if u is not None
        ]
        nmax = 1024
        reach = np.zeros(nmax + 1, bool)  # sums reachable with free multiplicities
        reach[0] = True
        for m in self.free_mults:
            for t in range(m, nmax + 1):
                if reach[t - m]:
                    reach[t] = True
        self.reach = reach

    def sample_sites(
        self, counts: Sequence[int], rng: np.random.Generator
    ) -> list[tuple[int, int]]:
        """A random valid Wyckoff assignment: (species index, Wyckoff index) per site."""
        fixed = self.fixed_classes
        options = []
        for n in counts:
            opts = []
            for c in product(*(range(u + 1) for _, u in fixed)):
                t = sum(ci * m for ci, (m, _) in zip(c, fixed, strict=True))
                if t <= n and self.reach[n - t]:
                    opts.append(c)
            if not opts:
                raise _AttemptFailed(f"space group {self.number}: no Wyckoff combination")
            options.append([opts[i] for i in rng.permutation(len(opts))])
        bounds = [u for _, u in fixed]
        chosen: list[tuple[int, ...]] = []

        def search(k: int, used: tuple[int, ...]) -> bool:
            if k == len(options):
                return True
            for c in options[k]:
                nu = tuple(a + b for a, b in zip(used, c, strict=True))
                if all(a <= b for a, b in zip(nu, bounds, strict=True)):
                    chosen.append(c)
                    if search(k + 1, nu):
                        return True
                    chosen.pop()
            return False

        if not search(0, tuple(0 for _ in fixed)):
            raise _AttemptFailed(f"space group {self.number}: no Wyckoff combination")
        # distinct fixed (zero-freedom) positions per class, shuffled
        pools = {
            m: list(rng.permutation(np.flatnonzero((self.mult == m) & ~self.free)))
            for m, _ in fixed
        }
        sites: list[tuple[int, int]] = []
        for s, (n, c) in enumerate(zip(counts, chosen, strict=True)):
            for (m, _), k in zip(fixed, c, strict=True):
                for _ in range(k):
                    sites.append((s, int(pools[m].pop())))
            rest = n - sum(ci * m for ci, (m, _) in zip(c, fixed, strict=True))
            while rest > 0:  # random free multiplicities, weighted by size, always completable
                ms = np.array([m for m in self.free_mults if m <= rest and self.reach[rest - m]])
                m = int(rng.choice(ms, p=ms / ms.sum()))
                w = np.flatnonzero((self.mult == m) & self.free)
                sites.append((s, int(w[rng.integers(len(w))])))
                rest -= m
        return sites


def _min_image_d2(dfrac: np.ndarray, cell: np.ndarray, shifts_cart: np.ndarray) -> np.ndarray:
    """Shortest squared distances over the 27 nearest lattice shifts: dfrac [..., 3] -> [...]
    (Å²). ``shifts_cart`` [27, 3] = shifts @ cell."""
    c = (dfrac - np.round(dfrac)) @ cell  # [..., 3]
    v = c[..., None, :] + shifts_cart  # [..., 27, 3]
    return np.einsum("...k,...k->...", v, v).min(-1)


@lru_cache(maxsize=512)
def _pairs(m: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(m, 1)


def _place(
    gd: _GroupData,
    sites: list[tuple[int, int]],
    cell: np.ndarray,
    tol: np.ndarray,
    rng: np.random.Generator,
    site_tries: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Fractional positions [N, 3] and species indices [N] for the sites, or _AttemptFailed.

    ``tol`` [S, S] minimum distances (Å). Fixed positions go first, then larger orbits.
    """
    order = sorted(range(len(sites)), key=lambda i: (gd.free[sites[i][1]], -gd.mult[sites[i][1]]))
    tol2 = tol * tol  # [S, S]
    shifts_cart = _SHIFTS @ cell  # [27, 3]
    pos = np.zeros((0, 3))
    spec = np.zeros(0, dtype=np.int64)
    # self-image distance: an atom must also stay away from its own periodic images
    self_min2 = (shifts_cart[_NONZERO] ** 2).sum(-1).min()
    for i in order:
        s, w = sites[i]
        if self_min2 < tol2[s, s]:
            raise _AttemptFailed(f"space group {gd.number}: cell too small for {gd.labels[w]}")
        ops = gd.ops[w]  # [m, 4, 4]
        need = tol2[s][spec][None, :]  # [1, n]
        for _ in range(site_tries if gd.free[w] else 1):
            x = rng.random(3)
            orbit = (ops[:, :3, :3] @ x + ops[:, :3, 3]) % 1.0  # [m, 3]
            m = len(orbit)
            if m > 1:
                a, b = _pairs(m)
                if _min_image_d2(orbit[a] - orbit[b], cell, shifts_cart).min() < tol2[s, s]:
                    continue
            if len(pos):
                d2 = _min_image_d2(orbit[:, None, :] - pos[None, :, :], cell, shifts_cart)  # [m, n]
                if (d2 < need).any():
                    continue
            pos = np.concatenate([pos, orbit])
            spec = np.concatenate([spec, np.full(m, s)])
            break
        else:
            raise _AttemptFailed(
                f"space group {gd.number}: no room for a {gd.labels[w]} site of species {s}"
            )
    return pos, spec


class _Timeout(Exception):
    pass


@contextmanager
def _time_box(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (main thread on POSIX; otherwise a no-op and the
    caller's deadline checks between attempts bound the time). The previous handler and timer
    are restored on exit."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    fired = False

    def handler(signum, frame):
        nonlocal fired
        fired = True
        raise _Timeout()

    old_handler = signal.signal(signal.SIGALRM, handler)
    old_timer = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Timeout:
        raise
    except Exception as exc:
        # an exception raised by the handler inside C code can come out as another error
        # (numpy's argument parsing turns it into "TypeError: 'axis' must be None, ..."):
        # once the timer has fired, any error of the attempt is the timeout
        if fired:
            raise _Timeout() from exc
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_timer[0] > 0:  # re-arm an outer timer with what it had left
            signal.setitimer(signal.ITIMER_REAL, max(old_timer[0] - seconds, 1e-3), old_timer[1])


@dataclass(frozen=True)
class GenerationFailure:
    """A structure that could not be made, and why."""

    composition: str
    reason: str


@dataclass
class GenerationResult:
    """Structures made (ASE Atoms with ``info['space_group']``, ``info['composition']``) and
    the failures, with reasons."""

    structures: list[Atoms] = field(default_factory=list)
    failures: list[GenerationFailure] = field(default_factory=list)

    def extend(self, other: GenerationResult) -> None:
        self.structures.extend(other.structures)
        self.failures.extend(other.failures)


class StructureGenerator:
    """Makes random crystals; holds PyXtal group objects and per-composition caches.

    One generator per process (it is not thread-safe); the random state is passed per call.
    """

    def __init__(self, config: GenerateConfig | None = None) -> None:
        self.config = config or GenerateConfig()
        self._compatible: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._tols: dict[tuple, object] = {}

    def group(self, number: int):
        """The (fast-checking) PyXtal Group of a space-group number, shared per process."""
        return _cached_group(number)

    def compatible_groups(self, counts: Sequence[int]) -> tuple[int, ...]:
        """Space groups (of the allowed ones) in which these per-species counts fit."""
        key = tuple(int(c) for c in counts)
        if key not in self._compatible:
            allowed = self.config.space_groups or tuple(range(1, 231))
            self._compatible[key] = tuple(
                g for g in allowed if self.group(g).check_compatible(key)[0]
            )
        return self._compatible[key]

    def _tolerance(self, species: Sequence[str], scale: float):
        key = (tuple(species), round(scale, 4))
        tm = self._tols.get(key)
        if tm is None:
            from pyxtal.tolerance import Tol_matrix

            f = self.config.distance_factor * scale
            z = [atomic_numbers[s] for s in species]
            tuples = [
                (zi, zj, f * (covalent_radii[zi] + covalent_radii[zj]))
                for a, zi in enumerate(z)
                for zj in z[a:]
            ]
            tm = self._tols[key] = Tol_matrix(*tuples, prototype="atomic")
        return tm

    def generate(
        self,
        composition: Composition | str,
        count: int,
        rng: np.random.Generator,
        *,
        volume_per_atom: float | None = None,
    ) -> GenerationResult:
        """``count`` random structures of exactly this cell composition (e.g. ``'Mg2Ca4H20'``).

        ``volume_per_atom`` (Å³/atom at the target pressure) overrides the volume model.
        Failures are returned with their reason; nothing raises for a composition that
        merely cannot be made.
        """
        comp = Composition(composition)
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}.")
        for el in comp.elements:
            if getattr(el, "symbol", None) not in Element.__members__:
                raise ValueError(f"composition {composition!r}: unknown element {el}.")
        if any(abs(a - round(a)) > 1e-8 for a in comp.values()):
            raise ValueError(f"composition {composition!r} needs integer atom counts per cell.")
        species = [el.symbol for el in sorted(comp.elements, key=lambda e: e.Z)]
        counts = [int(round(comp[s])) for s in species]
        label = re.sub(r"(?<=[A-Za-z])1(?![0-9])", "", comp.formula.replace(" ", ""))  # Ca2MgH10
        result = GenerationResult()
        groups = self.compatible_groups(counts)
        if not groups:
            result.failures.extend(
                GenerationFailure(
                    label,
                    f"no allowed space group has Wyckoff positions for "
                    f"counts {dict(zip(species, counts, strict=True))}",
                )
                for _ in range(count)
            )
            return result
        v_p, v_0 = start_volume_per_atom(comp, self.config)
        if volume_per_atom is not None:
            if not volume_per_atom > 0:
                raise ValueError(f"volume_per_atom must be > 0 Å³/atom, got {volume_per_atom}.")
            v_p = float(volume_per_atom)
        scale = (v_p / v_0) ** (1.0 / 3.0)
        n_atoms = sum(counts)
        cfg = self.config
        for _ in range(count):
            deadline = time.perf_counter() + cfg.attempt_timeout_s
            reasons: list[str] = []
            made = None
            for _attempt in range(cfg.attempts):
                left = deadline - time.perf_counter()
                if left <= 0:
                    reasons.append(f"time budget {cfg.attempt_timeout_s:g} s used up")
                    break
                sg = int(groups[rng.integers(len(groups))])
                jitter = 1.0 + cfg.volume_jitter * (2.0 * rng.random() - 1.0)
                volume = v_p * n_atoms * jitter
                try:
                    with (
                        warnings.catch_warnings(),
                        _time_box(left),
                    ):  # timer off before filters reset
                        warnings.simplefilter("ignore")  # PyXtal warns on volume retries
                        if cfg.engine == "fast":
                            atoms = self._attempt_fast(sg, species, counts, volume, scale, rng)
                        else:
                            atoms = self._attempt_pyxtal(sg, species, counts, volume, scale, rng)
                except _Timeout:
                    reasons.append(
                        f"space group {sg}: time budget {cfg.attempt_timeout_s:g} s "
                        "used up mid-attempt"
                    )
                    break
                except _AttemptFailed as exc:
                    reasons.append(str(exc))
                    continue
                made = self._finish(atoms, sg, label)
                break
            if made is None:
                reasons = list(dict.fromkeys(reasons))
                summary = "; ".join(reasons[:5]) + (" ..." if len(reasons) > 5 else "")
                result.failures.append(GenerationFailure(label, summary or "no attempt made"))
            else:
                result.structures.append(made)
        return result

    def _group_data(self, number: int) -> _GroupData:
        return _cached_group_data(number)

    def _tol_array(self, species: Sequence[str], scale: float) -> np.ndarray:
        """Minimum distances [S, S] in Å."""
        r = np.array([covalent_radii[atomic_numbers[s]] for s in species])
        return self.config.distance_factor * scale * (r[:, None] + r[None, :])

    def _attempt_fast(self, sg, species, counts, volume, scale, rng) -> Atoms:
        from pyxtal.lattice import Lattice
        from pyxtal.msg import VolumeError

        gd = self._group_data(sg)
        tol = self._tol_array(species, scale)
        reason = ""
        for _ in range(self.config.lattice_tries):
            sites = gd.sample_sites(counts, rng)
            try:
                cell = Lattice(gd.lattice_type, volume, random_state=rng).matrix  # [3, 3]
            except (VolumeError, RuntimeError, ValueError) as exc:  # PyXtal's lattice sampler
                raise _AttemptFailed(f"space group {sg}: no lattice ({exc})") from exc
            try:
                frac, spec = _place(gd, sites, cell, tol, rng, self.config.site_tries)
            except _AttemptFailed as exc:
                reason = str(exc)
                continue
            numbers = np.array([atomic_numbers[s] for s in species])[spec]
            return Atoms(numbers=numbers, scaled_positions=frac, cell=cell, pbc=True)
        raise _AttemptFailed(reason)

    def _attempt_pyxtal(self, sg, species, counts, volume, scale, rng) -> Atoms:
        from pyxtal import pyxtal
        from pyxtal.lattice import Lattice
        from pyxtal.msg import Comp_CompatibilityError

        group = self.group(sg)
        tm = self._tolerance(species, scale)
        try:
            lattice = Lattice(group.lattice_type, volume, random_state=rng)
            crystal = pyxtal()
            crystal.from_random(
                3, group, species, counts, lattice=lattice, tm=tm, random_state=rng, max_count=1
            )
            atoms = crystal.to_ase(resort=False)
        except Comp_CompatibilityError as exc:  # should not happen after the check
            raise _AttemptFailed(f"space group {sg}: incompatible ({exc})") from exc
        except (RuntimeError, ValueError) as exc:  # PyXtal gave up on this attempt
            raise _AttemptFailed(f"space group {sg}: {exc}") from exc
        if not crystal.valid or len(atoms) != sum(counts):
            raise _AttemptFailed(f"space group {sg}: PyXtal returned an invalid structure")
        return atoms

    @staticmethod
    def _finish(atoms: Atoms, space_group: int, label: str) -> Atoms:
        out = Atoms(
            numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=True
        )
        out.wrap()
        out.info["space_group"] = space_group
        out.info["composition"] = label
        return out


def compatible_space_groups(
    composition: Composition | str, space_groups: Sequence[int] | None = None
) -> tuple[int, ...]:
    """Space groups with Wyckoff positions for this cell composition (fast PyXtal check)."""
    comp = Composition(composition)
    species = sorted(comp.elements, key=lambda e: e.Z)
    gen = StructureGenerator(
        GenerateConfig(space_groups=tuple(space_groups) if space_groups else None)
    )
    return gen.compatible_groups([int(round(comp[e])) for e in species])
