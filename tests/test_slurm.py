"""The campaign's executor on a real Slurm cluster: one node (this machine) started by
scripts/slurm.sh, Dask workers as Slurm batch jobs through dask-jobqueue.

A tiny EMT campaign (test_campaign's TINY) runs with ``[executor] kind = "dask"`` on Slurm
and again inline; its relaxations, labels and hull must be the same. Proof that the work
went through Slurm, from three independent records:

* inside every Dask worker, ``SLURM_JOB_ID`` is set, and the workers' executed-task
  counts add up to every job the campaign submitted (oracle labels, search shards, final
  relaxations): nothing ran elsewhere;
* ``squeue`` shows those job ids RUNNING, in partition ``debug``, under this test's unique
  job name, while the campaign's executor is open;
* after the executor closes (dask-jobqueue cancels its jobs), slurmctld's job completion
  log (jobcomp/filetxt: there is no accounting database, so no sacct) lists each of them
  on this node, and each job's output file holds its Dask worker's log.

Needs root and apt-get (it installs slurm-wlm and munge). Elsewhere it skips, except
with ``CI`` or ``ALCSP_REQUIRE_SLURM=1`` set: then it fails, so CI cannot skip it silently.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from alcsp.campaign import Campaign
from alcsp.cli import main
from alcsp.execute import DaskConfig, DaskExecutor, walltime_seconds, worker_lifetime_args

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm.sh"
SLURM_DIR = Path(os.environ.get("ALCSP_SLURM_DIR", "/var/spool/alcsp-slurm"))
JOBCOMP = SLURM_DIR / "jobcomp.log"

pytestmark = pytest.mark.slow

# tests/test_campaign.py's TINY campaign (Cu, Au and CuAu, two iterations), copied.
MODEL = """
[model]
n_radial = 6
n_angular = 4
basis_radial = 6
basis_angular = 6
embedding = [16, 16]
fitting = [32, 32]
"""

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


def _required() -> bool:
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or os.environ.get("ALCSP_REQUIRE_SLURM") == "1"


def _cannot(reason: str) -> None:
    if _required():
        pytest.fail(f"Slurm is required here (CI or ALCSP_REQUIRE_SLURM=1) but {reason}")
    pytest.skip(reason)


def _script(action: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), action], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def slurm():
    """A running one-node cluster; stopped at the end unless it was running before."""
    if not sys.platform.startswith("linux"):
        _cannot("the one-node Slurm cluster needs Linux")
    if os.geteuid() != 0:
        _cannot("scripts/slurm.sh needs root (it installs and starts Slurm)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        _cannot("no apt-get to install Slurm, and Slurm is not installed")
    was_up = _script("status").returncode == 0
    for action in ("install", "start"):
        res = _script(action)
        if res.returncode != 0:
            _cannot(
                f"scripts/slurm.sh {action} failed ({res.returncode}):\n"
                f"{res.stdout[-2000:]}{res.stderr[-3000:]}"
            )
    node = re.search(
        r"^NodeName=(\S+)",
        subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout,
        re.M,
    )[1]
    yield node
    if not was_up:
        res = _script("stop")
        assert res.returncode == 0, res.stdout + res.stderr
        assert _script("status").returncode == 3


def _relaxations(store):
    rel = store.relaxations(method="acnn")
    atoms = store.get_atoms([int(i) for i in rel.structure_id])
    return (
        list(rel.initial_id),
        list(rel.status),
        rel.enthalpy_per_atom,
        [a.positions for a in atoms],
    )


def _labels(store):
    rows = store.conn.execute(
        "SELECT structure_id, ok, energy FROM labels WHERE oracle = 'emt' ORDER BY structure_id"
    ).fetchall()
    return [(sid, ok) for sid, ok, _ in rows], np.array([e or 0.0 for *_, e in rows])


def _squeue(job_ids: list[str]) -> list[list[str]]:
    out = subprocess.run(
        ["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|%P|%j|%N"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("|") for line in out.split()]


def _jobcomp(job_ids: list[str], timeout: float = 60.0) -> dict[str, str]:
    """The job completion log's line of each job id (slurmctld writes it when a job ends)."""
    deadline = time.monotonic() + timeout
    while True:
        text = JOBCOMP.read_text() if JOBCOMP.exists() else ""
        lines = {
            m[1]: line
            for line in text.splitlines()
            if (m := re.match(r"JobId=(\d+) ", line)) and m[1] in job_ids
        }
        if len(lines) == len(job_ids) or time.monotonic() > deadline:
            return lines
        time.sleep(0.5)


def on_slurm_jobs(config: str, name: str, logs: Path, tmp_path: Path) -> str:
    """``config`` (with the inline executor) with Dask workers in two one-core Slurm batch
    jobs named ``name`` instead, their output files in ``logs``."""
    on_slurm = config.replace(
        '[executor]\nkind = "inline"',
        f"""[executor]
kind = "dask"

[executor.dask]
cluster = "slurm"
queue = "debug"
jobs = 2
cores = 1
memory = "4GB"
walltime = "00:10:00"
job_extra_directives = ["--job-name={name}", "--output={logs}/%j.out"]
local_directory = "{tmp_path / "dask-worker-space"}"
""",
    )
    assert on_slurm != config
    return on_slurm


def test_a_campaign_on_slurm_equals_the_inline_campaign(slurm, tmp_path, monkeypatch):
    node = slurm
    torch.set_num_threads(1)
    tag = f"alcsp-test-{uuid.uuid4().hex[:8]}"
    logs = tmp_path / "slurm-logs"
    logs.mkdir()
    on_slurm = on_slurm_jobs(TINY, tag, logs, tmp_path)
    assert on_slurm != TINY

    submitted = []  # tasks the campaign sent to the Dask executor
    real_map = DaskExecutor.map_unordered

    def counting_map(self, fn, items):
        submitted.append(len(items))
        return real_map(self, fn, items)

    monkeypatch.setattr(DaskExecutor, "map_unordered", counting_map)

    def worker_facts(dask_worker) -> tuple[str, int]:
        """On each Dask worker: its Slurm job id and how many tasks it executed. (Local, so
        that cloudpickle sends it by value: the workers cannot import this test module.)"""
        return os.environ.get("SLURM_JOB_ID", ""), dask_worker.state.executed_count

    out = {}
    for kind, text in (("inline", TINY), ("slurm", on_slurm)):
        camp = Campaign.create(tmp_path / kind, text)
        try:
            t0 = time.monotonic()
            hull = camp.run()
            elapsed = time.monotonic() - t0
            out[kind] = (_relaxations(camp.store), _labels(camp.store), hull)
            if kind == "slurm":
                assert isinstance(camp.executor, DaskExecutor)
                facts = camp.executor.client.run(worker_facts)
                job_ids = sorted({job for job, _ in facts.values()})
                running = _squeue(job_ids)
        finally:
            camp.close()
        print(f"{kind}: {elapsed:.1f} s")

    # every task ran on a worker inside a Slurm job, and those jobs were Slurm's
    assert len(facts) == 2 and all(job for job, _ in facts.values()), facts
    assert len(job_ids) == 2
    assert sum(n for _, n in facts.values()) == sum(submitted) > 6 + 12, (facts, submitted)
    assert sorted(r[0] for r in running) == job_ids
    for _job, state, partition, name, nodes in running:
        assert (state, partition, name, nodes) == ("RUNNING", "debug", tag, node)
    done = _jobcomp(job_ids)
    assert sorted(done) == job_ids, f"{JOBCOMP} lacks some of {job_ids}"
    for line in done.values():
        assert f"Name={tag} " in line and f"NodeList={node} " in line, line
    for job in job_ids:
        assert "distributed.worker" in (logs / f"{job}.out").read_text()

    # the same campaign as inline
    (ids_a, st_a, h_a, pos_a), (lab_a, e_a), hull_a = out["inline"]
    (ids_b, st_b, h_b, pos_b), (lab_b, e_b), hull_b = out["slurm"]
    assert len(ids_a) > 16  # several shards in each iteration (relax_chunk = 8)
    assert ids_a == ids_b and st_a == st_b and lab_a == lab_b
    np.testing.assert_allclose(h_a, h_b, rtol=0, atol=1e-9)
    for a, b in zip(pos_a, pos_b, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-8)
    np.testing.assert_allclose(e_a, e_b, rtol=0, atol=1e-9)
    assert hull_a.structure_ids == hull_b.structure_ids
    assert hull_a.stable.keys() == hull_b.stable.keys()
    np.testing.assert_allclose(
        list(hull_a.stable.values()), list(hull_b.stable.values()), rtol=0, atol=1e-9
    )


def test_one_worker_per_job_launches_an_mpi_style_step(slurm, tmp_path):
    """docs/cluster.md's layout for MPI codes: ``cores = 1`` (one single-threaded Dask
    worker per job, so one oracle job at a time) and ``--ntasks=N`` in the job's directives
    (N cores booked for it). A task on that worker runs ``srun -n N`` inside the job's
    allocation, as an oracle's ``command = "srun -n N vasp_std"`` would."""
    n = min(2, os.cpu_count() or 1)
    cfg = DaskConfig(
        cluster="slurm",
        queue="debug",
        cores=1,
        memory="2GB",
        walltime="00:05:00",
        jobs=1,
        job_extra_directives=(f"--ntasks={n}", f"--output={tmp_path}/%j.out"),
    )

    def ranks(_: int) -> tuple[str, list[str]]:
        out = subprocess.run(
            ["srun", "-n", str(n), "bash", "-c", "echo $SLURM_PROCID"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return os.environ["SLURM_JOB_ID"], sorted(out.stdout.split())

    with DaskExecutor(cfg) as ex:
        (res,) = list(ex.map_unordered(ranks, [0]))
        assert res.ok, res.error
        job, procids = res.value
        assert procids == [str(k) for k in range(n)]
        threads = ex.client.run(lambda dask_worker: dask_worker.state.nthreads)
        assert list(threads.values()) == [1]  # one worker, one task at a time
        cpus = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%C|%T"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert cpus == [f"{n}|RUNNING"]


def test_an_ended_job_is_replaced_and_workers_retire_before_the_walltime(slurm, tmp_path):
    """A campaign may outlive its batch jobs: the workers retire before the walltime
    (``--lifetime``) and a job that ends — walltime, preemption, node failure; here
    ``scancel`` — is replaced by a new one (the executor adapts to ``jobs`` rather than
    scaling once, after which it would wait forever for workers)."""
    cfg = DaskConfig(
        cluster="slurm",
        queue="debug",
        cores=1,
        memory="2GB",
        walltime="00:10:00",
        jobs=1,
        job_extra_directives=(f"--output={tmp_path}/%j.out",),
    )

    def job_id(_: int) -> str:
        return os.environ["SLURM_JOB_ID"]

    with DaskExecutor(cfg) as ex:
        client = ex.client
        assert "--lifetime 540s --lifetime-stagger 20s" in ex._cluster.job_script()
        first = client.submit(job_id, 0, pure=False).result(timeout=120)
        subprocess.run(["scancel", first], check=True)
        deadline = time.monotonic() + 60
        while client.scheduler_info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not client.scheduler_info()["workers"], "the cancelled job's worker stayed"
        second = client.submit(job_id, 1, pure=False).result(timeout=120)
        assert second != first
        assert _squeue([second])[0][1] == "RUNNING"


def test_walltime_forms_and_the_worker_lifetime_before_them():
    """Slurm's walltime forms (PBS uses HH:MM:SS); workers retire min(10 min, 10%) before
    the walltime (at least 30 s), staggered by a third of that; none for a short or
    unreadable walltime."""
    forms = {
        "30": 1800,
        "05:30": 330,
        "12:00:00": 43200,
        "1-00": 86400,
        "1-02:30": 95400,
        "2-03:04:05": 183845,
    }
    for text, seconds in forms.items():
        assert walltime_seconds(text) == seconds, text
    for bad in ("", "x", "1:2:3:4", "1-2:3:4:5"):
        assert walltime_seconds(bad) is None, bad
    assert worker_lifetime_args("12:00:00") == [
        "--lifetime",
        "42600s",
        "--lifetime-stagger",
        "200s",
    ]
    assert worker_lifetime_args("01:00:00") == ["--lifetime", "3240s", "--lifetime-stagger", "120s"]
    assert worker_lifetime_args("00:00:50") == []
    assert worker_lifetime_args("soon") == []


def test_killing_the_driver_ends_its_slurm_jobs_and_workers(slurm, tmp_path):
    """``kill -9`` of an ``alcsp run`` whose workers are Slurm batch jobs, while they work:
    the workers lose their scheduler (it lives in the driver) and exit, and so their batch
    jobs end, within dask-jobqueue's ``--death-timeout`` (60 s) plus Slurm's own cleanup; no
    process of the campaign (they all carry the test's tag in their environment, which
    ``sbatch`` exports to the job) is left on the node. Then the campaign resumes."""
    from test_operating import _start_run, _tagged

    tag = uuid.uuid4().hex
    name = f"alcsp-kill-{tag[:8]}"
    logs = tmp_path / "slurm-logs"
    logs.mkdir()
    text = on_slurm_jobs(
        TINY.replace("max_iterations = 2", "max_iterations = 3"), name, logs, tmp_path
    )
    isolated = text.replace('[oracle]\nname = "emt"', '[oracle]\nname = "emt"\nisolate = true')
    proc, directory = _start_run(tmp_path, tag, isolated)

    def ours() -> list[list[str]]:
        out = subprocess.run(
            ["squeue", "-h", "-n", name, "-o", "%i|%T"], capture_output=True, text=True, check=True
        ).stdout
        return [line.split("|") for line in out.split()]

    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            running = [job for job, state in ours() if state == "RUNNING"]
            worked = any(p.stat().st_size > 0 for p in logs.glob("*.out"))
            if len(running) == 2 and worked and len(_tagged(tag)) > 3:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no two running jobs; exit {proc.poll()}: {proc.stderr.read()}")
        time.sleep(3)  # the workers at work: search shards or oracle jobs
        assert proc.poll() is None
        on_node = _tagged(tag) - {proc.pid}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        t0 = time.monotonic()
        while (ours() or _tagged(tag)) and time.monotonic() - t0 < 120:
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        assert not ours(), f"jobs still queued {elapsed:.0f} s after the driver's death: {ours()}"
        assert not _tagged(tag), f"processes left: {sorted(_tagged(tag))} of {sorted(on_node)}"
        print(f"jobs and {len(on_node)} processes gone {elapsed:.1f} s after the kill")
    finally:
        proc.kill()
        proc.wait()
        for job, _ in ours():
            subprocess.run(["scancel", job], check=False)
    assert main(["run", str(directory), "--quiet"]) == 0  # resumes where it stopped
