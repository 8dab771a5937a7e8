"""The ``iterations`` table: one row per campaign iteration, with its stage, counts,
timings, hull snapshot and start/finish times."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from alcsp.store.records import IterationRecord
from alcsp.store.repository import Repository

_COLUMNS = "idx, stage, counts, timings, hull, started, finished"


def _record(row: tuple) -> IterationRecord:
    i, stage, counts, timings, hull, started, finished = row
    return IterationRecord(
        i,
        stage,
        json.loads(counts),
        json.loads(timings),
        None if hull is None else json.loads(hull),
        started,
        finished,
    )


class IterationRepository(Repository):
    """Rows of ``iterations`` as ``IterationRecord``s (counts, timings and hull are JSON in
    the table)."""

    def start(self, index: int, stage: str = "start") -> IterationRecord:
        """Begin iteration ``index`` (or return it unchanged when it already began)."""
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO iterations(idx, stage, counts, timings, started) "
                "VALUES (?, ?, '{}', '{}', ?)",
                (index, stage, time.time()),
            )
        return self.get(index)

    def update(
        self,
        index: int,
        stage: str | None = None,
        counts: Mapping[str, Any] | None = None,
        timings: Mapping[str, float] | None = None,
        hull: Any = None,
        finished: bool = False,
    ) -> IterationRecord:
        """Set the stage; merge ``counts`` and ``timings`` into the stored ones; replace the
        hull snapshot when given; mark finished. One transaction."""
        with self._tx() as c:
            row = c.execute(
                "SELECT stage, counts, timings FROM iterations WHERE idx = ?", (index,)
            ).fetchone()
            if row is None:
                raise KeyError(f"iteration {index} was never started (call start_iteration)")
            new_counts = {**json.loads(row[1]), **dict(counts or {})}
            new_timings = {**json.loads(row[2]), **dict(timings or {})}
            c.execute(
                "UPDATE iterations SET stage = ?, counts = ?, timings = ? WHERE idx = ?",
                (stage or row[0], json.dumps(new_counts), json.dumps(new_timings), index),
            )
            if hull is not None:
                c.execute("UPDATE iterations SET hull = ? WHERE idx = ?", (json.dumps(hull), index))
            if finished:
                c.execute("UPDATE iterations SET finished = ? WHERE idx = ?", (time.time(), index))
        return self.get(index)

    def get(self, index: int) -> IterationRecord:
        """Iteration ``index`` (``KeyError`` when it never began)."""
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM iterations WHERE idx = ?",
            (index,),
        ).fetchone()
        if row is None:
            raise KeyError(f"no iteration {index}")
        return _record(row)

    def all(self) -> list[IterationRecord]:
        """Every iteration, by index."""
        return [
            _record(r) for r in self.conn.execute(f"SELECT {_COLUMNS} FROM iterations ORDER BY idx")
        ]

    def last(self) -> IterationRecord | None:
        its = self.all()
        return its[-1] if its else None
