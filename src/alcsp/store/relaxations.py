"""The ``relaxations`` table: relaxations by a potential (the ACNN's, ``method`` acnn) of
one structure each, their outcome, fingerprint and E_hull. A relaxation's final geometry is
a row of ``structures``; ``CampaignStore.add_relaxed`` writes both in one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

import numpy as np

from alcsp.store.db import _CHUNK, RELAX_STATUSES
from alcsp.store.records import RelaxationRecord, RelaxationTable
from alcsp.store.repository import Repository
from alcsp.vocab import RelaxStatus


class RelaxationRepository(Repository):
    """Rows of ``relaxations``, one per (initial structure, method); read as a
    ``RelaxationTable`` of columns."""

    @staticmethod
    def check(records: Iterable[RelaxationRecord]) -> None:
        """Raise ``ValueError`` unless every record's status is one of ``RELAX_STATUSES``."""
        for r in records:
            if r.status not in RELAX_STATUSES:
                raise ValueError(f"relaxation status {r.status!r} is not one of {RELAX_STATUSES}")

    @staticmethod
    def relaxed_among(c: sqlite3.Connection, method: str, initial_ids: Sequence[int]) -> set[int]:
        """Those of ``initial_ids`` that have a relaxation by ``method``, read inside the
        caller's transaction ``c``."""
        done: set[int] = set()
        for s in range(0, len(initial_ids), _CHUNK):
            chunk = initial_ids[s : s + _CHUNK]
            done.update(
                r[0]
                for r in c.execute(
                    "SELECT initial_id FROM relaxations WHERE method = ? AND initial_id IN "
                    f"({','.join('?' * len(chunk))})",
                    [method, *chunk],
                )
            )
        return done

    @staticmethod
    def insert_rows(
        c: sqlite3.Connection,
        structure_ids: Sequence[int],
        records: Sequence[RelaxationRecord],
        compositions: Sequence[str],
        iteration: int,
        method: str,
    ) -> list[int]:
        """Insert the relaxations ``records`` (final geometries ``structure_ids``, of
        ``compositions``) inside the caller's transaction ``c``; return their ids."""
        start = c.execute("SELECT COALESCE(MAX(id), 0) FROM relaxations").fetchone()[0] + 1
        rel_rows = []
        for j, (sid, r, comp) in enumerate(zip(structure_ids, records, compositions, strict=True)):
            fp = (
                None
                if r.fingerprint is None
                else np.ascontiguousarray(r.fingerprint, dtype=np.float32).tobytes()
            )
            rel_rows.append(
                (
                    start + j,
                    sid,
                    r.initial_id,
                    method,
                    comp,
                    r.status,
                    r.reason or None,
                    float(r.energy),
                    float(r.enthalpy_per_atom),
                    float(r.volume),
                    int(r.steps),
                    float(r.pressure),
                    iteration,
                    fp,
                )
            )
        c.executemany(
            "INSERT INTO relaxations(id, structure_id, initial_id, method, composition, "
            "status, reason, energy, enthalpy_per_atom, volume, steps, pressure, iteration, "
            "fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rel_rows,
        )
        return list(range(start, start + len(rel_rows)))

    def initial_ids(self, method: str = "acnn") -> set[int]:
        """Initial structures that already have a relaxation by ``method`` (to resume)."""
        q = "SELECT initial_id FROM relaxations WHERE method = ? AND initial_id IS NOT NULL"
        return {r[0] for r in self.conn.execute(q, (method,))}

    def select(
        self,
        iteration: int | None = None,
        status: str | None = None,
        composition: str | None = None,
        method: str | None = None,
    ) -> RelaxationTable:
        """The relaxations matching all the filters given, ordered by id."""
        where, args = [], []
        for col, val in (
            ("iteration", iteration),
            ("status", status),
            ("composition", composition),
            ("method", method),
        ):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        q = f"SELECT {', '.join(RelaxationTable.columns())} FROM relaxations"
        q += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return RelaxationTable.from_rows(self.conn.execute(q, args).fetchall())

    def volumes_per_atom(
        self, method: str = "acnn", status: str = RelaxStatus.CONVERGED
    ) -> tuple[np.ndarray, np.ndarray]:
        """(composition keys [R], final volume per atom [R] Å³) of the relaxations by
        ``method`` with ``status`` (the generator's volume hints)."""
        rows = self.conn.execute(
            "SELECT r.composition, r.volume / s.n_atoms FROM relaxations r JOIN structures s "
            "ON s.id = r.structure_id WHERE r.method = ? AND r.status = ? ORDER BY r.id",
            (method, status),
        ).fetchall()
        return (
            np.array([r[0] for r in rows], dtype=object),
            np.array([r[1] for r in rows], dtype=float),
        )

    def fingerprints(self, relaxation_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored fingerprints (float32 [d]) of the given relaxations that have one."""
        ids = [int(i) for i in relaxation_ids]
        out = {}
        for s in range(0, len(ids), _CHUNK):
            chunk = ids[s : s + _CHUNK]
            q = (
                "SELECT id, fingerprint FROM relaxations WHERE fingerprint IS NOT NULL AND "
                f"id IN ({','.join('?' * len(chunk))})"
            )
            for rid, fb in self.conn.execute(q, chunk):
                out[rid] = np.frombuffer(fb, dtype=np.float32)
        return out

    def set_e_hull(self, relaxation_ids: Sequence[int], e_hull: Sequence[float]) -> None:
        """Record E_hull (eV/atom) of relaxations, in one transaction."""
        if len(relaxation_ids) != len(e_hull):
            raise ValueError(f"{len(relaxation_ids)} ids for {len(e_hull)} E_hull values")
        with self._tx() as c:
            c.executemany(
                "UPDATE relaxations SET e_hull = ? WHERE id = ?",
                [(float(e), int(i)) for i, e in zip(relaxation_ids, e_hull, strict=True)],
            )
