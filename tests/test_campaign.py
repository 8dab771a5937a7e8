"""The active-learning campaign end to end, with ASE's EMT as a cheap real oracle (Cu–Au).

* a small campaign finds the EMT hull that relaxing the known prototypes gives;
* a campaign killed with SIGKILL at random moments and restarted ends with exactly the
  labels and hull of an uninterrupted run;
* ``alcsp run/status/report/export`` on one finished campaign, and their errors;
* an oracle that fails some jobs does not stop the campaign, and no failure is trained on.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.io import read
from ase.optimize import BFGS

from alcsp.campaign import Campaign, labelled_hull, selection, training
from alcsp.cli import main
from alcsp.compositions import composition_key
from alcsp.hull import build_hull
from alcsp.label import job_key
from alcsp.oracle.ase_oracle import ASEOracle
from alcsp.oracle.emt import EMTSpec
from alcsp.oracle.faults import FaultInjectingSpec, draw_faults
from alcsp.store import DB_NAME, CampaignStore

ELEMENTS = ("Cu", "Au")
MODEL = """
[model]
n_radial = 6
n_angular = 4
basis_radial = 6
basis_angular = 6
embedding = [16, 16]
fitting = [32, 32]
"""

# A miniature campaign that still finds the whole EMT hull: seven compositions up to 4
# atoms per cell, three iterations of a tiny float64 model. The ML-relaxed labels are only
# near the minima (the model errs by ~100 meV/atom); the final oracle relaxation of the
# lowest-E_hull labels lands them in the right basins, as in the paper.
# It is a random search with a fixed seed, so any change in the relaxer's numerics reshuffles
# which structures reach which basin. Measured over seeds 0-13 at this budget: 11 of 14 find
# all four phases with the relaxer's defaults (no inverse-Hessian resets), 13 of 14 with
# resets at 1e-5 eV/atom; the misses are Cu3Au or CuAu absent, or fcc instead of hcp Cu.
# (Relaxing 300 random Cu3Au cells with EMT directly, both settings and ASE's BFGS reach L1_2
# equally often: 47 times.) Seed 2 found all four until the reset default changed; seed 3
# finds all four with both settings. Before reading a failure here as a regression, run a
# few seeds.
SMALL = f"""
[campaign]
name = "small"
seed = 3
max_iterations = 3
initial_structures = 32
structures_per_iteration = 96
relax_chunk = 32
hull_tolerance = 0.002
hull_patience = 3

[compositions]
elements = ["Cu", "Au"]
max_formula_atoms = 4
max_cell_atoms = 4

[relax]
fmax = 0.01
max_steps = 200

[[selection]]
c_max = 7
l_max = 4
b_max = 32
{MODEL}
[train]
steps = 500
batch_size = 8
lr = 3e-3
decay_every = 100
lr_decay = 0.8
eval_every = 250
dtype = "float64"

[oracle]
name = "emt"

[references]
prototypes = {{ Cu = ["fcc", "hcp", "bcc"], Au = ["fcc", "hcp", "bcc"] }}

[final]
structures = 64

[executor]
kind = "inline"
"""

# Seconds per iteration: Cu, Au and CuAu, two iterations; for the kill/resume, CLI and
# fault tests.
TINY = f"""
[campaign]
name = "tiny"
seed = 7
max_iterations = 2
initial_structures = 12
structures_per_iteration = 24
relax_chunk = 8
hull_patience = 2

[compositions]
elements = ["Cu", "Au"]
max_formula_atoms = 2
max_cell_atoms = 4

[relax]
fmax = 0.02
max_steps = 100

[[selection]]
c_max = 3
l_max = 2
b_max = 16
{MODEL}
[train]
steps = 150
batch_size = 8
lr = 3e-3
eval_every = 150
dtype = "float64"

[oracle]
name = "emt"

[final]
structures = 4

[executor]
kind = "inline"
"""

#: eV/atom: how far above the prototype's enthalpy a campaign's phase may be.
HULL_TOL = 0.003


# ---------------------------------------------------------------------------- helpers


def _l12(major: str, minor: str, a: float) -> Atoms:
    """L1_2 (Cu3Au type): a cubic fcc cell with one corner atom substituted."""
    return Atoms(
        [minor, major, major, major],
        scaled_positions=[(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
        cell=[a, a, a],
        pbc=True,
    )


def _l10(a: float) -> Atoms:
    """L1_0 CuAu: alternating (001) planes of a cubic fcc cell."""
    return Atoms(
        ["Cu", "Cu", "Au", "Au"],
        scaled_positions=[(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
        cell=[a, a, a],
        pbc=True,
    )


@pytest.fixture(scope="module")
def emt_reference() -> dict[str, tuple[float, float]]:
    """Stable compositions of the EMT Cu–Au hull from relaxed prototypes (fcc, hcp, bcc
    elements; L1_2 Cu3Au and CuAu3; L1_0 CuAu): key -> (formation, enthalpy) in eV/atom."""
    prototypes = []
    for el, a in (("Cu", 3.6), ("Au", 4.08)):
        prototypes += [
            bulk(el, "fcc", a=a),
            bulk(el, "hcp", a=a / 2**0.5),
            bulk(el, "bcc", a=0.8 * a),
        ]
    prototypes += [_l12("Cu", "Au", 3.75), _l12("Au", "Cu", 3.95), _l10(3.85)]
    keys, h = [], []
    for atoms in prototypes:
        atoms.calc = EMT()
        BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-4, steps=500)
        keys.append(composition_key(atoms.get_chemical_formula()))
        h.append(atoms.get_potential_energy() / len(atoms))  # P = 0: H = E
    hull = build_hull(keys, h, elements=ELEMENTS)
    return {
        hull.keys[hull.comp_index[i]]: (float(hull.formation[i]), float(hull.enthalpy[i]))
        for i in hull.stable_indices
    }


@pytest.fixture
def one_thread():
    """Campaigns run in this process use one torch thread (two threads on a loaded 2-core
    machine are many times slower), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env() -> dict[str, str]:
    """One thread: torch results (and so the whole campaign) do not depend on the pool."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "alcsp.cli", "run", *args, "--quiet"]


def _labels(directory: Path) -> list[tuple]:
    """Every oracle outcome: (structure id, composition, ok, energy/atom to 1e-8, kind)."""
    with sqlite3.connect(f"file:{directory / DB_NAME}?mode=ro", uri=True) as c:
        rows = c.execute(
            "SELECT l.structure_id, s.composition, l.ok, l.energy / s.n_atoms, "
            "l.failure_kind, l.iteration FROM labels l JOIN structures s "
            "ON s.id = l.structure_id ORDER BY l.structure_id"
        ).fetchall()
    return [
        (sid, comp, ok, None if e is None else round(e, 8), kind, it)
        for sid, comp, ok, e, kind, it in rows
    ]


def _final_hull(directory: Path) -> dict:
    with CampaignStore.open(directory, readonly=True) as store:
        return json.loads(store.meta("final_hull"))


# ---------------------------------------------------------------------------- 1. physics


@pytest.mark.slow
def test_small_campaign_finds_the_emt_hull(tmp_path, emt_reference, one_thread):
    ref = emt_reference
    # The prototypes give the textbook EMT answer: Cu (hcp), Au (fcc), L1_2 Cu3Au, L1_0 CuAu.
    assert set(ref) == {"Cu", "Au", "Cu3Au", "CuAu"}

    campaign = Campaign.create(tmp_path / "c", SMALL)
    try:
        hull = campaign.run()
        lh = labelled_hull(campaign.store, campaign.oracle.name, 0.0, ELEMENTS)
        assert campaign.store.integrity_check() == "ok"
        iterations = campaign.store.iterations()
    finally:
        campaign.close()
    assert hull is not None
    assert [it.index for it in iterations] == [0, 1, 2, 3]
    assert all(it.finished is not None for it in iterations)

    best = {lh.hull.keys[c]: float(lh.hull.enthalpy[i]) for c, i in enumerate(lh.hull.best_index)}
    for key, (formation, enthalpy) in ref.items():
        assert key in hull.stable, f"{key} missing from the campaign hull {hull.stable}"
        # as low as the prototype, or lower (a random search may find a better structure)
        assert hull.stable[key] <= formation + HULL_TOL, (key, hull.stable[key], formation)
        # absolute enthalpies too: a formation enthalpy can look fine against a bad terminal
        assert best[key] <= enthalpy + HULL_TOL, (key, best[key], enthalpy)
    for key, h in hull.stable.items():  # no spurious phase far below the EMT truth
        assert h >= min(f for f, _ in ref.values()) - 0.02, (key, h)


# ---------------------------------------------------------------------------- the tiny run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One uninterrupted TINY campaign run by ``python -m alcsp.cli run CONFIG --dir D`` in
    a subprocess (one thread), shared by the resume and CLI tests."""
    root = tmp_path_factory.mktemp("tiny")
    config = root / "tiny.toml"
    config.write_text(TINY)
    directory = root / "campaign"
    t0 = time.perf_counter()
    proc = subprocess.run(
        _run_cmd(str(config), "--dir", str(directory)),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"config": config, "dir": directory, "wall": wall, "stdout": proc.stdout}


# ---------------------------------------------------------------------------- 2. resume


def _stage(directory: Path) -> str:
    """Where a campaign stands (for the test log): last iteration and its stage."""
    try:
        with CampaignStore.open(directory, readonly=True) as store:
            it = store.last_iteration()
            return "nothing" if it is None else f"iteration {it.index} {it.stage}"
    except Exception as exc:  # a database still being created
        return f"unreadable ({exc})"


def _wait_for_iteration0(directory: Path, proc: subprocess.Popen, limit: float = 120.0) -> None:
    """Until the new campaign has begun iteration 0 (its database is complete)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit and proc.poll() is None:
        try:
            with sqlite3.connect(f"file:{directory / DB_NAME}?mode=ro", uri=True) as c:
                if c.execute("SELECT COUNT(*) FROM iterations").fetchone()[0]:
                    return
        except sqlite3.Error:
            pass
        time.sleep(0.05)


@pytest.mark.slow
def test_resume_after_kill9_gives_the_uninterrupted_result(tiny, tmp_path):
    rng = np.random.default_rng(20260611)
    directory = tmp_path / "killed"
    log = tmp_path / "killed.log"
    landed = []
    for k in range(3):
        cmd = (
            _run_cmd(str(tiny["config"]), "--dir", str(directory))
            if k == 0
            else _run_cmd(str(directory))
        )
        with open(log, "a") as out:
            proc = subprocess.Popen(cmd, env=_env(), stdout=out, stderr=out)
        if k == 0:
            _wait_for_iteration0(directory, proc)
        delay = float(rng.uniform(0.25, 0.9)) * tiny["wall"]
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        if rc == -signal.SIGKILL:
            landed.append(f"{delay:.1f} s: {_stage(directory)}")
        else:
            assert rc == 0, log.read_text()[-4000:]
            break
    print("kills:", landed)
    assert landed, "no kill landed before the campaign finished"
    if len(landed) == 3:
        proc = subprocess.run(
            _run_cmd(str(directory)), env=_env(), capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-4000:]

    ref, got = tiny["dir"], directory
    with CampaignStore.open(got, readonly=True) as store:
        assert store.integrity_check() == "ok"
        dup = store.conn.execute(
            "SELECT structure_id, oracle, COUNT(*) FROM labels GROUP BY structure_id, oracle "
            "HAVING COUNT(*) > 1"
        ).fetchall()
        assert dup == []
        dup = store.conn.execute(
            "SELECT initial_id, method, COUNT(*) FROM relaxations WHERE initial_id IS NOT NULL "
            "GROUP BY initial_id, method HAVING COUNT(*) > 1"
        ).fetchall()
        assert dup == []
        counts = {t: store.count(t) for t in ("structures", "relaxations", "labels", "models")}
        finished = [it.finished is not None for it in store.iterations()]
    with CampaignStore.open(ref, readonly=True) as store:
        assert counts == {t: store.count(t) for t in counts}
        assert finished == [it.finished is not None for it in store.iterations()]

    a, b = _labels(ref), _labels(got)
    assert [r[:3] + r[4:] for r in a] == [r[:3] + r[4:] for r in b]  # ids, kinds, iterations
    ea = np.array([np.nan if r[3] is None else r[3] for r in a])
    eb = np.array([np.nan if r[3] is None else r[3] for r in b])
    np.testing.assert_allclose(eb, ea, rtol=0, atol=1e-6, equal_nan=True)

    ha, hb = _final_hull(ref), _final_hull(got)
    assert set(ha["stable"]) == set(hb["stable"])
    for key, h in ha["stable"].items():
        assert abs(hb["stable"][key] - h) <= 1e-6, key


DRIVER = Path(__file__).with_name("campaign_driver.py")


@pytest.mark.slow
def test_resume_after_kill9_at_chosen_points(tiny, tmp_path):
    """SIGKILL in the middle of iteration 1's labelling (the selection is redone with part of
    it labelled), after the first search chunk of iteration 2, and just before the final
    oracle relaxation: the same labels and hull as the uninterrupted run."""
    from alcsp.store.summary import summary

    directory = tmp_path / "killed"
    stages, pending = [], []
    for kill in (
        ["--kill-at-job", "15"],
        ["--kill-on", "iteration 2: relaxed 8/"],
        ["--kill-on", "final: relaxing"],
        [],
    ):
        proc = subprocess.run(
            [sys.executable, str(DRIVER), str(tiny["config"]), str(directory), *kill],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == (-signal.SIGKILL if kill else 0), proc.stderr[-4000:]
        stages.append(_stage(directory))
        pending.append(summary(directory)["final_pending"])
        if "final: relaxing" in kill:
            text = subprocess.run(
                [sys.executable, "-m", "alcsp.cli", "status", str(directory)],
                env=_env(),
                capture_output=True,
                text=True,
                timeout=120,
            ).stdout
            assert f"final stage stopped: {pending[-1]} oracle relaxations pending" in text, text
    assert stages[:3] == ["iteration 1 label", "iteration 2 search", "iteration 2 done"]
    assert pending[:2] == [0, 0] and pending[2] > 0 and pending[3] == 0  # status shows them
    assert _labels(directory) == _labels(tiny["dir"])
    assert _final_hull(directory) == _final_hull(tiny["dir"])
    with CampaignStore.open(directory, readonly=True) as store:
        assert store.integrity_check() == "ok"


# ---------------------------------------------------------------------------- 4. CLI


def _snapshot(directory: Path) -> dict:
    with CampaignStore.open(directory, readonly=True) as store:
        return {
            "counts": {
                t: store.count(t)
                for t in ("structures", "relaxations", "labels", "models", "iterations")
            },
            "finished": [it.finished for it in store.iterations()],
            "iteration_counts": [it.counts for it in store.iterations()],
        }


def _stable_lines(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if "formation enthalpy" in ln]


def test_cli_run_again_is_idempotent(tiny, capsys):
    before = _snapshot(tiny["dir"])
    assert main(["run", str(tiny["config"]), "--dir", str(tiny["dir"]), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert _stable_lines(out) == _stable_lines(tiny["stdout"]) != []
    assert _snapshot(tiny["dir"]) == before  # nothing redone, no count or time rewritten
    # continuing by directory is the same
    assert main(["run", str(tiny["dir"]), "--quiet"]) == 0
    assert _stable_lines(capsys.readouterr().out) == _stable_lines(tiny["stdout"])
    assert _snapshot(tiny["dir"]) == before


def test_cli_run_refuses_a_different_config_in_the_same_directory(tiny, tmp_path, capsys):
    other = tmp_path / "other.toml"
    other.write_text(TINY.replace("seed = 7", "seed = 8"))
    assert main(["run", str(other), "--dir", str(tiny["dir"])]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "--config" in err and str(tiny["dir"]) in err


def test_cli_status_text_and_json(tiny, capsys):
    assert main(["status", str(tiny["dir"])]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"campaign 'tiny' in {tiny['dir']} (alcsp ")  # [campaign] name
    assert "iteration 0: done" in text and "iteration 2: done" in text
    assert "final hull:" in text
    assert main(["status", str(tiny["dir"]), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert [it["iteration"] for it in s["iterations"]] == [0, 1, 2]
    assert all(it["finished"] for it in s["iterations"])
    assert s["models"] == 2 and s["label_failures"] == 0
    assert s["labels"] == len(_labels(tiny["dir"]))
    relaxed = [r for r in s["oracle_relaxations"] if r["structure_id"] is not None]
    assert 0 < len(relaxed) <= 4 + 2  # [final] structures + one terminal per element
    assert sum(it["counts"]["labelled"] for it in s["iterations"]) + len(relaxed) == s["labels"]
    calls = s["oracle_calls"]
    assert calls["final"] == sum(r["calls"] for r in relaxed)
    assert sum(calls.values()) == s["labels"] - len(relaxed) + calls["final"]
    assert s["final_hull"] == _final_hull(tiny["dir"])
    assert {"Cu", "Au"} <= set(s["final_hull"]["stable"])


def test_cli_report_is_self_contained(tiny, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(tiny["dir"]), "--out", str(out)]) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2
    assert 'alt="learning_curves.png"' in page and 'alt="hull.png"' in page
    assert (out / "hull.png").stat().st_size > 1000
    assert (out / "learning_curves.png").stat().st_size > 1000
    phases = json.loads((out / "phases.json").read_text())
    stable = {p["composition"] for p in phases if p["e_hull_mev"] <= 1e-6}
    assert stable == set(_final_hull(tiny["dir"])["stable"])
    for key in stable:
        assert key in page


def test_cli_export_writes_cifs_of_the_near_hull_structures(tiny, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(tiny["dir"]), "--ehull", "0.05", "--out", str(out)]) == 0
    capsys.readouterr()
    with CampaignStore.open(tiny["dir"], readonly=True) as store:
        lh = labelled_hull(store, "emt", 0.0, ELEMENTS)
    near = {lh.hull.keys[c] for c, i in enumerate(lh.hull.best_index) if lh.hull.e_hull[i] <= 0.05}
    cifs = sorted((out / "cif").glob("*.cif"))
    assert len(cifs) == len(near) >= 2
    found = {composition_key(read(p).get_chemical_formula()) for p in cifs}
    assert found == near
    frames = read(out / "structures.extxyz", index=":")
    assert len(frames) == len(near)


@pytest.mark.parametrize("command", ["run", "status", "report", "export"])
def test_cli_directory_without_a_campaign(command, tmp_path, capsys):
    assert main([command, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"alcsp {command}: error:") and "holds no campaign" in err
    assert len(err.strip().splitlines()) == 1  # one clear line, no traceback


def test_cli_bad_run_targets(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "neither a config file nor a campaign directory" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace("max_iterations = 2", "max_iterations = 0"))
    assert main(["run", str(bad), "--dir", str(tmp_path / "c")]) == 2
    assert "[campaign] max_iterations must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # refused before anything is created
    assert main(["export", str(tmp_path), "--ehull", "-1"]) == 2
    assert "--ehull must be >= 0" in capsys.readouterr().err


# ---------------------------------------------------------------------------- 5. failures

#: fault mode -> the failure kind it must be recorded as ("scf_once" succeeds on the retry)
FAULT_KINDS = {"raise": "crash", "scf": "scf_not_converged", "nan": "invalid_result"}


def test_campaign_survives_an_oracle_that_fails_jobs(tmp_path, one_thread):
    directory = tmp_path / "faulty"
    campaign = Campaign.create(directory, TINY)
    faults = draw_faults(
        [job_key(i) for i in range(1, 1000)],
        np.random.default_rng(5),
        p_fail=0.3,
        modes=(*FAULT_KINDS, "scf_once"),
    )
    spec = FaultInjectingSpec(EMTSpec(), faults)
    # one retry with the same parameters: "scf_once" jobs succeed on attempt 2
    campaign.oracle = ASEOracle(
        spec, EMTSpec.Params(), directory / "oracle" / "faulty", retries=({},), isolate=False
    )
    try:
        hull = campaign.run()
        store = campaign.store
        name = campaign.oracle.name
        outcomes = store.get_labels(sorted(store.labelled_ids(name)), name)
        final = set(store.structure_ids(origin="oracle_relaxed"))  # relaxed, not labelled
        training = {a.info["structure_id"] for a in store.training_set(name)}
        iterations = store.iterations()
        models = store.models()
        assert store.integrity_check() == "ok"
    finally:
        campaign.close()

    assert hull is not None and {"Cu", "Au"} <= set(hull.stable)
    assert [it.index for it in iterations] == [0, 1, 2] and len(models) == 2
    failed = {sid for sid, r in outcomes.items() if not r.ok}
    assert len(failed) >= 5  # the injected faults really happened
    for sid, r in outcomes.items():
        if sid in final:
            assert r.ok
            continue
        mode = faults.get(job_key(sid))
        if r.ok:
            assert mode in (None, "scf_once")
            assert r.attempts == (2 if mode == "scf_once" else 1)
        else:
            assert r.kind.value == FAULT_KINDS[mode], (sid, mode, r)
            assert r.attempts == (2 if mode in ("raise", "scf") else 1)  # nan is not retried
    # failures are recorded per iteration and never trained on
    assert training.isdisjoint(failed)
    assert training == {sid for sid, r in outcomes.items() if r.ok}
    with CampaignStore.open(directory, readonly=True) as store:
        rows = store.conn.execute(
            "SELECT iteration, SUM(ok = 0), SUM(ok) FROM labels GROUP BY iteration"
        ).fetchall()
    failures = {it: f for it, f, _ in rows}
    successes = {it: ok for it, _, ok in rows}
    for it in iterations:
        assert it.counts["label_failures"] == failures.get(it.index, 0), it
        assert it.counts["labelled"] == successes.get(it.index, 0), it
    # model n was trained (train + validation split) on exactly the successful labels of
    # iterations before n within the force cap: a failure in its data would change the count
    cap = campaign.config.campaign.train_max_force
    with CampaignStore.open(directory, readonly=True) as store:
        trainable = [
            a.info["iteration"]
            for a in store.training_set(name)
            if cap == 0 or np.abs(a.get_forces()).max() <= cap
        ]
    for m in models:
        used = m.metrics["train"]["n_structures"] + (m.metrics["validation"] or {}).get(
            "n_structures", 0
        )
        assert used == sum(1 for i in trainable if 0 <= i < m.iteration), m


def test_an_iteration_without_a_converged_terminal_still_ranks_its_compositions(tiny, tmp_path):
    """If every Au cell of an iteration went unphysical, the Cu–Au compositions still get an
    ACNN E_hull: the best earlier Au structures, evaluated with this iteration's model, stand
    in for the missing terminal (without them those compositions would drop out of the
    selection, as a hydrogen-poor search at 300 GPa showed)."""
    import shutil

    import torch

    from alcsp.potential import ACNNPotential, load_model
    from alcsp.structures import StructureBatch
    from alcsp.units import GPA

    directory = tmp_path / "copy"
    shutil.copytree(tiny["dir"], directory)
    camp = Campaign.open(directory)
    try:
        store = camp.store
        n = 2
        model = load_model(store.model_path([m for m in store.models() if m.iteration == n][-1]))
        rel = store.relaxations(iteration=n, method="acnn")
        keys = np.array([composition_key(c) for c in rel.composition])
        au = (keys == "Au") & (rel.status == "converged")
        mixed = (keys != "Au") & (keys != "Cu") & (rel.status == "converged")
        assert au.any() and mixed.any(), "the tiny campaign's iteration 2 has Au and Cu–Au minima"
        with sqlite3.connect(directory / DB_NAME) as conn:  # those Au cells "went unphysical"
            conn.executemany(
                "UPDATE relaxations SET status = 'unphysical', e_hull = NULL WHERE id = ?",
                [(int(i),) for i in rel.id[au]],
            )
            conn.execute("UPDATE relaxations SET e_hull = NULL WHERE iteration = ?", (n,))

        # the reference: the lowest model enthalpy over the 3 lowest-enthalpy earlier converged
        # Au relaxations and the labelled Au structures, computed here independently
        earlier = store.relaxations(method="acnn", status="converged")
        rows = sorted(
            (h, int(s))
            for s, c, it, h in zip(
                earlier.structure_id,
                earlier.composition,
                earlier.iteration,
                earlier.enthalpy_per_atom,
                strict=True,
            )
            if it < n and composition_key(c) == "Au"
        )
        pool = store.get_atoms([s for _, s in rows[:3]]) + [
            a
            for a in store.training_set("emt")
            if composition_key(a.get_chemical_formula()) == "Au"
            and np.abs(a.get_forces()).max() <= camp.config.campaign.train_max_force
        ]
        assert pool
        pot = ACNNPotential(model, dtype=torch.float64)
        e = pot.compute(StructureBatch.from_atoms(pool, dtype=torch.float64)).energy.numpy()
        p = camp.config.campaign.pressure * GPA
        expected = min(
            (float(ei) + p * a.get_volume()) / len(a) for a, ei in zip(pool, e, strict=True)
        )

        present = set(keys[rel.status == "converged"]) - {"Au"}
        ref_keys, ref_h = selection.terminal_references(camp.context, n, present, model)
        assert list(ref_keys) == ["Au"]
        assert abs(ref_h[0] - expected) < 1e-9

        def mixed_e_hull() -> np.ndarray:
            return store.relaxations(iteration=n, method="acnn").e_hull[mixed]

        camp.select(n)  # no model: the Cu–Au compositions cannot be placed
        assert np.isnan(mixed_e_hull()).all()
        camp.select(n, model)
        got = mixed_e_hull()
        assert np.isfinite(got).all() and (got >= -1e-9).all()
    finally:
        camp.close()


# ------------------------------------------------------------------ 5. references, stop rule

# The stop rule fires after one iteration in which no new label lands near the hull: here
# ACNN relaxations stop after 4 steps and only converged ones may be labelled, so iteration 1
# labels (almost) nothing. (With the tiny model's full relaxations a new Cu or Au label
# lowered a terminal in each of 4 iterations, so the rule rightly never fired.)
STOPPING = (
    TINY.replace("max_iterations = 2", "max_iterations = 4")
    .replace("hull_patience = 2", "hull_patience = 1")
    .replace("max_steps = 100", "max_steps = 4")
    .replace("b_max = 16", "b_max = 16\ninclude_unconverged = false\ninclude_unphysical = false")
)


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["inline", "process"])
def test_a_kill_while_the_stop_rule_fires_keeps_the_history(tmp_path, executor):
    """A kill while the stop rule fires: the resumed campaign keeps the same history (a
    resume that rewrote iteration 0's stored hull, as every run() once did, stopped a
    campaign early). With a process pool the model trains in a worker process, and the
    first kill lands while it trains."""
    cfg = tmp_path / "stop.toml"
    cfg.write_text(STOPPING.replace('kind = "inline"', f'kind = "{executor}"\nworkers = 2'))
    kills = [["--kill-on", "iteration 1: relaxed 8/"], ["--kill-at-job", "3"]]
    if executor == "process":  # the driver's job counter sees only jobs run in the driver
        kills = [["--kill-on", "iteration 1: training ACNN"], kills[0]]

    def drive(directory, *kill):
        return subprocess.run(
            [sys.executable, str(DRIVER), str(cfg), str(directory), *kill],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )

    ref = tmp_path / "ref"
    assert drive(ref).returncode == 0
    got = tmp_path / "got"
    for kill in (*kills, []):
        proc = drive(got, *kill)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-3000:]
        if executor == "process" and kill:  # each kill landed
            assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]

    def history(d):
        with CampaignStore.open(d, readonly=True) as store:
            return [(it.index, it.hull) for it in store.iterations()]

    assert len(history(ref)) < 5, "the stop rule never fired: the test tests nothing"
    assert history(got) == history(ref)
    assert _labels(got) == _labels(ref)
    assert _final_hull(got) == _final_hull(ref)


REFERENCED = TINY.replace(
    "[final]", '[references]\nprototypes = { Cu = ["fcc", "hcp", "bcc"], Au = ["fcc"] }\n\n[final]'
)


def test_references_are_labelled_relaxed_and_on_every_hull(tmp_path, one_thread):
    campaign = Campaign.create(tmp_path / "c", REFERENCED)
    try:
        hull = campaign.run()
        store = campaign.store
        names = campaign.reference_names()
        assert sorted(names.values()) == ["bcc Cu", "fcc Au", "fcc Cu", "hcp Cu"]
        refs = store.oracle_relaxations("references")
        assert sorted(r.parent_id for r in refs) == sorted(names)
        assert all(r.status == "converged" and r.calls == r.steps + 1 for r in refs)
        # relaxed references are labels: in the training set and on the DFT hull
        train_ids = {a.info["structure_id"] for a in training.training_data(campaign.context)}
        assert {r.structure_id for r in refs} <= train_ids
        # the Cu terminal is at least as low as relaxed hcp Cu (EMT's Cu ground state)
        hcp = next(r for r in refs if names[r.parent_id] == "hcp Cu")
        (lab,) = store.get_labels([hcp.structure_id], "emt").values()
        lh = campaign.context.labelled_hull()
        cu_best = min(
            float(lh.hull.enthalpy[i])
            for i in range(len(lh.kept))
            if lh.hull.keys[lh.hull.comp_index[i]] == "Cu"
        )
        assert cu_best <= lab.hull_energy / 2 + 1e-9
        ref_cu = bulk("Cu", "hcp", a=3.6 / 2**0.5)
        ref_cu.calc = EMT()
        BFGS(FrechetCellFilter(ref_cu), logfile=None).run(fmax=1e-4, steps=300)
        assert lab.hull_energy / 2 == pytest.approx(ref_cu.get_potential_energy() / 2, abs=2e-4)
        # the references started iteration n's ACNN search too (so they are on that hull)
        for n in (1, 2):
            copies = store.structure_ids(origin="reference_phase", iteration=n)
            assert len(copies) == 4
            assert set(copies) <= store.relaxed_initial_ids("acnn")
        # the final stage never spends two relaxations on one element
        final = store.oracle_relaxations("final")
        keys = [
            store.get_atoms([r.parent_id])[0].get_chemical_formula(mode="reduce") for r in final
        ]
        elements = [k for k in keys if k in ("Cu", "Au")]
        assert len(elements) == len(set(elements))
        assert hull is not None and {"Cu", "Au"} <= set(hull.stable)
    finally:
        campaign.close()


def test_wrong_terminal_warnings_name_both_structures():
    from alcsp.references import wrong_terminal_warnings

    w = wrong_terminal_warnings(
        {"Cu": ("structure 42, Im-3m", -0.20), "Au": ("s 7", -1.0)},
        {"Cu": ("hcp Cu", -0.2487), "Au": ("fcc Au", -1.001)},
        0.005,
    )
    assert len(w) == 1 and "structure 42, Im-3m" in w[0] and "hcp Cu" in w[0]
    assert "48.7 meV/atom above" in w[0]
    w = wrong_terminal_warnings({"Cu": ("s 1", -0.3)}, {"Cu": ("sc Cu", -0.2)}, 0.005)
    assert "not the ground state" in w[0]


@pytest.mark.parametrize(
    "table, message",
    [
        ('files = ["missing.cif"]', "missing.cif does not exist"),
        ('files = ["junk.cif"]', "cannot read"),
        ('files = ["nacl.extxyz"]', "outside the campaign's elements"),
        ('files = ["cu.extxyz", "cu.cif"]', "same structure"),
        ('files = ["cu.extxyz", "cu.extxyz"]', "twice"),
        ('prototypes = { Cu = ["fcc", "rocksalt"] }', "unknown prototype 'rocksalt'"),
        ('prototypes = { Ag = ["fcc"] }', "outside the campaign's"),
        ("colour = 1", "unknown field"),
    ],
)
def test_bad_references_exit_2_and_write_nothing(tmp_path, capsys, table, message):
    from ase.io import write

    (tmp_path / "junk.cif").write_text("this is not a crystal\n")
    write(tmp_path / "nacl.extxyz", bulk("NaCl", "rocksalt", a=5.6))
    write(tmp_path / "cu.extxyz", bulk("Cu", "fcc", a=3.6))
    write(tmp_path / "cu.cif", bulk("Cu", "fcc", a=3.6, cubic=True))  # the same crystal
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY.replace("[final]", f"[references]\n{table}\n\n[final]"))
    target = tmp_path / "runs" / "x"
    assert main(["run", str(cfg), "--dir", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not target.exists()
