"""Fault injection: an oracle that fails chosen jobs on purpose, to test that a campaign
survives crashes, hangs, SCF failures, dying processes and garbage results.

The faults are drawn once by the caller with an explicit ``numpy.random.Generator``
(``draw_faults``) and keyed by job key, so an isolated job knows its fault without any
shared state. Successful jobs are computed by the wrapped (real) code.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from alcsp.oracle.ase_oracle import CalculatorSpec, Computed, JobInfo, SCFNotConverged

#: Fault modes and what they do in the job.
FAULT_MODES = {
    "raise": "raise RuntimeError (recorded as crash)",
    "scf": "raise SCFNotConverged on every attempt",
    "scf_once": "raise SCFNotConverged on the first attempt only (a retry succeeds)",
    "hang": "sleep far past any time limit (recorded as timeout; needs isolation)",
    "die": "SIGKILL the job process (recorded as crash; needs isolation)",
    "nan": "return a NaN energy (recorded as invalid_result)",
}


def draw_faults(
    keys: Sequence[str],
    rng: np.random.Generator,
    p_fail: float = 0.3,
    modes: Sequence[str] = ("raise", "scf", "hang", "die", "nan"),
) -> dict[str, str]:
    """Pick each key with probability ``p_fail`` and give it a random mode."""
    bad = sorted(set(modes) - set(FAULT_MODES))
    if bad:
        raise ValueError(f"unknown fault modes {bad}; known: {sorted(FAULT_MODES)}")
    hit = rng.random(len(keys)) < p_fail
    return {
        k: str(modes[int(rng.integers(len(modes)))]) for k, h in zip(keys, hit, strict=True) if h
    }


@dataclass
class FaultInjectingSpec(CalculatorSpec):
    """Wraps a real spec; jobs whose key is in ``faults`` fail in the given mode."""

    inner: CalculatorSpec
    faults: Mapping[str, str] = field(default_factory=dict)
    hang_s: float = 3600.0

    def __post_init__(self) -> None:
        # per-instance values of CalculatorSpec's class variables: the wrapper takes its
        # inner spec's name and Params (mypy forbids assigning a ClassVar via an instance)
        self.name = f"{self.inner.name}+faults"  # type: ignore[misc]
        self.Params = self.inner.Params  # type: ignore[misc]

    def make_calculator(self, atoms: Atoms, params: Any, job: JobInfo) -> BaseCalculator:
        return self.inner.make_calculator(atoms, params, job)

    def compute(self, atoms: Atoms, params: Any, job: JobInfo) -> Computed:
        mode = self.faults.get(job.key)
        if mode in ("hang", "die") and not job.isolated:
            raise RuntimeError(f"fault {mode!r} needs an isolated oracle (isolate=True)")
        if mode == "raise":
            raise RuntimeError("injected crash")
        if mode == "scf" or (mode == "scf_once" and job.attempt == 1):
            raise SCFNotConverged("injected SCF non-convergence")
        if mode == "hang":
            time.sleep(self.hang_s)
        if mode == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        got = self.inner.compute(atoms, params, job)
        if mode == "nan":
            return dataclasses.replace(got, energy=float("nan"))
        return got
