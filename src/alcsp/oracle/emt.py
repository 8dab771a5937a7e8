"""ASE's EMT as an oracle: a cheap real potential for tests and the demo (Al, Cu, Ag, Au,
Ni, Pd, Pt, and H, C, N, O with made-up parameters)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ase import Atoms
from ase.calculators.calculator import Calculator

from alcsp.oracle.ase_oracle import CalculatorSpec, JobInfo


@dataclass(frozen=True)
class EMTParams:
    """EMT has no settings."""


class EMTSpec(CalculatorSpec):
    name: ClassVar[str] = "emt"
    Params: ClassVar[type] = EMTParams
    default_isolate: ClassVar[bool] = False

    def make_calculator(self, atoms: Atoms, params: EMTParams, job: JobInfo) -> Calculator:
        from ase.calculators.emt import EMT

        return EMT()
