"""What the final stage relaxes with the oracle: a pure choice from the DFT hull.

``final_choice`` takes the hull of the labels (``LabelledHull``), what the oracle has
relaxed before and a fingerprint function, and returns the terminals to relax first and
up to ``m`` compounds; no store, no oracle. The loop (``Campaign.final_relaxation``)
stores the choice before relaxing anything, so a kill resumes the same picks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from alcsp.dedup import DedupConfig, Deduplicator
from alcsp.store.hulls import LabelledHull
from alcsp.vocab import Origin

Fingerprint = Callable[[Atoms], np.ndarray | None]


@dataclass(frozen=True)
class FinalChoice:
    terminals: list[int]  # structure ids: each element's lowest label, when not relaxed yet
    compounds: list[int]  # structure ids, round robin over compositions, best E_hull first


def final_choice(
    lh: LabelledHull,
    relaxed_parents: Collection[int],
    elements: tuple[str, ...],
    dedup: DedupConfig,
    e_hull_window: float,
    m: int,
    fingerprint: Fingerprint,
) -> FinalChoice:
    """Every element's lowest label, unless it is oracle-relaxed or was relaxed before;
    and up to ``m`` compounds: per composition within ``e_hull_window`` (eV/atom) of the
    hull, its labels in E_hull order without fingerprint duplicates (of each other or of
    anything relaxed before), never one relaxed before, taken round robin over the
    compositions in order of their best E_hull. Ties in E_hull go to the lower id."""
    hull = lh.hull
    sids = [lh.structure_id(i) for i in range(len(lh.kept))]
    atoms = [lh.structures[k] for k in lh.kept]
    origin = [a.info["origin"] for a in atoms]
    keys = [hull.keys[hull.comp_index[i]] for i in range(len(sids))]
    order = sorted(range(len(sids)), key=lambda i: (hull.e_hull[i], sids[i]))

    def relaxed(i: int) -> bool:
        return origin[i] == Origin.ORACLE_RELAXED or sids[i] in relaxed_parents

    terminals: list[int] = []
    for el in elements:
        own = [i for i in order if keys[i] == el]
        if own and not relaxed(own[0]):
            terminals.append(sids[own[0]])
    seen = Deduplicator(dedup)
    h = hull.enthalpy
    for i in order:  # anything relaxed before blocks its duplicates
        if keys[i] not in elements and relaxed(i):
            fp = fingerprint(atoms[i])
            if fp is not None:
                seen.add(str(sids[i]), keys[i], float(h[i]), fp)
    queues: dict[str, list[int]] = {}
    for i in order:
        if keys[i] in elements or hull.e_hull[i] > e_hull_window + 1e-12 or relaxed(i):
            continue
        fp = fingerprint(atoms[i])
        if fp is None or seen.add(str(sids[i]), keys[i], float(h[i]), fp) is None:
            queues.setdefault(keys[i], []).append(sids[i])
    compounds: list[int] = []
    while len(compounds) < m and any(queues.values()):
        for key in list(queues):  # dicts keep insertion order: best E_hull first
            if queues[key] and len(compounds) < m:
                compounds.append(queues[key].pop(0))
    return FinalChoice(terminals, compounds)
