"""VASP as an oracle through ``ase.calculators.vasp`` with the user's own binary and POTCARs.

The command comes from the config (``command``) or ASE's variables (``ASE_VASP_COMMAND``,
``VASP_COMMAND``); the POTCAR root from ``pp_path`` or ``VASP_PP_PATH``. A missing binary
is a recorded ``missing_binary`` failure; an unconverged electronic loop (EDIFF not reached
within NELM) is ``scf_not_converged``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ase import Atoms
from ase.calculators.calculator import BaseCalculator, Calculator

from alcsp.oracle._binary import missing_executables
from alcsp.oracle.ase_oracle import (
    CalculatorSpec,
    JobInfo,
    MissingBinary,
    SCFNotConverged,
    kpts_from_spacing,
)


@dataclass(frozen=True)
class VaspParams:
    command: str = ""  # e.g. "mpirun -np 16 vasp_std"; "" = $ASE_VASP_COMMAND / $VASP_COMMAND
    pp_path: str = ""  # POTCAR root holding potpaw_PBE/; "" = $VASP_PP_PATH
    xc: str = "PBE"
    setups: Mapping[str, str] = field(default_factory=dict)  # e.g. {"Ca": "_sv"}
    encut: float = 520.0  # eV
    kspacing: float = 0.03  # 2π Å⁻¹
    ismear: int = 0
    sigma: float = 0.05  # eV
    ediff: float = 1e-6  # eV
    nelm: int = 100
    algo: str = "Normal"
    amix: float | None = None
    bmix: float | None = None
    prec: str = "Accurate"

    def resolved_command(self) -> str:
        return (
            self.command
            or os.environ.get("ASE_VASP_COMMAND")
            or os.environ.get("VASP_COMMAND")
            or "vasp_std"
        )

    def resolved_pp_path(self) -> str:
        return self.pp_path or os.environ.get("VASP_PP_PATH", "")


class VaspSpec(CalculatorSpec):
    name: ClassVar[str] = "vasp"
    Params: ClassVar[type] = VaspParams
    default_retries: ClassVar[tuple[dict[str, Any], ...]] = (
        {"algo": "All", "nelm": 200, "amix": 0.1, "bmix": 0.01},
    )
    default_isolate: ClassVar[bool] = True

    def preflight(self, params: VaspParams) -> None:
        cmd = params.resolved_command()
        missing = missing_executables(cmd)
        if missing:
            raise MissingBinary(
                f"{', '.join(missing)} not found on PATH (command {cmd!r}); set "
                "[oracle.parameters] command to your VASP launch line (e.g. "
                '"mpirun -np 16 /opt/vasp/bin/vasp_std") or export ASE_VASP_COMMAND'
            )
        if not params.resolved_pp_path():
            raise MissingBinary(
                "no POTCAR directory: set [oracle.parameters] pp_path or export VASP_PP_PATH "
                "to the folder holding potpaw_PBE/"
            )

    def env(self, params: VaspParams) -> dict[str, str]:
        pp = params.resolved_pp_path()
        return {"VASP_PP_PATH": pp} if pp else {}

    def make_calculator(self, atoms: Atoms, params: VaspParams, job: JobInfo) -> Calculator:
        from ase.calculators.vasp import Vasp

        kw: dict[str, Any] = dict(
            command=params.resolved_command(),
            directory=str(job.directory),
            xc=params.xc,
            encut=params.encut,
            kpts=kpts_from_spacing(atoms, params.kspacing),
            gamma=True,
            ismear=params.ismear,
            sigma=params.sigma,
            ediff=params.ediff,
            nelm=params.nelm,
            algo=params.algo,
            prec=params.prec,
            isif=2,
            ibrion=-1,
            nsw=0,
            lwave=False,
            lcharg=False,
        )
        if params.setups:
            kw["setups"] = dict(params.setups)
        if params.amix is not None:
            kw["amix"] = params.amix
        if params.bmix is not None:
            kw["bmix"] = params.bmix
        return Vasp(**kw)

    def check_converged(self, calc: BaseCalculator, job: JobInfo) -> None:
        if getattr(calc, "converged", True) is False:
            raise SCFNotConverged(f"VASP reached NELM without EDIFF (see {job.directory}/OUTCAR)")
