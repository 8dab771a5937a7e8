"""The ``labels`` table: oracle outcomes (a ``Label`` or a recorded ``LabelFailure``), one
per (structure, oracle), written with upsert semantics."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from alcsp.oracle.base import FailureKind, Label, LabelFailure, LabelResult
from alcsp.store.db import _CHUNK
from alcsp.store.records import LabelCost
from alcsp.store.repository import Repository


class LabelRepository(Repository):
    """Rows of ``labels``: a success is never overwritten, a failure only by a later
    success. Also the training set (labelled structures, joined with ``structures``)."""

    def add(self, results: Sequence[tuple[int, LabelResult]], iteration: int) -> None:
        """Record oracle outcomes ``(structure_id, Label | LabelFailure)`` in one
        transaction. Never duplicates: a success is kept as is, a failure is replaced only
        by a later success."""
        rows = self.rows(results, iteration)
        with self._tx() as c:
            self.insert_rows(c, rows)

    @staticmethod
    def rows(results: Sequence[tuple[int, LabelResult]], iteration: int) -> list[tuple]:
        """The rows of outcomes ``(structure_id, Label | LabelFailure)`` for
        ``insert_rows``."""
        now = time.time()
        rows: list[tuple] = []
        for sid, r in results:
            if isinstance(r, Label):
                stress = np.ascontiguousarray(r.stress, dtype=np.float64)
                # An all-NaN stress means "not computed" (imported data): stored as NULL.
                sb = None if np.isnan(stress).all() else stress.tobytes()
                rows.append(
                    (
                        int(sid),
                        r.oracle,
                        1,
                        float(r.energy),
                        np.ascontiguousarray(r.forces, dtype=np.float64).tobytes(),
                        sb,
                        None if r.energy_zero is None else float(r.energy_zero),
                        None,
                        None,
                        r.wall_time,
                        r.attempts,
                        iteration,
                        now,
                    )
                )
            elif isinstance(r, LabelFailure):
                rows.append(
                    (
                        int(sid),
                        r.oracle,
                        0,
                        None,
                        None,
                        None,
                        None,
                        FailureKind(r.kind).value,
                        r.reason,
                        r.wall_time,
                        r.attempts,
                        iteration,
                        now,
                    )
                )
            else:
                raise TypeError(f"expected Label or LabelFailure, got {type(r).__name__}")
        return rows

    @staticmethod
    def insert_rows(c: sqlite3.Connection, rows: list[tuple]) -> None:
        """Upsert ``rows`` (from ``rows``) inside the caller's transaction ``c``."""
        c.executemany(
            "INSERT INTO labels(structure_id, oracle, ok, energy, forces, stress, energy_zero, "
            "failure_kind, failure_reason, wall_time, attempts, iteration, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(structure_id, oracle) DO UPDATE SET ok = excluded.ok, "
            "energy = excluded.energy, forces = excluded.forces, stress = excluded.stress, "
            "energy_zero = excluded.energy_zero, "
            "failure_kind = excluded.failure_kind, failure_reason = excluded.failure_reason, "
            "wall_time = excluded.wall_time, attempts = excluded.attempts, "
            "iteration = excluded.iteration, created = excluded.created "
            "WHERE labels.ok = 0 AND excluded.ok = 1",
            rows,
        )

    def labelled_ids(self, oracle: str, include_failures: bool = True) -> set[int]:
        """Structures with an outcome from ``oracle`` (successes, and failures unless told
        otherwise)."""
        q = "SELECT structure_id FROM labels WHERE oracle = ?" + (
            "" if include_failures else " AND ok = 1"
        )
        return {r[0] for r in self.conn.execute(q, (oracle,))}

    def get(self, structure_ids: Sequence[int], oracle: str) -> dict[int, LabelResult]:
        """Outcomes of ``oracle`` for the given structures that have one."""
        ids = [int(i) for i in structure_ids]
        out: dict[int, LabelResult] = {}
        for s in range(0, len(ids), _CHUNK):
            chunk = ids[s : s + _CHUNK]
            q = (
                "SELECT l.structure_id, s.n_atoms, l.ok, l.energy, l.forces, l.stress, "
                "l.failure_kind, l.failure_reason, l.wall_time, l.attempts, l.energy_zero "
                "FROM labels l "
                "JOIN structures s ON s.id = l.structure_id WHERE l.oracle = ? AND "
                f"l.structure_id IN ({','.join('?' * len(chunk))})"
            )
            for sid, n, ok, e, fb, sb, kind, reason, wt, att, e0 in self.conn.execute(
                q, [oracle, *chunk]
            ):
                if ok:
                    stress = (
                        np.full((3, 3), np.nan)
                        if sb is None
                        else np.frombuffer(sb, dtype=np.float64).reshape(3, 3)
                    )
                    out[sid] = Label(
                        e,
                        np.frombuffer(fb, dtype=np.float64).reshape(n, 3),
                        stress,
                        oracle,
                        wt or 0.0,
                        att or 1,
                        energy_zero=e0,
                    )
                else:
                    out[sid] = LabelFailure(FailureKind(kind), reason, oracle, wt or 0.0, att or 1)
        return out

    def labelled_before(self, oracle: str, iteration: int) -> set[int]:
        """Structures with an outcome from ``oracle`` recorded before ``iteration`` (the
        final stage's labels, iteration -1, included)."""
        q = "SELECT structure_id FROM labels WHERE oracle = ? AND iteration < ?"
        return {r[0] for r in self.conn.execute(q, (oracle, iteration))}

    def totals(self) -> tuple[int, int]:
        """(successful, failed) outcomes of every oracle, all iterations."""
        ok, n = self.conn.execute("SELECT COALESCE(SUM(ok), 0), COUNT(*) FROM labels").fetchone()
        return int(ok), int(n) - int(ok)

    def oracles(self) -> list[str]:
        """The oracles with at least one successful label, by name."""
        q = "SELECT DISTINCT oracle FROM labels WHERE ok = 1 ORDER BY oracle"
        return [r[0] for r in self.conn.execute(q)]

    def cost(self) -> list[LabelCost]:
        """Oracle single points per iteration (the final stage's as iteration -1)."""
        q = (
            "SELECT iteration, COUNT(*), COALESCE(SUM(ok), 0), COALESCE(SUM(wall_time), 0) "
            "FROM labels GROUP BY iteration ORDER BY iteration"
        )
        return [
            LabelCost(int(i), int(n), int(ok), float(t)) for i, n, ok, t in self.conn.execute(q)
        ]

    def failures(self, oracle: str | None = None) -> list[tuple[int, str, str, str]]:
        """Recorded failures as (structure_id, oracle, kind, reason)."""
        q = "SELECT structure_id, oracle, failure_kind, failure_reason FROM labels WHERE ok = 0"
        args: tuple = ()
        if oracle is not None:
            q += " AND oracle = ?"
            args = (oracle,)
        return [tuple(r) for r in self.conn.execute(q + " ORDER BY id", args)]

    def training_set(
        self, oracle: str | None = None, max_iteration: int | None = None
    ) -> list[Atoms]:
        """Successfully labelled structures as ``Atoms`` with a ``SinglePointCalculator``
        in ASE's vocabulary: ``free_energy`` the force-consistent F (what training uses,
        ``get_potential_energy(force_consistent=True)``), ``energy`` the zero-smearing E0
        (what hulls use, ``get_potential_energy()``), forces eV/Å, stress eV/Å³ when known.
        Failures and reference phases are never included. ``atoms.info``: structure_id,
        oracle, iteration, origin."""
        q = (
            "SELECT s.id, s.n_atoms, s.numbers, s.positions, s.cell, s.origin, l.oracle, "
            "l.iteration, l.energy, l.forces, l.stress, l.energy_zero FROM labels l "
            "JOIN structures s "
            "ON s.id = l.structure_id WHERE l.ok = 1 AND s.origin != 'reference'"
        )
        args: list[Any] = []
        if oracle is not None:
            q += " AND l.oracle = ?"
            args.append(oracle)
        if max_iteration is not None:
            q += " AND l.iteration <= ?"
            args.append(max_iteration)
        out = []
        for sid, n, nb, pb, cb, origin, orc, it, e, fb, sb, e0 in self.conn.execute(
            q + " ORDER BY l.id", args
        ):
            a = Atoms(
                numbers=np.frombuffer(nb, dtype=np.uint8).astype(int),
                positions=np.frombuffer(pb, dtype=np.float64).reshape(n, 3),
                cell=np.frombuffer(cb, dtype=np.float64).reshape(3, 3),
                pbc=True,
            )
            results: dict[str, Any] = {
                "energy": e if e0 is None else e0,
                "free_energy": e,
                "forces": np.frombuffer(fb, dtype=np.float64).reshape(n, 3).copy(),
            }
            if sb is not None:
                results["stress"] = np.frombuffer(sb, dtype=np.float64).reshape(3, 3).copy()
            a.calc = SinglePointCalculator(a, **results)
            a.info.update(structure_id=sid, oracle=orc, iteration=it, origin=origin)
            out.append(a)
        return out

    def counts(self, iteration: int, oracle: str | None = None) -> tuple[int, int]:
        """(successful, failed) labels recorded in ``iteration``."""
        q = (
            "SELECT COALESCE(SUM(ok), 0), COUNT(*) - COALESCE(SUM(ok), 0) FROM labels "
            "WHERE iteration = ?"
        )
        args: list[Any] = [iteration]
        if oracle is not None:
            q += " AND oracle = ?"
            args.append(oracle)
        ok, failed = self.conn.execute(q, args).fetchone()
        return int(ok), int(failed)
