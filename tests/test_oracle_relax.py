"""Oracle relaxation: agreement with ASE's own BFGS + FrechetCellFilter, the target
pressure, limits marked, exact resume from a checkpoint (after a step limit, a truncated
trajectory and a real SIGKILL), finished jobs read back, F and E0 kept apart, failures as
outcomes with their reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.geometry import cell_to_cellpar
from ase.optimize import BFGS

from alcsp.execute import ExecutorConfig, TaskResult, WorkerLost, make_executor
from alcsp.oracle.emt import EMTSpec
from alcsp.oracle.factory import OracleConfig, make_oracle
from alcsp.oracle.gpaw import gpaw_cell
from alcsp.oracle_relax import (
    RELAX_DIR,
    OracleRelaxation,
    OracleRelaxFailure,
    OracleRelaxStatus,
    read_frames,
    relax_with_oracle,
)
from alcsp.units import GPA

FMAX = 2e-3


def cu(seed: int = 0, a: float = 3.7):
    """A strained, rattled 4-atom fcc Cu cell."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a, cubic=True)
    atoms.set_cell(
        atoms.cell.array @ (np.eye(3) + 0.03 * rng.normal(size=(3, 3))), scale_atoms=True
    )
    atoms.positions += 0.1 * rng.normal(size=atoms.positions.shape)
    return atoms


def ase_reference(atoms, pressure_gpa: float, fmax: float = FMAX, steps: int = 300):
    ref = atoms.copy()
    ref.calc = EMT()
    opt = BFGS(FrechetCellFilter(ref, scalar_pressure=pressure_gpa * GPA), logfile=None)
    opt.run(fmax=fmax, steps=steps)
    return ref, opt.nsteps


@pytest.fixture
def oracle(tmp_path):
    return make_oracle(OracleConfig(name="emt"), tmp_path / "oracle")


@pytest.fixture
def ex():
    executor = make_executor(ExecutorConfig(kind="inline"))
    yield executor
    executor.close()


def relax(oracle, ex, atoms, key, pressure_gpa=10.0, fmax=FMAX, max_steps=300, **kw):
    return relax_with_oracle(oracle, [atoms], [key], pressure_gpa, fmax, max_steps, ex, **kw)[0]


def jobdir(oracle, key):
    return oracle.workdir / RELAX_DIR / key


class CountingEMT(EMT):
    count = 0

    def calculate(self, *args, **kwargs):
        type(self).count += 1
        super().calculate(*args, **kwargs)


@pytest.fixture
def counted(monkeypatch):
    """Count every EMT evaluation the oracle makes in this process."""
    CountingEMT.count = 0
    monkeypatch.setattr(EMTSpec, "make_calculator", lambda self, a, p, job: CountingEMT())
    return CountingEMT


def pressure_gpa(stress):
    return -np.trace(stress) / 3 / GPA


@pytest.mark.parametrize("p", [0.0, 10.0])
def test_converges_at_the_target_pressure_like_ase(oracle, ex, p):
    r = relax(oracle, ex, cu(), "s000001", pressure_gpa=p)
    assert isinstance(r, OracleRelaxation) and r.status is OracleRelaxStatus.CONVERGED
    assert np.linalg.norm(r.forces, axis=1).max() < FMAX
    # converged cell gradient: V (σ + p) / N below fmax, i.e. |P - p| < fmax N / V
    tol = FMAX * len(r.atoms) / r.atoms.get_volume() / GPA
    assert pressure_gpa(r.stress) == pytest.approx(p, abs=tol)
    assert tol < 0.05
    ref, ref_steps = ase_reference(cu(), p)
    n = len(ref)
    assert abs(r.energy - ref.get_potential_energy(force_consistent=True)) / n < 1e-6
    assert r.steps == ref_steps and r.calls == r.steps + 1
    np.testing.assert_allclose(r.atoms.cell.array, ref.cell.array, atol=1e-6)
    np.testing.assert_allclose(r.atoms.positions, ref.positions, atol=1e-6)
    assert r.energy == r.energy_zero  # EMT has no smearing: E0 = F
    lab = r.label("emt")
    assert (lab.energy, lab.energy_zero, lab.oracle, lab.attempts) == (
        r.energy,
        r.energy_zero,
        "emt",
        1,
    )
    assert lab.wall_time == r.wall_time > 0
    # every evaluation is a checkpointed frame with F, E0, forces and stress
    frames = read_frames(jobdir(oracle, "s000001") / "relax.traj")
    assert len(frames) == r.calls
    assert frames[-1].get_potential_energy(force_consistent=True) == r.energy
    np.testing.assert_array_equal(frames[-1].get_forces(), r.forces)


class SmearedEMT(EMT):
    """EMT reported as a smeared code: F is EMT's energy (the forces' potential),
    E0 = F - 0.01 eV per atom."""

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        free = self.results["energy"]
        self.results["free_energy"] = free
        self.results["energy"] = free - 0.01 * len(self.atoms)


def test_force_consistent_energy_and_e0_are_kept_apart(oracle, ex, monkeypatch):
    monkeypatch.setattr(EMTSpec, "make_calculator", lambda self, a, p, job: SmearedEMT())
    r = relax(oracle, ex, cu(), "smeared")
    ref, _ = ase_reference(cu(), 10.0)
    assert r.status is OracleRelaxStatus.CONVERGED
    assert r.energy == pytest.approx(ref.get_potential_energy(), abs=1e-6 * len(ref))
    assert r.energy_zero == pytest.approx(r.energy - 0.04, abs=1e-12)
    lab = r.label("emt")
    assert lab.energy == r.energy and lab.hull_energy == r.energy_zero
    last = read_frames(jobdir(oracle, "smeared") / "relax.traj")[-1]
    assert last.get_potential_energy(force_consistent=True) == r.energy
    assert last.get_potential_energy() == r.energy_zero


class ReducingEMTSpec(EMTSpec):
    """EMT computing in GPAW's cell basis (Minkowski-reduced when badly skewed)."""

    def prepare(self, atoms):
        return gpaw_cell(atoms)


def test_starts_from_the_prepared_cell(oracle, ex):
    oracle.spec = ReducingEMTSpec()
    prim = bulk("Cu", "fcc", 3.7)
    skewed = prim.copy()
    c = prim.cell.array
    skewed.set_cell([c[0], c[1], c[2] + 2 * c[0]], scale_atoms=False)  # same lattice
    skewed.positions += [0.05, -0.02, 0.03]
    assert not all(40 < x < 140 for x in cell_to_cellpar(skewed.cell)[3:])
    r = relax(oracle, ex, skewed, "skew", pressure_gpa=0.0)
    first = read_frames(jobdir(oracle, "skew") / "relax.traj")[0]
    np.testing.assert_allclose(first.cell.array, gpaw_cell(skewed).cell.array)
    assert r.status is OracleRelaxStatus.CONVERGED
    # final geometry in the prepared basis: a well-shaped cell
    assert all(40 < x < 140 for x in cell_to_cellpar(r.atoms.cell)[3:])


def test_limits_are_marked(oracle, ex):
    r = relax(oracle, ex, cu(), "steps", max_steps=3)
    assert r.status is OracleRelaxStatus.MAX_STEPS and (r.steps, r.calls) == (3, 4)
    t = relax(oracle, ex, cu(), "time", max_time_s=1e-9)
    assert isinstance(t, OracleRelaxation) and t.status is OracleRelaxStatus.TIME_LIMIT
    assert (t.steps, t.calls) == (0, 1)  # stops after the step that passed the limit
    # the same limit again: read back; no limit: continues to convergence
    assert relax(oracle, ex, cu(), "time", max_time_s=1e-9).calls == 1
    done = relax(oracle, ex, cu(), "time")
    assert done.status is OracleRelaxStatus.CONVERGED and done.calls == done.steps + 1


def test_resume_continues_the_uninterrupted_path(oracle, ex, counted):
    full = relax(oracle, ex, cu(), "full")
    part = relax(oracle, ex, cu(), "part", max_steps=3)
    assert part.status is OracleRelaxStatus.MAX_STEPS and (part.steps, part.calls) == (3, 4)
    early = read_frames(jobdir(oracle, "part") / "relax.traj")
    assert len(early) == 4
    counted.count = 0
    rest = relax(oracle, ex, cu(), "part")
    assert rest.status is OracleRelaxStatus.CONVERGED
    assert rest.steps == full.steps  # steps continue (3 before, the rest now)
    assert counted.count == rest.steps - 3  # no evaluation repeated at the resume point
    assert rest.calls == full.calls == rest.steps + 1
    assert abs(rest.energy - full.energy) / len(rest.atoms) < 1e-5
    np.testing.assert_allclose(rest.atoms.positions, full.atoms.positions, atol=1e-8)
    frames = read_frames(jobdir(oracle, "part") / "relax.traj")
    assert len(frames) == rest.steps + 1
    for a, b in zip(early, frames, strict=False):
        np.testing.assert_array_equal(a.positions, b.positions)


def test_finished_jobs_are_read_back_and_a_tighter_fmax_continues(oracle, ex, counted):
    first = relax(oracle, ex, cu(), "done")
    traj = jobdir(oracle, "done") / "relax.traj"
    size = traj.stat().st_size
    counted.count = 0
    again = relax(oracle, ex, cu(), "done")
    assert counted.count == 0 and traj.stat().st_size == size
    assert (again.status, again.steps, again.calls, again.energy, again.wall_time) == (
        first.status,
        first.steps,
        first.calls,
        first.energy,
        first.wall_time,
    )
    np.testing.assert_array_equal(again.atoms.positions, first.atoms.positions)
    # a looser fmax is answered by the stored result too
    assert relax(oracle, ex, cu(), "done", fmax=0.05).calls == first.calls
    assert counted.count == 0
    tight = relax(oracle, ex, cu(), "done", fmax=1e-4)
    assert tight.status is OracleRelaxStatus.CONVERGED and tight.steps > first.steps
    assert counted.count == tight.steps - first.steps and tight.calls == tight.steps + 1
    assert np.linalg.norm(tight.forces, axis=1).max() < 1e-4


def test_another_input_in_the_folder_starts_afresh(oracle, ex):
    a = relax(oracle, ex, cu(seed=0), "k", max_steps=5)
    b = relax(oracle, ex, cu(seed=1), "k", max_steps=5)
    assert (a.calls, b.calls) == (6, 6)
    first = read_frames(jobdir(oracle, "k") / "relax.traj")[0]
    np.testing.assert_allclose(first.positions, cu(seed=1).positions)
    c = relax(oracle, ex, cu(seed=1), "k", pressure_gpa=0.0, max_steps=5)
    assert c.calls == 6  # another pressure is another relaxation


def test_a_truncated_trajectory_is_survived(oracle, ex, counted):
    full = relax(oracle, ex, cu(), "full")
    relax(oracle, ex, cu(), "cut", max_steps=5)
    traj = jobdir(oracle, "cut") / "relax.traj"
    data = traj.read_bytes()
    traj.write_bytes(data[:-50])  # the last frame half written
    kept = read_frames(traj)
    assert len(kept) == 5
    counted.count = 0
    r = relax(oracle, ex, cu(), "cut")
    assert r.status is OracleRelaxStatus.CONVERGED and r.steps == full.steps
    assert counted.count == r.steps - 4  # continued from frame 4
    assert r.calls == full.calls + 1  # the lost frame was paid for twice
    assert abs(r.energy - full.energy) / len(r.atoms) < 1e-5
    assert len(read_frames(traj)) == r.steps + 1


def test_a_lost_hessian_restarts_bfgs_at_the_last_frame(oracle, ex, counted):
    relax(oracle, ex, cu(), "nohess", max_steps=3)
    (jobdir(oracle, "nohess") / "bfgs.json").unlink()
    counted.count = 0
    r = relax(oracle, ex, cu(), "nohess")
    assert r.status is OracleRelaxStatus.CONVERGED and counted.count == r.steps - 3
    assert np.linalg.norm(r.forces, axis=1).max() < FMAX


def test_sigkill_resumes_from_the_checkpoint(oracle, ex, counted):
    key, fmax = "s000123", 1e-2
    folder = jobdir(oracle, key)
    script = textwrap.dedent(f"""
        import time
        import numpy as np
        from ase.build import bulk
        from ase.calculators.emt import EMT
        from alcsp.execute import ExecutorConfig, make_executor
        from alcsp.oracle.emt import EMTSpec
        from alcsp.oracle.factory import OracleConfig, make_oracle
        from alcsp.oracle_relax import relax_with_oracle

        class StuckEMT(EMT):  # five evaluations, then one that hangs until the kill
            calls = 0

            def calculate(self, *args, **kwargs):
                StuckEMT.calls += 1
                if StuckEMT.calls > 5:
                    time.sleep(60)
                super().calculate(*args, **kwargs)

        EMTSpec.make_calculator = lambda self, atoms, params, job: StuckEMT()
        rng = np.random.default_rng(0)
        atoms = bulk("Cu", "fcc", 3.7, cubic=True)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.03 * rng.normal(size=(3, 3))),
                       scale_atoms=True)
        atoms.positions += 0.1 * rng.normal(size=atoms.positions.shape)
        oracle = make_oracle(OracleConfig(name="emt"), {str(oracle.workdir)!r})
        relax_with_oracle(oracle, [atoms], [{key!r}], 10.0, {fmax!r}, 300,
                          make_executor(ExecutorConfig(kind="inline")))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        ref, ref_steps = ase_reference(cu(), 10.0, fmax=fmax)  # meanwhile, the reference
        deadline = time.monotonic() + 60
        # killed during its 6th evaluation, after 5 checkpointed frames
        while len(read_frames(folder / "relax.traj")) < 5 or (
            json.loads((folder / "state.json").read_text())["calls"] < 6
        ):
            assert proc.poll() is None, "the relaxation ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    before = read_frames(folder / "relax.traj")
    assert len(before) == 5 and not (folder / "result.json").exists()
    counted.count = 0
    r = relax(oracle, ex, cu(), key, fmax=fmax)
    assert r.status is OracleRelaxStatus.CONVERGED
    assert counted.count == r.steps + 1 - 5  # continued from step 4, not from step 0
    assert r.steps == ref_steps  # the uninterrupted path
    assert abs(r.energy - ref.get_potential_energy()) / len(ref) < 1e-5
    assert r.calls == r.steps + 2  # the evaluation the kill interrupted is counted too
    after = read_frames(folder / "relax.traj")
    assert len(after) == r.steps + 1
    for a, b in zip(before, after, strict=False):
        np.testing.assert_array_equal(a.positions, b.positions)


def test_a_failure_has_its_reason_and_the_others_still_relax(oracle, ex):
    ca = bulk("Ca", "fcc", 5.6)
    out = relax_with_oracle(oracle, [ca, cu()], ["ca", "cu"], 0.0, FMAX, 300, ex)
    fail, ok = out
    assert isinstance(fail, OracleRelaxFailure) and not fail.ok and fail.status == "failed"
    assert "NotImplementedError" in fail.reason and "Ca" in fail.reason
    assert fail.calls == 1 and fail.wall_time >= 0
    assert (jobdir(oracle, "ca") / "failure.json").exists()
    assert isinstance(ok, OracleRelaxation) and ok.status is OracleRelaxStatus.CONVERGED
    # a failure is not final: tried again (and its cost adds up)
    again = relax(oracle, ex, ca, "ca", pressure_gpa=0.0)
    assert isinstance(again, OracleRelaxFailure) and again.calls == 2
    empty = relax(oracle, ex, ca[:0], "empty")
    assert isinstance(empty, OracleRelaxFailure) and "empty" in empty.reason


class LosingExecutor:
    def map_unordered(self, fn, items):
        for k in range(len(items)):
            yield TaskResult(k, error=WorkerLost("the worker process died 2 times"))

    def close(self):
        pass


def test_a_lost_worker_is_a_failure_with_its_reason(oracle):
    (r,) = relax_with_oracle(oracle, [cu()], ["lost"], 0.0, FMAX, 10, LosingExecutor())
    assert isinstance(r, OracleRelaxFailure)
    assert r.reason.startswith("WorkerLost:") and "died" in r.reason and r.calls == 0


def test_runs_in_worker_processes(oracle):
    with make_executor(ExecutorConfig(kind="process", workers=1)) as ex:
        out = relax_with_oracle(oracle, [cu(0), cu(1)], ["p0", "p1"], 10.0, FMAX, 4, ex)
    assert [type(r) for r in out] == [OracleRelaxation, OracleRelaxation]
    assert [(r.steps, r.calls, r.status) for r in out] == [(4, 5, OracleRelaxStatus.MAX_STEPS)] * 2
    assert out[1].atoms.positions[0] != pytest.approx(out[0].atoms.positions[0])


def test_bad_arguments_are_refused(oracle, ex):
    with pytest.raises(ValueError, match="keys"):
        relax_with_oracle(oracle, [cu()], [], 0.0, FMAX, 10, ex)
    with pytest.raises(ValueError, match="plain directory"):
        relax_with_oracle(oracle, [cu()], ["../x"], 0.0, FMAX, 10, ex)
    with pytest.raises(ValueError, match="distinct"):
        relax_with_oracle(oracle, [cu(), cu()], ["a", "a"], 0.0, FMAX, 10, ex)
    with pytest.raises(ValueError, match="max_time_s"):
        relax_with_oracle(oracle, [cu()], ["a"], 0.0, FMAX, 10, ex, max_time_s=0)
