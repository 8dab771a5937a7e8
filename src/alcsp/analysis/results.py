"""Analyses stored in a campaign: ``DIR/analysis/cages.json`` (``CageResults``), and
``electronic.json`` and ``tc.json`` (``KeyedResults``, the same layout with plain JSON
entries ``{"composition", "space_group", "result"}``).

The file maps analysis settings (``CageSettings.key()``) to structure ids to results, so
that asking again with the same settings costs nothing and other settings never reuse a
result that they would compute differently. Every result is written as it finishes: the
whole file is rewritten to a temporary sibling and renamed over the old one (atomic on
POSIX), so a kill at any moment leaves the previous or the next complete file, and loses
only the structure being analysed. One writer at a time (an ``flock`` on
``DIR/analysis/cages.lock``); readers (reports) need no lock.

Layout (format 1)::

    {"format": 1,
     "settings": {KEY: {CageSettings fields}},
     "results": {KEY: {"<structure id>": {"composition", "space_group", "analysis"}}},
     "last_run": {"settings": KEY, "ehull": eV/atom, "finished": time.time(),
                  "rows": [{"structure_id", "e_hull_mev"}]}}
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alcsp.analysis import AnalysisError
from alcsp.analysis.cages import CageAnalysis, CageSettings

ANALYSIS_DIR = "analysis"
CAGES_FILE = "cages.json"
FORMAT = 1


def cages_path(directory: Path) -> Path:
    return Path(directory) / ANALYSIS_DIR / CAGES_FILE


@dataclass(frozen=True)
class StoredCages:
    """The stored cage analysis of one structure, with what the table shows of it."""

    structure_id: int
    composition: str
    space_group: str
    analysis: CageAnalysis

    def to_json(self) -> dict[str, Any]:
        return {
            "composition": self.composition,
            "space_group": self.space_group,
            "analysis": self.analysis.to_json(),
        }

    @classmethod
    def from_json(cls, structure_id: int, d: dict[str, Any]) -> StoredCages:
        return cls(
            structure_id,
            str(d["composition"]),
            str(d["space_group"]),
            CageAnalysis.from_json(d["analysis"]),
        )


@dataclass(frozen=True)
class LastRun:
    """What the last finished ``alcsp analyse`` selected (E_hull as it was then)."""

    settings_key: str
    ehull: float  # eV/atom, the window
    finished: float  # time.time()
    rows: tuple[tuple[int, float], ...]  # (structure id, E_hull meV/atom)


def write_json_atomically(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary sibling and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; a result file is for everyone to read
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_cages_file(path: Path) -> dict[str, Any]:
    """The parsed file (an empty layout when absent); a one-line error when unreadable."""
    if not path.exists():
        return {"format": FORMAT, "settings": {}, "results": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AnalysisError(f"{path} is unreadable ({exc}); delete it to analyse again") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise AnalysisError(
            f"{path} is not a format-{FORMAT} cage file; delete it to analyse again"
        )
    return data


class CageResults:
    """The cages of one campaign directory, open for writing (``CageResults.open``)."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self._data = data

    @classmethod
    @contextmanager
    def open(cls, directory: Path) -> Iterator[CageResults]:
        """Hold the writer's lock for the block; the folder is made when absent."""
        path = cages_path(directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / "cages.lock", "a") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AnalysisError(
                    f"another alcsp analyse is writing {path}; wait for it to finish"
                ) from None
            try:
                yield cls(path, read_cages_file(path))
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def get(self, structure_id: int, settings: CageSettings) -> StoredCages | None:
        entry = self._data["results"].get(settings.key(), {}).get(str(structure_id))
        return None if entry is None else StoredCages.from_json(structure_id, entry)

    def add(self, settings: CageSettings, result: StoredCages) -> None:
        """Store one result now (atomically: the file is complete after every call)."""
        key = settings.key()
        self._data["settings"][key] = settings.to_json()
        self._data["results"].setdefault(key, {})[str(result.structure_id)] = result.to_json()
        write_json_atomically(self.path, self._data)

    def finish_run(
        self, settings: CageSettings, ehull: float, rows: Sequence[tuple[int, float]]
    ) -> None:
        """Record the selection of a finished run (what the report section shows)."""
        self._data["last_run"] = {
            "settings": settings.key(),
            "ehull": ehull,
            "finished": time.time(),
            "rows": [{"structure_id": sid, "e_hull_mev": e} for sid, e in rows],
        }
        write_json_atomically(self.path, self._data)


def load_stored(directory: Path) -> tuple[dict[str, dict[int, StoredCages]], LastRun | None]:
    """Every stored result by settings key and structure id, and the last run (None when
    no run finished). Empty when the file is absent."""
    data = read_cages_file(cages_path(directory))
    results = {
        key: {int(sid): StoredCages.from_json(int(sid), e) for sid, e in entries.items()}
        for key, entries in data["results"].items()
    }
    run = data.get("last_run")
    last = (
        None
        if run is None
        else LastRun(
            str(run["settings"]),
            float(run["ehull"]),
            float(run["finished"]),
            tuple((int(r["structure_id"]), float(r["e_hull_mev"])) for r in run["rows"]),
        )
    )
    return results, last


# ------------------------------------------------------- electronic structure and T_c

ELECTRONIC_FILE = "electronic.json"
TC_FILE = "tc.json"


def electronic_path(directory: Path) -> Path:
    return Path(directory) / ANALYSIS_DIR / ELECTRONIC_FILE


def tc_path(directory: Path) -> Path:
    return Path(directory) / ANALYSIS_DIR / TC_FILE


def read_results_file(path: Path, what: str) -> dict[str, Any]:
    """A format-1 results file (``{"format", "settings", "results"[, "last_run"]}``) as
    parsed, an empty layout when absent; a one-line error when unreadable."""
    if not path.exists():
        return {"format": FORMAT, "settings": {}, "results": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AnalysisError(f"{path} is unreadable ({exc}); delete it to analyse again") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise AnalysisError(
            f"{path} is not a format-{FORMAT} {what} file; delete it to analyse again"
        )
    return data


class KeyedResults:
    """Results of one kind (electronic structure, T_c) of one campaign, by settings key and
    structure id, in ``DIR/analysis/<name>.json`` with the layout of ``cages.json`` (module
    docstring). Entries are plain JSON dicts: ``{"composition", "space_group", "result"}``.
    Every ``add`` rewrites the file atomically, so a kill loses only the structure being
    computed. Open for writing with ``KeyedResults.open`` (one writer: an ``flock``)."""

    def __init__(self, path: Path, data: dict[str, Any], what: str):
        self.path = path
        self.what = what
        self._data = data

    @classmethod
    @contextmanager
    def open(cls, path: Path, what: str) -> Iterator[KeyedResults]:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AnalysisError(
                    f"another alcsp analyse is writing {path}; wait for it to finish"
                ) from None
            try:
                yield cls(path, read_results_file(path, what), what)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def get(self, key: str, structure_id: int) -> dict[str, Any] | None:
        return self._data["results"].get(key, {}).get(str(structure_id))

    def add(self, key: str, settings: dict[str, Any], structure_id: int, entry: dict) -> None:
        """Store one result now (the file is complete after every call)."""
        self._data["settings"][key] = settings
        self._data["results"].setdefault(key, {})[str(structure_id)] = entry
        write_json_atomically(self.path, self._data)

    def finish_run(self, key: str, ehull: float, rows: Sequence[tuple[int, float]]) -> None:
        """Record the selection of a finished run (what the report sections show)."""
        self._data["last_run"] = {
            "settings": key,
            "ehull": ehull,
            "finished": time.time(),
            "rows": [{"structure_id": sid, "e_hull_mev": e} for sid, e in rows],
        }
        write_json_atomically(self.path, self._data)


def load_keyed(path: Path, what: str) -> tuple[dict[str, dict[int, dict]], LastRun | None]:
    """Every stored entry of a ``KeyedResults`` file by settings key and structure id, and
    its last finished run (None when none). Empty when the file is absent."""
    data = read_results_file(Path(path), what)
    results = {
        key: {int(sid): e for sid, e in entries.items()} for key, entries in data["results"].items()
    }
    run = data.get("last_run")
    last = (
        None
        if run is None
        else LastRun(
            str(run["settings"]),
            float(run["ehull"]),
            float(run["finished"]),
            tuple((int(r["structure_id"]), float(r["e_hull_mev"])) for r in run["rows"]),
        )
    )
    return results, last
