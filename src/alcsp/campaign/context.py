"""What every stage of the campaign reads: ``StageContext`` (frozen), and the oracle budget.

A stage (``training``, ``search``, ``selection``, ``final``) is a function of a context and
typed inputs that returns a typed result. The context carries the config, the store, the
oracle's name, the executor (made on first use by the campaign) and the event sink; it has
no state of its own, so the same context and the same store give the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from alcsp.campaign.events import Event, Notice
from alcsp.config import CampaignConfig
from alcsp.execute import Executor
from alcsp.oracle.ase_oracle import ASEOracle
from alcsp.store import CampaignStore
from alcsp.store.hulls import HullSnapshot, LabelledHull, labelled_hull


@dataclass(frozen=True)
class StageContext:
    config: CampaignConfig
    store: CampaignStore
    oracle: ASEOracle  # labels and relaxes (its ASE calculator)
    emit: Callable[[Event], None]
    executor: Callable[[], Executor]  # the campaign's executor, started on first call

    @property
    def oracle_name(self) -> str:
        return self.oracle.name

    def notice(self, text: str, iteration: int | None = None, warning: bool = False) -> None:
        self.emit(Notice(text, iteration, warning))

    def rng(self, iteration: int, stage: int) -> np.random.Generator:
        """The generator of (campaign seed, iteration, stage): a resumed stage draws the
        same numbers."""
        return np.random.default_rng([self.config.campaign.seed, iteration, stage])

    # -- the hull of every successful oracle label (enthalpies at the campaign pressure)
    def labelled_hull(self) -> LabelledHull | None:
        cfg = self.config
        return labelled_hull(self.store, self.oracle_name, cfg.campaign.pressure, cfg.elements)

    def oracle_hull(self) -> HullSnapshot | None:
        """The stable phases of ``labelled_hull`` and their formation enthalpies."""
        lh = self.labelled_hull()
        if lh is None:
            return None
        stable, sids = {}, {}
        for i in lh.hull.stable_indices:
            key = lh.hull.keys[lh.hull.comp_index[i]]
            stable[key] = float(lh.hull.formation[i])
            sids[key] = lh.structure_id(i)
        return HullSnapshot(stable, sids, len(lh.structures))

    # -- the oracle budget: every single point and every step of every oracle relaxation
    def budget_left(self) -> int | None:
        """Oracle calls left (None: no ``oracle_budget``)."""
        b = self.config.campaign.oracle_budget
        return None if b == 0 else max(0, b - sum(self.store.oracle_calls().values()))

    def within_budget(self, ids: Sequence[int]) -> list[int]:
        """``ids`` already labelled, then as many of the others as the budget allows."""
        left = self.budget_left()
        if left is None:
            return list(ids)
        labelled = self.store.labelled_ids(self.oracle_name)
        todo = [i for i in ids if i not in labelled]
        return [i for i in ids if i in labelled] + todo[:left]

    def iteration_cap(self, n: int) -> int | None:
        """Oracle single points iteration ``n`` may spend: ``oracle_per_iteration``, and with
        an ``oracle_budget`` at most a fair share of what was left when the iteration began
        (left / (iterations left + 1), the final stage counting as one). None: no cap.
        Computed from the calls before iteration n, so a resumed selection is the same."""
        cfg = self.config.campaign
        caps = [cfg.oracle_per_iteration] if cfg.oracle_per_iteration else []
        if cfg.oracle_budget:
            calls = self.store.oracle_calls()
            used = sum(calls.values()) - calls.get(f"iteration {n}", 0)
            left = max(0, cfg.oracle_budget - used)
            caps.append(max(1, left // (cfg.max_iterations - n + 2)))
        return min(caps) if caps else None
