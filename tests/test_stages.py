"""The campaign's stages on in-memory tables, without a database: the selection's ACNN hull
and candidates, the labelled-basin check and the training set, against numbers worked out
by hand (Cu -1.0, Au -2.0 eV/atom; CuAu -1.7 on the hull, -1.6 0.1 above it; Cu3Au -1.2,
0.15 above the Cu–CuAu tie line at -1.35)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from alcsp.campaign.selection import (
    acnn_e_hull,
    basins,
    labelled_rows,
    selection_candidates,
)
from alcsp.campaign.training import loss_weights, training_set, within_force_cap
from alcsp.config import parse_config
from alcsp.dedup import DedupConfig
from alcsp.store import RelaxationTable
from alcsp.vocab import RelaxStatus, composition_key

ROWS = [  # composition, status, enthalpy eV/atom
    ("Cu", RelaxStatus.CONVERGED, -1.0),
    ("Au", RelaxStatus.CONVERGED, -2.0),
    ("CuAu", RelaxStatus.CONVERGED, -1.7),
    ("CuAu", RelaxStatus.CONVERGED, -1.6),
    ("Cu3Au", RelaxStatus.CONVERGED, -1.2),
    ("CuAu", RelaxStatus.UNPHYSICAL, -9.0),  # never on the hull, however low
    ("Cu3Au", RelaxStatus.MAX_STEPS, -1.3),
]


def table(rows=ROWS) -> RelaxationTable:
    """A relaxation table as ``CampaignStore.relaxations`` returns it: relaxation k has id
    100 + k, final structure 200 + k, start 300 + k."""
    r = len(rows)
    return RelaxationTable(
        id=np.arange(100, 100 + r, dtype=np.int64),
        structure_id=np.arange(200, 200 + r, dtype=np.int64),
        initial_id=np.arange(300, 300 + r, dtype=np.int64),
        composition=np.array([composition_key(c) for c, _, _ in rows], dtype=object),
        status=np.array([str(s) for _, s, _ in rows], dtype=object),
        reason=np.array([None] * r, dtype=object),
        energy=np.zeros(r),
        enthalpy_per_atom=np.array([h for _, _, h in rows]),
        volume=np.full(r, 12.0),
        steps=np.full(r, 10, dtype=np.int64),
        pressure=np.zeros(r),
        iteration=np.ones(r, dtype=np.int64),
        e_hull=np.full(r, np.nan),
    )


def _hull(rel: RelaxationTable, ref_keys=(), ref_h=()):
    conv = rel.status == RelaxStatus.CONVERGED
    return acnn_e_hull(
        rel.composition,
        rel.enthalpy_per_atom,
        conv,
        np.array(list(ref_keys), dtype=object),
        np.array(list(ref_h), dtype=float),
        ("Cu", "Au"),
    )


def test_acnn_e_hull_places_the_converged_relaxations():
    e_hull, rows = _hull(table())
    np.testing.assert_allclose(e_hull[:5], [0.0, 0.0, 0.0, 0.1, 0.15], atol=1e-9)
    assert np.isnan(e_hull[5:]).all()  # the unconverged are not on the hull
    assert sorted(rows.tolist()) == [0, 1, 2, 3, 4]


def test_a_missing_terminal_leaves_its_compositions_off_unless_one_stands_in():
    rows = [r for r in ROWS if r[0] != "Au"]
    e_hull, placed = _hull(table(rows))
    assert placed.tolist() == [0] and np.isnan(e_hull[1:]).all()  # Cu alone: no compound
    e_hull, placed = _hull(table(rows), ["Au"], [-2.0])  # an earlier Au stands in
    np.testing.assert_allclose(e_hull[:3], [0.0, 0.0, 0.1], atol=1e-9)
    assert sorted(placed.tolist()) == [0, 1, 2, 3]  # its own rows only, not the stand-in


def test_candidates_take_trust_frames_and_skip_what_the_hull_could_not_place():
    rel = table()
    e_hull, _ = _hull(rel)
    e_hull[4] = np.nan  # as if Cu3Au's terminal were missing
    fps = {int(i): np.full(3, float(i)) for i in rel.id}
    spread = np.linspace(0.0, 0.06, len(rel))
    frames = {305: 999}  # the unphysical CuAu (start 305) has a trust frame
    got = selection_candidates(rel, e_hull, fps, spread, frames)
    assert [c.id for c in got] == ["200", "201", "202", "203", "999", "206"]
    assert got[4].status == RelaxStatus.UNPHYSICAL and got[4].composition == composition_key("CuAu")
    assert got[3].e_hull == pytest.approx(0.1) and got[3].spread == pytest.approx(0.03)
    np.testing.assert_array_equal(got[2].fingerprint, fps[102])


def test_labelled_basins_use_the_enthalpies_given():
    rel = table()
    fps = {int(i): np.full(8, float(i)) for i in rel.id if i != 103}  # 103: no fingerprint
    rows = labelled_rows(rel, fps, {202, 203, 204})
    assert rows == [2, 4]
    known = basins(rel, rows, np.array([-1.75, np.nan]), fps, DedupConfig())
    assert known.check(composition_key("CuAu"), -1.75, fps[102]) is not None
    assert known.check(composition_key("CuAu"), -1.7, fps[102]) is None  # 50 meV off
    assert known.check(composition_key("Cu3Au"), -1.2, fps[104]) is None  # NaN: left out


CONFIG = """
[campaign]
name = "stages"
train_max_force = 5.0

[compositions]
elements = ["Cu", "Au"]
max_formula_atoms = 2

[oracle]
name = "emt"

[train]
max_e_hull = {cap}
hull_weight_scale = {scale}
"""


def _label(atoms: Atoms, sid: int, energy_per_atom: float, force: float = 0.0) -> Atoms:
    a = atoms.copy()
    forces = np.zeros((len(a), 3))
    forces[0, 0] = force
    a.calc = SinglePointCalculator(
        a, energy=energy_per_atom * len(a), forces=forces, stress=np.zeros(6)
    )
    a.info["structure_id"] = sid
    return a


def _labels() -> list[Atoms]:
    cuau = bulk("Cu", "fcc", 3.8, cubic=True)
    cuau.symbols = "CuAuCuAu"
    return [
        _label(cuau, 7, -1.6),  # 0.1 above the CuAu at -1.7
        _label(bulk("Au", "fcc", 4.08), 3, -2.0),
        _label(bulk("Cu", "fcc", 3.6), 1, -1.0),
        _label(cuau, 5, -1.7),
        _label(bulk("Cu", "fcc", 3.6), 9, -0.5, force=8.0),  # beyond the force cap
    ]


def test_training_set_orders_by_id_and_leaves_out_forces_and_far_labels():
    labels = _labels()
    ts = training_set(labels, parse_config(CONFIG.format(cap=0.05, scale=0)))
    assert [a.info["structure_id"] for a in ts.labels] == [1, 3, 5]
    assert (ts.over_force, ts.over_hull) == (1, 1)
    ts = training_set(labels, parse_config(CONFIG.format(cap=0, scale=0)))
    assert [a.info["structure_id"] for a in ts.labels] == [1, 3, 5, 7]
    assert within_force_cap(labels, 0) == labels


def test_loss_weights_fall_with_the_distance_above_the_hull():
    kept = training_set(_labels(), parse_config(CONFIG.format(cap=0, scale=0))).labels
    assert loss_weights(kept, parse_config(CONFIG.format(cap=0, scale=0))) is None
    w = loss_weights(kept, parse_config(CONFIG.format(cap=0, scale=0.05)))
    assert w is not None
    assert w[0] == w[1] == w[2] and w[3] < w[0]  # on the hull, then 0.1 eV/atom above
