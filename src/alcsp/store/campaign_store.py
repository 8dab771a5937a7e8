"""The campaign store: every table of one campaign's database (``alcsp.store.db`` opens it)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from alcsp.oracle.base import FailureKind, Label, LabelFailure, LabelResult
from alcsp.store.db import (
    _CHUNK,
    _CREATING,
    _SCHEMA,
    _TABLES,
    DB_NAME,
    ORACLE_RELAX_STAGES,
    ORIGINS,
    RELAX_STATUSES,
    SCHEMA_VERSION,
    CampaignDirError,
    DamagedStore,
    StoreError,
    _is_creating,
    _move_into_place,
    _no_campaign_in,
    _remove_killed_creates,
    connect,
    database_error,
    migrate,
)
from alcsp.store.records import (
    IterationRecord,
    LabelCost,
    ModelRecord,
    OracleRelaxationRecord,
    RelaxationRecord,
    RelaxationTable,
)
from alcsp.vocab import Origin, RelaxStatus, composition_key


def _formulas(numbers: np.ndarray) -> tuple[str, str]:
    """(full formula, reduced key) of an atomic-number array."""
    z, c = np.unique(numbers, return_counts=True)
    counts = {chemical_symbols[int(a)]: int(b) for a, b in zip(z, c, strict=True)}
    full = "".join(f"{el}{n if n != 1 else ''}" for el, n in sorted(counts.items()))
    return full, composition_key(counts)


def _as_composition_key(c: Any) -> str:
    if isinstance(c, Mapping):
        return composition_key(c)
    from pymatgen.core import Composition

    comp = Composition(c) if isinstance(c, str) else c
    return composition_key({str(el): amt for el, amt in comp.items()})


#: meta key prefix of a stored generated search shard: "search_shard:<iteration>:<shard>"
_SHARD_KEY = "search_shard:"
_SHARD_FAILED_KEY = "search_shard_failed:"  # + "<iteration>:<shard>" -> why it failed


class CampaignStore:
    """The database of one campaign. Open with ``create`` or ``open``; close when done
    (or use it as a context manager). One instance per process; not thread-safe."""

    def __init__(self, directory: Path, conn: sqlite3.Connection, readonly: bool):
        self.directory = directory
        self.conn = conn
        self.readonly = readonly
        self._formula_cache: dict[bytes, tuple[str, str]] = {}

    # -- opening ----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike,
        config_text: str = "",
        version: str = "",
        populate: Callable[[CampaignStore], None] | None = None,
    ) -> CampaignStore:
        """Create a new campaign in ``directory`` (made if absent; must hold no campaign)
        and return it open.

        Atomic: the campaign is built in a temporary sibling folder
        (``.NAME.creating-XXXXXXXX``), where ``populate(store)`` adds what a new campaign
        starts with, and moved into place only when complete; so a kill at any moment
        leaves no campaign or a whole one (and a temporary folder that the next create of
        ``directory`` deletes). Of two creates of one directory at once, one wins and the
        other raises ``CampaignDirError``. Nothing in the database names the temporary
        folder (paths in it are relative to the campaign directory).
        """
        from alcsp.lock import DirectoryLock

        # Absolute, so that every path derived from it (oracle job folders handed to a
        # process started elsewhere) means the same place wherever it is used.
        d = Path(directory).absolute()
        if (d / DB_NAME).exists():
            raise CampaignDirError(
                f"{d} already holds a campaign ({DB_NAME}); open it with CampaignStore.open "
                "to resume, or choose a new directory"
            )
        if d.exists() and not d.is_dir():
            raise CampaignDirError(
                f"{d} is a file, not a directory; choose another campaign directory"
            )
        d.parent.mkdir(parents=True, exist_ok=True)
        _remove_killed_creates(d)
        tmp = d.with_name(f".{d.name}{_CREATING}{secrets.token_hex(4)}")
        tmp.mkdir()
        try:
            # The lock marks the folder as a create in progress (not to be cleaned up).
            with DirectoryLock.acquire(tmp):
                store = cls(tmp, cls._connect(tmp / DB_NAME, readonly=False), readonly=False)
                try:
                    with store._tx() as c:
                        for stmt in _SCHEMA.split(";"):
                            if stmt.strip():
                                c.execute(stmt)
                        c.executemany(
                            "INSERT INTO meta(key, value) VALUES (?, ?)",
                            [
                                ("schema_version", SCHEMA_VERSION),
                                ("config", config_text),
                                ("version", version),
                                ("created", repr(time.time())),
                            ],
                        )
                    if populate is not None:
                        populate(store)
                finally:
                    store.close()  # the last connection: SQLite folds the WAL into the file
                _move_into_place(tmp, d)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already unless it failed
        return cls.open(d)

    @classmethod
    def open(cls, directory: str | os.PathLike, readonly: bool = False) -> CampaignStore:
        """Open an existing campaign; ``readonly`` for monitors running beside the campaign."""
        d = Path(directory).absolute()
        path = d / DB_NAME
        if _is_creating(d):
            raise CampaignDirError(
                f"{d} is the temporary folder of a campaign creation "
                "that was killed, not a campaign; delete it"
            )
        if not path.exists():
            raise FileNotFoundError(
                f"no campaign database {path}; create one with CampaignStore.create "
                "(or `alcsp run CONFIG`)"
            )
        # Not a check of the file's first bytes: closing any descriptor of the database
        # file drops the POSIX locks SQLite holds on it in this process (SQLite's "posix
        # advisory locks" caveat), and a reader's connection can then check-point and
        # truncate the write-ahead log under a live writer. SQLite names a non-database
        # file itself ("file is not a database", see database_error).
        if not path.is_file():
            kind = "a folder"
            raise DamagedStore(
                f"{path} is not a campaign database ({kind}); restore the campaign "
                f"directory {d} from a backup"
            )
        unfinished = CampaignDirError(
            f"{d} is not a finished campaign: {DB_NAME} has no campaign metadata (left by "
            "a creation that was killed, e.g. under an older alcsp; it holds no results); "
            f"delete {d} and run `alcsp run CONFIG --dir {d}` again"
        )
        try:
            conn = cls._connect(path, readonly=readonly)
        except sqlite3.DatabaseError as exc:
            if not _no_campaign_in(exc):
                raise database_error(exc, d) from None
            raise unfinished from None
        store = cls(d, conn, readonly=readonly)
        try:
            found = store.meta("schema_version")
        except sqlite3.DatabaseError as exc:
            store.close()
            if not _no_campaign_in(exc):
                raise database_error(exc, d) from None
            found = None
        if found is None:
            store.close()
            raise unfinished
        if not readonly:
            try:
                found = migrate(store.conn, found)
            except sqlite3.DatabaseError as exc:
                store.close()
                raise database_error(exc, d) from None
        if found == "1":
            store.close()
            raise StoreError(
                f"{path} was written by an older alcsp (schema 1); open it once "
                "with `alcsp run DIR` (or writable) to upgrade it"
            )
        if found != SCHEMA_VERSION:
            store.close()
            raise StoreError(
                f"{path} has schema version {found!r}; this alcsp reads {SCHEMA_VERSION!r}: "
                "open it with the alcsp that wrote it (a newer one, when the number is larger)"
            )
        return store

    @classmethod
    def open_checked(cls, directory: str | os.PathLike, readonly: bool = True) -> CampaignStore:
        """Open the campaign in ``directory`` (read-only unless ``readonly`` is false)
        after checking, with one-line errors (``CampaignDirError``, ``DamagedStore``) that
        say what to do, that it is a campaign directory, and after opening that SQLite's
        integrity check finds its database sound. For commands, before they read (or
        write) anything."""
        d = Path(directory)
        if not d.exists():
            raise CampaignDirError(
                f"{d} does not exist, so it holds no campaign; give the directory of a "
                "campaign (made by `alcsp run CONFIG --dir DIR`)"
            )
        if not d.is_dir():
            raise CampaignDirError(
                f"{d} is a file, not a campaign directory; give the directory of a campaign "
                "(made by `alcsp run CONFIG --dir DIR`)"
            )
        if not (d / DB_NAME).exists():
            raise CampaignDirError(
                f"{d} holds no campaign ({DB_NAME} missing); give the directory of a "
                "campaign (made by `alcsp run CONFIG --dir DIR`)"
            )
        store = cls.open(d, readonly=readonly)
        try:
            store.check_integrity()
        except BaseException:
            store.close()
            raise
        return store

    @staticmethod
    def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
        return connect(path, readonly)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> CampaignStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all or nothing."""
        if self.readonly:
            raise StoreError("this store was opened read-only")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- paths and meta ---------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.directory / DB_NAME

    def oracle_dir(self, oracle_name: str) -> Path:
        """Working directory root of one oracle's jobs."""
        return self.directory / "oracle" / oracle_name

    def models_dir(self) -> Path:
        return self.directory / "models"

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                "SET value = excluded.value",
                (key, value),
            )

    @property
    def config_text(self) -> str:
        return self.meta("config") or ""

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: 'ok' or the problems found (also when the
        check itself cannot read the database)."""
        try:
            return "\n".join(r[0] for r in self.conn.execute("PRAGMA integrity_check"))
        except sqlite3.DatabaseError as exc:
            return str(exc) or type(exc).__name__

    def check_integrity(self) -> None:
        """Raise ``DamagedStore`` unless SQLite's integrity check finds the database sound
        and every table of the schema is there."""
        found = self.integrity_check()
        if found == "ok":
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}
            missing = [t for t in _TABLES if t not in tables]
            if not missing:
                return
            found = f"no table {', '.join(missing)}"
        problems = found.replace("*** in database main ***", "").split("\n")
        first = next((p.strip() for p in problems if p.strip()), found)
        more = len([p for p in problems if p.strip()]) - 1
        raise DamagedStore(
            f"the campaign database {self.path} is damaged (SQLite's integrity check: {first}"
            f"{f'; and {more} more' if more > 0 else ''}); restore the campaign "
            "directory from a backup (`sqlite3 campaign.sqlite .recover` may rescue part of it)"
        )

    # -- compositions -----------------------------------------------------------------

    def add_compositions(
        self, compositions: Iterable[Any], iteration: int = 0, source: str = "rules"
    ) -> list[int]:
        """Add compositions (formula strings, pymatgen ``Composition``s or element → count
        maps); existing ones are kept. Returns their ids in input order."""
        keys = [_as_composition_key(c) for c in compositions]
        with self._tx() as c:
            c.executemany(
                "INSERT OR IGNORE INTO compositions(formula, iteration, source) VALUES (?, ?, ?)",
                [(k, iteration, source) for k in keys],
            )
            ids = dict(c.execute("SELECT formula, id FROM compositions"))
        return [ids[k] for k in keys]

    def compositions(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT formula FROM compositions ORDER BY id")]

    # -- structures -------------------------------------------------------------------

    def _structure_rows(
        self,
        structures: Sequence[Atoms],
        origin: str,
        iteration: int,
        parent_ids: Sequence[int | None] | None,
    ) -> list[tuple]:
        if origin not in ORIGINS:
            raise ValueError(f"origin {origin!r} is not one of {ORIGINS}")
        if parent_ids is not None and len(parent_ids) != len(structures):
            raise ValueError(f"{len(parent_ids)} parent ids for {len(structures)} structures")
        rows = []
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
                (
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
    def _insert_structures(c: sqlite3.Connection, rows: list[tuple]) -> list[int]:
        # Ids are assigned consecutively inside one transaction (INTEGER PRIMARY KEY
        # without deletes): read the first and count up.
        start = c.execute("SELECT COALESCE(MAX(id), 0) FROM structures").fetchone()[0] + 1
        c.executemany(
            "INSERT INTO structures(id, n_atoms, formula, composition, origin, iteration, "
            "parent_id, numbers, positions, cell) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(start + k, *r) for k, r in enumerate(rows)],
        )
        return list(range(start, start + len(rows)))

    def add_structures(
        self,
        structures: Sequence[Atoms],
        origin: str,
        iteration: int,
        parent_ids: Sequence[int | None] | None = None,
    ) -> list[int]:
        """Store structures in one transaction; return their ids in input order."""
        rows = self._structure_rows(structures, origin, iteration, parent_ids)
        with self._tx() as c:
            return self._insert_structures(c, rows)

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

    def structure_ids(
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

    def count(self, table: str) -> int:
        if table not in (
            "compositions",
            "structures",
            "relaxations",
            "labels",
            "models",
            "iterations",
            "oracle_relaxations",
        ):
            raise ValueError(f"unknown table {table!r}")
        return self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    # -- oracle relaxations -----------------------------------------------------------

    def add_oracle_relaxation(
        self,
        parent_id: int,
        stage: str,
        round_: int,
        status: str,
        steps: int,
        calls: int,
        wall_time: float,
        reason: str = "",
        relaxed: Atoms | None = None,
        label: Label | None = None,
    ) -> int | None:
        """Record one oracle relaxation of ``parent_id``: its final geometry (a new
        structure of origin ``oracle_relaxed``), the label there and the cost, in one
        transaction. Returns the new structure's id (None for a failed relaxation)."""
        if stage not in ORACLE_RELAX_STAGES:
            raise ValueError(f"stage {stage!r} is not one of {ORACLE_RELAX_STAGES}")
        with self._tx() as c:
            sid = None
            if relaxed is not None:
                rows = self._structure_rows([relaxed], Origin.ORACLE_RELAXED, -1, [parent_id])
                (sid,) = self._insert_structures(c, rows)
                if label is not None:
                    self._insert_labels(c, self._label_rows([(sid, label)], -1))
            c.execute(
                "INSERT INTO oracle_relaxations(parent_id, structure_id, stage, round, status, "
                "steps, calls, wall_time, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(parent_id, stage) DO NOTHING",
                (
                    int(parent_id),
                    sid,
                    stage,
                    int(round_),
                    status,
                    int(steps),
                    int(calls),
                    float(wall_time),
                    reason,
                ),
            )
        return sid

    def oracle_relaxations(self, stage: str | None = None) -> list[OracleRelaxationRecord]:
        q = (
            "SELECT parent_id, structure_id, stage, round, status, steps, calls, wall_time, "
            "reason FROM oracle_relaxations"
        )
        args: tuple = ()
        if stage is not None:
            q += " WHERE stage = ?"
            args = (stage,)
        return [OracleRelaxationRecord(*r) for r in self.conn.execute(q + " ORDER BY id", args)]

    def oracle_calls(self) -> dict[str, int]:
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

    # -- relaxations ------------------------------------------------------------------

    def add_relaxed(
        self,
        final_structures: Sequence[Atoms],
        records: Sequence[RelaxationRecord],
        iteration: int,
        method: str = "acnn",
        origin: str = Origin.RELAXED,
    ) -> list[int | None]:
        """Store relaxed geometries and their relaxation records in one transaction.

        Idempotent by (initial structure, method): a record whose ``initial_id`` already
        has a relaxation by ``method`` is skipped (its id is returned as None), so a batch
        redone after a crash adds nothing twice. Returns the relaxation ids.
        """
        with self._tx() as c:
            return self._insert_relaxed(c, final_structures, records, iteration, method, origin)

    def _insert_relaxed(
        self,
        c: sqlite3.Connection,
        final_structures: Sequence[Atoms],
        records: Sequence[RelaxationRecord],
        iteration: int,
        method: str,
        origin: str,
    ) -> list[int | None]:
        """``add_relaxed`` inside the caller's transaction ``c``."""
        if len(final_structures) != len(records):
            raise ValueError(f"{len(final_structures)} structures for {len(records)} records")
        for r in records:
            if r.status not in RELAX_STATUSES:
                raise ValueError(f"relaxation status {r.status!r} is not one of {RELAX_STATUSES}")
        parents = [r.initial_id for r in records]
        rows = self._structure_rows(final_structures, origin, iteration, parents)
        initial = [p for p in parents if p is not None]
        done: set[int] = set()
        for s in range(0, len(initial), _CHUNK):
            chunk = initial[s : s + _CHUNK]
            done.update(
                r[0]
                for r in c.execute(
                    "SELECT initial_id FROM relaxations WHERE method = ? AND initial_id IN "
                    f"({','.join('?' * len(chunk))})",
                    [method, *chunk],
                )
            )
        keep = [k for k, p in enumerate(parents) if p is None or p not in done]
        sids = self._insert_structures(c, [rows[k] for k in keep])
        start = c.execute("SELECT COALESCE(MAX(id), 0) FROM relaxations").fetchone()[0] + 1
        rel_rows = []
        for j, (k, sid) in enumerate(zip(keep, sids, strict=True)):
            r = records[k]
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
                    rows[k][2],
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
        out: list[int | None] = [None] * len(records)
        for j, k in enumerate(keep):
            out[k] = start + j
        return out

    def add_generated_shard(
        self,
        iteration: int,
        shard: int,
        starts: Sequence[Atoms],
        final_structures: Sequence[Atoms],
        records: Sequence[RelaxationRecord],
        trust_frames: Sequence[tuple[int, Atoms]] = (),
    ) -> list[int]:
        """Store one search shard whose random structures a worker generated, in one
        transaction: the ``starts`` (origin random), their relaxations (``records[k]`` and
        ``final_structures[k]`` belong to ``starts[k]``; ``initial_id`` is set here), the
        trust frames as (index into starts, frame) and the mark that shard ``shard`` of
        ``iteration`` is done. Idempotent: a shard already marked adds nothing (returns
        []). Returns the ids of the starts."""
        if not len(starts) == len(final_structures) == len(records):
            raise ValueError(
                f"shard {shard}: {len(starts)} starts, {len(final_structures)} relaxed "
                f"structures and {len(records)} records must be as many"
            )
        key = f"{_SHARD_KEY}{iteration}:{shard}"
        rows = self._structure_rows(starts, Origin.RANDOM, iteration, None)
        with self._tx() as c:
            if c.execute("SELECT 1 FROM meta WHERE key = ?", (key,)).fetchone():
                return []
            ids = self._insert_structures(c, rows)
            with_ids = [replace(r, initial_id=i) for r, i in zip(records, ids, strict=True)]
            self._insert_relaxed(c, final_structures, with_ids, iteration, "acnn", Origin.RELAXED)
            if trust_frames:
                frame_rows = self._structure_rows(
                    [f for _, f in trust_frames],
                    Origin.TRUST_FRAME,
                    iteration,
                    [ids[k] for k, _ in trust_frames],
                )
                self._insert_structures(c, frame_rows)
            c.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (key, str(len(ids))))
            c.execute(
                "DELETE FROM meta WHERE key = ?", (f"{_SHARD_FAILED_KEY}{iteration}:g{shard}",)
            )
        return ids

    def record_shard_failure(self, iteration: int, shard: str, reason: str) -> None:
        """Note that search shard ``shard`` (``g<k>``: generated shard k; ``s<id>``: the
        stored starts from structure ``id``) of ``iteration`` failed, and why; cleared when
        it is stored (``clear_shard_failure``), shown by ``alcsp status``."""
        self.set_meta(f"{_SHARD_FAILED_KEY}{iteration}:{shard}", reason)

    def clear_shard_failure(self, iteration: int, shard: str) -> None:
        with self._tx() as c:
            c.execute(
                "DELETE FROM meta WHERE key = ?", (f"{_SHARD_FAILED_KEY}{iteration}:{shard}",)
            )

    def shard_failures(self, iteration: int) -> dict[str, str]:
        """Search shards of ``iteration`` that failed and were not stored since: shard ->
        reason."""
        prefix = f"{_SHARD_FAILED_KEY}{iteration}:"
        q = "SELECT key, value FROM meta WHERE key >= ? AND key < ?"
        return {k[len(prefix) :]: v for k, v in self.conn.execute(q, (prefix, prefix + "\uffff"))}

    def generated_shards(self, iteration: int) -> set[int]:
        """The search shards of ``iteration`` whose generated structures are stored."""
        prefix = f"{_SHARD_KEY}{iteration}:"
        q = "SELECT key FROM meta WHERE key >= ? AND key < ?"
        return {int(k[len(prefix) :]) for (k,) in self.conn.execute(q, (prefix, prefix + "\uffff"))}

    def relaxed_initial_ids(self, method: str = "acnn") -> set[int]:
        """Initial structures that already have a relaxation by ``method`` (to resume)."""
        q = "SELECT initial_id FROM relaxations WHERE method = ? AND initial_id IS NOT NULL"
        return {r[0] for r in self.conn.execute(q, (method,))}

    def relaxations(
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

    def children(self, origin: str) -> dict[int, int]:
        """parent id -> id of its (latest) child structure of ``origin``."""
        q = (
            "SELECT parent_id, MAX(id) FROM structures WHERE origin = ? AND parent_id IS NOT NULL "
            "GROUP BY parent_id"
        )
        return {int(p): int(c) for p, c in self.conn.execute(q, (origin,))}

    def label_counts(self, iteration: int, oracle: str | None = None) -> tuple[int, int]:
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

    def relaxed_volumes_per_atom(
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

    # -- labels -----------------------------------------------------------------------

    def add_labels(self, results: Sequence[tuple[int, LabelResult]], iteration: int) -> None:
        """Record oracle outcomes ``(structure_id, Label | LabelFailure)`` in one
        transaction. Never duplicates: a success is kept as is, a failure is replaced only
        by a later success."""
        rows = self._label_rows(results, iteration)
        with self._tx() as c:
            self._insert_labels(c, rows)

    @staticmethod
    def _label_rows(results: Sequence[tuple[int, LabelResult]], iteration: int) -> list[tuple]:
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
    def _insert_labels(c: sqlite3.Connection, rows: list[tuple]) -> None:
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

    def get_labels(self, structure_ids: Sequence[int], oracle: str) -> dict[int, LabelResult]:
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

    def label_totals(self) -> tuple[int, int]:
        """(successful, failed) outcomes of every oracle, all iterations."""
        ok, n = self.conn.execute("SELECT COALESCE(SUM(ok), 0), COUNT(*) FROM labels").fetchone()
        return int(ok), int(n) - int(ok)

    def oracles(self) -> list[str]:
        """The oracles with at least one successful label, by name."""
        q = "SELECT DISTINCT oracle FROM labels WHERE ok = 1 ORDER BY oracle"
        return [r[0] for r in self.conn.execute(q)]

    def label_cost(self) -> list[LabelCost]:
        """Oracle single points per iteration (the final stage's as iteration -1)."""
        q = (
            "SELECT iteration, COUNT(*), COALESCE(SUM(ok), 0), COALESCE(SUM(wall_time), 0) "
            "FROM labels GROUP BY iteration ORDER BY iteration"
        )
        return [
            LabelCost(int(i), int(n), int(ok), float(t)) for i, n, ok, t in self.conn.execute(q)
        ]

    def oracle_wall_time(self) -> tuple[float, dict[str, float]]:
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

    # -- models and iterations --------------------------------------------------------

    def add_model(
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

    def models(self) -> list[ModelRecord]:
        return [
            ModelRecord(i, it, p, json.loads(m), t)
            for i, it, p, m, t in self.conn.execute(
                "SELECT id, iteration, path, metrics, created FROM models ORDER BY iteration, id"
            )
        ]

    def latest_model(self) -> ModelRecord | None:
        models = self.models()
        return models[-1] if models else None

    def model_path(self, record: ModelRecord) -> Path:
        p = Path(record.path)
        return p if p.is_absolute() else self.directory / p

    def start_iteration(self, index: int, stage: str = "start") -> IterationRecord:
        """Begin iteration ``index`` (or return it unchanged when it already began)."""
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO iterations(idx, stage, counts, timings, started) "
                "VALUES (?, ?, '{}', '{}', ?)",
                (index, stage, time.time()),
            )
        return self.iteration(index)

    def update_iteration(
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
        return self.iteration(index)

    def iteration(self, index: int) -> IterationRecord:
        row = self.conn.execute(
            "SELECT idx, stage, counts, timings, hull, started, finished "
            "FROM iterations WHERE idx = ?",
            (index,),
        ).fetchone()
        if row is None:
            raise KeyError(f"no iteration {index}")
        return self._iteration_record(row)

    @staticmethod
    def _iteration_record(row: tuple) -> IterationRecord:
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

    def iterations(self) -> list[IterationRecord]:
        return [
            self._iteration_record(r)
            for r in self.conn.execute(
                "SELECT idx, stage, counts, timings, hull, started, finished FROM iterations "
                "ORDER BY idx"
            )
        ]

    def last_iteration(self) -> IterationRecord | None:
        its = self.iterations()
        return its[-1] if its else None

    # -- import / export (alcsp.store.exchange) ---------------------------------------

    def import_extxyz(
        self, path: str | os.PathLike, oracle: str = "import", iteration: int = 0
    ) -> list[int]:
        """Seed the campaign with labelled frames (``alcsp.store.exchange.import_extxyz``)."""
        from alcsp.store.exchange import import_extxyz

        return import_extxyz(self, path, oracle, iteration)

    def export_extxyz(
        self,
        path: str | os.PathLike,
        structure_ids: Sequence[int] | None = None,
        oracle: str | None = None,
    ) -> int:
        """Write structures to extxyz (``alcsp.store.exchange.export_extxyz``)."""
        from alcsp.store.exchange import export_extxyz

        return export_extxyz(self, path, structure_ids, oracle)

    def export_cif(
        self,
        directory: str | os.PathLike,
        structure_ids: Sequence[int],
        symprec: float | None = 0.01,
    ) -> list[Path]:
        """One CIF per structure (``alcsp.store.exchange.export_cif``)."""
        from alcsp.store.exchange import export_cif

        return export_cif(self, directory, structure_ids, symprec)
