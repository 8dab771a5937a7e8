"""The ``oracle_relaxations`` table: relaxations by the oracle (reference phases and the
final stage), one per (structure, stage), with their cost; and the oracle work a campaign
spent (these relaxations and the single points in ``labels``). A relaxation's final
geometry and its label are rows of ``structures`` and ``labels``;
``CampaignStore.add_oracle_relaxation`` writes all three in one transaction."""

from __future__ import annotations

import sqlite3

from alcsp.store.db import ORACLE_RELAX_STAGES
from alcsp.store.records import OracleRelaxationRecord
from alcsp.store.repository import Repository


class OracleRelaxationRepository(Repository):
    """Rows of ``oracle_relaxations`` as ``OracleRelaxationRecord``s, and oracle cost
    totals (evaluations, wall time) read from them and from ``labels``."""

    @staticmethod
    def check_stage(stage: str) -> None:
        """Raise ``ValueError`` unless ``stage`` is one of ``ORACLE_RELAX_STAGES``."""
        if stage not in ORACLE_RELAX_STAGES:
            raise ValueError(f"stage {stage!r} is not one of {ORACLE_RELAX_STAGES}")

    @staticmethod
    def insert_row(
        c: sqlite3.Connection,
        parent_id: int,
        structure_id: int | None,
        stage: str,
        round_: int,
        status: str,
        steps: int,
        calls: int,
        wall_time: float,
        reason: str,
    ) -> None:
        """Insert one relaxation inside the caller's transaction ``c``; nothing when
        ``parent_id`` already has one in ``stage``."""
        c.execute(
            "INSERT INTO oracle_relaxations(parent_id, structure_id, stage, round, status, "
            "steps, calls, wall_time, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(parent_id, stage) DO NOTHING",
            (
                int(parent_id),
                structure_id,
                stage,
                int(round_),
                status,
                int(steps),
                int(calls),
                float(wall_time),
                reason,
            ),
        )

    def select(self, stage: str | None = None) -> list[OracleRelaxationRecord]:
        """The oracle relaxations (of ``stage`` when given), in id order."""
        q = (
            "SELECT parent_id, structure_id, stage, round, status, steps, calls, wall_time, "
            "reason FROM oracle_relaxations"
        )
        args: tuple = ()
        if stage is not None:
            q += " WHERE stage = ?"
            args = (stage,)
        return [OracleRelaxationRecord(*r) for r in self.conn.execute(q + " ORDER BY id", args)]

    def calls(self) -> dict[str, int]:
        """Oracle evaluations spent per stage: ``initial`` (iteration 0's single points),
        ``iteration <n>``, and each oracle-relaxation stage (its steps, the label at the
        end included). Labels a relaxation wrote are counted by the relaxation only."""
        out: dict[str, int] = {}
        q = (
            "SELECT iteration, COUNT(*) FROM labels WHERE iteration >= 0 "
            "GROUP BY iteration ORDER BY iteration"
        )
        for it, n in self.conn.execute(q):
            out["initial" if it == 0 else f"iteration {it}"] = int(n)
        q = "SELECT stage, SUM(calls) FROM oracle_relaxations GROUP BY stage"
        for stage, n in self.conn.execute(q):
            out[stage] = int(n or 0)
        # Single points of relaxed geometries a kill left without a label (iteration -1,
        # not written by a relaxation).
        q = (
            "SELECT COUNT(*) FROM labels l WHERE l.iteration < 0 AND NOT EXISTS (SELECT 1 "
            "FROM oracle_relaxations r WHERE r.structure_id = l.structure_id)"
        )
        extra = int(self.conn.execute(q).fetchone()[0])
        if extra:
            out["final"] = out.get("final", 0) + extra
        return out

    def wall_time(self) -> tuple[float, dict[str, float]]:
        """Seconds of oracle work: single points (iterations >= 0, and relaxed geometries
        a kill left without their relaxation's label), and per oracle-relaxation stage."""
        q = "SELECT COALESCE(SUM(wall_time), 0) FROM labels WHERE iteration >= 0"
        labels = float(self.conn.execute(q).fetchone()[0])
        q = (
            "SELECT COALESCE(SUM(l.wall_time), 0) FROM labels l WHERE l.iteration < 0 AND NOT "
            "EXISTS (SELECT 1 FROM oracle_relaxations r WHERE r.structure_id = l.structure_id)"
        )
        labels += float(self.conn.execute(q).fetchone()[0])
        q = "SELECT stage, SUM(wall_time) FROM oracle_relaxations GROUP BY stage"
        return labels, {str(k): float(v or 0.0) for k, v in self.conn.execute(q)}
