"""Convergence checks before a campaign: volumes at the pressure, then cutoff, k-points and
bands against tighter values, with a verdict per setting.

What a DFT user does by hand before a campaign, with the config's own oracle:

1. Test cells: each element of the config as the 1-atom fcc primitive cell, and one
   compound, the 2-atom CsCl (B2) cell of the two elements whose Pauling
   electronegativities differ most (ties: alphabetical), e.g. CaH for Mg-Ca-H, BeO for
   Be-P-N-O.
2. The volume of each cell at the campaign pressure P*: single points at the config's
   settings, starting from the ``[generate] element_volumes`` hint (else the Murnaghan
   estimate of ``alcsp.generate.start_volume_per_atom``; the compound starts from the mean
   of its elements' volumes found). Each step solves a Murnaghan curve with B' = 4: from
   one point with the element's tabulated bulk modulus, then through the two points
   nearest P* (B0 fitted; kept inside a bracketing pair), at most x1.6 in volume per step,
   until |P - P*| <= max(``volume_rtol`` |P*|, ``volume_atol_gpa``). The volume reported
   for the hint, ``volume_at_target``, is that curve evaluated at P* exactly.
3. At that volume, for GPAW: the energy per atom E0 (zero-smearing, ``Label.hull_energy``,
   the energy every hull uses) and the pressure P = -trace(stress)/3 at the config's value
   of one setting and at tighter ones, the others held at the config's values (one setting
   at a time): ``ecut`` x 1, 1.25, 1.5; ``kspacing`` x 1, 0.67, 0.5; ``nbands`` as configured
   ("auto" = ``alcsp.oracle.gpaw.auto_nbands``) and 2x as many. ΔE (meV/atom) and ΔP (GPa)
   are each value's difference to the tightest value of that setting.
4. A value is converged when |ΔE| <= ``energy_tol_mev`` and |ΔP| <= ``pressure_tol_gpa``;
   the verdict of a setting names the config's value and, when it is not converged, the
   loosest value tried that is. Against the tightest value the tightest is converged by
   definition: when it is the only converged one, the verdict says to extend the scan.
   The recommendation per setting is the tightest of the cells' loosest converged values.

EMT and CHGNet have no cutoff, k-points or bands: only the volumes are found. Quantum
ESPRESSO (``ecutwfc``) and VASP (``encut``) are not supported yet: ``converge`` refuses
them before computing anything. Every problem (oracle not installed, a failed calculation)
is a ``ConvergeError`` (a ``ValueError``) with one line naming it and the fix.

Oracle jobs run under a work directory, one sub-directory per parameter set whose name
carries a hash of the parameters: a rerun in the same directory reuses finished jobs and
never confuses two settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from alcsp.config import CampaignConfig
from alcsp.oracle.ase_oracle import ASEOracle, MissingBinary
from alcsp.oracle.base import Label, LabelFailure
from alcsp.oracle.factory import OracleConfig, make_oracle
from alcsp.units import ev_per_a3_to_gpa

__all__ = [
    "Calculation",
    "ConvergeError",
    "ConvergeOptions",
    "ConvergeResult",
    "Recommendation",
    "SettingScan",
    "SettingValue",
    "TestCell",
    "VolumeResult",
    "converge",
    "format_result",
    "reference_cells",
    "result_to_json",
    "scan_settings_of",
]

#: Oracles without a cutoff, k-points or bands: volumes only.
NO_SETTINGS = ("emt", "chgnet")
#: Plane-wave codes whose scan is not implemented yet, with their cutoff parameter.
UNSUPPORTED = {"espresso": "ecutwfc", "vasp": "encut"}
B_PRIME = 4.0  # pressure derivative of the bulk modulus in the first (Murnaghan) step
MAX_STEP = 1.6  # largest volume ratio of one search step


class ConvergeError(ValueError):
    """The check cannot run or could not finish; the message is one line with the fix."""


@dataclass(frozen=True)
class ConvergeOptions:
    """Tolerances, the values scanned, and how the jobs run."""

    energy_tol_mev: float = 5.0  # |ΔE| meV/atom against the tightest value
    pressure_tol_gpa: float = 2.0  # |ΔP| GPa against the tightest value
    volume_rtol: float = 0.05  # volume search: |P - P*| <= volume_rtol |P*| ...
    volume_atol_gpa: float = 0.5  # ... or this (for P* near 0)
    max_volume_steps: int = 10  # single points per cell in the volume search
    ecut_factors: tuple[float, ...] = (1.0, 1.25, 1.5)  # x the config's ecut
    kspacing_factors: tuple[float, ...] = (1.0, 0.67, 0.5)  # x the config's kspacing
    nbands_factor: float = 2.0  # the tight band count: this x max(auto, configured)
    jobs: int = 1  # oracle jobs at once (each its own process for DFT)
    timeout_s: float | None = None  # seconds per job; None = [oracle] timeout_s

    def __post_init__(self):
        if not (self.energy_tol_mev > 0 and self.pressure_tol_gpa > 0):
            raise ConvergeError("the energy and pressure tolerances must be > 0")
        if not (self.volume_rtol > 0 and self.volume_atol_gpa > 0):
            raise ConvergeError("the volume-search pressure tolerances must be > 0")
        if self.max_volume_steps < 1 or self.jobs < 1:
            raise ConvergeError("max_volume_steps and jobs must be >= 1")
        for name in ("ecut_factors", "kspacing_factors"):
            f = tuple(getattr(self, name))
            if any(not (x > 0 and math.isfinite(x)) for x in f) or 1.0 not in f:
                raise ConvergeError(
                    f"{name} must be positive numbers including 1 (the config's value), "
                    f"got {list(f)}"
                )
            if len(set(f)) < 2:
                raise ConvergeError(f"{name} needs a value besides 1, got {list(f)}")
        if not self.nbands_factor > 1:
            raise ConvergeError(f"nbands_factor must be > 1, got {self.nbands_factor}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ConvergeError(f"the timeout must be > 0 s, got {self.timeout_s}")


@dataclass(frozen=True)
class TestCell:
    """A small cell whose volume is scaled: ``prototype`` "fcc" (1 atom, primitive) or
    "B2" (CsCl, 2 atoms, simple cubic)."""

    __test__ = False  # not a pytest class

    name: str  # "Mg fcc", "CaH B2"
    symbols: tuple[str, ...]
    prototype: str

    @property
    def n_atoms(self) -> int:
        return len(self.symbols)

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-")

    def build(self, volume_per_atom: float) -> Atoms:
        """The cell at ``volume_per_atom`` Å³/atom."""
        from ase.build import bulk

        if self.prototype == "fcc":
            return bulk(self.symbols[0], "fcc", a=(4.0 * volume_per_atom) ** (1.0 / 3.0))
        if self.prototype == "B2":
            a = (2.0 * volume_per_atom) ** (1.0 / 3.0)
            return Atoms(
                self.symbols,
                scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]],
                cell=np.eye(3) * a,
                pbc=True,
            )
        raise ValueError(f"unknown test-cell prototype {self.prototype!r}")


def _electronegativity(symbol: str) -> float:
    from pymatgen.core import Element

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = Element(symbol).X
    return 0.0 if x is None or math.isnan(x) else float(x)


def reference_cells(elements: Sequence[str]) -> tuple[TestCell, ...]:
    """fcc cells of every element, then the B2 cell of the two most different elements
    (largest electronegativity difference, ties alphabetical; none for one element)."""
    cells = [TestCell(f"{e} fcc", (e,), "fcc") for e in elements]
    els = sorted(elements)
    pairs = [(a, b) for i, a in enumerate(els) for b in els[i + 1 :]]
    if pairs:
        chi = {e: _electronegativity(e) for e in els}
        # max() keeps the first of equal keys: the alphabetically first pair.
        a, b = max(pairs, key=lambda p: abs(chi[p[0]] - chi[p[1]]))
        a, b = sorted((a, b), key=lambda e: (chi[e], e))  # cation first, as chemists write
        cells.append(TestCell(f"{a}{b} B2", (a, b), "B2"))
    return tuple(cells)


@dataclass(frozen=True)
class Calculation:
    """One single point, per atom."""

    volume_per_atom: float  # Å³/atom
    energy_per_atom: float  # eV/atom, E0 (zero smearing, Label.hull_energy)
    free_energy_per_atom: float  # eV/atom, force-consistent F
    pressure_gpa: float  # -trace(stress)/3
    wall_time_s: float
    attempts: int


@dataclass(frozen=True)
class VolumeResult:
    """The volume search of one cell at the config's settings."""

    cell: TestCell
    target_gpa: float
    start_volume: float  # Å³/atom
    start_source: str  # where the start volume came from
    points: tuple[Calculation, ...]  # in the order computed
    found: Calculation  # the point within tolerance (else the one nearest the target)
    volume_at_target: float  # Å³/atom: the fitted curve at the target pressure
    bulk_modulus_gpa: float | None  # at the target, from that curve (None: one point only)
    converged: bool  # found is within the pressure tolerance
    overlap: str | None  # PAW sphere overlap warning; "" none; None: not a PAW code


@dataclass(frozen=True)
class SettingValue:
    """One value of a setting at a cell's volume."""

    value: float  # ecut (eV), kspacing (2π/Å) or band count
    label: str  # "600 eV", "0.03", "auto (10)"
    calc: Calculation
    d_energy_mev: float  # E0 - E0(tightest), meV/atom
    d_pressure_gpa: float  # P - P(tightest), GPa
    converged: bool


@dataclass(frozen=True)
class SettingScan:
    """One setting scanned at one cell's volume; ``values`` run loosest to tightest, the
    config's value at ``config_index``."""

    cell: TestCell
    setting: str  # "ecut", "kspacing" or "nbands"
    values: tuple[SettingValue, ...]
    config_index: int

    @property
    def config_value(self) -> SettingValue:
        return self.values[self.config_index]

    @property
    def loosest_converged(self) -> SettingValue:
        """The loosest value tried that is converged (the tightest always is)."""
        return next(v for v in self.values if v.converged)

    @property
    def only_tightest(self) -> bool:
        """No value but the tightest (converged against itself) passes: extend the scan."""
        return self.loosest_converged is self.values[-1]

    @property
    def verdict(self) -> str:
        """ "Mg fcc: ecut 400 eV: not converged (ΔE 55.0 meV/atom, ΔP 6.50 GPa); 600 eV is"."""
        c = self.config_value
        name = f"{self.cell.name}: {self.setting} {c.label}"
        diffs = f"ΔE {c.d_energy_mev:+.1f} meV/atom, ΔP {c.d_pressure_gpa:+.2f} GPa"
        if c is self.values[-1]:
            return f"{name}: the tightest value tried, nothing to compare it with"
        if c.converged:
            return f"{name}: converged ({diffs})"
        best = self.loosest_converged
        if self.only_tightest:
            return (
                f"{name}: not converged ({diffs}); no value tried is except the tightest "
                f"({best.label}, against itself): extend the scan"
            )
        return f"{name}: not converged ({diffs}); {best.label} is"


@dataclass(frozen=True)
class Recommendation:
    """A setting's value for the campaign: the tightest of the cells' loosest converged."""

    setting: str
    value: float
    label: str
    config_label: str
    config_converged: bool  # the config's value passes in every cell
    at_least: bool  # some cell converged only at the tightest value tried: maybe tighter

    @property
    def sentence(self) -> str:
        if self.config_converged:
            return f"{self.setting} = {self.config_label}: converged in every cell (keep)"
        more = " or tighter (extend the scan)" if self.at_least else ""
        return f"{self.setting} = {self.label}{more} (config: {self.config_label})"


@dataclass(frozen=True)
class ConvergeResult:
    source: str  # the config file
    oracle: str
    parameters: Any  # the oracle's Params dataclass (the config's values)
    pressure_gpa: float
    options: ConvergeOptions
    volumes: tuple[VolumeResult, ...]
    scans: tuple[SettingScan, ...]
    recommendations: tuple[Recommendation, ...]
    scan_note: str  # why there is no settings scan ("" when there is one)
    volume_time_s: float  # wall time of the volume searches
    scan_time_s: float  # wall time of the settings scan
    n_calculations: int
    workdir: str

    @property
    def element_volumes(self) -> tuple[tuple[str, float], ...]:
        """(element, Å³/atom at the pressure): corrected ``[generate] element_volumes``."""
        return tuple(
            (v.cell.symbols[0], v.volume_at_target)
            for v in self.volumes
            if v.cell.prototype == "fcc"
        )

    @property
    def converged(self) -> bool:
        """Every volume found and every setting's config value converged in every cell."""
        return all(v.converged for v in self.volumes) and all(
            r.config_converged for r in self.recommendations
        )


# -- oracle jobs ---------------------------------------------------------------------------


def scan_settings_of(oracle: OracleConfig) -> tuple[str, ...]:
    """The settings scanned for this oracle (none for EMT and CHGNet); ``ConvergeError``
    for a code whose scan is not implemented yet."""
    if oracle.name in UNSUPPORTED:
        raise ConvergeError(
            f"[oracle] name = {oracle.name!r}: only GPAW is supported yet for the settings "
            f"scan ({UNSUPPORTED[oracle.name]}, kspacing); converge {oracle.name} by hand, or "
            'run alcsp converge on a copy of the config with [oracle] name = "gpaw"'
        )
    if oracle.name in NO_SETTINGS:
        return ()
    if oracle.name == "gpaw":
        return ("ecut", "kspacing", "nbands")
    raise ConvergeError(f"alcsp converge does not know oracle {oracle.name!r}")


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failure_fix(f: LabelFailure) -> str:
    kind = f.kind.value
    if kind == "scf_not_converged":
        return (
            "slow the density mixing ([oracle] retries = [{ mixer_beta = 0.02 }]) or raise "
            "maxiter; a very wrong start volume ([generate] element_volumes) can also cause it"
        )
    if kind == "timeout":
        return "raise [oracle] timeout_s or pass --timeout SECONDS"
    if kind == "missing_binary":
        return "install the code (see its message)"
    return "see the job's stderr.log and the code's log in the work directory"


class _Runner:
    """Builds one oracle per parameter set and runs single points, ``jobs`` at a time."""

    def __init__(
        self,
        oracle: OracleConfig,
        workdir: Path,
        options: ConvergeOptions,
        progress: Callable[[str], None] | None,
    ):
        self.config = oracle
        if options.timeout_s is not None:
            self.config = dataclasses.replace(oracle, timeout_s=options.timeout_s)
        self.workdir = workdir
        self.jobs = options.jobs
        self.progress = progress or (lambda _msg: None)
        self._oracles: dict[str, ASEOracle] = {}
        self._lock = threading.Lock()
        self.n_calculations = 0

    def oracle(self, override: Mapping[str, Any]) -> ASEOracle:
        params = {**self.config.parameters, **override}
        blob = json.dumps([self.config.name, params], sort_keys=True, default=str)
        digest = hashlib.sha1(blob.encode()).hexdigest()[:8]
        tag = "-".join([*(f"{k}{v}" for k, v in sorted(override.items())), digest])
        with self._lock:
            if tag not in self._oracles:
                cfg = dataclasses.replace(self.config, parameters=params)
                sub = tag if override else f"config-{digest}"
                self._oracles[tag] = make_oracle(cfg, self.workdir / sub)
            return self._oracles[tag]

    def preflight(self) -> None:
        o = self.oracle({})
        try:
            o.spec.preflight(o.params)
        except MissingBinary as exc:
            raise ConvergeError(
                f"oracle {o.name!r} cannot run here: {_one_line(str(exc))}"
            ) from exc

    def run(
        self, jobs: Sequence[tuple[TestCell, float, Mapping[str, Any], str]]
    ) -> list[Calculation]:
        """Single points of (cell, Å³/atom, parameter override, what) jobs, ``jobs`` at a
        time; the first failure raises ``ConvergeError``."""
        if self.jobs > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(max_workers=self.jobs) as pool:
                return list(pool.map(self._one, jobs))
        return [self._one(j) for j in jobs]

    def _one(self, job: tuple[TestCell, float, Mapping[str, Any], str]) -> Calculation:
        cell, v, override, what = job
        (res,) = self.oracle(override).label([cell.build(v)], keys=[f"{cell.slug}-v{v:.6f}"])
        with self._lock:
            self.n_calculations += 1
        if isinstance(res, LabelFailure):
            raise ConvergeError(
                f"the {self.config.name} calculation of {cell.name} at {v:.4f} Å³/atom "
                f"({what}) failed: {res.kind.value}: {_one_line(res.reason)}; fix: "
                f"{_failure_fix(res)}"
            )
        assert isinstance(res, Label)
        n = cell.n_atoms
        calc = Calculation(
            volume_per_atom=v,
            energy_per_atom=res.hull_energy / n,
            free_energy_per_atom=res.energy / n,
            pressure_gpa=ev_per_a3_to_gpa(-float(np.trace(res.stress)) / 3.0),
            wall_time_s=res.wall_time,
            attempts=res.attempts,
        )
        self.progress(
            f"{cell.name}, {what}: V {v:.4f} Å³/atom, E0 {calc.energy_per_atom:.5f} eV/atom, "
            f"P {calc.pressure_gpa:.2f} GPa ({res.wall_time:.1f} s)"
        )
        return calc


# -- volumes -------------------------------------------------------------------------------


def _murnaghan_step(v: float, p: float, target: float, b0: float) -> float:
    """V at ``target`` from (v, p) with B(P) = b0 + B' P (b0 at 0 GPa), the bulk modulus
    clamped to >= |b0| / 4 (a cell far under tension)."""
    lo = 0.25 * abs(b0) + 1e-9
    num = max(b0 + B_PRIME * target, lo)
    den = max(b0 + B_PRIME * p, lo)
    return v * (num / den) ** (-1.0 / B_PRIME)


def _line(a: Calculation, b: Calculation, target: float) -> tuple[float, float] | None:
    """(V at target, B at target in GPa) from the Murnaghan curve with B' = 4 through ``a``
    and ``b`` (B0 solved for); None when P does not fall as V grows between them."""
    if a.pressure_gpa < b.pressure_gpa:
        a, b = b, a  # a: the higher pressure
    pa, pb = a.pressure_gpa, b.pressure_gpa
    r = math.log(a.volume_per_atom / b.volume_per_atom)
    if not (pa > pb and r < 0):
        return None
    # ln((B0 + B' pa) / (B0 + B' pb)) = -B' r: the left side falls from +inf to 0 as B0 grows.
    lo, hi = -B_PRIME * pb, max(1e7, 10 * abs(pa))
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if math.log((mid + B_PRIME * pa) / (mid + B_PRIME * pb)) > -B_PRIME * r:
            lo = mid
        else:
            hi = mid
    b0 = 0.5 * (lo + hi)  # > -B' pb: may be negative when both points are under tension
    num = max(b0 + B_PRIME * target, 1e-9)  # a target beyond the spinodal: a long step
    v = a.volume_per_atom * (num / (b0 + B_PRIME * pa)) ** (-1.0 / B_PRIME)
    return v, b0 + B_PRIME * target


def _secant(points: Sequence[Calculation], target: float) -> tuple[float, float] | None:
    """(V at target, B at target): the Murnaghan curve (B' = 4) through the two points
    nearest the target, kept inside the closest bracketing pair when there is one (else the
    curve through that pair); None when neither has P falling as V grows."""
    if len(points) < 2:
        return None
    near = sorted(points, key=lambda c: abs(c.pressure_gpa - target))[:2]
    sec = _line(near[0], near[1], target)
    below = [c for c in points if c.pressure_gpa <= target]
    above = [c for c in points if c.pressure_gpa > target]
    if below and above:
        lo = max(below, key=lambda c: c.pressure_gpa)  # the larger volume
        hi = min(above, key=lambda c: c.pressure_gpa)
        vmin, vmax = sorted((lo.volume_per_atom, hi.volume_per_atom))
        if sec is None or not vmin < sec[0] < vmax:
            sec = _line(lo, hi, target) or sec
    return sec


def _within(p: float, target: float, opts: ConvergeOptions) -> bool:
    return abs(p - target) <= max(opts.volume_rtol * abs(target), opts.volume_atol_gpa)


def _find_volume(
    runner: _Runner,
    cell: TestCell,
    target: float,
    start: float,
    source: str,
    b0: float,
    opts: ConvergeOptions,
    overlap_xc: str | None,
) -> VolumeResult:
    """Volume search from ``start``; ``b0`` (GPa, at 0 GPa) sizes the first step."""
    points: list[Calculation] = []
    v = start
    converged = False
    for step in range(1, opts.max_volume_steps + 1):
        (calc,) = runner.run([(cell, v, {}, f"volume step {step}")])
        points.append(calc)
        if _within(calc.pressure_gpa, target, opts):
            converged = True
            break
        nearest = min(points, key=lambda c: abs(c.pressure_gpa - target))
        sec = _secant(points, target)
        nxt = (
            sec[0]
            if sec
            else _murnaghan_step(nearest.volume_per_atom, nearest.pressure_gpa, target, b0)
        )
        ratio = min(max(nxt / nearest.volume_per_atom, 1 / MAX_STEP), MAX_STEP)
        nxt = nearest.volume_per_atom * ratio
        if any(abs(nxt / c.volume_per_atom - 1) < 1e-6 for c in points):
            break  # no progress: the pressure is noisy at this scale
        v = nxt
    found = points[-1] if converged else min(points, key=lambda c: abs(c.pressure_gpa - target))
    sec = _secant(points, target)
    if sec is not None:
        v_target, bulk = sec
    else:
        v_target = _murnaghan_step(found.volume_per_atom, found.pressure_gpa, target, b0)
        bulk = None
    overlap = None
    if overlap_xc is not None:
        from alcsp.oracle.gpaw import sphere_overlaps

        overlap = sphere_overlaps(cell.build(found.volume_per_atom), overlap_xc)
    return VolumeResult(
        cell=cell,
        target_gpa=target,
        start_volume=start,
        start_source=source,
        points=tuple(points),
        found=found,
        volume_at_target=v_target,
        bulk_modulus_gpa=bulk,
        converged=converged,
        overlap=overlap,
    )


def _bulk_modulus_guess(symbol: str, default: float) -> float:
    """The element's bulk modulus at 0 GPa from pymatgen (GPa), else ``default``."""
    from pymatgen.core import Element

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns for elements without data
        b = Element(symbol).bulk_modulus
    return float(b) if b is not None else default


# -- settings ------------------------------------------------------------------------------


def _resolved_nbands(atoms: Atoms, nbands: int | str, xc: str) -> int:
    """The band count GPAW uses for an ``nbands`` setting (alcsp.oracle.gpaw's forms)."""
    from alcsp.oracle.gpaw import auto_nbands, valence_electrons

    occupied = math.ceil(valence_electrons(atoms, xc) / 2)
    if nbands == "auto":
        return auto_nbands(atoms, xc)
    if isinstance(nbands, str) and nbands.endswith("%"):
        return math.ceil(occupied * float(nbands[:-1]) / 100.0)
    n = int(nbands)
    return n if n > 0 else occupied - n


def _values_of(
    setting: str, params: Any, cell: TestCell, v: float, opts: ConvergeOptions
) -> list[tuple[float, str, dict[str, Any]]]:
    """(value, label, parameter override) loosest to tightest; the config's has {}."""
    if setting == "ecut":
        vals = sorted({round(params.ecut * f, 6) for f in opts.ecut_factors})
        cfg = round(params.ecut, 6)
        return [(e, f"{e:g} eV", {} if e == cfg else {"ecut": e}) for e in vals]
    if setting == "kspacing":
        vals = sorted({round(params.kspacing * f, 8) for f in opts.kspacing_factors}, reverse=True)
        cfg = round(params.kspacing, 8)
        return [(k, f"{k:.4g}", {} if k == cfg else {"kspacing": k}) for k in vals]
    if setting == "nbands":
        from alcsp.oracle.gpaw import auto_nbands

        atoms = cell.build(v)
        n_cfg = _resolved_nbands(atoms, params.nbands, params.xc)
        n_tight = math.ceil(opts.nbands_factor * max(n_cfg, auto_nbands(atoms, params.xc)))
        label = f"{params.nbands} ({n_cfg})" if isinstance(params.nbands, str) else str(n_cfg)
        return [(float(n_cfg), label, {}), (float(n_tight), str(n_tight), {"nbands": n_tight})]
    raise ValueError(f"unknown setting {setting!r}")


def _scan(
    vol: VolumeResult,
    setting: str,
    params: Any,
    opts: ConvergeOptions,
    calcs: Mapping[tuple[str, str, float], Calculation],
) -> SettingScan:
    vals = _values_of(setting, params, vol.cell, vol.found.volume_per_atom, opts)
    got = [calcs[(vol.cell.name, setting, x)] if o else vol.found for x, _label, o in vals]
    tight = got[-1]
    out = []
    for (x, label, _o), c in zip(vals, got, strict=True):
        de = 1000.0 * (c.energy_per_atom - tight.energy_per_atom)
        dp = c.pressure_gpa - tight.pressure_gpa
        ok = abs(de) <= opts.energy_tol_mev and abs(dp) <= opts.pressure_tol_gpa
        out.append(SettingValue(x, label, c, de, dp, ok))
    idx = next(k for k, (_x, _label, o) in enumerate(vals) if not o)
    return SettingScan(vol.cell, setting, tuple(out), idx)


def _recommend(scans: Sequence[SettingScan], setting: str) -> Recommendation:
    mine = [s for s in scans if s.setting == setting]
    cfg_label = mine[0].config_value.label.split(" ")[0]  # "600", "0.03", "auto"
    picks = [s.loosest_converged for s in mine]
    # The tightest of the loosest: highest ecut or band count, smallest k-spacing.
    best = (min if setting == "kspacing" else max)(picks, key=lambda sv: sv.value)
    config_ok = all(s.config_value.converged for s in mine)
    label = cfg_label if config_ok else best.label
    if setting == "nbands" and not config_ok:
        # Band counts are per structure: a campaign needs a percentage of the occupied ones.
        from alcsp.oracle.gpaw import valence_electrons

        pct = max(
            math.ceil(
                100
                * s.loosest_converged.value
                / math.ceil(valence_electrons(s.cell.build(10.0)) / 2)
            )
            for s in mine
            if not s.config_value.converged
        )
        label = f'"{pct}%"'
    return Recommendation(
        setting=setting,
        value=best.value,
        label=label.removesuffix(" eV"),
        config_label=cfg_label,
        config_converged=config_ok,
        at_least=any(s.only_tightest and not s.config_value.converged for s in mine),
    )


# -- the check -----------------------------------------------------------------------------


def converge(
    config: CampaignConfig,
    workdir: str | Path,
    options: ConvergeOptions = ConvergeOptions(),
    *,
    source: str = "",
    progress: Callable[[str], None] | None = None,
) -> ConvergeResult:
    """Find each test cell's volume at the campaign pressure, then scan the settings there
    (see the module docstring); oracle jobs go under ``workdir``.

    Raises ``ConvergeError`` (one line: the problem and the fix) when the oracle is not
    supported or cannot run here, or when a calculation fails.
    """
    from alcsp.generate import start_volume_per_atom

    settings = scan_settings_of(config.oracle)
    runner = _Runner(config.oracle, Path(workdir), options, progress)
    runner.preflight()
    params = runner.oracle({}).params
    xc = params.xc if config.oracle.name == "gpaw" else None
    target = config.campaign.pressure
    cells = reference_cells(config.elements)
    default_b = config.generate.default_bulk_modulus_gpa

    t0 = time.perf_counter()

    def element_search(cell: TestCell) -> VolumeResult:
        el = cell.symbols[0]
        start, _v0 = start_volume_per_atom(el, config.generate)
        hinted = el in config.generate.element_volumes
        src = "[generate] element_volumes" if hinted else "Murnaghan estimate (alcsp.generate)"
        b0 = _bulk_modulus_guess(el, default_b)
        return _find_volume(runner, cell, target, start, src, b0, options, xc)

    elements = [c for c in cells if c.prototype == "fcc"]
    if options.jobs > 1 and len(elements) > 1:
        with ThreadPoolExecutor(max_workers=options.jobs) as pool:
            vols = list(pool.map(element_search, elements))
    else:
        vols = [element_search(c) for c in elements]
    by_element = {v.cell.symbols[0]: v for v in vols}
    for cell in cells:
        if cell.prototype != "B2":
            continue
        parts = [by_element[s] for s in cell.symbols]
        start = float(np.mean([p.volume_at_target for p in parts]))
        # The elements' measured bulk moduli are at the pressure; the step wants B(0).
        b_at_p = [p.bulk_modulus_gpa for p in parts if p.bulk_modulus_gpa is not None]
        if b_at_p:
            b0 = max(float(np.mean(b_at_p)) - B_PRIME * target, 0.25 * float(np.mean(b_at_p)))
        else:
            b0 = float(np.mean([_bulk_modulus_guess(s, default_b) for s in cell.symbols]))
        src = "mean of its elements' volumes"
        vols.append(_find_volume(runner, cell, target, start, src, b0, options, xc))
    volume_time = time.perf_counter() - t0

    t1 = time.perf_counter()
    jobs, keys = [], []
    for vol in vols:
        v = vol.found.volume_per_atom
        for s in settings:
            for x, label, override in _values_of(s, params, vol.cell, v, options):
                if override:
                    jobs.append((vol.cell, v, override, f"{s} {label}"))
                    keys.append((vol.cell.name, s, x))
    calcs = dict(zip(keys, runner.run(jobs), strict=True))
    scans = tuple(_scan(vol, s, params, options, calcs) for vol in vols for s in settings)
    scan_time = time.perf_counter() - t1

    note = ""
    if not settings:
        note = (
            f"{config.oracle.name} has no cutoff, k-points or bands: the settings scan does not "
            "apply (volumes at the pressure only)"
        )
    return ConvergeResult(
        source=source,
        oracle=config.oracle.name,
        parameters=params,
        pressure_gpa=target,
        options=options,
        volumes=tuple(vols),
        scans=scans,
        recommendations=tuple(_recommend(scans, s) for s in settings),
        scan_note=note,
        volume_time_s=volume_time,
        scan_time_s=scan_time,
        n_calculations=runner.n_calculations,
        workdir=str(Path(workdir).absolute()),
    )


# -- output --------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max([len(h), *(len(r[k]) for r in rows)]) for k, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if k in right else c.ljust(w)
            for k, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def _params_text(result: ConvergeResult) -> str:
    p = result.parameters
    if result.oracle == "gpaw":
        return (
            f"ecut {p.ecut:g} eV, kspacing {p.kspacing:g}, smearing {p.smearing:g} eV, "
            f"nbands {p.nbands}, {p.xc}"
        )
    is_instance = dataclasses.is_dataclass(p) and not isinstance(p, type)
    fields = dataclasses.asdict(p) if is_instance else {}
    return ", ".join(f"{k} {v}" for k, v in fields.items()) or "no settings"


def _paw_column(v: VolumeResult) -> str:
    if v.overlap is None:
        return "n/a"
    if not v.overlap:
        return "no overlap"
    return v.overlap.split(" (")[0].replace("PAW spheres overlap: ", "overlap ")


def format_result(result: ConvergeResult) -> str:
    """Plain aligned text: volumes, the settings table, verdicts, recommendations, times."""
    p_star = result.pressure_gpa
    opts = result.options
    p_tol = max(opts.volume_rtol * abs(p_star), opts.volume_atol_gpa)
    lines = [
        f"alcsp converge {result.source}: {result.oracle} ({_params_text(result)}) "
        f"at {p_star:g} GPa",
        "E0 = zero-smearing energy per atom (Label.hull_energy, the hulls' energy); "
        "P = -trace(stress)/3",
        "",
        f"Volumes at {p_star:g} GPa (single points at the config's settings, |P - {p_star:g}| "
        f"<= {p_tol:.3g} GPa; V in Å³/atom)",
    ]
    rows = [
        [
            v.cell.name,
            f"{v.start_volume:.3f}",
            f"{v.found.volume_per_atom:.3f}",
            f"{v.found.pressure_gpa:.1f}",
            f"{v.volume_at_target:.3f}",
            "-" if v.bulk_modulus_gpa is None else f"{v.bulk_modulus_gpa:.0f}",
            str(len(v.points)),
            "yes" if v.converged else "NO",
            _paw_column(v),
        ]
        for v in result.volumes
    ]
    header = [
        "cell",
        "start V",
        "V",
        "P (GPa)",
        f"V at {p_star:g} GPa",
        "B (GPa)",
        "steps",
        "found",
        "PAW spheres",
    ]
    lines += _table(header, rows, right={1, 2, 3, 4, 5, 6})
    lines.append(
        "(start V: " + "; ".join(f"{v.cell.name} {v.start_source}" for v in result.volumes) + ")"
    )
    for v in result.volumes:
        if v.overlap:
            lines.append(
                f"warning: {v.cell.name} at {v.found.volume_per_atom:.3f} Å³/atom: {v.overlap}"
            )
        if not v.converged:
            lines.append(
                f"warning: {v.cell.name}: no volume within the pressure tolerance after "
                f"{len(v.points)} steps (nearest: {v.found.pressure_gpa:.1f} GPa)"
            )
    hints = ", ".join(f"{e} = {x:.2f}" for e, x in result.element_volumes)
    lines += ["", f"[generate] element_volumes = {{ {hints} }}   # Å³/atom at {p_star:g} GPa"]
    if result.scan_note:
        lines += ["", result.scan_note]
    else:
        lines += [
            "",
            "Settings at each cell's volume, one at a time, the others at the config's values "
            f"(ΔE, ΔP against the tightest value; converged: |ΔE| <= {opts.energy_tol_mev:g} "
            f"meV/atom and |ΔP| <= {opts.pressure_tol_gpa:g} GPa; * = the config's value)",
        ]
        rows = []
        for s in result.scans:
            for k, sv in enumerate(s.values):
                rows.append(
                    [
                        s.cell.name if k == 0 else "",
                        s.setting if k == 0 else "",
                        sv.label + (" *" if k == s.config_index else ""),
                        f"{sv.calc.energy_per_atom:.5f}",
                        f"{sv.calc.pressure_gpa:.2f}",
                        f"{sv.d_energy_mev:+.1f}",
                        f"{sv.d_pressure_gpa:+.2f}",
                        "yes" if sv.converged else "NO",
                        f"{sv.calc.wall_time_s:.1f}",
                    ]
                )
        header = [
            "cell",
            "setting",
            "value",
            "E0 (eV/atom)",
            "P (GPa)",
            "ΔE (meV/atom)",
            "ΔP (GPa)",
            "converged",
            "wall (s)",
        ]
        lines += _table(header, rows, right={3, 4, 5, 6, 8})
        lines += ["", "Verdicts:", *(f"  {s.verdict}" for s in result.scans)]
        lines += ["", "Recommended [oracle] parameters:"]
        lines += [f"  {r.sentence}" for r in result.recommendations]
    n_vol = sum(len(v.points) for v in result.volumes)
    lines += [
        "",
        f"Wall time: volumes {result.volume_time_s:.0f} s ({n_vol} calculations), settings "
        f"{result.scan_time_s:.0f} s ({result.n_calculations - n_vol} calculations), total "
        f"{result.volume_time_s + result.scan_time_s:.0f} s",
    ]
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def result_to_json(result: ConvergeResult) -> dict[str, Any]:
    """The full result as JSON-ready data (what ``alcsp converge --json`` writes)."""
    out = _jsonable(result)
    out["energy"] = "E0: zero-smearing energy per atom (Label.hull_energy)"
    out["element_volumes"] = dict(result.element_volumes)
    out["converged"] = result.converged
    out["verdicts"] = [s.verdict for s in result.scans]
    out["recommended"] = [r.sentence for r in result.recommendations]
    out["units"] = {
        "volume": "Å³/atom",
        "energy": "eV/atom",
        "d_energy": "meV/atom",
        "pressure": "GPa",
        "kspacing": "2π/Å",
        "ecut": "eV",
        "time": "s",
    }
    return out
