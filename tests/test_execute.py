"""Executors: results and errors per item, single-threaded workers, dying workers, Dask
(LocalCluster; Slurm/PBS job scripts from config), config validation."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from alcsp.execute import (
    DaskConfig,
    DaskExecutor,
    ExecutorConfig,
    InlineExecutor,
    ProcessExecutor,
    WorkerLost,
    make_dask_cluster,
    make_executor,
)


def square_or_fail(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x * x


def thread_settings(_: int) -> tuple[str, int]:
    import torch

    return os.environ.get("OMP_NUM_THREADS", ""), torch.get_num_threads()


def die_unless_marked(path: str) -> str:
    """Kills its worker the first time (no marker yet), succeeds the second time."""
    p = Path(path)
    if not p.exists():
        p.write_text("seen")
        os.kill(os.getpid(), signal.SIGKILL)
    return p.name


def die_if_bad(x: int) -> int:
    if x < 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def collect(executor, fn, items):
    out = {}
    for r in executor.map_unordered(fn, items):
        assert r.index not in out
        out[r.index] = r.value if r.ok else r.error
    return out


def check_squares(out):
    assert sorted(out) == list(range(6))
    assert [out[k] for k in (0, 1, 2, 4, 5)] == [0, 1, 4, 16, 25]
    assert isinstance(out[3], ValueError) and "three" in str(out[3])


def test_inline_executor():
    check_squares(collect(InlineExecutor(), square_or_fail, list(range(6))))


def test_process_executor_errors_threads_and_dying_workers(tmp_path):
    with ProcessExecutor(2, max_resubmits=1) as ex:
        check_squares(collect(ex, square_or_fail, list(range(6))))
        # one BLAS/OpenMP/torch thread per worker
        assert set(collect(ex, thread_settings, [0, 1]).values()) == {("1", 1)}
        # a job whose worker dies once is sent again and succeeds
        paths = [str(tmp_path / f"m{k}") for k in range(3)]
        assert collect(ex, die_unless_marked, paths) == {k: f"m{k}" for k in range(3)}
        # a job that always kills its worker is reported lost; the others all finish
        out = collect(ex, die_if_bad, [1, -1, 2, 3, -2, 4])
    assert {k: v for k, v in out.items() if not isinstance(v, Exception)} == {
        0: 1,
        2: 2,
        3: 3,
        5: 4,
    }
    assert isinstance(out[1], WorkerLost) and isinstance(out[4], WorkerLost)


def test_dask_local_cluster_threads():
    with DaskExecutor(DaskConfig(cluster="local", workers=2, processes=False)) as ex:
        check_squares(collect(ex, square_or_fail, list(range(6))))


def test_dask_workers_run_without_the_profiler():
    """alcsp's Dask worker processes switch off Dask's statistical profiler (2-11 % more
    CPU of a single-threaded worker, docs/benchmarks.md); the driver's own config is not
    touched."""
    import dask

    def profiling() -> bool:
        return bool(dask.config.get("distributed.worker.profile.enabled"))

    with DaskExecutor(DaskConfig(cluster="local", workers=1)) as ex:
        check_squares(collect(ex, square_or_fail, list(range(6))))
        assert list(ex.client.run(profiling).values()) == [False]
    assert profiling()


def test_slurm_and_pbs_job_scripts_from_config():
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is in the 'dask' extra")
    cfg = DaskConfig(
        cluster="slurm",
        queue="debug",
        account="proj1",
        cores=4,
        memory="8GB",
        walltime="00:30:00",
        jobs=2,
        job_script_prologue=("module load gpaw",),
    )
    cluster = make_dask_cluster(cfg)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for needle in (
        "#SBATCH -p debug",
        "#SBATCH -A proj1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH -t 00:30:00",
        "export OMP_NUM_THREADS=1",
        "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False",
        "module load gpaw",
        "--nworkers 4",
        "--nthreads 1",
    ):
        assert needle in script, (needle, script)
    pbs = make_dask_cluster(DaskConfig(cluster="pbs", queue="workq", cores=2))
    try:
        script = pbs.job_script()
    finally:
        pbs.close()
    assert "#PBS -q workq" in script and "ncpus=2" in script


def test_executor_config_validation():
    with pytest.raises(ValueError, match="kind = 'mpi'"):
        ExecutorConfig(kind="mpi")
    with pytest.raises(ValueError, match="needs queue"):
        DaskConfig(cluster="slurm")
    with pytest.raises(ValueError, match="needs address"):
        DaskConfig(cluster="address")
    with pytest.raises(ValueError, match=r"unknown keys \['nodes'\]"):
        ExecutorConfig.from_dict({"kind": "dask", "dask": {"nodes": 3}})
    with pytest.raises(ValueError, match=r"\[executor\] has unknown keys \['cpus'\]"):
        ExecutorConfig.from_dict({"cpus": 3})
    cfg = ExecutorConfig.from_dict(
        {
            "kind": "dask",
            "dask": {"cluster": "slurm", "queue": "q", "job_extra_directives": ["--qos=low"]},
        }
    )
    assert cfg.dask.job_extra_directives == ("--qos=low",)
    assert isinstance(make_executor(ExecutorConfig(kind="inline")), InlineExecutor)
    ex = make_executor(ExecutorConfig(kind="process", workers=3))
    assert isinstance(ex, ProcessExecutor) and ex.n_workers == 3
