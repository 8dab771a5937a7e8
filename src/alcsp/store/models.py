"""The ``models`` table: the trained model files of a campaign and their validation
errors."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alcsp.store.records import ModelRecord
from alcsp.store.repository import Repository, Transaction


class ModelRepository(Repository):
    """Rows of ``models`` as ``ModelRecord``s, one per (iteration, path); paths inside the
    campaign ``directory`` are stored relative to it."""

    def __init__(self, conn: sqlite3.Connection, tx: Transaction, directory: Path) -> None:
        super().__init__(conn, tx)
        self.directory = directory

    def add(
        self, path: str | os.PathLike, iteration: int, metrics: Mapping[str, Any] | None = None
    ) -> int:
        """Record a trained model file (path relative to the campaign directory when
        inside it) with its validation errors."""
        p = Path(path)
        try:
            p = p.resolve().relative_to(self.directory.resolve())
        except ValueError:
            pass
        with self._tx() as c:
            c.execute(
                "INSERT INTO models(iteration, path, metrics, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(iteration, path) DO UPDATE SET metrics = excluded.metrics",
                (iteration, str(p), json.dumps(dict(metrics or {})), time.time()),
            )
            return c.execute(
                "SELECT id FROM models WHERE iteration = ? AND path = ?", (iteration, str(p))
            ).fetchone()[0]

    def all(self) -> list[ModelRecord]:
        """Every model, by iteration and id."""
        return [
            ModelRecord(i, it, p, json.loads(m), t)
            for i, it, p, m, t in self.conn.execute(
                "SELECT id, iteration, path, metrics, created FROM models ORDER BY iteration, id"
            )
        ]

    def latest(self) -> ModelRecord | None:
        models = self.all()
        return models[-1] if models else None

    def path(self, record: ModelRecord) -> Path:
        """The file of ``record`` (a relative path is in the campaign directory)."""
        p = Path(record.path)
        return p if p.is_absolute() else self.directory / p
