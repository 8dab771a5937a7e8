"""The active-learning campaign (paper Fig. 2): ``Campaign`` (``loop``) runs the stages,
each a function of a ``StageContext`` (``context``): ``training``, ``search``,
``selection``, ``final`` (the oracle's relaxations; its pure choice, ``final_choice``, is
what the final stage relaxes) and ``stopping``; ``events`` is what it tells its user. The
hulls of a stored campaign are ``alcsp.store.hulls`` (re-exported here for existing
callers).

Everything is imported on first use (PEP 562), so that ``alcsp.campaign.events`` can be
imported by the command line without torch, the model or the oracles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alcsp.campaign.loop import Campaign
    from alcsp.store.hulls import (
        ENERGY_DEFINITION,
        HullSnapshot,
        LabelledHull,
        labelled_hull,
        terminal_warnings,
    )

__all__ = [
    "ENERGY_DEFINITION",
    "Campaign",
    "HullSnapshot",
    "LabelledHull",
    "labelled_hull",
    "terminal_warnings",
]


def __getattr__(name: str) -> Any:
    if name == "Campaign":
        from alcsp.campaign.loop import Campaign

        return Campaign
    if name in __all__:
        from alcsp.store import hulls

        return getattr(hulls, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
