"""Analyses of the structures a campaign found: hydrogen clathrate cages (``cages``);
electronic structure and T_c are planned (``AnalysisKind``)."""

from __future__ import annotations

from enum import StrEnum


class AnalysisKind(StrEnum):
    """What ``alcsp analyse --what`` can ask for."""

    CAGES = "cages"
    ELECTRONIC = "electronic"
    TC = "tc"

    @property
    def implemented(self) -> bool:
        return self is AnalysisKind.CAGES
