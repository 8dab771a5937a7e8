"""Typed records of the store's tables (what its queries return)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from alcsp.vocab import RelaxStatus


@dataclass(frozen=True)
class RelaxationRecord:
    """The outcome of relaxing one structure (its final geometry is stored alongside)."""

    status: str  # converged | max_steps | unphysical
    energy: float  # eV
    enthalpy_per_atom: float  # eV/atom
    volume: float  # Å³
    steps: int
    pressure: float  # GPa
    reason: str = ""
    initial_id: int | None = None
    fingerprint: np.ndarray | None = None  # [d]


@dataclass(frozen=True)
class OracleRelaxationRecord:
    """One oracle relaxation (``CampaignStore.add_oracle_relaxation``)."""

    parent_id: int
    structure_id: int | None  # final geometry; None when the relaxation failed
    stage: str
    round: int
    status: str  # converged | max_steps | time_limit | failed
    steps: int
    calls: int
    wall_time: float
    reason: str | None


@dataclass(frozen=True)
class ModelErrors:
    """Errors of model n on the labels of iteration n (RMSE; the paper's Fig. 3)."""

    energy_mev_per_atom: float
    force_mev_per_a: float
    stress_gpa: float
    n_structures: int


@dataclass(frozen=True)
class IterationCounts:
    """What one iteration did: the ``counts`` of its ``iterations`` row (JSON in the store,
    ``IterationRecord.counts``). Written whole by the loop after the search and at the end;
    a count a campaign did not store (an older version's, an iteration not finished) reads
    as 0, and ``validation`` as None."""

    relaxations: int = 0  # ACNN relaxations stored in the iteration
    converged: int = 0
    max_steps: int = 0
    unphysical: int = 0
    relaxed: int = 0  # relaxed by the run that finished the search (after a resume, fewer)
    selected: int = 0  # chosen for the oracle
    labelled: int = 0  # successful oracle labels
    label_failures: int = 0
    validation: ModelErrors | None = None  # None: no new label to validate on

    @classmethod
    def of_relaxations(cls, rel: RelaxationTable) -> IterationCounts:
        """The counts of the relaxations ``rel`` by outcome (the rest 0)."""
        return cls(
            relaxations=len(rel),
            converged=rel.count(RelaxStatus.CONVERGED),
            max_steps=rel.count(RelaxStatus.MAX_STEPS),
            unphysical=rel.count(RelaxStatus.UNPHYSICAL),
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IterationCounts:
        names = {f.name for f in fields(cls)} - {"validation"}
        v = data.get("validation") or {}
        errors = {f.name for f in fields(ModelErrors)}
        return cls(
            **{k: int(data[k]) for k in names if data.get(k) is not None},
            validation=ModelErrors(**{k: v[k] for k in errors}) if errors <= set(v) else None,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IterationRecord:
    index: int
    stage: str
    counts: dict[str, Any]
    timings: dict[str, float]
    hull: Any
    started: float
    finished: float | None


@dataclass(frozen=True)
class LabelCost:
    """Oracle single points recorded in one iteration (-1: the final stage's)."""

    iteration: int
    jobs: int
    ok: int
    wall_time: float  # s, sum over the jobs

    @property
    def failed(self) -> int:
        return self.jobs - self.ok


@dataclass(frozen=True)
class ModelRecord:
    id: int
    iteration: int
    path: str
    metrics: dict[str, Any]
    created: float


@dataclass(frozen=True)
class RelaxationTable:
    """Rows of the ``relaxations`` table as column arrays, one entry per relaxation, in id
    order (``CampaignStore.relaxations``). ``initial_id`` is -1 where there is none;
    missing floats are NaN."""

    id: np.ndarray  # [R] int64 relaxation ids
    structure_id: np.ndarray  # [R] int64 final geometries
    initial_id: np.ndarray  # [R] int64 starting geometries (-1: none)
    composition: np.ndarray  # [R] object, composition keys
    status: np.ndarray  # [R] object, RelaxStatus values
    reason: np.ndarray  # [R] object, why it stopped (None when converged)
    energy: np.ndarray  # [R] float eV
    enthalpy_per_atom: np.ndarray  # [R] float eV/atom
    volume: np.ndarray  # [R] float Å³
    steps: np.ndarray  # [R] int64
    pressure: np.ndarray  # [R] float GPa
    iteration: np.ndarray  # [R] int64
    e_hull: np.ndarray  # [R] float eV/atom (NaN: not on an ACNN hull)

    INT_COLUMNS = ("id", "structure_id", "steps", "iteration")
    TEXT_COLUMNS = ("composition", "status", "reason")

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_rows(cls, rows: list[tuple]) -> RelaxationTable:
        """From query rows holding ``columns()`` in order."""
        out: dict[str, np.ndarray] = {}
        for j, col in enumerate(cls.columns()):
            vals = [r[j] for r in rows]
            if col in cls.INT_COLUMNS:
                out[col] = np.array(vals, dtype=np.int64)
            elif col in cls.TEXT_COLUMNS:
                out[col] = np.array(vals, dtype=object)
            elif col == "initial_id":
                out[col] = np.array([-1 if v is None else v for v in vals], dtype=np.int64)
            else:
                out[col] = np.array([np.nan if v is None else v for v in vals], dtype=float)
        return cls(**out)

    def __len__(self) -> int:
        return len(self.id)

    def take(self, index: np.ndarray) -> RelaxationTable:
        """The rows ``index`` (a boolean mask [R] or integer indices)."""
        return RelaxationTable(**{c: getattr(self, c)[index] for c in self.columns()})

    def count(self, status: str) -> int:
        """Number of relaxations that ended with ``status``."""
        return int((self.status == status).sum())
