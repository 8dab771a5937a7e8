"""CHGNet (pretrained universal potential) as a teacher oracle.

The weights ship inside the ``chgnet`` wheel (extra ``teacher``), so it works offline.
The model is loaded once per process and reused; runs in-process by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ase import Atoms
from ase.calculators.calculator import Calculator

from alcsp.oracle.ase_oracle import CalculatorSpec, JobInfo, MissingBinary


@dataclass(frozen=True)
class CHGNetParams:
    model: str = "0.3.0"  # a version bundled with the wheel
    device: str = "cpu"


class CHGNetSpec(CalculatorSpec):
    name: ClassVar[str] = "chgnet"
    Params: ClassVar[type] = CHGNetParams
    default_isolate: ClassVar[bool] = False

    def __init__(self):
        self._calc: Any = None
        self._calc_params: CHGNetParams | None = None

    def __getstate__(self) -> dict:
        return {}  # never pickle the model: each process loads its own

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def preflight(self, params: CHGNetParams) -> None:
        try:
            import chgnet  # noqa: F401
        except ImportError as exc:
            raise MissingBinary(
                f"chgnet is not installed ({exc}); pip install -c constraints.txt "
                "'alcsp[teacher]'"
            ) from exc

    def make_calculator(self, atoms: Atoms, params: CHGNetParams, job: JobInfo) -> Calculator:
        if self._calc is None or self._calc_params != params:
            from chgnet.model import CHGNet
            from chgnet.model.dynamics import CHGNetCalculator

            model = CHGNet.load(model_name=params.model, verbose=False)
            self._calc = CHGNetCalculator(model=model, use_device=params.device)
            self._calc_params = params
        self._calc.reset()
        return self._calc
