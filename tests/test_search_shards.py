"""Search shards whose workers generate their own random structures (issue 13, item 1).

The structures of a shard come from (campaign seed, iteration, stage, shard) alone, so a
campaign run by one process and by a pool of two workers stores the same structures,
relaxations and labels; a shard is stored with its structures in one transaction, once.
"""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from alcsp.cli import main
from alcsp.generate import GenerateConfig
from alcsp.search import GenerateSpec, generate_shard
from alcsp.store import CampaignStore, RelaxationRecord
from alcsp.store.db import DB_NAME
from alcsp.vocab import Origin
from test_campaign import TINY


def test_generate_shard_is_a_function_of_its_spec():
    spec = GenerateSpec(("Cu2Au2", "CuAu", "Cu2Au2", "Au"), GenerateConfig(), (7, 1, 1, 3))
    a, fa = generate_shard(spec)
    b, fb = generate_shard(pickle.loads(pickle.dumps(spec)))  # as a worker receives it
    assert len(a) == 4 and not fa and fa == fb
    assert [s.get_chemical_formula() for s in a] == ["Au2Cu2", "Au2Cu2", "AuCu", "Au"]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.positions, y.positions)
        np.testing.assert_array_equal(x.cell.array, y.cell.array)
    other, _ = generate_shard(GenerateSpec(spec.cells, spec.config, (7, 1, 1, 4)))
    assert not np.allclose(other[0].cell.array, a[0].cell.array)  # the shard is in the seed


def test_generate_shard_uses_the_volume_hints():
    cfg = GenerateConfig(volume_jitter=0.0)
    spec = GenerateSpec(("Cu2",), cfg, (1, 1, 1, 0), volumes=(("Cu", 20.0),))
    (s,), _ = generate_shard(spec)
    assert s.get_volume() / len(s) == pytest.approx(20.0)


def test_a_generated_shard_is_stored_once_with_its_trust_frames(tmp_path):
    store = CampaignStore.create(tmp_path / "c", config_text="x")
    starts = [bulk("Cu", "fcc", a=3.6), bulk("Au", "fcc", a=4.1)]
    finals = [a.copy() for a in starts]
    recs = [
        RelaxationRecord(status="converged", energy=-1.0, enthalpy_per_atom=-1.0, volume=11.0,
                         steps=3, pressure=0.0),
        RelaxationRecord(status="max_steps", energy=-2.0, enthalpy_per_atom=-2.0, volume=17.0,
                         steps=9, pressure=0.0),
    ]  # fmt: skip
    frame = starts[1].copy()
    ids = store.add_generated_shard(4, 2, starts, finals, recs, [(1, frame)])
    assert len(ids) == 2 and store.generated_shards(4) == {2} and store.generated_shards(3) == set()
    assert store.structure_ids(origin=Origin.RANDOM, iteration=4) == ids
    rel = store.relaxations(iteration=4)
    assert sorted(int(i) for i in rel.initial_id) == ids
    assert store.children(Origin.TRUST_FRAME) == {ids[1]: store.count("structures")}
    n = {t: store.count(t) for t in ("structures", "relaxations")}
    assert store.add_generated_shard(4, 2, starts, finals, recs, [(1, frame)]) == []  # redone
    assert {t: store.count(t) for t in n} == n
    with pytest.raises(ValueError, match="must be as many"):
        store.add_generated_shard(4, 3, starts, finals[:1], recs)
    store.close()


def _rows(directory: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(f"file:{directory / DB_NAME}?mode=ro", uri=True) as c:
        return {
            "structures": c.execute(
                "SELECT id, origin, iteration, parent_id, numbers, positions, cell "
                "FROM structures ORDER BY id"
            ).fetchall(),
            "relaxations": c.execute(
                "SELECT id, structure_id, initial_id, status, steps, enthalpy_per_atom "
                "FROM relaxations ORDER BY id"
            ).fetchall(),
            "labels": c.execute(
                "SELECT structure_id, ok, energy FROM labels ORDER BY structure_id"
            ).fetchall(),
        }


def _same(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra, rb, strict=True):
            if isinstance(x, bytes) and len(x) % 8 == 0 and len(x) > 8:  # float64 arrays
                np.testing.assert_allclose(np.frombuffer(y), np.frombuffer(x), rtol=0, atol=1e-7)
            elif isinstance(x, float):
                assert y == pytest.approx(x, abs=1e-7)
            else:
                assert x == y


@pytest.mark.slow
def test_one_process_and_two_workers_store_the_same_campaign(tmp_path, capsys, monkeypatch):
    """Inline, and a pool of 2 (search shards on the workers, the model trained in a worker
    process with the driver's threads): the same store."""
    import alcsp.campaign.training as training

    runs = {}
    for kind in ('kind = "inline"', 'kind = "process"\nworkers = 2'):
        cfg = tmp_path / f"{kind[8:15]}.toml"
        cfg.write_text(TINY.replace('kind = "inline"', kind))
        d = tmp_path / kind[8:15]
        if "process" in kind:  # the driver trains nothing itself

            def no_training_here(*args, **kwargs):
                raise AssertionError("the driver trained a model itself")

            monkeypatch.setattr(training, "train_acnn", no_training_here)
        assert main(["run", str(cfg), "--dir", str(d), "--quiet"]) == 0
        runs[kind] = _rows(d)
        with CampaignStore.open(d, readonly=True) as store:
            assert store.generated_shards(1) == {0, 1, 2}  # 24 structures, shards of 8
    inline, pool = runs.values()
    assert inline["structures"] and inline["labels"]
    for table in inline:
        _same(inline[table], pool[table])
    capsys.readouterr()


def test_a_failed_shard_is_recorded_and_shown_and_the_others_are_kept(
    tmp_path, monkeypatch, capsys
):
    """A shard whose worker fails (here shard 1 of iteration 1 raises, as a worker that
    cannot read the model would): the other shards are stored, the failure is noted with
    its reason and `alcsp status` shows it."""
    import alcsp.campaign.search as search
    from alcsp.search import relax_shard

    def flaky(job):
        if job.generate is not None and job.generate.seed[1:] == (1, 1, 1):
            raise RuntimeError("cannot read the model file (test)")
        return relax_shard(job)

    monkeypatch.setattr(search, "relax_shard", flaky)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.replace("max_iterations = 2", "max_iterations = 1"))
    d = tmp_path / "c"
    assert main(["run", str(cfg), "--dir", str(d), "--quiet"]) == 0
    with CampaignStore.open(d, readonly=True) as store:
        assert store.generated_shards(1) == {0, 2}
        assert store.shard_failures(1) == {"g1": "RuntimeError: cannot read the model file (test)"}
        assert len(store.structure_ids(origin=Origin.RANDOM, iteration=1)) == 16
    capsys.readouterr()
    assert main(["status", str(d)]) == 0
    out = capsys.readouterr().out
    assert "search shards failed: 1, e.g. g1: RuntimeError: cannot read the model file" in out


def test_an_iteration_begun_by_an_earlier_version_relaxes_its_stored_starts(tmp_path):
    """Earlier versions stored an iteration's random structures before its search; such an
    iteration relaxes exactly those, and generates none."""
    import torch

    from alcsp.campaign import Campaign

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    campaign = Campaign.create(
        tmp_path / "c", TINY.replace("max_iterations = 2", "max_iterations = 1")
    )
    try:
        campaign.initial_data()
        starts = campaign.random_structures(24, 1, stage=1)
        ids = campaign.store.add_structures(starts, origin=Origin.RANDOM, iteration=1)
        campaign.iteration(1)
        store = campaign.store
        assert store.generated_shards(1) == set()
        assert store.structure_ids(origin=Origin.RANDOM, iteration=1) == ids
        rel = store.relaxations(iteration=1, method="acnn")
        assert set(ids) <= {int(i) for i in rel.initial_id}
    finally:
        campaign.close()
        torch.set_num_threads(threads)
