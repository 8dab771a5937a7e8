"""The ``structures`` table: every geometry of a campaign (random starts, relaxed and
trust-frame geometries, imported frames, reference phases) as compact NumPy blobs."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from alcsp.store.db import _CHUNK, ORIGINS
from alcsp.store.repository import Repository, Transaction
from alcsp.vocab import composition_key


def _formulas(numbers: np.ndarray) -> tuple[str, str]:
    """(full formula, reduced key) of an atomic-number array."""
    z, c = np.unique(numbers, return_counts=True)
    counts = {chemical_symbols[int(a)]: int(b) for a, b in zip(z, c, strict=True)}
    full = "".join(f"{el}{n if n != 1 else ''}" for el, n in sorted(counts.items()))
    return full, composition_key(counts)


class StructureRow(NamedTuple):
    """One row of ``structures`` to insert (its id is assigned by ``insert_rows``)."""

    n_atoms: int
    formula: str  # full formula of the cell, e.g. Ca2H12Mg2
    composition: str  # reduced key, e.g. MgCaH6
    origin: str
    iteration: int
    parent_id: int | None
    numbers: bytes  # uint8 [n]
    positions: bytes  # float64 [n, 3] Å
    cell: bytes  # float64 [3, 3] Å


class StructureRepository(Repository):
    """Rows of ``structures``: stores ``Atoms`` and reads them back (fully periodic, with
    ``atoms.info`` structure_id, origin and iteration). ``path`` is the database file (named
    in errors)."""

    def __init__(self, conn: sqlite3.Connection, tx: Transaction, path: Path) -> None:
        super().__init__(conn, tx)
        self.path = path
        self._formula_cache: dict[bytes, tuple[str, str]] = {}

    def rows(
        self,
        structures: Sequence[Atoms],
        origin: str,
        iteration: int,
        parent_ids: Sequence[int | None] | None,
    ) -> list[StructureRow]:
        """The rows of ``structures`` for ``insert_rows``."""
        if origin not in ORIGINS:
            raise ValueError(f"origin {origin!r} is not one of {ORIGINS}")
        if parent_ids is not None and len(parent_ids) != len(structures):
            raise ValueError(f"{len(parent_ids)} parent ids for {len(structures)} structures")
        rows: list[StructureRow] = []
        cache = self._formula_cache
        for k, a in enumerate(structures):
            numbers = np.asarray(a.numbers, dtype=np.uint8)
            nb = numbers.tobytes()
            names = cache.get(nb)
            if names is None:
                names = cache[nb] = _formulas(numbers)
            pos = np.ascontiguousarray(a.positions, dtype=np.float64)
            cell = np.ascontiguousarray(a.cell.array, dtype=np.float64)
            parent = None if parent_ids is None else parent_ids[k]
            rows.append(
                StructureRow(
                    len(numbers),
                    names[0],
                    names[1],
                    origin,
                    iteration,
                    parent,
                    nb,
                    pos.tobytes(),
                    cell.tobytes(),
                )
            )
        return rows

    @staticmethod
    def insert_rows(c: sqlite3.Connection, rows: Sequence[StructureRow]) -> list[int]:
        """Insert ``rows`` (from ``rows``) inside the caller's transaction ``c``; return
        their ids in order."""
        # Ids are assigned consecutively inside one transaction (INTEGER PRIMARY KEY
        # without deletes): read the first and count up.
        start = c.execute("SELECT COALESCE(MAX(id), 0) FROM structures").fetchone()[0] + 1
        c.executemany(
            "INSERT INTO structures(id, n_atoms, formula, composition, origin, iteration, "
            "parent_id, numbers, positions, cell) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(start + k, *r) for k, r in enumerate(rows)],
        )
        return list(range(start, start + len(rows)))

    def add(
        self,
        structures: Sequence[Atoms],
        origin: str,
        iteration: int,
        parent_ids: Sequence[int | None] | None = None,
    ) -> list[int]:
        """Store structures in one transaction; return their ids in input order."""
        rows = self.rows(structures, origin, iteration, parent_ids)
        with self._tx() as c:
            return self.insert_rows(c, rows)

    def get_atoms(self, ids: Sequence[int]) -> list[Atoms]:
        """The structures ``ids`` as ASE ``Atoms`` (fully periodic), in the order given.
        ``atoms.info`` holds ``structure_id``, ``origin`` and ``iteration``."""
        ids = [int(i) for i in ids]
        found: dict[int, Atoms] = {}
        for s in range(0, len(ids), _CHUNK):
            chunk = ids[s : s + _CHUNK]
            q = (
                "SELECT id, n_atoms, numbers, positions, cell, origin, iteration "
                f"FROM structures WHERE id IN ({','.join('?' * len(chunk))})"
            )
            for sid, n, nb, pb, cb, origin, it in self.conn.execute(q, chunk):
                a = Atoms(
                    numbers=np.frombuffer(nb, dtype=np.uint8).astype(int),
                    positions=np.frombuffer(pb, dtype=np.float64).reshape(n, 3),
                    cell=np.frombuffer(cb, dtype=np.float64).reshape(3, 3),
                    pbc=True,
                )
                a.info.update(structure_id=sid, origin=origin, iteration=it)
                found[sid] = a
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"no structures with ids {missing[:10]} in {self.path}")
        out, seen = [], set()
        for i in ids:  # a repeated id gets its own copy
            out.append(found[i].copy() if i in seen else found[i])
            seen.add(i)
        return out

    def ids(
        self,
        origin: str | None = None,
        iteration: int | None = None,
        composition: str | None = None,
    ) -> list[int]:
        """Ids of structures matching all the filters given, in id order."""
        where, args = [], []
        for col, val in (
            ("origin", origin),
            ("iteration", iteration),
            ("composition", composition),
        ):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        q = "SELECT id FROM structures" + (" WHERE " + " AND ".join(where) if where else "")
        return [r[0] for r in self.conn.execute(q + " ORDER BY id", args)]

    def children(self, origin: str) -> dict[int, int]:
        """parent id -> id of its (latest) child structure of ``origin``."""
        q = (
            "SELECT parent_id, MAX(id) FROM structures WHERE origin = ? AND parent_id IS NOT NULL "
            "GROUP BY parent_id"
        )
        return {int(p): int(c) for p, c in self.conn.execute(q, (origin,))}
