"""Campaign store: round trips, idempotency, upsert semantics, export/import, concurrent
readers, and integrity after SIGKILL at random moments."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read

from alcsp.oracle import FailureKind, Label, LabelFailure, OracleConfig, make_oracle
from alcsp.store import CampaignStore, RelaxationRecord, StoreError, composition_key


def cells(rng: np.random.Generator, n: int, symbol: str = "Cu"):
    out = []
    for _ in range(n):
        a = bulk(symbol, "fcc", 3.6, cubic=True)
        a.positions += 0.05 * rng.normal(size=a.positions.shape)
        out.append(a)
    return out


def record(i=None, status="converged", h=-1.0):
    return RelaxationRecord(
        status=status,
        energy=4 * h,
        enthalpy_per_atom=h,
        volume=46.0,
        steps=12,
        pressure=0.0,
        initial_id=i,
    )


@pytest.fixture
def store(tmp_path):
    s = CampaignStore.create(
        tmp_path / "camp", config_text="[oracle]\nname='emt'\n", version="0.1.0"
    )
    yield s
    s.close()


def test_create_open_and_meta(tmp_path, store):
    assert store.meta("version") == "0.1.0" and "emt" in store.config_text
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(StoreError, match="already holds a campaign"):
        CampaignStore.create(store.directory)
    with pytest.raises(FileNotFoundError, match="no campaign database"):
        CampaignStore.open(tmp_path / "nothing")
    with CampaignStore.open(store.directory, readonly=True) as ro:
        assert ro.meta("version") == "0.1.0"
        with pytest.raises(StoreError, match="read-only"):
            ro.add_structures(cells(np.random.default_rng(0), 1), "random", 0)


def test_structures_round_trip_exactly(store):
    rng = np.random.default_rng(0)
    mgo = bulk("MgO", "rocksalt", 4.2) * (1, 1, 2)
    atoms = [*cells(rng, 3), mgo]
    ids = store.add_structures(atoms, "random", 2)
    assert ids == [1, 2, 3, 4]
    back = store.get_atoms([4, 1, 1])
    np.testing.assert_array_equal(back[0].positions, mgo.positions)
    np.testing.assert_array_equal(back[0].cell.array, mgo.cell.array)
    assert list(back[0].numbers) == list(mgo.numbers) and all(back[0].pbc)
    assert back[1].info == {"structure_id": 1, "origin": "random", "iteration": 2}
    assert back[1] is not back[2]
    row = store.conn.execute("SELECT formula, composition FROM structures WHERE id=4").fetchone()
    assert row == ("Mg2O2", "MgO")
    assert store.structure_ids(composition="Cu") == [1, 2, 3]
    with pytest.raises(KeyError, match="99"):
        store.get_atoms([1, 99])
    with pytest.raises(ValueError, match="origin 'weird'"):
        store.add_structures(atoms, "weird", 0)


def test_composition_keys(store):
    from alcsp.compositions import composition_key as search_key

    assert composition_key({"Mg": 2, "H": 4}) == "MgH2"
    assert composition_key({"Ca": 2, "Mg": 2, "H": 46}) == "CaMgH23"
    # the store's fast key is the search space's key
    for formula in ["MgH2", "CaMg2H46", "Be3P2N4O", "AuCu3", "H", "BeP2O6"]:
        from pymatgen.core import Composition

        counts = {str(e): n for e, n in Composition(formula).items()}
        assert composition_key(counts) == search_key(formula)
    ids = store.add_compositions(["MgH2", "Mg2H4", {"Ca": 1, "H": 6}], iteration=0)
    assert ids[0] == ids[1] != ids[2]
    assert store.compositions() == ["MgH2", "CaH6"]
    with pytest.raises(ValueError, match="real elements"):
        composition_key({"Xx": 1})


def test_relaxations_idempotent_by_initial_structure(store):
    rng = np.random.default_rng(1)
    init = store.add_structures(cells(rng, 4), "random", 1)
    finals = store.get_atoms(init)
    statuses = ["converged", "converged", "max_steps", "unphysical"]
    recs = [
        record(i, status=s, h=-1.0 - 0.1 * k)
        for k, (i, s) in enumerate(zip(init, statuses, strict=True))
    ]
    rel = store.add_relaxed(finals, recs, iteration=1)
    assert None not in rel
    again = store.add_relaxed(finals, recs, iteration=1)  # a redone batch adds nothing
    assert again == [None] * 4
    assert store.count("relaxations") == 4 and store.count("structures") == 8
    table = store.relaxations(iteration=1)
    assert list(table.initial_id) == init
    assert list(table.status) == ["converged", "converged", "max_steps", "unphysical"]
    assert store.relaxed_initial_ids() == set(init)
    store.set_e_hull(rel, [0.0, 0.01, 0.2, 0.5])
    low = store.conn.execute("SELECT id FROM relaxations WHERE e_hull < 0.05 ORDER BY id")
    assert [r[0] for r in low] == rel[:2]
    with pytest.raises(ValueError, match="status 'done'"):
        store.add_relaxed(finals[:1], [record(status="done")], 1)


def test_queries_by_composition_and_e_hull_use_indexes(store):
    def plan(q):
        return " ".join(r[-1] for r in store.conn.execute("EXPLAIN QUERY PLAN " + q))

    assert "relaxations_comp_h" in plan(
        "SELECT id FROM relaxations WHERE composition = 'Cu' ORDER BY enthalpy_per_atom LIMIT 3"
    )
    assert "relaxations_e_hull" in plan("SELECT id FROM relaxations WHERE e_hull < 0.1")
    assert "structures_composition" in plan("SELECT id FROM structures WHERE composition='Cu'")


def test_labels_never_duplicate_and_success_wins(store):
    rng = np.random.default_rng(2)
    ids = store.add_structures(cells(rng, 3), "random", 0)
    ref = store.add_structures([bulk("Cu", "fcc", 3.61, cubic=True)], "reference", 0)
    oracle = make_oracle(OracleConfig("emt"), store.oracle_dir("emt"))
    labels = oracle.label(store.get_atoms(ids + ref))
    fail = LabelFailure(FailureKind.SCF_NOT_CONVERGED, "no", "emt", 1.0)
    store.add_labels([(ids[0], fail), (ids[1], labels[1])], iteration=1)
    store.add_labels([(ids[1], fail), (ids[0], labels[0]), (ids[1], labels[1])], iteration=2)
    store.add_labels([(ids[2], fail), (ref[0], labels[3])], iteration=2)
    assert store.count("labels") == 4
    got = store.get_labels(ids, "emt")
    assert isinstance(got[ids[0]], Label) and isinstance(got[ids[1]], Label)
    assert got[ids[2]].kind is FailureKind.SCF_NOT_CONVERGED
    np.testing.assert_array_equal(got[ids[0]].forces, labels[0].forces)
    np.testing.assert_array_equal(got[ids[0]].stress, labels[0].stress)
    assert store.labelled_ids("emt") == {*ids, *ref}
    assert store.labelled_ids("emt", include_failures=False) == {ids[0], ids[1], ref[0]}
    train = store.training_set()
    # failures and reference phases never enter the training set
    assert sorted(a.info["structure_id"] for a in train) == [ids[0], ids[1]]
    a0 = next(a for a in train if a.info["structure_id"] == ids[0])
    assert a0.get_potential_energy() == labels[0].energy
    np.testing.assert_allclose(a0.get_stress(voigt=False), labels[0].stress)
    assert store.failures() == [(ids[2], "emt", "scf_not_converged", "no")]


def test_export_import_round_trip(tmp_path, store):
    rng = np.random.default_rng(3)
    ids = store.add_structures(cells(rng, 3), "random", 0)
    oracle = make_oracle(OracleConfig("emt"), store.oracle_dir("emt"))
    store.add_labels(list(zip(ids, oracle.label(store.get_atoms(ids)), strict=True)), 0)
    path = tmp_path / "train.extxyz"
    assert store.export_extxyz(path) == 3
    other = CampaignStore.create(tmp_path / "seeded")
    new = other.import_extxyz(path, oracle="emt")
    assert len(new) == 3
    # extxyz keeps 8 decimals of positions and forces
    for a, b in zip(store.training_set(), other.training_set(), strict=True):
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-7)
        np.testing.assert_allclose(a.get_stress(), b.get_stress(), atol=1e-9)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-7)
    # frames without stress import with stress unknown (NULL), still usable for E/F
    frames = read(path, index=":")
    for f in frames:
        f.calc.results.pop("stress")
    from ase.io import write

    write(tmp_path / "nostress.extxyz", frames)
    more = other.import_extxyz(tmp_path / "nostress.extxyz", oracle="dft")
    t = [a for a in other.training_set(oracle="dft")]
    assert len(t) == len(more) and "stress" not in t[0].calc.results
    bad = bulk("Cu")
    write(tmp_path / "bad.extxyz", bad)
    n_before = other.count("structures")
    with pytest.raises(ValueError, match="frame 0 has no energy/forces"):
        other.import_extxyz(tmp_path / "bad.extxyz")
    assert other.count("structures") == n_before  # nothing half-imported
    other.close()


def test_export_cif(tmp_path, store):
    from pymatgen.core import Structure

    mgo = bulk("MgO", "rocksalt", 4.2, cubic=True)
    ids = store.add_structures([mgo], "relaxed", 1)
    (path,) = store.export_cif(tmp_path / "cif", ids)
    s = Structure.from_file(path)
    assert s.composition.reduced_formula == "MgO"
    assert s.volume == pytest.approx(mgo.get_volume(), rel=1e-6)


def test_iterations_and_models(tmp_path, store):
    store.start_iteration(0)
    store.update_iteration(0, stage="relax", counts={"relaxed": 10}, timings={"relax": 1.5})
    rec = store.update_iteration(
        0, stage="label", counts={"labelled": 3}, hull={"stable": ["Cu"]}, finished=True
    )
    assert rec.counts == {"relaxed": 10, "labelled": 3} and rec.timings == {"relax": 1.5}
    assert rec.stage == "label" and rec.hull == {"stable": ["Cu"]} and rec.finished >= rec.started
    assert store.start_iteration(0).counts == rec.counts  # restart keeps what was done
    with pytest.raises(KeyError, match="never started"):
        store.update_iteration(5, stage="x")
    m = store.models_dir() / "model-0.pt"
    m.parent.mkdir()
    m.write_bytes(b"x")
    store.add_model(m, 0, {"rmse_e": 0.01})
    store.add_model(m, 0, {"rmse_e": 0.02})
    latest = store.latest_model()
    assert latest.path == "models/model-0.pt" and latest.metrics == {"rmse_e": 0.02}
    assert store.model_path(latest) == m and len(store.models()) == 1


def test_reader_sees_committed_state_while_writer_is_busy(store):
    rng = np.random.default_rng(4)
    store.add_structures(cells(rng, 2), "random", 0)
    reader = CampaignStore.open(store.directory, readonly=True)
    store.conn.execute("BEGIN IMMEDIATE")
    structures = store.tables.structures
    structures.insert_rows(store.conn, structures.rows(cells(rng, 5), "random", 0, None))
    t0 = time.perf_counter()
    assert reader.count("structures") == 2  # not blocked, not dirty
    assert time.perf_counter() - t0 < 1.0
    store.conn.execute("COMMIT")
    assert reader.count("structures") == 7
    reader.close()


# -- crash safety ------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from ase.build import bulk
    from alcsp.execute import InlineExecutor
    from alcsp.label import label_structures
    from alcsp.oracle import OracleConfig, make_oracle
    from alcsp.store import CampaignStore, RelaxationRecord

    d, units, per_unit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    try:
        store = CampaignStore.open(d)
    except FileNotFoundError:
        store = CampaignStore.create(d, "crash test", "0")

    def cell(u, k):
        rng = np.random.default_rng(1000 * u + k)
        a = bulk("Cu", "fcc", 3.6, cubic=True)
        a.positions += 0.05 * rng.normal(size=a.positions.shape)
        return a

    for u in range(units):
        ids = store.structure_ids(origin="random", iteration=u)
        if not ids:  # one transaction: all of the unit's structures or none
            ids = store.add_structures([cell(u, k) for k in range(per_unit)], "random", u)
        done = store.relaxed_initial_ids()
        todo = [i for i in ids if i not in done]
        if todo:
            finals = store.get_atoms(todo)
            for a in finals:
                a.positions *= 1.001
            recs = [RelaxationRecord("converged", -1.0, -0.25, a.get_volume(), 3, 0.0,
                                     initial_id=i) for i, a in zip(todo, finals)]
            store.add_relaxed(finals, recs, u)
        print("E", flush=True)  # an event the parent counts to pick its moment
    oracle = make_oracle(OracleConfig("emt"), store.oracle_dir("emt"))
    relaxed = [int(i) for i in store.relaxations().structure_id]
    label_structures(store, oracle, relaxed, InlineExecutor(), iteration=units,
                     on_result=lambda sid, r: print("E", flush=True))
    print("DONE", flush=True)
""")


def check_consistent(directory, per_unit):
    """Integrity and completeness of every committed unit of work."""
    with CampaignStore.open(directory) as s:
        assert s.integrity_check() == "ok"
        c = s.conn
        per_iter = c.execute(
            "SELECT iteration, COUNT(*) FROM structures WHERE origin='random' GROUP BY iteration"
        ).fetchall()
        assert all(n == per_unit for _, n in per_iter), per_iter
        # every relaxed structure has exactly one relaxation, every relaxation its structure
        n_relaxed = c.execute("SELECT COUNT(*) FROM structures WHERE origin='relaxed'").fetchone()
        assert n_relaxed[0] == s.count("relaxations")
        orphans = c.execute(
            "SELECT COUNT(*) FROM relaxations r LEFT JOIN structures s ON "
            "s.id = r.structure_id WHERE s.id IS NULL"
        ).fetchone()[0]
        assert orphans == 0
        dup = c.execute("SELECT COUNT(*) - COUNT(DISTINCT initial_id) FROM relaxations")
        assert dup.fetchone()[0] == 0
        dup = c.execute("SELECT COUNT(*) - COUNT(DISTINCT structure_id || oracle) FROM labels")
        assert dup.fetchone()[0] == 0
        for n, fb, sb, e in c.execute(
            "SELECT s.n_atoms, l.forces, l.stress, l.energy FROM "
            "labels l JOIN structures s ON s.id = l.structure_id"
        ):
            assert len(fb) == n * 3 * 8 and len(sb) == 9 * 8 and np.isfinite(e)
        return s.count("relaxations"), s.count("labels")


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path):
    rng = np.random.default_rng(11)
    d = tmp_path / "camp"
    units, per_unit = 12, 25
    args = [sys.executable, "-c", WRITER, str(d), str(units), str(per_unit)]
    progress = []
    # Kill after a random number of progress events (units relaxed, structures labelled),
    # in both phases; the writer keeps running for a random moment while we react.
    targets = [
        int(rng.integers(1, units)),
        int(rng.integers(1, units)),
        *(int(x) for x in rng.integers(1, per_unit * units // 2, size=3)),
    ]
    for target in targets:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(target):
            if not proc.stdout.readline():
                break
        time.sleep(float(rng.uniform(0.0, 0.01)))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
        if (d / "campaign.sqlite").exists():
            progress.append(check_consistent(d, per_unit))
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert "DONE" in done.stdout, done.stderr[-2000:]
    n_rel, n_lab = check_consistent(d, per_unit)
    assert n_rel == n_lab == units * per_unit
    print("progress (relaxations, labels) after each kill:", progress)
    assert progress == sorted(progress)  # never went backwards
    with CampaignStore.open(d) as s:
        # labels equal a fresh EMT calculation of the stored geometry
        sid = s.relaxations().structure_id[[0, -1]]
        fresh = make_oracle(OracleConfig("emt"), tmp_path / "fresh").label(s.get_atoms(sid))
        stored = s.get_labels(sid, "emt")
        for i, f in zip(sid, fresh, strict=True):
            assert stored[int(i)].energy == pytest.approx(f.energy, abs=1e-12)


def test_foreign_keys_and_uniqueness_enforced(store):
    with pytest.raises(sqlite3.IntegrityError):
        store.add_labels([(999, LabelFailure(FailureKind.CRASH, "x", "emt"))], 0)


def test_children_and_label_counts(store):
    from ase.build import bulk

    from alcsp.oracle.base import FailureKind, Label, LabelFailure

    parent = store.add_structures([bulk("Cu", "fcc", a=3.6)], "relaxed", 1)[0]
    child = store.add_structures(
        [bulk("Cu", "fcc", a=3.61)], "oracle_relaxed", -1, parent_ids=[parent]
    )[0]
    assert store.children("oracle_relaxed") == {parent: child}
    assert store.children("relaxed") == {}
    f = np.zeros((1, 3))
    store.add_labels(
        [
            (parent, Label(-1.0, f, np.zeros((3, 3)), "emt", 0.1)),
            (child, LabelFailure(FailureKind.CRASH, "boom", "emt")),
        ],
        iteration=1,
    )
    assert store.label_counts(1) == (1, 1)
    assert store.label_counts(1, oracle="gpaw") == (0, 0)
    assert store.label_counts(2) == (0, 0)


def test_labels_keep_free_and_zero_smearing_energies_apart(tmp_path, store):
    """Training reads the force-consistent F, every hull the zero-smearing E0; both survive
    the store, the export and the import (ASE's free_energy / energy)."""
    from alcsp.potential.io import labels_of

    (sid,) = store.add_structures(cells(np.random.default_rng(0), 1), "initial", 0)
    f = np.zeros((4, 3))
    store.add_labels(
        [(sid, Label(-10.0, f, np.zeros((3, 3)), "gpaw", 1.0, energy_zero=-9.96))], iteration=0
    )
    (lab,) = store.get_labels([sid], "gpaw").values()
    assert lab.energy == -10.0 and lab.hull_energy == -9.96
    (a,) = store.training_set("gpaw")
    assert a.get_potential_energy() == -9.96
    assert a.get_potential_energy(force_consistent=True) == -10.0
    assert labels_of(a).energy == -10.0  # what training uses
    path = tmp_path / "out.extxyz"
    store.export_extxyz(path, oracle="gpaw")
    (b,) = read(path, index=":")
    assert b.get_potential_energy() == pytest.approx(-9.96)
    assert b.get_potential_energy(force_consistent=True) == pytest.approx(-10.0)
    other = CampaignStore.create(tmp_path / "other")
    (i,) = other.import_extxyz(path, oracle="gpaw")
    (back,) = other.get_labels([i], "gpaw").values()
    assert (back.energy, back.hull_energy) == pytest.approx((-10.0, -9.96))
    other.close()


def test_schema_1_store_is_upgraded_in_place(tmp_path):
    """A campaign written before labels had a zero-smearing energy opens and reads it as
    equal to the stored (free) energy."""
    s = CampaignStore.create(tmp_path / "old")
    (sid,) = s.add_structures(cells(np.random.default_rng(1), 1), "initial", 0)
    s.add_labels([(sid, Label(-3.0, np.zeros((4, 3)), np.zeros((3, 3)), "emt", 0.0))], 0)
    s.conn.execute("ALTER TABLE labels DROP COLUMN energy_zero")
    s.conn.execute("DROP TABLE oracle_relaxations")
    s.set_meta("schema_version", "1")
    s.close()
    with pytest.raises(StoreError, match="older alcsp"):
        CampaignStore.open(tmp_path / "old", readonly=True)
    s = CampaignStore.open(tmp_path / "old")
    (lab,) = s.get_labels([sid], "emt").values()
    assert lab.hull_energy == -3.0 and s.meta("schema_version") == "2"
    assert s.count("oracle_relaxations") == 0
    s.close()


def test_iteration_counts_read_every_version_of_the_stored_json():
    """``IterationCounts`` reads what the loop writes back unchanged, and what older
    campaigns wrote: counts missing read 0 (before the per-status counts: the total only),
    an empty ``validation`` (no new label) reads None."""
    from alcsp.store import IterationCounts, ModelErrors

    full = IterationCounts(
        relaxations=24,
        converged=20,
        max_steps=3,
        unphysical=1,
        relaxed=24,
        selected=9,
        labelled=8,
        label_failures=1,
        validation=ModelErrors(12.5, 140.0, 0.8, 8),
    )
    assert IterationCounts.from_json(json.loads(json.dumps(full.to_json()))) == full
    old = IterationCounts.from_json({"relaxations": 24, "labelled": 8, "validation": {}})
    assert (old.relaxations, old.converged, old.labelled, old.validation) == (24, 0, 8, None)
    assert IterationCounts.from_json({}) == IterationCounts()
