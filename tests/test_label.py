"""label_structures: idempotent, every structure ends labelled or with a recorded failure,
the same labels on every executor."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from ase.build import bulk

from alcsp.execute import DaskConfig, DaskExecutor, InlineExecutor, ProcessExecutor
from alcsp.label import job_key, label_structures
from alcsp.oracle import FailureKind, Label, LabelFailure, OracleConfig, make_oracle
from alcsp.oracle.ase_oracle import ASEOracle
from alcsp.oracle.emt import EMTParams, EMTSpec
from alcsp.oracle.faults import FaultInjectingSpec, draw_faults
from alcsp.store import CampaignStore

EXPECTED_KIND = {
    "raise": FailureKind.CRASH,
    "scf": FailureKind.SCF_NOT_CONVERGED,
    "hang": FailureKind.TIMEOUT,
    "die": FailureKind.CRASH,
    "nan": FailureKind.INVALID_RESULT,
}


def seeded_store(tmp_path, n, seed=0):
    rng = np.random.default_rng(seed)
    store = CampaignStore.create(tmp_path / "camp")
    atoms = []
    for _ in range(n):
        a = bulk("Cu", "fcc", 3.6, cubic=True)
        a.positions += 0.05 * rng.normal(size=a.positions.shape)
        atoms.append(a)
    return store, store.add_structures(atoms, "random", 0)


class KillerOracle:
    """Kills the process it runs in for chosen structures (a segfaulting code run
    in-process); labels the others with the wrapped oracle."""

    def __init__(self, inner, kill_ids):
        self.inner, self.kill_ids, self.name = inner, set(kill_ids), inner.name

    def label(self, atoms_list, keys=None):
        if any(a.info["structure_id"] in self.kill_ids for a in atoms_list):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.label(atoms_list, keys)


class RaisingOracle:
    """An oracle whose label() itself raises (a bug in a plug-in, not a recorded failure)."""

    name = "emt"

    def label(self, atoms_list, keys=None):
        raise RuntimeError("plug-in bug")


def test_idempotent_and_skips_labelled(tmp_path):
    store, ids = seeded_store(tmp_path, 5)
    oracle = make_oracle(OracleConfig("emt"), store.oracle_dir("emt"))
    s1 = label_structures(store, oracle, ids[:3], InlineExecutor(), iteration=1)
    assert (s1.labelled, s1.skipped) == (3, 0)
    s2 = label_structures(store, oracle, ids + ids[:2], InlineExecutor(), iteration=2)
    assert (s2.labelled, s2.skipped, s2.requested) == (2, 5, 7)
    assert store.count("labels") == 5
    assert (store.oracle_dir("emt") / job_key(ids[0]) / "outcome.json").exists()
    # a plug-in that raises is recorded as a crash, never stops the loop
    store2, ids2 = seeded_store(tmp_path / "b", 2)
    s3 = label_structures(store2, RaisingOracle(), ids2, InlineExecutor())
    assert s3.failed == 2 and store2.failures()[0][2:] == ("crash", "RuntimeError: plug-in bug")


@pytest.mark.slow
def test_injected_faults_every_structure_accounted_for(tmp_path):
    """30% of jobs fail at random (crash, SCF, hang past the time limit, killed process,
    NaN): each ends with the recorded failure of its kind, the rest with the real label."""
    store, ids = seeded_store(tmp_path, 12, seed=1)
    faults = draw_faults([job_key(i) for i in ids], np.random.default_rng(2024), p_fail=0.3)
    assert len(faults) >= 3, faults
    spec = FaultInjectingSpec(EMTSpec(), faults)
    oracle = ASEOracle(
        spec, EMTParams(), store.oracle_dir(spec.name), timeout_s=8, retries=[], isolate=True
    )
    with ProcessExecutor(2) as ex:
        summary = label_structures(store, oracle, ids, ex, iteration=1)
    assert summary.labelled + summary.failed == len(ids)
    assert summary.failed == len(faults)
    outcomes = store.get_labels(ids, oracle.name)
    assert sorted(outcomes) == sorted(ids)  # nothing lost
    clean = make_oracle(OracleConfig("emt"), tmp_path / "clean").label(store.get_atoms(ids))
    for sid, ref in zip(ids, clean, strict=True):
        mode = faults.get(job_key(sid))
        got = outcomes[sid]
        if mode is None:
            assert isinstance(got, Label) and got.energy == pytest.approx(ref.energy, abs=1e-12)
        else:
            assert isinstance(got, LabelFailure) and got.kind is EXPECTED_KIND[mode], (mode, got)
    # failures never reach the training set
    assert len(store.training_set()) == len(ids) - len(faults)


def test_worker_death_is_recorded_and_others_labelled(tmp_path):
    store, ids = seeded_store(tmp_path, 6)
    inner = make_oracle(OracleConfig("emt"), store.oracle_dir("emt"))
    oracle = KillerOracle(inner, kill_ids={ids[1], ids[4]})
    with ProcessExecutor(2, max_resubmits=1) as ex:
        summary = label_structures(store, oracle, ids, ex)
    assert (summary.labelled, summary.failures["worker_lost"]) == (4, 2)
    got = store.get_labels(ids, "emt")
    assert {i for i, r in got.items() if not r.ok} == {ids[1], ids[4]}


def test_dask_gives_the_same_labels_as_local(tmp_path):
    store, ids = seeded_store(tmp_path / "a", 6, seed=5)
    oracle = make_oracle(OracleConfig("emt"), store.oracle_dir("emt"))
    label_structures(store, oracle, ids, InlineExecutor())
    other, ids2 = seeded_store(tmp_path / "b", 6, seed=5)
    oracle2 = make_oracle(OracleConfig("emt"), other.oracle_dir("emt"))
    with DaskExecutor(DaskConfig(cluster="local", workers=2, processes=False)) as ex:
        summary = label_structures(other, oracle2, ids2, ex)
    assert summary.labelled == 6
    a, b = store.get_labels(ids, "emt"), other.get_labels(ids2, "emt")
    for i, j in zip(ids, ids2, strict=True):
        assert a[i].energy == b[j].energy
        np.testing.assert_array_equal(a[i].forces, b[j].forces)
        np.testing.assert_array_equal(a[i].stress, b[j].stress)
