"""The campaign store: one directory, one SQLite database, every result kept.

Layout of a campaign directory::

    campaign.sqlite (+ -wal, -shm)   everything below
    oracle/<name>/<job key>/          oracle working directories (inputs and outputs kept)
    models/                           model files (paths recorded in the ``models`` table)

Durability: WAL journal with ``synchronous=FULL`` — a committed transaction survives a
``kill -9`` and a power cut; each unit of work (a batch of relaxations, one oracle label)
is one transaction, so a killed campaign loses only the work in flight. Labels are
UNIQUE per (structure, oracle) and written with upsert semantics: a label is never
duplicated, a success never overwritten, and a recorded failure may later be replaced by a
success. Readers (``alcsp status``) can open the database while the campaign writes.
SQLite's WAL needs a local file system (not NFS) for the process that writes; workers
never touch the database, only the driver does.

Geometry is stored as compact NumPy blobs: numbers uint8 [n], positions float64 [n, 3]
(Å), cell float64 [3, 3] (Å, rows are lattice vectors). Forces float64 [n, 3] eV/Å,
stress float64 [3, 3] eV/Å³ (ASE sign). Energies in eV, enthalpies eV/atom, pressures GPa.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path

from alcsp.errors import UserError
from alcsp.vocab import OracleStage, Origin, RelaxStatus

DB_NAME = "campaign.sqlite"
SCHEMA_VERSION = "2"  # 2: labels.energy_zero
#: Where a structure came from (``alcsp.vocab.Origin`` says what each means).
ORIGINS = tuple(Origin)
#: Stages whose oracle relaxations are stored in ``oracle_relaxations``.
ORACLE_RELAX_STAGES = tuple(OracleStage)
RELAX_STATUSES = tuple(RelaxStatus)
_CHUNK = 900  # ids per "IN (...)" query, under SQLite's parameter limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS compositions (
    id INTEGER PRIMARY KEY,
    formula TEXT NOT NULL UNIQUE,          -- reduced composition key, e.g. MgCaH6
    iteration INTEGER NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS structures (
    id INTEGER PRIMARY KEY,
    n_atoms INTEGER NOT NULL,
    formula TEXT NOT NULL,                 -- full formula of the cell, e.g. Ca2H12Mg2
    composition TEXT NOT NULL,             -- reduced key, e.g. MgCaH6
    origin TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    parent_id INTEGER REFERENCES structures(id),
    numbers BLOB NOT NULL,                 -- uint8 [n]
    positions BLOB NOT NULL,               -- float64 [n, 3] Å
    cell BLOB NOT NULL                     -- float64 [3, 3] Å
);
CREATE INDEX IF NOT EXISTS structures_composition ON structures(composition);
CREATE INDEX IF NOT EXISTS structures_origin ON structures(origin, iteration);
CREATE TABLE IF NOT EXISTS relaxations (
    id INTEGER PRIMARY KEY,
    structure_id INTEGER NOT NULL UNIQUE REFERENCES structures(id),  -- final geometry
    initial_id INTEGER REFERENCES structures(id),                     -- starting geometry
    method TEXT NOT NULL,                  -- the potential that relaxed it, e.g. acnn
    composition TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('converged', 'max_steps', 'unphysical')),
    reason TEXT,
    energy REAL,                           -- eV
    enthalpy_per_atom REAL,                -- eV/atom, (E + PV)/N
    volume REAL,                           -- Å³
    steps INTEGER,
    pressure REAL,                         -- GPa
    iteration INTEGER NOT NULL,
    fingerprint BLOB,                      -- float32 [d], optional
    e_hull REAL,                           -- eV/atom, filled in by the hull stage
    UNIQUE (initial_id, method)
);
CREATE INDEX IF NOT EXISTS relaxations_comp_h ON relaxations(composition, enthalpy_per_atom);
CREATE INDEX IF NOT EXISTS relaxations_e_hull ON relaxations(e_hull);
CREATE INDEX IF NOT EXISTS relaxations_iter ON relaxations(iteration, status);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY,
    structure_id INTEGER NOT NULL REFERENCES structures(id),
    oracle TEXT NOT NULL,
    ok INTEGER NOT NULL,                   -- 1 label, 0 recorded failure
    energy REAL,                           -- eV, force-consistent free energy F
    forces BLOB,                           -- float64 [n, 3] eV/Å
    stress BLOB,                           -- float64 [3, 3] eV/Å³, ASE sign (may be NULL)
    energy_zero REAL,                      -- eV, zero-smearing E0 (NULL = same as energy)
    failure_kind TEXT,
    failure_reason TEXT,
    wall_time REAL,                        -- s
    attempts INTEGER,
    iteration INTEGER NOT NULL,
    created REAL NOT NULL,
    UNIQUE (structure_id, oracle)
);
CREATE INDEX IF NOT EXISTS labels_oracle_ok ON labels(oracle, ok);
CREATE TABLE IF NOT EXISTS oracle_relaxations (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL REFERENCES structures(id),  -- the structure relaxed
    structure_id INTEGER REFERENCES structures(id),        -- its final geometry (NULL: failed)
    stage TEXT NOT NULL,                   -- references | final
    round INTEGER NOT NULL,                -- the final stage's round (0 for references)
    status TEXT NOT NULL,                  -- converged | max_steps | time_limit | failed
    steps INTEGER NOT NULL,
    calls INTEGER NOT NULL,                -- oracle evaluations spent, all attempts
    wall_time REAL NOT NULL,
    reason TEXT,
    UNIQUE (parent_id, stage)
);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    iteration INTEGER NOT NULL,
    path TEXT NOT NULL,
    metrics TEXT NOT NULL,                 -- JSON: validation errors etc.
    created REAL NOT NULL,
    UNIQUE (iteration, path)
);
CREATE TABLE IF NOT EXISTS iterations (
    idx INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    counts TEXT NOT NULL,                  -- JSON
    timings TEXT NOT NULL,                 -- JSON, seconds
    hull TEXT,                             -- JSON snapshot
    started REAL NOT NULL,
    finished REAL
);
"""

#: The tables of ``_SCHEMA``: a campaign database without one of them is damaged.
_TABLES = tuple(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))


class StoreError(UserError, RuntimeError):
    """The campaign directory or database cannot be used as asked (the CLI prints it as one
    line and exits with status 2)."""


class CampaignDirError(StoreError, ValueError):
    """A directory that cannot be created or opened as a campaign, for a reason the user
    fixes (a ``ValueError`` too)."""


class DamagedStore(StoreError):
    """The campaign database is damaged: SQLite's integrity check finds problems, or a
    query reads a malformed page or a missing table."""


def database_error(exc: sqlite3.DatabaseError, directory: Path | None = None) -> StoreError:
    """The one-line error, with its fix, for SQLite's ``exc`` on the database of the
    campaign in ``directory`` (None: the campaign is not known)."""
    what = f"the campaign database {directory / DB_NAME}" if directory else "a campaign database"
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if "readonly" in low or "read-only" in low:
        return StoreError(
            f"{what} cannot be written ({text}); the command needs write access to the "
            "campaign directory and its database"
        )
    if "disk is full" in low:
        return StoreError(
            f"{what} cannot grow: the disk is full ({text}); free some space and run the "
            "command again (a campaign continues where it stopped)"
        )
    if "locked" in low or "busy" in low:
        return StoreError(
            f"{what} is locked by another process ({text}); wait for it to finish and run "
            "the command again"
        )
    if "unable to open" in low:
        return StoreError(
            f"cannot open {what} ({text}); check that it is a file you may read, in a "
            "folder you may read"
        )
    if "not a database" in low:
        return DamagedStore(
            f"{what} is not a campaign database ({text}); restore the campaign directory "
            "from a backup"
        )
    return DamagedStore(
        f"{what} is damaged ({text}); restore the campaign directory from a backup "
        "(`sqlite3 campaign.sqlite .recover` may rescue part of it)"
    )


#: A campaign is built in the sibling folder ``.NAME.creating-XXXXXXXX`` and renamed into
#: place when complete (``CampaignStore.create``).
_CREATING = ".creating-"


def _no_campaign_in(exc: sqlite3.DatabaseError) -> bool:
    """Whether ``exc`` says the file holds no campaign tables (not that it is busy,
    unreadable or damaged)."""
    return "no such table" in str(exc)


def _is_creating(d: Path) -> bool:
    return d.name.startswith(".") and _CREATING in d.name


def _remove_killed_creates(d: Path) -> None:
    """Delete the temporary folders that killed creates of ``d`` left behind, never one
    in progress (its creator holds the lock in it)."""
    from alcsp.lock import holder, recorded_holder

    for tmp in d.parent.glob(f".{glob.escape(d.name)}{_CREATING}*"):
        try:
            if not tmp.is_dir():
                continue
            record = recorded_holder(tmp)  # read before the lock is probed: see below
            if holder(tmp) is not None:
                continue  # a create in progress
            # Unlocked. With a record, its creator had locked it and has died (a creator
            # holds the lock until its folder is renamed away); without, it may have just
            # made the folder and be about to lock it: remove only an old one.
            if record is None and time.time() - tmp.stat().st_mtime < 60:
                continue
        except OSError:
            continue
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, d: Path) -> None:
    """Give the complete campaign in ``tmp`` the name ``d``, atomically: by renaming the
    folder (which replaces ``d`` only when it is an empty directory), or, when ``d`` holds
    other files, by linking the database into it (which never replaces a file)."""
    raced = CampaignDirError(
        f"{d} was just created by another process; continue it with `alcsp run {d}` or "
        "choose another directory"
    )
    try:
        os.rename(tmp, d)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
        if (d / DB_NAME).exists():
            raise raced from None
        stray = sorted(p.name for p in d.glob(glob.escape(DB_NAME) + "*"))
        if stray:
            raise CampaignDirError(
                f"{d} holds {stray[0]} but no {DB_NAME} (left by a deleted campaign); "
                f"delete {' and '.join(stray)} and run again"
            ) from None
        try:
            os.link(tmp / DB_NAME, d / DB_NAME)
        except FileExistsError:
            raise raced from None
    try:  # make the new name durable, as the database's own contents are
        fd = os.open(d.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit: ``BEGIN IMMEDIATE``),
    WAL journal and ``synchronous=FULL`` for a writer; ``mode=ro`` for a reader.

    A reader of a database in a folder it cannot write (a campaign archived read-only, or
    another user's) opens it ``immutable``: SQLite could not make the shared-memory index
    of the WAL there, and no writer can change it (a writer needs that index too). Not when
    a write-ahead log with content is there: immutable would not read it."""
    if readonly:
        wal = path.with_name(path.name + "-wal")
        frozen = not os.access(path.parent, os.W_OK) and not (wal.exists() and wal.stat().st_size)
        mode = "mode=ro&immutable=1" if frozen else "mode=ro"
        conn = sqlite3.connect(f"file:{path}?{mode}", uri=True, isolation_level=None, timeout=30.0)
    else:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA page_size=8192")  # takes effect only on a new database
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(
                f"{path}: SQLite refused WAL mode (got {mode!r}); put the "
                "campaign directory on a local file system"
            )
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    # 64 MB page cache: index updates of millions of rows stay in memory.
    conn.execute("PRAGMA cache_size=-65536")
    return conn


def migrate(conn: sqlite3.Connection, found: str) -> str:
    """Bring a writable database of schema ``found`` up to ``SCHEMA_VERSION`` in one
    transaction (each step adds what the next version has, never removes); returns the
    version it is at now (``found`` itself when no migration leads from it).

    1 → 2: ``labels.energy_zero`` (NULL = the same as ``energy``) and the
    ``oracle_relaxations`` table."""
    if found != "1":
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE labels ADD COLUMN energy_zero REAL")
        for stmt in _SCHEMA.split(";"):  # new tables (IF NOT EXISTS)
            if stmt.strip():
                conn.execute(stmt)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return SCHEMA_VERSION
