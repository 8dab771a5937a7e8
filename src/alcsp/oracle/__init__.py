"""Oracles: label structures with reference energies, forces and stresses.

``make_oracle(OracleConfig(name="gpaw", parameters={...}), workdir)`` builds one; every
oracle returns a ``Label`` or a recorded ``LabelFailure`` per structure and passes
``check_oracle``.
"""

from alcsp.oracle.ase_oracle import (
    ASEOracle,
    CalculatorSpec,
    JobInfo,
    MissingBinary,
    SCFNotConverged,
    kpts_from_spacing,
    structure_key,
)
from alcsp.oracle.base import (
    ContractTolerances,
    FailureKind,
    Label,
    LabelFailure,
    LabelResult,
    Oracle,
    OracleContractError,
    check_failure,
    check_oracle,
)
from alcsp.oracle.factory import ORACLES, OracleConfig, make_oracle

__all__ = [
    "ASEOracle",
    "CalculatorSpec",
    "ContractTolerances",
    "FailureKind",
    "JobInfo",
    "Label",
    "LabelFailure",
    "LabelResult",
    "MissingBinary",
    "ORACLES",
    "Oracle",
    "OracleConfig",
    "OracleContractError",
    "SCFNotConverged",
    "check_failure",
    "check_oracle",
    "kpts_from_spacing",
    "make_oracle",
    "structure_key",
]
