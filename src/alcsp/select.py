"""Which relaxed structures get a DFT label: the paper's composition-wise rule (section II.C).

1. Rank compositions by the E_hull of their best converged structure; keep the ``c_max``
   lowest (only compositions with at least one structure still eligible count).
2. From each, take the ``l_max`` lowest-enthalpy unique structures.
3. Add every unconverged (``"max_steps"``) and unphysical (``"unphysical"``) structure.

Structures already labelled (by id) or duplicates of labelled ones (a ``Deduplicator`` of the
labelled set) are never selected.

``rule = "committee"`` changes two things (issue 12; no peer ranks by hull *and* model
uncertainty together): compositions and the structures within each are ranked by a lower
confidence bound, E_hull − κ·σ and H − κ·σ, σ the committee's energy spread (eV/atom) at
the relaxed geometry, so that an uncertain low-lying structure is labelled before a certain
one a little lower — except the first ``exploit`` picks of each composition (default 0),
which go by the model's enthalpy alone, so that its best guess is labelled too (measured on
Cu–Au, 4 seeds: 1 of 4 exact hulls with 0 and with 1; docs/discovery.md); and the
failures are labelled at the first trajectory frame where the committee's force deviation
crossed ``force_deviation`` (the campaign swaps the candidate's id for that frame's), not
at the collapsed end geometry. ``rule = "paper"`` is the paper's rule, kept for comparison.

``cap_selection`` bounds an iteration's labels (the per-iteration oracle cap), with the
failures limited to a share of the cap, and takes minima round robin over the compositions.

``b_max`` ends the search phase of an iteration: the search stops once the number of
unphysical structures exceeds it (``search_should_stop``). The three sizes can change
between iterations (``SelectionSchedule``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from alcsp.dedup import DedupConfig, Deduplicator
from alcsp.vocab import RelaxStatus

__all__ = [
    "RULES",
    "STATUSES",
    "Candidate",
    "Selection",
    "SelectionConfig",
    "SelectionSchedule",
    "cap_selection",
    "search_should_stop",
    "select_for_labelling",
]

#: Relaxation outcomes a candidate can have.
STATUSES = tuple(RelaxStatus)
#: Selection rules: the paper's, and hull plus committee uncertainty.
RULES = ("paper", "committee")


@dataclass(frozen=True)
class Candidate:
    """One relaxed structure as the selection sees it."""

    id: str
    composition: str  # composition key (alcsp.compositions.composition_key)
    enthalpy_per_atom: float  # eV/atom
    e_hull: float  # eV/atom (may be NaN for failed relaxations)
    status: str  # one of STATUSES
    fingerprint: np.ndarray | None = field(default=None, compare=False, repr=False)
    spread: float = 0.0  # eV/atom, committee energy standard deviation (0 = no committee)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(
                f"candidate {self.id}: unknown status {self.status!r}; use one of {STATUSES}."
            )
        if self.status == RelaxStatus.CONVERGED and not (
            math.isfinite(self.enthalpy_per_atom) and math.isfinite(self.e_hull)
        ):
            raise ValueError(
                f"candidate {self.id}: a converged structure needs a finite enthalpy and e_hull."
            )


@dataclass(frozen=True)
class SelectionConfig:
    """Sizes of one iteration's selection (the paper's C_max, L_max, B_max)."""

    c_max: int = 300  # compositions with the lowest E_hull
    l_max: int = 3  # lowest-enthalpy unique structures per composition
    b_max: int = 1000  # unphysical structures that end the search phase
    include_unconverged: bool = True  # add every "max_steps" structure
    include_unphysical: bool = True  # add every "unphysical" structure
    rule: str = "paper"  # one of RULES
    kappa: float = 1.0  # committee rule: rank by E_hull - kappa * spread
    force_deviation: float = 1.0  # eV/Å, committee rule: trust level of the force deviation
    exploit: int = 0  # committee rule: picks per composition by enthalpy before the LCB ones

    def __post_init__(self) -> None:
        for name in ("c_max", "l_max", "b_max", "exploit"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {list(RULES)}, got {self.rule!r}")
        for name in ("kappa", "force_deviation"):
            v = getattr(self, name)
            if not (
                isinstance(v, int | float)
                and not isinstance(v, bool)
                and math.isfinite(v)
                and v >= 0
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.force_deviation == 0:
            raise ValueError("force_deviation must be > 0 eV/Å (the trust level; e.g. 1.0)")

    @property
    def uses_committee(self) -> bool:
        return self.rule == "committee"


@dataclass(frozen=True)
class SelectionSchedule:
    """Piecewise-constant sizes: ``steps`` maps a first iteration to the config from then on.

    ``SelectionSchedule.from_list([a, b])`` uses ``a`` at iteration 0 and ``b`` from 1 on (the
    last is repeated); ``SelectionSchedule({0: a, 5: b})`` switches at iteration 5.
    """

    steps: Mapping[int, SelectionConfig]

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("SelectionSchedule: give at least one SelectionConfig.")
        if 0 not in self.steps:
            raise ValueError("SelectionSchedule: the schedule must start at iteration 0.")
        for k, v in self.steps.items():
            if not isinstance(k, int) or k < 0:
                raise ValueError(f"SelectionSchedule: iteration {k!r} must be an integer >= 0.")
            if not isinstance(v, SelectionConfig):
                raise ValueError(f"SelectionSchedule: iteration {k} needs a SelectionConfig.")
        object.__setattr__(self, "steps", dict(sorted(self.steps.items())))

    @classmethod
    def from_list(cls, configs: Sequence[SelectionConfig]) -> SelectionSchedule:
        return cls(dict(enumerate(configs)))

    def for_iteration(self, iteration: int) -> SelectionConfig:
        """The config in force at ``iteration`` (0-based)."""
        if iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {iteration}.")
        start = max(k for k in self.steps if k <= iteration)
        return self.steps[start]


def search_should_stop(n_unphysical: int, b_max: int) -> bool:
    """True once the unphysical structures found in this search exceed ``b_max``."""
    return n_unphysical > b_max


@dataclass(frozen=True)
class Selection:
    """The structures to label, and why."""

    minima: tuple[Candidate, ...]  # converged: l_max per chosen composition
    failures: tuple[Candidate, ...]  # max_steps and unphysical
    compositions: tuple[str, ...]  # the chosen compositions, lowest E_hull first
    n_excluded_labelled: int  # candidates skipped as labelled or duplicates of labelled
    n_excluded_duplicates: int  # converged candidates skipped as duplicates of a picked one

    @property
    def selected(self) -> tuple[Candidate, ...]:
        return self.minima + self.failures

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.selected]


def select_for_labelling(
    candidates: Iterable[Candidate],
    config: SelectionConfig,
    *,
    labelled_ids: Iterable[str] = (),
    labelled: Deduplicator | None = None,
    dedup: DedupConfig | None = None,
) -> Selection:
    """Apply the composition-wise rule to ``candidates`` (see module docstring).

    ``labelled`` (optional) holds the labelled structures; a candidate matching one is
    excluded (then every candidate needs a fingerprint). Within a composition, candidates are
    also deduplicated among themselves with ``dedup`` (default ``DedupConfig()``) when they
    carry fingerprints. Output order: compositions by E_hull, structures by enthalpy, then
    failures by id.
    """
    cands = list(candidates)
    done = set(labelled_ids)
    seen_ids: set[str] = set()
    for c in cands:
        if c.id in seen_ids:
            raise ValueError(f"candidate id {c.id!r} appears twice; ids must be unique.")
        seen_ids.add(c.id)
        if labelled is not None and c.fingerprint is None and c.status == RelaxStatus.CONVERGED:
            raise ValueError(
                f"candidate {c.id} has no fingerprint; it is needed to check it against the "
                "labelled structures (or pass labelled=None)."
            )

    def is_labelled(c: Candidate) -> bool:
        if c.id in done:
            return True
        # A failed relaxation may have no fingerprint (a geometry too broken to describe);
        # it is then matched by id only.
        return (
            labelled is not None
            and c.fingerprint is not None
            and math.isfinite(c.enthalpy_per_atom)
            and labelled.check(c.composition, c.enthalpy_per_atom, c.fingerprint) is not None
        )

    eligible = [c for c in cands if not is_labelled(c)]
    n_labelled = len(cands) - len(eligible)

    kappa = config.kappa if config.uses_committee else 0.0

    def lcb(value: float, c: Candidate) -> float:
        return value - kappa * c.spread  # the paper's rule: kappa = 0

    # composition E_hull: its best converged structure among all candidates
    comp_e: dict[str, float] = {}
    for c in cands:
        if c.status == RelaxStatus.CONVERGED:
            comp_e[c.composition] = min(comp_e.get(c.composition, math.inf), lcb(c.e_hull, c))
    by_comp: dict[str, list[Candidate]] = {}
    for c in eligible:
        if c.status == RelaxStatus.CONVERGED:
            by_comp.setdefault(c.composition, []).append(c)
    ranked = sorted(by_comp, key=lambda k: (comp_e[k], k))[: config.c_max]

    minima: list[Candidate] = []
    n_dup = 0
    greedy = config.exploit if kappa > 0 else 0  # kappa = 0: the one order is the enthalpy's
    for k in ranked:
        by_h = sorted(by_comp[k], key=lambda c: (c.enthalpy_per_atom, c.id))
        by_lcb = sorted(by_comp[k], key=lambda c: (lcb(c.enthalpy_per_atom, c), c.id))
        picked, dups = _pick(k, [(by_h, min(greedy, config.l_max)), (by_lcb, config.l_max)], dedup)
        minima += picked
        n_dup += dups

    failures = []
    for c in sorted(eligible, key=lambda c: c.id):
        if (c.status == RelaxStatus.MAX_STEPS and config.include_unconverged) or (
            c.status == RelaxStatus.UNPHYSICAL and config.include_unphysical
        ):
            failures.append(c)
    return Selection(tuple(minima), tuple(failures), tuple(ranked), n_labelled, n_dup)


def _pick(
    key: str, passes: list[tuple[list[Candidate], int]], dedup: DedupConfig | None
) -> tuple[list[Candidate], int]:
    """One composition's picks: each (order, limit) pass takes candidates in its order until
    ``limit`` are picked in all, skipping fingerprint duplicates of the picks and
    candidates an earlier pass considered. Returns the picks and the duplicates skipped."""
    local = Deduplicator(dedup)
    picked: list[Candidate] = []
    tried: set[str] = set()
    n_dup = 0
    for order, limit in passes:
        for c in order:
            if len(picked) >= limit:
                break
            if c.id in tried:
                continue
            tried.add(c.id)
            if c.fingerprint is not None:
                if local.add(c.id, key, c.enthalpy_per_atom, c.fingerprint) is not None:
                    n_dup += 1
                    continue
            picked.append(c)
    return picked, n_dup


def cap_selection(selection: Selection, cap: int | None, failure_share: float) -> Selection:
    """At most ``cap`` structures (None = no cap): failures at most ⌊failure_share·cap⌋,
    minima the rest, taken round robin over the compositions (every chosen composition's
    best before any second best), each composition's own order kept."""
    if (
        cap is None
        or cap >= len(selection.selected)
        and (len(selection.failures) <= math.floor(failure_share * cap))
    ):
        return selection
    if cap < 0 or not 0 <= failure_share <= 1:
        raise ValueError(
            f"cap must be >= 0 and failure_share in [0, 1], got {cap}, {failure_share}"
        )
    n_fail = min(len(selection.failures), math.floor(failure_share * cap))
    n_min = min(len(selection.minima), cap - n_fail)
    queues: dict[str, list[Candidate]] = {}
    for c in selection.minima:
        queues.setdefault(c.composition, []).append(c)
    order: list[Candidate] = []
    while len(order) < n_min:
        for k in selection.compositions:
            if queues.get(k) and len(order) < n_min:
                order.append(queues[k].pop(0))
    kept = {c.id for c in order}
    minima = tuple(c for c in selection.minima if c.id in kept)
    return replace(selection, minima=minima, failures=selection.failures[:n_fail])
