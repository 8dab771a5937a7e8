"""Analyses of the structures a campaign found: hydrogen clathrate cages (``cages``), the
electronic structure with the GPAW oracle (``electronic``) and a fast T_c estimate for
hydrides (``tc``, Belli et al. 2021, on the ELF networking value of ``elf``)."""

from __future__ import annotations

from enum import StrEnum

from alcsp.errors import UserError


class AnalysisError(UserError, ValueError):
    """Bad input to an analysis (printed as one line, exit status 2)."""


class AnalysisKind(StrEnum):
    """What ``alcsp analyse --what`` can ask for."""

    CAGES = "cages"
    ELECTRONIC = "electronic"
    TC = "tc"

    @property
    def implemented(self) -> bool:
        return True
