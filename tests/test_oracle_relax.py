"""Oracle relaxation: agreement with ASE's own BFGS + FrechetCellFilter, limits marked,
exact resume from a checkpoint (also after a real SIGKILL), failures as outcomes."""

from __future__ import annotations

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
from ase.optimize import BFGS

from alcsp.execute import ExecutorConfig, make_executor
from alcsp.oracle.factory import OracleConfig, make_oracle
from alcsp.oracle_relax import (
    OracleRelaxation,
    OracleRelaxFailure,
    OracleRelaxStatus,
    relax_with_oracle,
)
from alcsp.units import GPA

EV_A3_IN_GPA = 1 / GPA


def cu(seed: int = 0):
    a = bulk("Cu", "fcc", 3.7, cubic=True) * (2, 1, 1)
    a.positions += 0.1 * np.random.default_rng(seed).normal(size=a.positions.shape)
    return a


@pytest.fixture
def setup(tmp_path):
    oracle = make_oracle(OracleConfig("emt"), tmp_path / "oracle")
    ex = make_executor(ExecutorConfig(kind="inline"))
    yield oracle, ex
    ex.close()


def relax(setup, atoms, key, **kw):
    oracle, ex = setup
    args = dict(pressure_gpa=10.0, fmax=1e-3, max_steps=200) | kw
    return relax_with_oracle(
        oracle,
        [atoms],
        [key],
        args.pop("pressure_gpa"),
        args.pop("fmax"),
        args.pop("max_steps"),
        ex,
        **args,
    )[0]


def test_agrees_with_ase_and_reaches_the_pressure(setup):
    r = relax(setup, cu(), "a")
    assert isinstance(r, OracleRelaxation) and r.status is OracleRelaxStatus.CONVERGED
    ref = cu()
    ref.calc = EMT()
    opt = BFGS(FrechetCellFilter(ref, scalar_pressure=10.0 * GPA), logfile=None)
    opt.run(fmax=1e-3, steps=200)
    n = len(ref)
    assert abs(r.energy / n - ref.get_potential_energy() / n) < 1e-6
    assert r.steps == opt.nsteps and r.calls == r.steps + 1
    assert np.abs(r.forces).max() < 1e-3
    assert -np.trace(r.stress) / 3 * EV_A3_IN_GPA == pytest.approx(10.0, abs=0.05)
    assert r.energy == r.energy_zero  # EMT has no smearing
    lab = r.label("emt")
    assert lab.energy == r.energy and lab.hull_energy == r.energy_zero


def test_limits_are_marked(setup):
    assert relax(setup, cu(), "s", max_steps=3).status is OracleRelaxStatus.MAX_STEPS
    assert relax(setup, cu(), "t", max_time_s=1e-9).status is OracleRelaxStatus.TIME_LIMIT


def test_resume_continues_the_same_path_and_finished_jobs_are_read_back(setup):
    full = relax(setup, cu(), "full")
    part = relax(setup, cu(), "part", max_steps=3)
    assert part.steps == 3 and part.calls == 4
    rest = relax(setup, cu(), "part")
    assert rest.status is OracleRelaxStatus.CONVERGED
    assert rest.steps == full.steps  # the stored Hessian: the uninterrupted path exactly
    assert rest.calls == full.calls + 1  # one repeated evaluation at the resume point
    assert abs(rest.energy - full.energy) < 1e-8
    again = relax(setup, cu(), "part")
    assert (again.calls, again.steps, again.energy) == (rest.calls, rest.steps, rest.energy)
    # a different structure in the same folder starts afresh
    other = relax(setup, cu(seed=1), "part")
    assert other.calls == other.steps + 1


def test_sigkill_resumes_from_the_checkpoint(setup, tmp_path):
    oracle, _ = setup
    script = textwrap.dedent(f"""
        import time, numpy as np
        from ase.build import bulk
        from ase.calculators.emt import EMT
        import alcsp.oracle.emt as emt
        from alcsp.execute import ExecutorConfig, make_executor
        from alcsp.oracle.factory import OracleConfig, make_oracle
        from alcsp.oracle_relax import relax_with_oracle

        class Slow(EMT):  # slow enough to be killed mid-relaxation
            def calculate(self, *a, **k):
                time.sleep(0.2)
                super().calculate(*a, **k)

        emt.EMTSpec.make_calculator = lambda self, atoms, params, job: Slow()
        a = bulk("Cu", "fcc", 3.7, cubic=True) * (2, 1, 1)
        a.positions += 0.1 * np.random.default_rng(0).normal(size=a.positions.shape)
        o = make_oracle(OracleConfig("emt"), {str(oracle.workdir)!r})
        ex = make_executor(ExecutorConfig(kind="inline"))
        relax_with_oracle(o, [a], ["k"], 10.0, 1e-3, 200, ex)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    traj = oracle.workdir / "k" / "trajectory.traj"
    deadline = time.time() + 60
    while time.time() < deadline and (not traj.exists() or traj.stat().st_size < 5000):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    from alcsp.oracle_relax import _frames

    kept = len(_frames(traj))
    assert kept >= 2, "the kill came before any checkpoint"
    r = relax(setup, cu(), "k")
    full = relax(setup, cu(), "full")
    assert r.status is OracleRelaxStatus.CONVERGED
    assert abs(r.energy - full.energy) < 1e-6
    assert r.calls >= kept and r.calls - 1 <= full.calls + 1  # continued, not restarted


def test_a_failure_is_an_outcome_and_the_others_still_relax(setup):
    oracle, ex = setup
    out = relax_with_oracle(
        oracle, [bulk("Ca", "fcc", 5.6), cu()], ["ca", "cu"], 0.0, 1e-3, 100, ex
    )
    assert isinstance(out[0], OracleRelaxFailure) and "NotImplementedError" in out[0].reason
    assert isinstance(out[1], OracleRelaxation) and out[1].status is OracleRelaxStatus.CONVERGED
