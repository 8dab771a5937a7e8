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

    def preflight(self, params: CHGNetParams) -> None:
        try:
            import chgnet  # noqa: F401
        except ImportError as exc:
            raise MissingBinary(
                f"chgnet is not installed ({exc}); pip install -c constraints.txt 'alcsp[teacher]'"
            ) from exc

    def make_calculator(self, atoms: Atoms, params: CHGNetParams, job: JobInfo) -> Calculator:
        calc = _CALCULATORS.get(params)
        if calc is None:
            from chgnet.model import CHGNet
            from chgnet.model.dynamics import CHGNetCalculator

            model = CHGNet.load(model_name=params.model, verbose=False)
            calc = _CALCULATORS[params] = CHGNetCalculator(model=model, use_device=params.device)
        calc.reset()
        return calc


#: One loaded model per process and parameter set: the oracle is pickled to every task
#: (Dask, process pools), and loading the weights costs seconds.
_CALCULATORS: dict[CHGNetParams, Any] = {}
