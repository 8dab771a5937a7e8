"""The base of the campaign store's repositories (one per table, ``alcsp.store.structures``
and its siblings): the shared connection and the store's write transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager

#: The store's write transaction (``CampaignStore._tx``): all or nothing, refused by a
#: store opened read-only; it yields the shared connection.
Transaction = Callable[[], AbstractContextManager[sqlite3.Connection]]


class Repository:
    """The queries of one table of a campaign database. Reads use ``conn``, the store's
    connection; each write is one ``tx()``. Helpers that take a connection ``c`` run inside
    the caller's transaction (``CampaignStore``'s writes across tables)."""

    def __init__(self, conn: sqlite3.Connection, tx: Transaction) -> None:
        self.conn = conn
        self._tx = tx
