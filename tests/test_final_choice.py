"""The final stage's choice as a pure function of the DFT hull (``alcsp.campaign.final``):
tested on hulls built in memory, with no store, no oracle and no campaign directory."""

from __future__ import annotations

import numpy as np
from ase import Atoms

from alcsp.campaign.final import final_choice
from alcsp.dedup import DedupConfig
from alcsp.store.hulls import LabelledHull, hull_of
from alcsp.vocab import Origin, composition_key

# (structure id, formula, enthalpy eV/atom, origin, fingerprint tag): labels of Cu–Au.
# A and B: the elements' best and second-best labels; CuAu: three labels, two of them one
# structure (same fingerprint tag); Cu3Au: one label near the hull, one far above it.
ROWS = [
    (1, "Cu", -3.50, Origin.INITIAL, "cu-a"),
    (2, "Cu", -3.49, Origin.INITIAL, "cu-b"),
    (3, "Au", -3.10, Origin.ORACLE_RELAXED, "au-a"),  # a relaxed reference
    (4, "CuAu", -3.40, Origin.RELAXED, "l10"),  # on the hull
    (5, "CuAu", -3.3999, Origin.RELAXED, "l10"),  # the same structure again
    (6, "CuAu", -3.37, Origin.RELAXED, "b19"),  # 30 meV/atom above: distinct
    (7, "Cu3Au", -3.44, Origin.RELAXED, "l12"),  # 10 meV/atom above
    (8, "Cu3Au", -3.10, Origin.RELAXED, "d022"),  # far above the window
]
TAGS = sorted({r[4] for r in ROWS})


def _hull(rows=ROWS) -> LabelledHull:
    structures = []
    for sid, formula, _h, origin, tag in rows:
        a = Atoms(formula, cell=np.eye(3) * 3.0, pbc=True)
        a.info.update(structure_id=sid, origin=str(origin), tag=tag)
        structures.append(a)
    keys = np.array([composition_key(r[1]) for r in rows], dtype=object)
    h = np.array([r[2] for r in rows])
    built = hull_of(keys, h, ("Cu", "Au"))
    assert built is not None
    return LabelledHull(built[0], structures, built[1])


def _fingerprint(a: Atoms) -> np.ndarray:
    v = np.zeros(len(TAGS), dtype=np.float32)
    v[TAGS.index(a.info["tag"])] = 1.0  # one-hot: equal tags are duplicates (distance 0)
    return v


def _choose(lh: LabelledHull, relaxed=(), window=0.1, m=8):
    return final_choice(lh, set(relaxed), ("Cu", "Au"), DedupConfig(), window, m, _fingerprint)


def test_terminals_first_unless_already_oracle_relaxed() -> None:
    choice = _choose(_hull())
    assert choice.terminals == [1]  # Au's best is an oracle-relaxed reference: not again
    assert _choose(_hull(), relaxed=[1]).terminals == []  # relaxed in an earlier round


def test_compounds_are_distinct_within_the_window_round_robin_best_first() -> None:
    choice = _choose(_hull())
    # CuAu (on the hull) before Cu3Au (E_hull > 0); 5 duplicates 4; 8 is outside the window.
    assert choice.compounds == [4, 7, 6]
    assert _choose(_hull(), m=2).compounds == [4, 7]  # round robin over compositions
    assert _choose(_hull(), window=0.001).compounds == [4]


def test_a_structure_relaxed_before_blocks_itself_and_its_duplicates() -> None:
    choice = _choose(_hull(), relaxed=[4])
    assert 4 not in choice.compounds and 5 not in choice.compounds
    assert choice.compounds == [7, 6]
