"""The campaign store: ``CampaignStore`` opens one campaign's database (``alcsp.store.db``
connects to it, creates it and migrates it) and is the single entry point to its tables.

Each table's queries live in a repository of their own, reached as ``store.tables.<name>``
(``Tables``): ``compositions`` (``alcsp.store.compositions``), ``structures``
(``alcsp.store.structures``), ``relaxations`` (``alcsp.store.relaxations``), ``labels``
(``alcsp.store.labels``), ``oracle_relaxations`` (``alcsp.store.oracle_relaxations``),
``models`` (``alcsp.store.models``), ``iterations`` (``alcsp.store.iterations``) and
``meta`` with the search-shard marks kept there (``alcsp.store.meta``).

The writes that span tables are here, each one transaction (``_tx``) made of the
repositories' insert helpers: ``add_relaxed``, ``add_generated_shard``,
``add_oracle_relaxation`` and ``add_labelled_structures``.

The other table methods of ``CampaignStore`` (``add_labels``, ``relaxations``, ``meta``, ...)
are one-line delegations to the repositories, kept for the existing callers; new code
should use the repositories (``store.tables.labels.add(...)``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from alcsp.oracle.base import Label, LabelResult
from alcsp.store.compositions import CompositionRepository
from alcsp.store.db import (
    _CREATING,
    _SCHEMA,
    _TABLES,
    DB_NAME,
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
from alcsp.store.iterations import IterationRepository
from alcsp.store.labels import LabelRepository
from alcsp.store.meta import MetaRepository
from alcsp.store.models import ModelRepository
from alcsp.store.oracle_relaxations import OracleRelaxationRepository
from alcsp.store.records import (
    IterationRecord,
    LabelCost,
    ModelRecord,
    OracleRelaxationRecord,
    RelaxationRecord,
    RelaxationTable,
)
from alcsp.store.relaxations import RelaxationRepository
from alcsp.store.structures import StructureRepository
from alcsp.vocab import Origin, RelaxStatus


@dataclass(frozen=True)
class Tables:
    """The repositories of one campaign's tables (``CampaignStore.tables``), all on the
    store's connection and transaction."""

    compositions: CompositionRepository
    structures: StructureRepository
    relaxations: RelaxationRepository
    labels: LabelRepository
    oracle_relaxations: OracleRelaxationRepository
    models: ModelRepository
    iterations: IterationRepository
    meta: MetaRepository


class CampaignStore:
    """The database of one campaign. Open with ``create`` or ``open``; close when done
    (or use it as a context manager). One instance per process; not thread-safe.
    ``tables`` holds the repositories of its tables."""

    def __init__(self, directory: Path, conn: sqlite3.Connection, readonly: bool):
        self.directory = directory
        self.conn = conn
        self.readonly = readonly
        tx = self._tx
        self.tables = Tables(
            compositions=CompositionRepository(conn, tx),
            structures=StructureRepository(conn, tx, directory / DB_NAME),
            relaxations=RelaxationRepository(conn, tx),
            labels=LabelRepository(conn, tx),
            oracle_relaxations=OracleRelaxationRepository(conn, tx),
            models=ModelRepository(conn, tx, directory),
            iterations=IterationRepository(conn, tx),
            meta=MetaRepository(conn, tx),
        )

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

    # -- paths and integrity ----------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.directory / DB_NAME

    def oracle_dir(self, oracle_name: str) -> Path:
        """Working directory root of one oracle's jobs."""
        return self.directory / "oracle" / oracle_name

    def models_dir(self) -> Path:
        return self.directory / "models"

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

    # -- writes across tables (each one transaction) ----------------------------------

    def add_relaxed(
        self,
        final_structures: Sequence[Atoms],
        records: Sequence[RelaxationRecord],
        iteration: int,
        method: str = "acnn",
        origin: str = Origin.RELAXED,
    ) -> list[int | None]:
        """Store relaxed geometries (``structures``) and their relaxation records
        (``relaxations``) in one transaction.

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
        structures, relaxations = self.tables.structures, self.tables.relaxations
        relaxations.check(records)
        parents = [r.initial_id for r in records]
        rows = structures.rows(final_structures, origin, iteration, parents)
        done = relaxations.relaxed_among(c, method, [p for p in parents if p is not None])
        keep = [k for k, p in enumerate(parents) if p is None or p not in done]
        sids = structures.insert_rows(c, [rows[k] for k in keep])
        rids = relaxations.insert_rows(
            c,
            sids,
            [records[k] for k in keep],
            [rows[k].composition for k in keep],
            iteration,
            method,
        )
        out: list[int | None] = [None] * len(records)
        for k, rid in zip(keep, rids, strict=True):
            out[k] = rid
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
        trust frames as (index into starts, frame) and the mark in ``meta`` that shard
        ``shard`` of ``iteration`` is done. Idempotent: a shard already marked adds nothing
        (returns []). Returns the ids of the starts."""
        if not len(starts) == len(final_structures) == len(records):
            raise ValueError(
                f"shard {shard}: {len(starts)} starts, {len(final_structures)} relaxed "
                f"structures and {len(records)} records must be as many"
            )
        structures, meta = self.tables.structures, self.tables.meta
        rows = structures.rows(starts, Origin.RANDOM, iteration, None)
        with self._tx() as c:
            if meta.shard_stored(c, iteration, shard):
                return []
            ids = structures.insert_rows(c, rows)
            with_ids = [replace(r, initial_id=i) for r, i in zip(records, ids, strict=True)]
            self._insert_relaxed(c, final_structures, with_ids, iteration, "acnn", Origin.RELAXED)
            if trust_frames:
                frame_rows = structures.rows(
                    [f for _, f in trust_frames],
                    Origin.TRUST_FRAME,
                    iteration,
                    [ids[k] for k, _ in trust_frames],
                )
                structures.insert_rows(c, frame_rows)
            meta.mark_shard_stored(c, iteration, shard, len(ids))
        return ids

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
        t = self.tables
        t.oracle_relaxations.check_stage(stage)
        with self._tx() as c:
            sid = None
            if relaxed is not None:
                rows = t.structures.rows([relaxed], Origin.ORACLE_RELAXED, -1, [parent_id])
                (sid,) = t.structures.insert_rows(c, rows)
                if label is not None:
                    t.labels.insert_rows(c, t.labels.rows([(sid, label)], -1))
            t.oracle_relaxations.insert_row(
                c, parent_id, sid, stage, round_, status, steps, calls, wall_time, reason
            )
        return sid

    def add_labelled_structures(
        self, structures: Sequence[Atoms], labels: Sequence[Label], origin: str, iteration: int
    ) -> list[int]:
        """Store ``structures`` with ``labels[k]`` the label of ``structures[k]``
        (``alcsp.store.exchange.import_extxyz``): structures and labels together, or
        nothing. Returns the new structure ids."""
        t = self.tables
        rows = t.structures.rows(structures, origin, iteration, None)
        with self._tx() as c:
            ids = t.structures.insert_rows(c, rows)
            t.labels.insert_rows(c, t.labels.rows(list(zip(ids, labels, strict=True)), iteration))
        return ids

    # -- delegations to the repositories (new code: use ``tables``) -------------------

    # meta and search shards (alcsp.store.meta)

    def meta(self, key: str) -> str | None:
        return self.tables.meta.value(key)

    def set_meta(self, key: str, value: str) -> None:
        self.tables.meta.set_value(key, value)

    @property
    def config_text(self) -> str:
        return self.tables.meta.value("config") or ""

    def record_shard_failure(self, iteration: int, shard: str, reason: str) -> None:
        self.tables.meta.record_shard_failure(iteration, shard, reason)

    def clear_shard_failure(self, iteration: int, shard: str) -> None:
        self.tables.meta.clear_shard_failure(iteration, shard)

    def shard_failures(self, iteration: int) -> dict[str, str]:
        return self.tables.meta.shard_failures(iteration)

    def generated_shards(self, iteration: int) -> set[int]:
        return self.tables.meta.generated_shards(iteration)

    # compositions (alcsp.store.compositions)

    def add_compositions(
        self, compositions: Iterable[Any], iteration: int = 0, source: str = "rules"
    ) -> list[int]:
        return self.tables.compositions.add(compositions, iteration, source)

    def compositions(self) -> list[str]:
        return self.tables.compositions.formulas()

    # structures (alcsp.store.structures)

    def add_structures(
        self,
        structures: Sequence[Atoms],
        origin: str,
        iteration: int,
        parent_ids: Sequence[int | None] | None = None,
    ) -> list[int]:
        return self.tables.structures.add(structures, origin, iteration, parent_ids)

    def get_atoms(self, ids: Sequence[int]) -> list[Atoms]:
        return self.tables.structures.get_atoms(ids)

    def structure_ids(
        self,
        origin: str | None = None,
        iteration: int | None = None,
        composition: str | None = None,
    ) -> list[int]:
        return self.tables.structures.ids(origin, iteration, composition)

    def children(self, origin: str) -> dict[int, int]:
        return self.tables.structures.children(origin)

    # relaxations (alcsp.store.relaxations)

    def relaxed_initial_ids(self, method: str = "acnn") -> set[int]:
        return self.tables.relaxations.initial_ids(method)

    def relaxations(
        self,
        iteration: int | None = None,
        status: str | None = None,
        composition: str | None = None,
        method: str | None = None,
    ) -> RelaxationTable:
        return self.tables.relaxations.select(iteration, status, composition, method)

    def relaxed_volumes_per_atom(
        self, method: str = "acnn", status: str = RelaxStatus.CONVERGED
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.tables.relaxations.volumes_per_atom(method, status)

    def fingerprints(self, relaxation_ids: Sequence[int]) -> dict[int, np.ndarray]:
        return self.tables.relaxations.fingerprints(relaxation_ids)

    def set_e_hull(self, relaxation_ids: Sequence[int], e_hull: Sequence[float]) -> None:
        self.tables.relaxations.set_e_hull(relaxation_ids, e_hull)

    # oracle relaxations and oracle cost (alcsp.store.oracle_relaxations)

    def oracle_relaxations(self, stage: str | None = None) -> list[OracleRelaxationRecord]:
        return self.tables.oracle_relaxations.select(stage)

    def oracle_calls(self) -> dict[str, int]:
        return self.tables.oracle_relaxations.calls()

    def oracle_wall_time(self) -> tuple[float, dict[str, float]]:
        return self.tables.oracle_relaxations.wall_time()

    # labels (alcsp.store.labels)

    def add_labels(self, results: Sequence[tuple[int, LabelResult]], iteration: int) -> None:
        self.tables.labels.add(results, iteration)

    def labelled_ids(self, oracle: str, include_failures: bool = True) -> set[int]:
        return self.tables.labels.labelled_ids(oracle, include_failures)

    def get_labels(self, structure_ids: Sequence[int], oracle: str) -> dict[int, LabelResult]:
        return self.tables.labels.get(structure_ids, oracle)

    def labelled_before(self, oracle: str, iteration: int) -> set[int]:
        return self.tables.labels.labelled_before(oracle, iteration)

    def label_totals(self) -> tuple[int, int]:
        return self.tables.labels.totals()

    def label_counts(self, iteration: int, oracle: str | None = None) -> tuple[int, int]:
        return self.tables.labels.counts(iteration, oracle)

    def oracles(self) -> list[str]:
        return self.tables.labels.oracles()

    def label_cost(self) -> list[LabelCost]:
        return self.tables.labels.cost()

    def failures(self, oracle: str | None = None) -> list[tuple[int, str, str, str]]:
        return self.tables.labels.failures(oracle)

    def training_set(
        self, oracle: str | None = None, max_iteration: int | None = None
    ) -> list[Atoms]:
        return self.tables.labels.training_set(oracle, max_iteration)

    # models (alcsp.store.models)

    def add_model(
        self, path: str | os.PathLike, iteration: int, metrics: Mapping[str, Any] | None = None
    ) -> int:
        return self.tables.models.add(path, iteration, metrics)

    def models(self) -> list[ModelRecord]:
        return self.tables.models.all()

    def latest_model(self) -> ModelRecord | None:
        return self.tables.models.latest()

    def model_path(self, record: ModelRecord) -> Path:
        return self.tables.models.path(record)

    # iterations (alcsp.store.iterations)

    def start_iteration(self, index: int, stage: str = "start") -> IterationRecord:
        return self.tables.iterations.start(index, stage)

    def update_iteration(
        self,
        index: int,
        stage: str | None = None,
        counts: Mapping[str, Any] | None = None,
        timings: Mapping[str, float] | None = None,
        hull: Any = None,
        finished: bool = False,
    ) -> IterationRecord:
        return self.tables.iterations.update(index, stage, counts, timings, hull, finished)

    def iteration(self, index: int) -> IterationRecord:
        return self.tables.iterations.get(index)

    def iterations(self) -> list[IterationRecord]:
        return self.tables.iterations.all()

    def last_iteration(self) -> IterationRecord | None:
        return self.tables.iterations.last()

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
