"""The ``meta`` table: the campaign's key → value metadata (schema version, config text,
alcsp version, stop reason, final hull, ...) and the search-shard marks stored there (which
generated shards of an iteration are stored, which failed and why)."""

from __future__ import annotations

import sqlite3

from alcsp.store.repository import Repository

#: meta key prefix of a stored generated search shard: "search_shard:<iteration>:<shard>"
_SHARD_KEY = "search_shard:"
_SHARD_FAILED_KEY = "search_shard_failed:"  # + "<iteration>:<shard>" -> why it failed


class MetaRepository(Repository):
    """Rows of ``meta``: values by key, and the search-shard bookkeeping kept under the
    ``search_shard:`` and ``search_shard_failed:`` keys."""

    def value(self, key: str) -> str | None:
        """The value of ``key`` (None when absent)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_value(self, key: str, value: str) -> None:
        """Set ``key`` to ``value`` (replacing it), in one transaction."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                "SET value = excluded.value",
                (key, value),
            )

    # -- search shards ----------------------------------------------------------------

    @staticmethod
    def shard_stored(c: sqlite3.Connection, iteration: int, shard: int) -> bool:
        """Whether generated shard ``shard`` of ``iteration`` is marked stored, read inside
        the caller's transaction ``c``."""
        key = f"{_SHARD_KEY}{iteration}:{shard}"
        return c.execute("SELECT 1 FROM meta WHERE key = ?", (key,)).fetchone() is not None

    @staticmethod
    def mark_shard_stored(c: sqlite3.Connection, iteration: int, shard: int, starts: int) -> None:
        """Mark generated shard ``shard`` of ``iteration`` (``starts`` structures) stored and
        clear its failure, inside the caller's transaction ``c``."""
        c.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?)",
            (f"{_SHARD_KEY}{iteration}:{shard}", str(starts)),
        )
        c.execute("DELETE FROM meta WHERE key = ?", (f"{_SHARD_FAILED_KEY}{iteration}:g{shard}",))

    def record_shard_failure(self, iteration: int, shard: str, reason: str) -> None:
        """Note that search shard ``shard`` (``g<k>``: generated shard k; ``s<id>``: the
        stored starts from structure ``id``) of ``iteration`` failed, and why; cleared when
        it is stored (``clear_shard_failure``), shown by ``alcsp status``."""
        self.set_value(f"{_SHARD_FAILED_KEY}{iteration}:{shard}", reason)

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
