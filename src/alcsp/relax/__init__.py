"""Batched structure relaxation under pressure (BFGS with Frechet cell degrees of freedom).

Public API::

    from alcsp.relax import RelaxConfig, relax_structures, relax_iter, RelaxResult

    results = relax_structures(atoms_list, potential, pressure=300.0, config=RelaxConfig())

The lower-level pure functions ``bfgs_init``/``bfgs_step`` and the ``BFGSState`` dataclass
are exported for callers that drive the loop themselves.
"""

from alcsp.relax.bfgs import StepOutput, bfgs_init, bfgs_step
from alcsp.relax.config import (
    STATUS_CONVERGED,
    STATUS_MAX_STEPS,
    STATUS_UNPHYSICAL,
    Code,
    RelaxConfig,
)
from alcsp.relax.runner import INFO_KEYS, RelaxResult, relax_iter, relax_structures
from alcsp.relax.state import BFGSState

__all__ = [
    "BFGSState",
    "Code",
    "INFO_KEYS",
    "RelaxConfig",
    "RelaxResult",
    "STATUS_CONVERGED",
    "STATUS_MAX_STEPS",
    "STATUS_UNPHYSICAL",
    "StepOutput",
    "bfgs_init",
    "bfgs_step",
    "relax_iter",
    "relax_structures",
]
