"""The ``compositions`` table: the reduced compositions a campaign searches."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from alcsp.store.repository import Repository
from alcsp.vocab import composition_key


def _as_composition_key(c: Any) -> str:
    if isinstance(c, Mapping):
        return composition_key(c)
    from pymatgen.core import Composition

    comp = Composition(c) if isinstance(c, str) else c
    return composition_key({str(el): amt for el, amt in comp.items()})


class CompositionRepository(Repository):
    """Rows of ``compositions``: reduced composition keys (e.g. ``MgCaH6``) with the
    iteration and the source that added them."""

    def add(
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

    def formulas(self) -> list[str]:
        """The composition keys, in id order."""
        return [r[0] for r in self.conn.execute("SELECT formula FROM compositions ORDER BY id")]
