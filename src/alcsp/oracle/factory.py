"""Typed oracle configuration and the factory that builds an oracle from it."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alcsp.oracle.ase_oracle import ASEOracle, CalculatorSpec
from alcsp.oracle.base import FailureKind
from alcsp.oracle.chgnet import CHGNetSpec
from alcsp.oracle.emt import EMTSpec
from alcsp.oracle.espresso import EspressoSpec
from alcsp.oracle.gpaw import GPAWSpec
from alcsp.oracle.vasp import VaspSpec

#: Oracle name -> spec class. Codes are imported only when a calculation runs.
ORACLES: dict[str, type[CalculatorSpec]] = {
    s.name: s for s in (EMTSpec, GPAWSpec, EspressoSpec, VaspSpec, CHGNetSpec)
}


@dataclass(frozen=True)
class OracleConfig:
    """The ``[oracle]`` table of a campaign config.

    ``parameters`` are the code's settings (see each spec's ``Params``); ``retries`` are
    parameter overrides for attempts 2, 3, ... (None = the code's default, e.g. looser
    mixing for DFT; () = no retry); ``isolate`` runs each job in its own process
    (None = the code's default: on for DFT codes, off for EMT and CHGNet);
    ``timeout_s`` (seconds per attempt) needs isolation.
    """

    name: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None
    retries: Sequence[Mapping[str, Any]] | None = None
    retry_on: Sequence[str] = ("scf_not_converged", "crash")
    isolate: bool | None = None

    def __post_init__(self) -> None:
        t = self.timeout_s
        if t is not None and (
            isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < math.inf
        ):
            raise ValueError(
                f"[oracle] timeout_s must be a number of seconds > 0 (leave it out for no "
                f"limit), got {t!r}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OracleConfig:
        """Build from a parsed TOML table, naming unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"[oracle] has unknown keys {unknown}; known keys: {sorted(known)}")
        if "name" not in d:
            raise ValueError(f"[oracle] needs name = one of {sorted(ORACLES)}")
        return cls(**d)


def _params(spec_cls: type[CalculatorSpec], values: Mapping[str, Any], where: str) -> Any:
    fields = {f.name for f in dataclasses.fields(spec_cls.Params)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(
            f"{where} has unknown parameters {unknown} for oracle {spec_cls.name!r}; "
            f"known: {sorted(fields) or 'none'}"
        )
    return spec_cls.Params(**values)


def make_oracle(config: OracleConfig, workdir: str | os.PathLike) -> ASEOracle:
    """Build the oracle named by ``config`` with job directories under ``workdir``."""
    if config.name not in ORACLES:
        raise ValueError(f"unknown oracle {config.name!r}; choose one of {sorted(ORACLES)}")
    spec_cls = ORACLES[config.name]
    params = _params(spec_cls, config.parameters, "[oracle.parameters]")
    retries = spec_cls.default_retries if config.retries is None else tuple(config.retries)
    for k, override in enumerate(retries, start=2):
        _params(spec_cls, {**dataclasses.asdict(params), **override}, f"retry {k}")
    valid_kinds = {k.value for k in FailureKind}
    bad = sorted(set(config.retry_on) - valid_kinds)
    if bad:
        raise ValueError(f"[oracle] retry_on has unknown kinds {bad}; known: {sorted(valid_kinds)}")
    isolate = spec_cls.default_isolate if config.isolate is None else config.isolate
    if config.timeout_s is not None and config.isolate is None:
        isolate = True  # a time limit needs its own process
    return ASEOracle(
        spec_cls(),
        params,
        workdir,
        timeout_s=config.timeout_s,
        retries=retries,
        retry_on=[FailureKind(k) for k in config.retry_on],
        isolate=isolate,
    )
