"""Issue 12's loop pieces inside a real (EMT) campaign: the committee's trust frames, the
per-iteration oracle cap and the stop rule. Each check recomputes what the campaign stored
by an independent route (a fresh relaxation, a fresh hull)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alcsp.campaign import Campaign, selection, stopping, training
from alcsp.committee import first_crossing
from alcsp.potential import ACNNPotential, load_model
from alcsp.relax.runner import relax_structures
from alcsp.vocab import composition_key

CONFIG = """
[campaign]
name = "loop"
seed = 5
max_iterations = 1
initial_structures = 16
structures_per_iteration = 24
relax_chunk = 12
hull_patience = 1
oracle_budget = 60
failure_share = 0.25

[compositions]
elements = ["Cu", "Au"]
max_formula_atoms = 2
max_cell_atoms = 4

[relax]
fmax = 0.02
max_steps = 25
frame_interval = 3

[[selection]]
c_max = 3
l_max = 3
b_max = 24
rule = "committee"
force_deviation = 0.05

[committee]
size = 2
steps = 60
workers = 1

[model]
n_radial = 6
n_angular = 4
basis_radial = 6
basis_angular = 6
embedding = [16, 16]
fitting = [32, 32]

[train]
steps = 80
batch_size = 8
lr = 3e-3
eval_every = 80
dtype = "float64"

[oracle]
name = "emt"

[final]
structures = 0

[executor]
kind = "inline"
"""


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    torch.set_num_threads(1)
    directory = tmp_path_factory.mktemp("loop") / "campaign"
    camp = Campaign.create(directory, CONFIG)
    camp.run()
    yield camp
    camp.close()


def test_each_trust_frame_is_the_first_frame_past_the_committee_trust_level(loop):
    """A relaxation that did not converge (25 steps are too few for most) is labelled at
    the first frame whose committee force deviation exceeds the trust level, recomputed here
    by relaxing its start again with model 1 and evaluating the stored committee."""
    store = loop.store
    frames = store.children("trust_frame")
    assert frames, "the short relaxations must leave some unconverged structures with frames"
    committee = training.stored_committee(loop.context, 1)
    assert committee is not None and committee.size == 2
    model = load_model(store.model_path([m for m in store.models() if m.iteration == 1][-1]))
    starts = sorted(frames)[:4]
    again = relax_structures(
        store.get_atoms(starts),
        ACNNPotential(model, dtype=torch.float64),
        0.0,
        loop.config.relax,
    )
    for start, result in zip(starts, again, strict=True):
        assert result.status != "converged"
        dev = committee.evaluate(list(result.frames)).force_deviation
        k = first_crossing(dev, 0.05)
        assert k is not None and k < len(result.frames) - 1
        stored = store.get_atoms([frames[start]])[0]
        np.testing.assert_allclose(stored.positions, result.frames[k].positions, atol=1e-9)
        np.testing.assert_allclose(stored.cell.array, result.frames[k].cell.array, atol=1e-9)
    # the frame is what was labelled, not the relaxation's end geometry
    labelled = store.labelled_ids("emt")
    assert any(frames[s] in labelled for s in frames)


def test_the_iteration_stays_within_its_cap_and_failure_share(loop):
    """Budget 60 with 1 iteration: iteration 1 may spend left / 2 of what iteration 0 left;
    failures at most 25 % of that."""
    store = loop.store
    calls = store.oracle_calls()
    left = 60 - calls["initial"]
    cap = left // 2
    assert loop.context.iteration_cap(1) == cap
    got = store.conn.execute("SELECT l.structure_id FROM labels l WHERE l.iteration = 1").fetchall()
    assert 0 < len(got) <= cap
    failures = set(store.children("trust_frame").values())
    rel = store.relaxations(iteration=1, method="acnn")
    failures |= {
        int(s) for s, st in zip(rel.structure_id, rel.status, strict=True) if st != "converged"
    }
    n_fail = sum(1 for (sid,) in got if sid in failures)
    assert n_fail <= int(0.25 * cap)


def test_stop_reason_needs_no_new_label_near_the_hull(loop):
    """The stop rule after iteration 1 agrees with a direct check: has any label of iteration
    1 E_hull within the window on the hull of every label?"""
    lh = loop.context.labelled_hull()
    window = loop.config.campaign.stop_window_ev
    near_new = [
        j
        for j in range(len(lh.kept))
        if lh.hull.e_hull[j] <= window + 1e-12 and lh.structures[lh.kept[j]].info["iteration"] == 1
    ]
    elements_only = set(lh.hull.stable_keys) <= {"Cu", "Au"}
    reason = stopping.stop_reason(loop.context, 1)
    if near_new:
        assert reason is None
    elif not elements_only or not loop.reference_names():
        spread = stopping.committee_spread(
            loop.context,
            1,
            [
                lh.structures[lh.kept[j]]
                for j in range(len(lh.kept))
                if lh.hull.e_hull[j] <= window + 1e-12
            ],
        )
        assert (reason is None) == (spread is not None and spread >= 0.005)
    assert stopping.stop_reason(loop.context, 0) is None
    assert loop.store.meta("stop_reason")


def test_a_labelled_basin_is_known_under_a_retrained_model(loop):
    """The selection skips basins the oracle has labelled by matching candidates against the
    labelled ACNN minima. The candidates' enthalpies are this iteration's model's, so the
    labelled ones must be too: a model whose enthalpies all moved by 50 meV/atom (10 times
    the duplicate check's tolerance; retraining on a basin's own label moves it like that)
    still recognises every labelled minimum at its own enthalpy, and the enthalpies stored
    at relaxation time, which an earlier version used, do not."""
    store = loop.store
    labelled = store.labelled_before("emt", 2)
    rel = store.relaxations(method="acnn")
    fps = store.fingerprints(rel.id.tolist())
    rows = [
        k
        for k, sid in enumerate(rel.structure_id)
        if int(sid) in labelled and fps.get(int(rel.id[k])) is not None
    ]
    assert rows, "the fixture must label some ACNN minima"
    model = load_model(store.model_path([m for m in store.models() if m.iteration == 1][-1]))
    with torch.no_grad():
        model.energy_shift += 0.05  # eV/atom: every enthalpy 50 meV/atom higher
    atoms = store.get_atoms([int(rel.structure_id[k]) for k in rows])
    h_now = selection.model_enthalpies(model, atoms, loop.config.campaign.pressure)
    h_then = np.array([float(rel.enthalpy_per_atom[k]) for k in rows])
    ok = np.isfinite(h_now) & np.isfinite(h_then)
    assert ok.any()
    known = selection.labelled_basins(loop.context, labelled, model)
    stale = selection.labelled_basins(loop.context, labelled, None)
    for j, k in enumerate(rows):
        if not ok[j]:
            continue
        key = composition_key(str(rel.composition[k]))
        fp = fps[int(rel.id[k])]
        assert known.check(key, float(h_now[j]), fp) is not None
        assert stale.check(key, float(h_then[j]), fp) is not None
        assert stale.check(key, float(h_now[j]), fp) is None  # what the selection used to miss


def test_max_e_hull_trains_only_on_labels_near_the_hull_of_the_labels(loop):
    """[train] max_e_hull = 0.3 eV/atom: training_data keeps exactly the labels (within the
    force cap) at most 0.3 eV/atom above the hull of those labels, recomputed here with
    alcsp.hull from E0 per atom (0 GPa); every label stays in the store."""
    from dataclasses import replace

    from alcsp.hull import build_hull

    everything = training.training_data(loop.context)
    e0 = [a.get_potential_energy() / len(a) for a in everything]
    hull = build_hull([a.get_chemical_formula() for a in everything], e0, elements=["Au", "Cu"])
    expect = {
        a.info["structure_id"] for a, e in zip(everything, hull.e_hull, strict=True) if e <= 0.3
    }
    assert 0 < len(expect) < len(everything), "the fixture must have labels far above"
    capped = replace(loop.config, train=replace(loop.config.train, max_e_hull=0.3))
    labels = loop.store.training_set("emt")
    ts = training.training_set(labels, capped)
    kept = ts.labels
    assert ts.over_force == len(labels) - len(everything)
    assert ts.over_hull == len(everything) - len(expect)
    assert {a.info["structure_id"] for a in kept} == expect
    assert len(training.training_data(loop.context)) == len(everything)  # all kept


SHARDED = CONFIG.replace('rule = "committee"', 'rule = "paper"').replace(
    "relax_chunk = 12", "relax_chunk = 5"
)


def _relaxations(store):
    rel = store.relaxations(method="acnn")
    atoms = store.get_atoms([int(i) for i in rel.structure_id])
    return (
        list(rel.initial_id),
        list(rel.status),
        rel.enthalpy_per_atom,
        [a.positions for a in atoms],
    )


@pytest.mark.slow
def test_search_shards_give_the_same_campaign_inline_and_on_two_workers(tmp_path):
    """The search's shards run on the executor; stored in shard order, the relaxations,
    labels and hull do not depend on how many workers ran them."""
    torch.set_num_threads(1)
    out = {}
    for kind in ("inline", "process"):
        text = SHARDED.replace('kind = "inline"', f'kind = "{kind}"\nworkers = 2')
        camp = Campaign.create(tmp_path / kind, text)
        try:
            hull = camp.run()
            out[kind] = (
                _relaxations(camp.store),
                sorted(camp.store.labelled_ids("emt")),
                hull.stable if hull else None,
            )
        finally:
            camp.close()
    (ids_a, st_a, h_a, pos_a), lab_a, hull_a = out["inline"]
    (ids_b, st_b, h_b, pos_b), lab_b, hull_b = out["process"]
    assert len(ids_a) > 5  # more than one shard
    assert ids_a == ids_b and st_a == st_b and lab_a == lab_b
    np.testing.assert_allclose(h_a, h_b, rtol=0, atol=1e-9)
    for a, b in zip(pos_a, pos_b, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-8)
    assert hull_a.keys() == hull_b.keys()
