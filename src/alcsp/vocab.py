"""The campaign's vocabulary: the names every module uses for the same things.

A ``StrEnum`` member *is* its string (``RelaxStatus.CONVERGED == "converged"``), so the
store keeps plain text, old campaign directories read unchanged, and code compares and
writes members, never literals. Ids are ``NewType``s of ``int`` (free at run time; the
type checker keeps structure ids, relaxation ids and label ids apart).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, NewType

if TYPE_CHECKING:
    from pymatgen.core import Composition

__all__ = [
    "OracleRelaxStatus",
    "OracleStage",
    "Origin",
    "RelaxStatus",
    "RelaxationId",
    "Stage",
    "StructureId",
    "composition_key",
]

#: A row of the ``structures`` table (a geometry: initial, relaxed, a frame, a reference).
StructureId = NewType("StructureId", int)
#: A row of the ``relaxations`` table (one ACNN relaxation: initial → final structure).
RelaxationId = NewType("RelaxationId", int)


class RelaxStatus(StrEnum):
    """How an ACNN relaxation ended (``alcsp.relax``)."""

    CONVERGED = "converged"  # fmax, energy and stress criteria all met
    MAX_STEPS = "max_steps"  # still moving at the step limit ("unconverged")
    UNPHYSICAL = "unphysical"  # stopped by a check: atoms too close, cell collapsed, ...


class OracleRelaxStatus(StrEnum):
    """How an oracle (DFT) relaxation ended (``alcsp.oracle_relax``)."""

    CONVERGED = "converged"
    MAX_STEPS = "max_steps"
    TIME_LIMIT = "time_limit"
    FAILED = "failed"


class Origin(StrEnum):
    """Where a stored structure came from."""

    RANDOM = "random"  # a random symmetric start of an iteration's ACNN search
    INITIAL = "initial"  # iteration 0's random structures, labelled before any model
    RELAXED = "relaxed"  # the end geometry of an ACNN relaxation
    IMPORT = "import"  # read from a file (``alcsp import``)
    REFERENCE = "reference"  # given to ``alcsp hull --reference``; never trained on
    #: a known phase from ``[references]``: labelled and oracle-relaxed in iteration 0,
    #: copied into each iteration n as a start of its ACNN search; trained on.
    REFERENCE_PHASE = "reference_phase"
    ORACLE_RELAXED = "oracle_relaxed"  # the end geometry of an oracle relaxation
    #: the first frame of an ACNN relaxation where the committee's force deviation crossed
    #: the trust level (labelled instead of the collapsed end geometry)
    TRUST_FRAME = "trust_frame"
    DECORATION = "decoration"  # a decoration of a parent lattice (``alcsp.decorations``)


class OracleStage(StrEnum):
    """The stages that relax structures with the oracle (``oracle_relaxations.stage``)."""

    REFERENCES = "references"  # the [references] phases, before iteration 1
    FINAL = "final"  # terminals and near-hull compounds after the search


class Stage(StrEnum):
    """Where an iteration stands (``iterations.stage``); ``DONE`` once it has finished."""

    START = "start"
    INITIAL = "initial"  # iteration 0: label the references and the initial structures
    TRAIN = "train"
    SEARCH = "search"
    SELECT = "select"
    LABEL = "label"
    DONE = "done"


@functools.cache
def _electronegativity(symbol: str) -> float:
    from pymatgen.core import Element

    return float(Element(symbol).X)


def composition_key(comp: Mapping[str, int | float] | str | Composition) -> str:
    """The canonical key of a composition: its reduced formula, elements in pymatgen's
    electronegativity order (ties by symbol), counts divided by their gcd, a count of 1
    omitted, no brackets: ``'MgH2'``, ``'H'``, ``'BeP2O6'``; ``{"Mg": 2, "H": 4}`` →
    ``'MgH2'``. Reduced by the gcd (pymatgen's own reduction keeps H2, O2 diatomic).

    A mapping is keyed without building a pymatgen ``Composition``: the store computes the
    key for every row it writes."""
    from ase.data import chemical_symbols

    if isinstance(comp, Mapping):
        raw = {str(el): float(n) for el, n in comp.items() if n}
    else:
        from pymatgen.core import Composition

        c = Composition(comp) if isinstance(comp, str) else comp
        raw = {str(el): float(n) for el, n in c.items() if n}
    if not raw or any(el not in chemical_symbols[1:] for el in raw):
        raise ValueError(f"composition {raw} must name real elements with counts > 0")
    counts = {el: int(round(n)) for el, n in raw.items()}
    if any(abs(counts[el] - n) > 1e-6 for el, n in raw.items()):
        raise ValueError(f"composition {raw} has non-integer amounts; use integer atom counts.")
    g = 0
    for n in counts.values():
        g = math.gcd(g, n)
    order = sorted(counts, key=lambda el: (_electronegativity(el), el))
    return "".join(el if counts[el] // g == 1 else f"{el}{counts[el] // g}" for el in order)
